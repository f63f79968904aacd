"""Stored results built to give a study's analysis a chosen answer: runs written through the store API (as
lab/fill.py does), with final errors, training-error curves and per-layer metrics chosen by the test."""
from __future__ import annotations

import zlib
from dataclasses import replace
from typing import Callable

import numpy as np

from lab.models import build_net
from lab.studies import get
from lab.studies.plan import make_plan


def noise(arm: str, seed: int, size: float = 0.01) -> float:
    """A small, fixed, seed-dependent offset (so seeds differ, and arms differ in their spread)."""
    rng = np.random.default_rng(zlib.crc32(f"{arm}|{seed}".encode()))
    return float(rng.uniform(-size, size))


def layer_names(cfg) -> dict[str, list[str]]:
    net = build_net(cfg.kind, cfg.depth, **{k: getattr(cfg, k) for k in ("block", "shortcut", "span", "width",
                                                                          "norm", "init")})
    return {"grad_norm": [n for n, _ in net.weight_layers()],
            "response_std": [n for n, _ in net.response_layers()],
            "residual_ratio": [n for n, _ in net.residual_units()]}


def fill(store, study_id: str, budget: str = "smoke", seeds: int = 2,
         train: Callable[[str, int], float] = lambda arm, seed: 0.2 + noise(arm, seed),
         test: Callable[[str, int], float] | None = None,
         layers: Callable[[str, int, dict], dict[str, dict[int, list[float]]]] | None = None,
         status: Callable[[str, int], str] = lambda arm, seed: "done", arms=None) -> dict[str, list[str]]:
    """Store a finished run for every planned run of a study (or of `arms` only); returns {arm: [run ids]}.

    `train`/`test` give the final training/test error (fractions) per arm and seed (test: train + 0.02 by default);
    the training-error curve falls linearly from 0.9 to the final value; `layers` gives per-layer metrics
    {metric: {step: values}} (default: none). A deepened arm's run grows from the parent arm's run of its seed
    (`deepen_from` and `parent_id`); analysis arms are left to `save_results`."""
    plan = make_plan(get(study_id), budget, seeds)
    ids: dict[str, list[str]] = {}
    by_seed: dict[tuple[str, int], str] = {}
    for pa in plan.available():
        if (arms is not None and pa.name not in arms) or pa.arm.analysis:
            continue
        for cfg in pa.configs:
            seed = cfg.seed
            tr = train(pa.name, seed)
            te = test(pa.name, seed) if test else tr + 0.02
            parent = by_seed.get((pa.arm.deepen, seed)) if pa.arm.deepen else None
            if parent:   # a deepened arm's run grew from the parent arm's run of its seed
                cfg = replace(cfg, deepen_from=parent)
            (rid,) = store.create_runs([cfg], status="running", parent_id=parent)
            by_seed[(pa.name, seed)] = rid
            names = layer_names(cfg)
            store.update_run(rid, layers=names, params=1000)
            steps = list(range(cfg.log_every, cfg.iterations + 1, cfg.log_every))
            curve = np.linspace(0.9, tr, len(steps))
            scalars = [(s, "train_error", float(v)) for s, v in zip(steps, curve)]
            scalars += [(steps[-1], "test_error", te)]
            lrows = []
            for metric, per_step in (layers(pa.name, seed, names) if layers else {}).items():
                lrows += [(step, metric, list(values)) for step, values in per_step.items()]
            store.log(rid, scalars=scalars, layers=lrows, iteration=steps[-1])
            st = status(pa.name, seed)
            if st == "done":
                store.set_status(rid, "done", final_train_error=tr, final_test_error=te)
            else:
                store.set_status(rid, st, message="stored by a test")
            ids.setdefault(pa.name, []).append(rid)
    return ids


# --- analysis results (lesions, landscapes, shattering) of the stored runs --------------------------------------


