"""Running an analysis on a stored run: options, the run's network and data, the result with its provenance.

`run_analysis(store, run_id, name, options, progress=..., should_stop=...)` is the one entry point, used by
the CLI in the foreground and meant for the worker in the background: a job row (job = 'lesion', 'landscape'
or 'shatter', parent_id = the analysed run, config = the options as JSON) is executed by

    name, result = run_analysis(store, job["parent_id"], job["job"], options,
                                progress=lambda done, total: store.update_run(job["id"], iteration=done,
                                                                              total_iterations=total),
                                should_stop=lambda: store.heartbeat(job["id"]))
    save_result(store, job["parent_id"], name, result)

where `Cancelled` (raised when `should_stop()` is true) ends the job as cancelled and `AnalysisError` /
`StoreError` / `DataError` / `ConfigError` as failed with the message.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..runtime import git_revision
from ..runs.store import Store
from .checkpoint import AnalysisError, Restored, parse_at, restore
from .common import Progress, ShouldStop
from .landscape import landscape
from .lesion import lesion
from .shatter import shatter


@dataclass(frozen=True)
class Option:
    default: Any
    help: str
    check: Callable[[Any], bool] = lambda v: True
    rule: str = ""            # what `check` allows, for the message


def _int(lo: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _target(v) -> bool:
    return v == "loss" or (isinstance(v, int) and not isinstance(v, bool) and v >= 0)


def _towards(v) -> bool:
    return v in ("auto", "random") or (isinstance(v, int) and not isinstance(v, bool) and v >= 0)


AT = Option("checkpoint", "'checkpoint' (the run's last one), 'init', or the checkpoint's iteration",
            lambda v: v in ("checkpoint", "init") or (isinstance(v, int) and v >= 0), "checkpoint, init or an iteration")


@dataclass(frozen=True)
class Analysis:
    name: str
    title: str
    options: dict[str, Option] = field(default_factory=dict)


ANALYSES: dict[str, Analysis] = {
    "lesion": Analysis("lesion", "Lesions: test error with units deleted (Veit et al.)", {
        "draws": Option(5, "random sets of k units per k (and orders per swap count)", _int(1), "an integer >= 1"),
        "reorder": Option(False, "also measure reordered units", lambda v: isinstance(v, bool), "true or false"),
        "max_swaps": Option(0, "reordering: 1..max_swaps swaps (0: one per swappable unit)", _int(0), "an integer >= 0"),
        "images": Option(0, "first M test images (0: the whole test set)", _int(0), "an integer >= 0"),
        "seed": Option(0, "seed of the random choices", _int(0), "an integer >= 0"),
        "at": AT,
    }),
    "landscape": Analysis("landscape", "Loss landscape along filter-normalised directions (Li et al.)", {
        "points": Option(21, "points per axis over [-span, span]", _int(2), "an integer >= 2"),
        "span": Option(1.0, "half-width of the slice in filter-norm units",
                       lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0, "a number > 0"),
        "two_d": Option(False, "a 2-D grid over two directions", lambda v: isinstance(v, bool), "true or false"),
        "images": Option(2000, "first M training images", _int(1), "an integer >= 1"),
        "seed": Option(0, "seed of the random directions", _int(0), "an integer >= 0"),
        "at": AT,
    }),
    "shatter": Analysis("shatter", "Shattered gradients: input-gradient correlation vs distance (Balduzzi et al.)", {
        "points": Option(256, "inputs on the line", _int(3), "an integer >= 3"),
        "target": Option("loss", "'loss' (cross-entropy against x0's label) or a logit index", _target,
                         "'loss' or a class index"),
        "image": Option(0, "x0: this validation image", _int(0), "an integer >= 0"),
        "towards": Option("auto", "direction: towards this validation image, 'random', or 'auto' (the next "
                          "validation image of another class)", _towards, "auto, random or an image index"),
        "norm": Option(0.0, "length of a random direction (0: the distance from x0 to the 'auto' image)",
                       lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0, "a number >= 0"),
        "summary_distance": Option(1 / 255, "distance along the line (fraction) of the summary correlation",
                                   lambda v: isinstance(v, (int, float)) and 0 < v <= 1, "a number in (0, 1]"),
        "seed": Option(0, "seed of a random direction", _int(0), "an integer >= 0"),
        "at": AT,
    }),
}


def resolve_options(name: str, options: dict | None = None) -> dict:
    """The analysis's options with defaults filled in; AnalysisError naming every bad or unknown option."""
    if name not in ANALYSES:
        raise AnalysisError(f"unknown analysis {name!r}; known: {', '.join(ANALYSES)}")
    spec = ANALYSES[name].options
    given = {k: v for k, v in (options or {}).items() if v is not None}
    problems = [f"unknown option {k!r} (known: {', '.join(spec)})" for k in given if k not in spec]
    values = {k: given.get(k, o.default) for k, o in spec.items()}
    if "at" in values:
        values["at"] = parse_at(values["at"])
    problems += [f"{k} must be {spec[k].rule}, got {v!r}" for k, v in values.items() if not spec[k].check(v)]
    if problems:
        raise AnalysisError(f"{name}: " + "; ".join(problems))
    return values


