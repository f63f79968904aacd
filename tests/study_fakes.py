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
