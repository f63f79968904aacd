"""Named views: stored results -> run_figures. The dashboard pages and `python -m lab export` both use these,
so a figure in a report is the figure on the screen."""
from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from . import run_figures
from .runs.store import Store, StoreError
from .runs.store.summaries import scalar_grid
from .buckets import bucket_summary, bucket_width


def run_label(run: pd.Series | dict, with_seed: bool = True) -> str:
    label = str(run.get("label") or f"{run['kind']}-{run['depth']}")
    return f"{label} seed {run['seed']}" if with_seed else label


def curves(store: Store, runs: pd.DataFrame, x: str = "iterations", smoothing: float = 0.0, log_y: bool = False,
           band: str = "min-max", max_points: int = 1200, join_parents: bool = False,
           window: tuple[int, int] | None = None) -> go.Figure:
    """Fig. 6 for `runs`, drawn from each run's downsampled series (`curve_scalars`); `window` (first, last
    iteration): that range only, read from the stored rows. `join_parents`: each deepened run's curve starts with
    its parent's (x: total iterations), the parents' series read from the store even when they are not among
    `runs`."""
    names = ["train_error", "test_error"] + {"epochs": ["epoch"], "wall time": ["elapsed_s"]}.get(x, [])
    ids = runs["id"].tolist() if not runs.empty else []
    ancestors = _ancestors(store, runs) if join_parents and ids else pd.DataFrame()
    if not ancestors.empty:
        ids += ancestors["id"].tolist()
    known = pd.concat([runs, ancestors], ignore_index=True) if not ancestors.empty else runs
    scalars = curve_scalars(store, known, names, window=window) if ids else pd.DataFrame()
    return run_figures.training_curves(runs, scalars, x=x, smoothing=smoothing, log_y=log_y, band=band,
                                       max_points=max_points, join_parents=join_parents, ancestors=ancestors)


# Downsampled series of runs that can no longer change, in process memory: a dashboard redraws the same finished
# runs on every rerun and every live refresh. (store url, run id, name) -> (the run's version, x, mean); least
# recently used dropped past CACHE_ROWS points.
CACHE_ROWS = 5_000_000  # about 80 MB
LIVE = ("queued", "running")  # statuses whose series may still grow (or be cut back by a resume)
_cache: OrderedDict[tuple[str, str, str], tuple[tuple, np.ndarray, np.ndarray]] = OrderedDict()
_cache_rows = 0
_cache_lock = threading.Lock()  # Streamlit runs each session's script in a thread of its own
_EMPTY = (np.zeros(0), np.zeros(0))


def _version(run: dict) -> tuple | None:
    """What identifies a run's series while it cannot change, or None while it can (queued or running): a
    resume or a redo gives the run a new status, attempt and iteration, so its old entries are never used."""
    if run.get("status") in LIVE or not run.get("status"):
        return None
    return tuple(None if pd.isna(v) else v for v in
                 (run.get(k) for k in ("status", "attempt", "iteration", "finished_at", "total_iterations")))


RUN_FIELDS = ("id", "status", "attempt", "iteration", "finished_at", "total_iterations", "log_every", "config")


def curve_scalars(store: Store, runs: pd.DataFrame, names: list[str],
                  window: tuple[int, int] | None = None) -> pd.DataFrame:
    """The runs' scalar series `names` downsampled (`lab.buckets.bucket_summary`: per bucket of whole logging
    intervals, at most SUMMARY_POINTS per series, the mean step and the mean value) as a long DataFrame run_id,
    name, step, value, sorted by run, name and step (run_id and name as categoricals). Finished runs' series
    come from the store's summaries and are kept in process memory after their first read; queued and running
    runs' rows are read and bucketed the same way on every call. `window` (first, last iteration): the rows in
    that range, read from the store and bucketed over it (nothing cached)."""
    fields = [c for c in RUN_FIELDS if c in runs.columns]
    records = {r["id"]: r for r in runs[fields].drop_duplicates("id").to_dict("records")}
    ids = sorted(records)
    names = sorted(set(names))
    if window is not None:
        found = _bucketed_rows(store, records, ids, names, window)
    else:
        found = _cached_summaries(store, records, ids, names)
        live = [rid for rid in ids if _version(records[rid]) is None]
        if live:
            found.update(_bucketed_rows(store, records, live, names))
    keys = [(rid, name) for rid in ids for name in names]
    counts = [len(found.get(k, _EMPTY)[0]) for k in keys]
    # run ids and names as categoricals (sorted categories, so they sort as the strings do): a column of
    # hundreds of thousands of repeated strings costs more to build than all the numbers
    return pd.DataFrame({
        "run_id": pd.Categorical.from_codes(np.repeat(np.arange(len(ids)).repeat(len(names)), counts), ids),
        "name": pd.Categorical.from_codes(np.repeat(np.tile(np.arange(len(names)), len(ids)), counts), names),
        "step": np.concatenate([found.get(k, _EMPTY)[0] for k in keys]) if keys else np.zeros(0),
        "value": np.concatenate([found.get(k, _EMPTY)[1] for k in keys]) if keys else np.zeros(0),
    })


