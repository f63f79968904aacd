"""Named views: stored results -> figures. The dashboard pages and `python -m lab export` both use these,
so a figure in a report is the figure on the screen."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from . import figures
from .runs.store import Store, StoreError


def run_label(run: pd.Series | dict, with_seed: bool = True) -> str:
    label = str(run.get("label") or f"{run['kind']}-{run['depth']}")
    return f"{label} seed {run['seed']}" if with_seed else label


def curves(store: Store, runs: pd.DataFrame, x: str = "iterations", smoothing: float = 0.0, log_y: bool = False,
           band: str = "min-max", max_points: int = 1200, join_parents: bool = False) -> go.Figure:
    """Fig. 6 for `runs`; `join_parents`: each deepened run's curve starts with its parent's (x: total
    iterations), the parents' scalars read from the store even when they are not among `runs`."""
    names = ["train_error", "test_error"] + {"epochs": ["epoch"], "wall time": ["elapsed_s"]}.get(x, [])
    ids = runs["id"].tolist() if not runs.empty else []
    ancestors = _ancestors(store, runs) if join_parents and ids else pd.DataFrame()
    if not ancestors.empty:
        ids += ancestors["id"].tolist()
    scalars = store.scalars(ids, names) if ids else pd.DataFrame()
    return figures.training_curves(runs, scalars, x=x, smoothing=smoothing, log_y=log_y, band=band,
                                   max_points=max_points, join_parents=join_parents, ancestors=ancestors)


def _ancestors(store: Store, runs: pd.DataFrame, limit: int = 16) -> pd.DataFrame:
    """Rows (config fields as columns, like `store.runs()`) of the parents, and their parents, of the deepened
    runs among `runs` that are not in `runs` themselves."""
    rows: dict[str, dict] = {}
    frontier = figures.parent_links(runs)
    for _ in range(limit):
        nxt = {}
        for ref, _iteration in frontier.values():
            try:
                parent = store.get_run(ref)
            except StoreError:  # deleted or ambiguous: that run's curve is drawn on its own
                continue
            if parent["id"] not in rows and parent["id"] not in set(runs["id"]):
                rows[parent["id"]] = row = {**parent["config"], **parent}
                nxt.update(figures.parent_links(pd.DataFrame([row])))
        if not nxt:
            break
        frontier = nxt
    return pd.DataFrame(list(rows.values()))


def depth(store: Store, runs: pd.DataFrame, reference: bool = False) -> go.Figure:
    return figures.depth_summary(runs, reference=reference)


def layer_profiles(store: Store, runs: pd.DataFrame, metric: str, at: float = 1.0) -> tuple[dict[str, pd.DataFrame], str]:
    """Each run's per-layer `metric` at the recorded step nearest to fraction `at` of its progress so far.

    Returns ({run label: DataFrame(layer, layer_name, value)}, a note saying which steps were used)."""
    out, used = {}, set()
    seeds = runs.groupby("label")["seed"].nunique().to_dict() if not runs.empty else {}
    for _, run in runs.iterrows():
        steps = store.layer_steps(run["id"], metric)
        if not steps:
            continue
        target = at * max(steps)
        step = min(steps, key=lambda s: (abs(s - target), -s))
        df = store.layer_series(run["id"], metric, steps=[step])
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
    return figures.response_profile(profiles, title=title + (f", {note}" if note else ""),
                                    what=what.split(" (")[0] if metric.startswith("response") else what)


def residual_ratios(store: Store, runs: pd.DataFrame, at: float = 1.0) -> go.Figure:
    profiles, _ = layer_profiles(store, runs[runs["kind"] == "residual"] if not runs.empty else runs, "residual_ratio", at)
    return figures.residual_ratio_profile(profiles)


def gradients(store: Store, runs: pd.DataFrame, at: float = 1.0, metric: str = "grad_norm") -> go.Figure:
    """Per-layer weight-gradient norms (`metric` grad_norm), input-gradient norms or update ratios."""
    profiles, note = layer_profiles(store, runs, metric, at)
    title = {"grad_norm": "Gradient norm by layer", "input_grad_norm": "Input-gradient norm by layer",
             "update_ratio": "Update-to-weight ratio by layer"}[metric]
    return figures.gradient_profile(profiles, note, what=LAYER_METRICS[metric], title=title)


def gradient_ratio(store: Store, runs: pd.DataFrame) -> go.Figure:
    series = {}
    seeds = runs.groupby("label")["seed"].nunique().to_dict() if not runs.empty else {}
    for _, run in runs.iterrows():
        df = store.layer_series(run["id"], "grad_norm")
        if not df.empty:
            series[run_label(run, with_seed=seeds.get(run["label"], 1) > 1)] = df
    return figures.gradient_ratio(series)


def gradient_heatmap(store: Store, run: pd.Series | dict) -> go.Figure:
    return figures.gradient_heatmap(store.layer_series(run["id"], "grad_norm"), run_label(run))


def response_evolution(store: Store, run: pd.Series | dict, metric: str = "response_std") -> go.Figure:
    what = LAYER_METRICS.get(metric, metric)
    return figures.response_evolution(store.layer_series(run["id"], metric), run_label(run), what)


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
