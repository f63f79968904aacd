"""The quick demo: plain and residual nets at 20 and 56 layers on Fashion-MNIST (the `quick` preset, one seed),
trained by the background worker, ending with the verdict in sentences: does the deeper plain net train worse
(the degradation problem), and do shortcuts remove it?

`DEMO_SWEEP` is the one definition of the demo's runs: `lab demo` queues it and so does the dashboard's Quick
demo button.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable

from .config import RunConfig
from .runs.estimate import estimate_sweep, longest_first
from .runs.sweep import SweepSpec, expand

DEMO_SWEEP = SweepSpec(kinds=["plain", "residual"], depths=[20, 56], seeds=[0], preset="quick",
                       dataset="fashion-mnist", tag="quick demo")
# Points of final training error below which two runs of one seed count as no different: the last logging
# window of the quick preset holds 640 images, whose error alone varies by about 1.6 points (binomial sd at 20%).
SAME_POINTS = 3.0
ENDED = ("done", "failed", "diverged", "cancelled", "interrupted")
NO_WORKER_S = 30.0   # runs still waiting this long with no live worker: the demo stops waiting


def demo_configs(**overrides) -> list[RunConfig]:
    """The demo's four runs (with `overrides` on each, e.g. for tests), the costliest first, so the two slots
    of a 2-core machine take the two 56-layer runs together and end close together."""
    spec = replace(DEMO_SWEEP, overrides={**DEMO_SWEEP.overrides, **overrides})
    configs = expand(spec)
    return [configs[i] for i in longest_first(configs)]


def _name(kind: str, depth: int) -> str:
    return f"{'ResNet' if kind == 'residual' else 'plain'}-{depth}"


def verdict(errors: dict[tuple[str, int], float]) -> list[str]:
    """The demo's three sentences from final training errors (fractions) keyed by (kind, depth); a comparison
    whose runs are missing is left out."""
    lines = []

    def compare(a: tuple[str, int], b: tuple[str, int], worse: str, same: str, better: str) -> None:
        if a not in errors or b not in errors:
            return
        ea, eb = 100 * errors[a], 100 * errors[b]
        gap = ea - eb
        text = worse if gap >= SAME_POINTS else better if gap <= -SAME_POINTS else same
        lines.append(f"{text}: {_name(*a)} ends at {ea:.1f}% training error, {_name(*b)} at {eb:.1f}% "
                     f"({gap:+.1f} points).")

    compare(("plain", 56), ("plain", 20), "The deeper plain net trains worse (the degradation problem)",
            "The deeper plain net trains about as well as the shallower one (no degradation this time)",
            "The deeper plain net trains better (no degradation this time)")
    compare(("residual", 56), ("plain", 56), "The shortcuts do not help at 56 layers",
             "The shortcuts make no clear difference at 56 layers",
             "With shortcuts the 56-layer net trains better")
    compare(("residual", 56), ("residual", 20), "The deeper residual net trains worse",
            "The deeper residual net trains about as well as the shallower one (no degradation)",
            "The deeper residual net trains better (no degradation)")
    if lines:
        lines.append(f"One seed each, a demonstration: differences under {SAME_POINTS:g} points are within one "
                     "run's noise. For seeds and intervals: lab study run degradation --budget cpu")
    return lines


def _state(store, ids: list[str]) -> list[dict]:
    return [store.get_run(i) for i in ids]


def run_demo(store, data: str | None = None, slots: int = 0, out: Callable[[str], None] = print,
             progress: bool = True, configs: list[RunConfig] | None = None, poll_s: float = 1.0) -> int:
    """Queue the demo's runs (`configs`, default `demo_configs()`) in `store`, start a background worker unless
    one serves the store (`slots`: 0 leaves the choice to the worker; `data`: its data folder), show the progress,
    wait for the runs and print the verdict. Returns 0 when all runs finished, 1 when one failed, diverged or was
    stopped, or no worker took them, 130 on Ctrl-C (the runs go on training in the background worker)."""
    from .runs.worker import auto_slots, ensure_worker

    configs = configs if configs is not None else demo_configs()
    estimate = estimate_sweep(store, configs, slots=slots or auto_slots("auto", configs)[0])
    ids = store.create_runs(configs)
    out(f"Queued {len(ids)} runs ({', '.join(c.label() for c in configs)}) in {store.root}; estimated time here: "
        f"{estimate.text} ({estimate.basis}).")
    pid = ensure_worker(store, slots=slots, data_dir=data)
    out("Started a background worker (pid %d); its log: %s" % (pid, store.root / "worker.log") if pid else
        "A background worker already serves this results folder; it takes the runs in turn.")
    out("Watch the curves live: lab dashboard (Training curves page). Ctrl-C stops watching, not the runs.")
    try:
        runs = _wait(store, ids, sum(c.iterations for c in configs), progress, poll_s)
    except KeyboardInterrupt:
        out("Stopped watching; the runs go on in the background worker (lab runs, or the dashboard's Runs page).")
        return 130
    if runs is None:
        out(f"No worker is taking the runs; start one with: lab worker --results {store.root}")
        return 1
    failed = [r for r in runs if r["status"] != "done"]
    for r in failed:
        out(f"{r['label']} ({r['id']}) {r['status']}: {r.get('message') or 'no message'}")
    errors = {(r["kind"], int(r["depth"])): r["final_train_error"] for r in runs
              if r["status"] == "done" and r.get("final_train_error") is not None}
    for line in verdict(errors):
        out(line)
    return 1 if failed else 0


def _wait(store, ids: list[str], total: int, progress: bool, poll_s: float) -> list[dict] | None:
    """Poll the runs until each has ended, with a progress bar of their iterations; None when none of them is
    running and no worker has been alive for NO_WORKER_S."""
    from tqdm import tqdm

    bar = tqdm(total=total, unit="it", desc="quick demo", disable=not progress, dynamic_ncols=True)
    orphaned_since = None
    try:
        while True:
            runs = _state(store, ids)
            bar.update(sum(int(r["iteration"] or 0) for r in runs) - bar.n)
            if all(r["status"] in ENDED for r in runs):
                return runs
            if any(r["status"] == "running" for r in runs) or store.live_workers():
                orphaned_since = None
            elif orphaned_since is None:
                orphaned_since = time.monotonic()
            elif time.monotonic() - orphaned_since > NO_WORKER_S:
                return None
            time.sleep(poll_s)
    finally:
        bar.close()