def _cached_summaries(store: Store, records: dict, ids: list[str], names: list[str]) -> dict:
    """{(run id, name): (x, mean)} of the finished runs among `ids`: process memory first, then the store."""
    global _cache_rows
    versions = {rid: _version(records[rid]) for rid in ids}
    found: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    with _cache_lock:
        for rid in ids:
            for name in names:
                hit = _cache.get((store.url, rid, name))
                if hit is not None and versions[rid] is not None and hit[0] == versions[rid]:
                    _cache.move_to_end((store.url, rid, name))
                    found[(rid, name)] = hit[1:]
    missing = [rid for rid in ids if versions[rid] is not None and any((rid, n) not in found for n in names)]
    if not missing:
        return found
    read = store.series_summaries([records[rid] for rid in missing], names, "scalar")
    with _cache_lock:
        for rid in missing:
            for name in names:
                s = read.get((rid, name))
                arrays = (s["x"], s["mean"]) if s is not None else _EMPTY
                found[(rid, name)] = arrays
                old = _cache.pop((store.url, rid, name), None)
                _cache_rows -= len(old[1]) if old else 0
                _cache[(store.url, rid, name)] = (versions[rid], *arrays)
                _cache_rows += len(arrays[0])
        while _cache_rows > CACHE_ROWS and _cache:
            _cache_rows -= len(_cache.popitem(last=False)[1][1])
    return found


def _bucketed_rows(store: Store, records: dict, ids: list[str], names: list[str],
                   window: tuple[int, int] | None = None) -> dict:
    """{(run id, name): (x, mean)} bucketed from the stored rows: each run on its summaries' grid, or, with
    `window`, on a grid of at most SUMMARY_POINTS buckets over that range."""
    read = store.scalars(ids, names, steps=window)
    found = {}
    for (rid, name), g in read.groupby(["run_id", "name"], sort=False, observed=True):
        run = records[rid]
        if window is None:
            width, start = scalar_grid(run), 0
        else:
            every = run.get("log_every") or (run.get("config") or {}).get("log_every") or 1
            width, start = bucket_width(window[1] - window[0], int(every)), window[0] - 1
        s = bucket_summary(g["step"].to_numpy(np.int64), g["value"].to_numpy(float), width, start=start)
        found[(rid, name)] = (s["x"], s["mean"])
    return found


LAYER_CACHE_ROWS = 1_000_000  # about 50 MB
_layer_cache: OrderedDict[tuple, tuple[tuple, pd.DataFrame]] = OrderedDict()
_layer_rows = 0


def layer_series(store: Store, run: pd.Series | dict, metric: str, steps=None) -> pd.DataFrame:
    """A run's per-layer `metric` as a long DataFrame step, layer, layer_name, value (at `steps` only, if
    given): for a finished run its summary (at most LAYER_SUMMARY_STEPS evenly spread steps, the first and last
    among them), kept in process memory; for a queued or running run every stored step."""
    global _layer_rows
    version = _version(run)
    if version is not None and steps is not None:  # a finished run: cut from its whole (cached) summary
        whole = layer_series(store, run, metric)
        return whole[whole["step"].isin(list(steps))].reset_index(drop=True)
    key = (store.url, run["id"], metric, None if steps is None else tuple(steps))
    with _cache_lock:
        hit = _layer_cache.get(key)
        if hit is not None and version is not None and hit[0] == version:
            _layer_cache.move_to_end(key)
            return hit[1].copy()
    if version is None:
        df = store.layer_series(run["id"], metric, steps=steps)
    else:
        df = _summary_frame(store, run, metric)
    if version is not None:
        with _cache_lock:
            old = _layer_cache.pop(key, None)
            _layer_rows += len(df) - (len(old[1]) if old else 0)
            _layer_cache[key] = (version, df.copy())
            while _layer_rows > LAYER_CACHE_ROWS and _layer_cache:
                _layer_rows -= len(_layer_cache.popitem(last=False)[1][1])
    return df