def result_name(name: str, options: dict) -> str:
    """Where a result is kept: 'lesion', 'landscape', 'landscape-2d', 'shatter', 'shatter-init', ... One name per
    kind of result: a new run of the same analysis replaces the old result."""
    out = name + ("-2d" if options.get("two_d") else "")
    return out + ("-init" if options.get("at") == "init" else "")


def run_analysis(store: Store, run_id: str, name: str, options: dict | None = None, *, data_dir=None,
                 device: str = "auto", progress: Progress | None = None,
                 should_stop: ShouldStop | None = None) -> tuple[str, dict]:
    """Run analysis `name` on stored run `run_id`; returns (result name, JSON-able result with provenance).

    Raises StoreError (unknown run), AnalysisError (no checkpoint, bad options), DataError (data missing),
    Cancelled (should_stop() became true)."""
    opts = resolve_options(name, options)
    started = time.perf_counter()
    restored = restore(store, run_id, opts["at"], data_dir=data_dir, device=device)
    result = {"lesion": _lesion, "landscape": _landscape, "shatter": _shatter}[name](restored, opts, progress,
                                                                                  should_stop)
    result["run"] = restored.context()
    result["options"] = {**result.get("options", {}), **opts}
    result["elapsed_s"] = time.perf_counter() - started
    result["created_at"] = time.time()
    result["software"] = {"torch": torch.__version__, "git": git_revision()}
    return result_name(name, opts), result


def _lesion(r: Restored, o: dict, progress, should_stop) -> dict:
    x, y = r.images("test", o["images"])
    return lesion(r.net, x, y, draws=o["draws"], reorder=o["reorder"], max_swaps=o["max_swaps"], seed=o["seed"],
                  batch_size=r.eval_batch, autocast=r.autocast(), progress=progress, should_stop=should_stop)


def _landscape(r: Restored, o: dict, progress, should_stop) -> dict:
    x, y = r.images("train", min(o["images"], len(r.splits.train)))
    return landscape(r.net, x, y, points=o["points"], span=float(o["span"]), two_d=o["two_d"], seed=o["seed"],
                     batch_size=r.eval_batch, autocast=r.autocast(), progress=progress, should_stop=should_stop)


def _shatter(r: Restored, o: dict, progress, should_stop) -> dict:
    val = r.splits.val
    classes = r.splits.info.classes
    if o["image"] >= len(val):
        raise AnalysisError(f"image {o['image']} does not exist: the validation split has {len(val)} images")
    if o["target"] != "loss" and o["target"] >= classes:
        raise AnalysisError(f"logit {o['target']} does not exist: {r.cfg.dataset} has {classes} classes (0-{classes - 1})")
    x0, y0 = r.images("val", 1, start=o["image"])
    towards = o["towards"]
    if towards in ("auto", "random"):
        later = (val.labels[o["image"] + 1 :] != val.labels[o["image"]]).nonzero()
        if len(later) == 0:
            raise AnalysisError(f"no validation image after {o['image']} has another class than it")
        partner = o["image"] + 1 + int(later[0])
    else:
        if towards >= len(val) or towards == o["image"]:
            raise AnalysisError(f"towards {towards}: pick another validation image (0-{len(val) - 1}, not {o['image']})")
        partner = towards
    x1, _ = r.images("val", 1, start=partner)
    d = (x1[0] - x0[0]).float()
    how = {"direction": "towards image", "towards": partner}
    if towards == "random":
        gen = torch.Generator().manual_seed(o["seed"])
        noise = torch.randn(d.shape, generator=gen).to(d.device)
        length = float(o["norm"]) or float(d.norm())
        d = noise * (length / float(noise.norm()))
        how = {"direction": "random", "norm": length, "norm_from": "option" if o["norm"] else f"image {partner}"}
    # fp32 gradients whatever the run's precision: bf16 rounding would decorrelate them by itself
    result = shatter(r.net, x0[0].contiguous(), d.contiguous(), points=o["points"], target=o["target"],
                     label=int(y0[0]), summary_distance=o["summary_distance"], progress=progress,
                     should_stop=should_stop)
    result["line"] = {"x0": o["image"], **how}
    return result