def lesion_result(cfg, increase: float, baseline: float = 0.2, downsampling: float | None = None) -> dict:
    """A lesion result of the net `cfg` builds: every deletable shape-keeping unit deleted alone raises the error
    by `increase`, a deletable downsampling unit by `downsampling` (default: `increase`); k shape-keeping units
    deleted at once by k times `increase` (at most chance, 0.9)."""
    import torch

    from lab.analysis.lesion import by_kind, unit_table

    table = unit_table(build_net(cfg.kind, cfg.depth, width=cfg.width), torch.zeros(1, 3, 32, 32))
    down = increase if downsampling is None else downsampling
    single = [baseline + (increase if row["kind"] == "shape-keeping" else down) if row["deletable"] else None
              for row in table]
    candidates = [row["index"] for row in table if row["deletable"] and row["kind"] == "shape-keeping"]
    ks = list(range(1, len(candidates) + 1))
    return {"analysis": "lesion", "format": 2, "images": 128, "baseline": {"loss": 0.5, "error": baseline},
            "unit_table": table, "single": {"error": single, "loss": [1.0 if e is not None else None for e in single]},
            "single_by_kind": by_kind(table, single, baseline),
            "deleted": {"units": "shape-keeping", "candidates": candidates, "k": ks,
                        "error_mean": [min(0.9, baseline + k * increase) for k in ks],
                        "error_sd": [0.0] * len(ks), "error_min": [min(0.9, baseline + k * increase) for k in ks],
                        "error_max": [min(0.9, baseline + k * increase) for k in ks], "sets": [1] * len(ks),
                        "exhaustive": [False] * len(ks)},
            "reordered": None}


def landscape_result(curvature: float, points: int = 5, wiggle: float = 0.0) -> dict:
    """A 1-D slice: loss = 0.5 (1 + curvature α²), with every other point raised by `wiggle` (non-convex)."""
    alpha = np.linspace(-1, 1, points)
    loss = 0.5 * (1 + curvature * alpha ** 2) + wiggle * (np.arange(points) % 2)
    return {"analysis": "landscape", "dimensions": 1, "images": 128, "alpha": alpha.tolist(), "loss": loss.tolist(),
            "error": np.clip(0.1 + loss / 10, 0, 1).tolist(), "origin": {"loss": 0.5, "error": 0.15}}


def shatter_result(correlation: float, points: int = 256) -> dict:
    """Neighbouring inputs' gradients correlate by `correlation`, falling as its power with the distance."""
    lags = range(1, points)
    dt = 1 / (points - 1)
    return {"analysis": "shatter", "points": points, "dimensions": 3 * 32 * 32, "distance_t": [k * dt for k in lags],
            "distance": [k * dt for k in lags], "correlation": [correlation ** k for k in lags],
            "pairs": [points - k for k in lags],
            "summary": {"distance_t": dt, "distance": dt, "correlation": correlation}}


def save_results(store, study_id: str, ids: dict[str, list[str]], value: Callable[[str, int], float],
                 budget: str = "smoke", seeds: int = 2,
                 downsampling: Callable[[str, int], float] | None = None) -> None:
    """Store a result for every analysis arm of a study, for each run of the arm it analyses (`ids`, as `fill`
    returns them). `value(arm, seed)` is the result's key number: a lesion's error increase per deleted unit,
    a landscape's curvature, a shattering's neighbour correlation; `downsampling(arm, seed)`, a lesion's error
    increase per deleted downsampling unit (default: the same as the others)."""
    from lab.analysis.options import bn_statistics, resolve_options, result_name
    from lab.analysis.results import save_result
    from lab.config import RunConfig

    plan = make_plan(get(study_id), budget, seeds)
    for pa in plan.arms:
        if not pa.arm.analysis:
            continue
        options = resolve_options(pa.arm.job, dict(pa.arm.options))
        for rid in ids.get(pa.arm.of, []):
            cfg = RunConfig.from_dict(store.get_run(rid)["config"])
            v = value(pa.name, cfg.seed)
            down = downsampling(pa.name, cfg.seed) if downsampling else None
            result = {"lesion": lambda: lesion_result(cfg, v, downsampling=down), "landscape": lambda: landscape_result(v),
                      "shatter": lambda: shatter_result(v)}[pa.arm.job]()
            at = "init" if options.get("at") == "init" else "checkpoint"
            result["run"] = dict(run_id=rid, label=pa.arm.of, kind=cfg.kind, depth=cfg.depth, dataset=cfg.dataset,
                                 seed=cfg.seed, preset=cfg.preset, at=at, step=0 if at == "init" else cfg.iterations,
                                 total_iterations=cfg.iterations, device="cpu", precision="fp32")
            result["options"] = options
            result["bn_statistics"] = result["run"]["bn_statistics"] = bn_statistics(options)
            save_result(store, rid, result_name(pa.arm.job, options), result)