def _summary_frame(store: Store, run: pd.Series | dict, metric: str) -> pd.DataFrame:
    """A finished run's summarised per-layer series as layer_series' long DataFrame."""
    run = dict(run)
    found = store.series_summaries([run], [metric], "layer").get((run["id"], metric))
    if found is None:
        return pd.DataFrame({"step": pd.Series(dtype=np.int64), "layer": pd.Series(dtype=np.int64),
                             "layer_name": pd.Series(dtype=object), "value": pd.Series(dtype=float)})
    at, values = found
    layers = values.shape[1]
    names = (run.get("layers") if isinstance(run.get("layers"), dict) else {}).get(metric, [])
    labels = np.array([names[i] if i < len(names) else f"layer {i}" for i in range(layers)], dtype=object)
    return pd.DataFrame({"step": np.repeat(at, layers), "layer": np.tile(np.arange(layers), len(at)),
                         "layer_name": np.tile(labels, len(at)), "value": values.ravel()})


def layer_steps(store: Store, run: pd.Series | dict, metric: str) -> list[int]:
    """The steps `layer_series` has for a run's `metric` (a finished run's summarised steps)."""
    if _version(run) is None:
        return store.layer_steps(run["id"], metric)
    return sorted(set(layer_series(store, run, metric)["step"].tolist()))


def _ancestors(store: Store, runs: pd.DataFrame, limit: int = 16) -> pd.DataFrame:
    """Rows (config fields as columns, like `store.runs()`) of the parents, and their parents, of the deepened
    runs among `runs` that are not in `runs` themselves."""
    rows: dict[str, dict] = {}
    frontier = run_figures.parent_links(runs)
    for _ in range(limit):
        nxt = {}
        for ref, _iteration in frontier.values():
            try:
                parent = store.get_run(ref)
            except StoreError:  # deleted or ambiguous: that run's curve is drawn on its own
                continue
            if parent["id"] not in rows and parent["id"] not in set(runs["id"]):
                rows[parent["id"]] = row = {**parent["config"], **parent}
                nxt.update(run_figures.parent_links(pd.DataFrame([row])))
        if not nxt:
            break
        frontier = nxt
    return pd.DataFrame(list(rows.values()))


def depth(store: Store, runs: pd.DataFrame, reference: bool = False) -> go.Figure:
    return run_figures.depth_summary(runs, reference=reference)


def layer_profiles(store: Store, runs: pd.DataFrame, metric: str, at: float = 1.0) -> tuple[dict[str, pd.DataFrame], str]:
    """Each run's per-layer `metric` at the recorded step nearest to fraction `at` of its progress so far.

    Returns ({run label: DataFrame(layer, layer_name, value)}, a note saying which steps were used)."""
    out, used = {}, set()
    seeds = runs.groupby("label")["seed"].nunique().to_dict() if not runs.empty else {}
    for _, run in runs.iterrows():
        steps = layer_steps(store, run, metric)
        if not steps:
            continue
        target = at * max(steps)
        step = min(steps, key=lambda s: (abs(s - target), -s))
        df = layer_series(store, run, metric, steps=[step])
        out[run_label(run, with_seed=seeds.get(run["label"], 1) > 1)] = df
        used.add(step)
    note = "iteration " + ", ".join(str(s) for s in sorted(used)) if used else ""
    return out, note


