"""Running an analysis on a stored run: options, the run's network and data, the result with its provenance.

`run_analysis(store, run_id, name, options, progress=..., should_stop=...)` is the one entry point, used by
the CLI in the foreground and by background jobs: `lab.analysis.queue.queue_analysis` queues a job row (job =
'lesion', 'landscape' or 'shatter', parent_id = the analysed run, config = the options as JSON), and the worker's
child executes it (`lab.runs.execute`) with progress in the row's iteration / total_iterations, `should_stop`
polling its cancel flag, and `results.save_result` keeping the result for the analysed run. `Cancelled` (raised
when `should_stop()` is true) ends such a job as cancelled; `AnalysisError` / `StoreError` / `DataError` /
`ConfigError` as failed with the message.
"""
from __future__ import annotations

import time

import torch

from ..runtime import git_revision
from ..runs.store import Store
from .restored import Restored, restore
from .evaluation import Progress, ShouldStop
from .errors import AnalysisError
from .landscape import landscape
from .lesion import lesion
from .options import ANALYSES, resolve_options, result_name  # noqa: F401 (ANALYSES: re-exported)
from .shatter import shatter


def run_analysis(store: Store, run_id: str, name: str, options: dict | None = None, *, data_dir=None,
                 device: str = "auto", progress: Progress | None = None,
                 should_stop: ShouldStop | None = None) -> tuple[str, dict]:
    """Run analysis `name` on stored run `run_id`; returns (result name, JSON-able result with provenance).

    Raises StoreError (unknown run), AnalysisError (no checkpoint, bad options), DataError (data missing),
    Cancelled (should_stop() became true)."""
    opts = resolve_options(name, options)
    started = time.perf_counter()
    restored = restore(store, run_id, opts["at"], data_dir=data_dir, device=device, bn_batches=opts["bn_batches"])
    result = {"lesion": _lesion, "landscape": _landscape, "shatter": _shatter}[name](restored, opts, progress,
                                                                                  should_stop)
    result["run"] = restored.context()
    result["bn_statistics"] = restored.bn_statistics  # "recalibrated", "running" or "none" (lab.analysis.restored)
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