# per-layer metrics (lab.probes) -> what the axis says
LAYER_METRICS = {
    "response_std": "response std (running BN statistics, eval mode)",
    "response_std_batch": "response std (the batch's own BN statistics)",
    "bn_gamma": "BN mean |γ|",
    "bn_beta_std": "BN std(β)",
    "residual_ratio": "‖F(x)‖ / ‖x‖",
    "grad_norm": "‖∂L/∂W‖ (L2)",
    "input_grad_norm": "‖∂L/∂x‖ of the layer input (L2)",
    "update_ratio": "‖ΔW‖ / ‖W‖ per step",
}
RESPONSE_METRICS = ("response_std", "response_std_batch", "bn_gamma", "bn_beta_std")
GRADIENT_METRICS = ("grad_norm", "input_grad_norm", "update_ratio")


def responses(store: Store, runs: pd.DataFrame, at: float = 1.0, metric: str = "response_std") -> go.Figure:
    """Fig. 7 (`metric` response_std or response_std_batch), or a 3x3 layer's BN parameters (bn_gamma,
    bn_beta_std), per layer at fraction `at` of each run's progress."""
    profiles, note = layer_profiles(store, runs, metric, at)
    what = LAYER_METRICS[metric]
    title = ("Layer responses, " + what + " (Fig. 7)") if metric.startswith("response") else ("3x3 layers: " + what)
    return run_figures.response_profile(profiles, title=title + (f", {note}" if note else ""),
                                    what=what.split(" (")[0] if metric.startswith("response") else what)


def residual_ratios(store: Store, runs: pd.DataFrame, at: float = 1.0) -> go.Figure:
    profiles, _ = layer_profiles(store, runs[runs["kind"] == "residual"] if not runs.empty else runs, "residual_ratio", at)
    return run_figures.residual_ratio_profile(profiles)


def gradients(store: Store, runs: pd.DataFrame, at: float = 1.0, metric: str = "grad_norm") -> go.Figure:
    """Per-layer weight-gradient norms (`metric` grad_norm), input-gradient norms or update ratios."""
    profiles, note = layer_profiles(store, runs, metric, at)
    title = {"grad_norm": "Gradient norm by layer", "input_grad_norm": "Input-gradient norm by layer",
             "update_ratio": "Update-to-weight ratio by layer"}[metric]
    return run_figures.gradient_profile(profiles, note, what=LAYER_METRICS[metric], title=title)


def gradient_ratio(store: Store, runs: pd.DataFrame) -> go.Figure:
    series = {}
    seeds = runs.groupby("label")["seed"].nunique().to_dict() if not runs.empty else {}
    for _, run in runs.iterrows():
        df = layer_series(store, run, "grad_norm")
        if not df.empty and df["value"].notna().all():
            # the ratio needs only the first and last layers: pivoting the rest is most of the figure's time
            # (with a NaN, the pivot's dropped rows and columns depend on all layers, so it gets them all)
            df = df[df["layer"].isin([df["layer"].min(), df["layer"].max()])]
        if not df.empty:
            series[run_label(run, with_seed=seeds.get(run["label"], 1) > 1)] = df
    return run_figures.gradient_ratio(series)


def gradient_heatmap(store: Store, run: pd.Series | dict) -> go.Figure:
    return run_figures.gradient_heatmap(layer_series(store, run, "grad_norm"), run_label(run))


def response_evolution(store: Store, run: pd.Series | dict, metric: str = "response_std") -> go.Figure:
    what = LAYER_METRICS.get(metric, metric)
    return run_figures.response_evolution(layer_series(store, run, metric), run_label(run), what)


# name -> (builder over a set of runs, title for menus and file names)
FIGURES = {
    "curves": (curves, "Training curves (Fig. 6)"),
    "depth": (depth, "Error vs depth"),
    "responses": (responses, "Layer responses (Fig. 7)"),
    "residual-ratios": (residual_ratios, "Residual ratio per block"),
    "gradients": (gradients, "Gradient norm by layer"),
    "gradient-ratio": (gradient_ratio, "First/last gradient ratio"),
}


def build(name: str, store: Store, runs: pd.DataFrame, reference: bool = False) -> go.Figure:
    """The named figure for these runs (`reference`: published numbers on the depth figure)."""
    builder = FIGURES[name][0]
    return builder(store, runs, reference=reference) if name == "depth" else builder(store, runs)
