"""Figure builders for the studies: plain functions from per-arm numbers to plotly figures (no store, no UI).

One colour per arm, in the study's order. Every trace holds exactly the plotted numbers, so
`lab.run_figures.figure_data` exports them as CSV (error bars are the half-widths of 95% t-intervals over seeds).
The studies also use lab.run_figures' builders where they fit (training curves, error vs depth, layer profiles).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..run_figures import PALETTE, _rgba, empty_figure
from ..series import aggregate_seeds, downsample_minmax, ema
from .stats import summarise


def arm_colours(arms) -> dict[str, str]:
    return {a: PALETTE[i % len(PALETTE)] for i, a in enumerate(arms)}


def arm_curves(curves: dict[str, list[tuple[np.ndarray, np.ndarray]]], title: str, smoothing: float = 0.6,
               percent: bool = True, ytitle: str = "training error (%)", target: float | None = None,
               max_points: int = 600, log_y: bool = False) -> go.Figure:
    """A scalar over iterations, one line per arm (mean over seeds of each run's EMA-smoothed series) with a
    min-max band across seeds; `target` (same units as the values) draws the speed questions' target level."""
    curves = {arm: c for arm, c in curves.items() if c}
    if not curves:
        return empty_figure("No metrics yet: these runs have not logged anything")
    colours = arm_colours(curves)
    scale = 100.0 if percent else 1.0
    fig = go.Figure()
    x_max = 0.0
    for arm, runs in curves.items():
        agg = aggregate_seeds([(x, ema(y * scale, smoothing)) for x, y in runs])
        xs, (mean, lo, hi) = downsample_minmax(agg["x"].to_numpy(float),
                                               [agg[c].to_numpy(float) for c in ("mean", "min", "max")], max_points)
        x_max = max(x_max, float(xs.max()) if len(xs) else 0.0)
        if len(runs) > 1:
            fig.add_trace(go.Scatter(x=np.concatenate([xs, xs[::-1]]), y=np.concatenate([hi, lo[::-1]]), fill="toself",
                                     fillcolor=_rgba(colours[arm], 0.15), line=dict(width=0), hoverinfo="skip",
                                     showlegend=False, legendgroup=arm, name=f"{arm} min-max band"))
        name = arm + (f" (mean of {len(runs)})" if len(runs) > 1 else "")
        fig.add_trace(go.Scatter(x=xs, y=mean, mode="lines", name=name, legendgroup=arm,
                                 line=dict(color=colours[arm], width=2),
                                 hovertemplate=f"{arm}<br>iteration %{{x}}: %{{y:.3g}}<extra></extra>"))
    if target is not None and x_max > 0:
        fig.add_trace(go.Scatter(x=[0, x_max], y=[target * scale, target * scale], mode="lines", name="target",
                                 line=dict(color="grey", dash="dot", width=1.5)))
    fig.update_layout(title=title, xaxis_title="iterations", yaxis_title=ytitle, template="plotly_white", height=440,
                      yaxis_type="log" if log_y else "linear", hovermode="closest")
    return fig


def arm_finals(values: dict[str, dict[str, list[float]]], title: str, percent: bool = True,
               metrics: dict[str, str] | None = None) -> go.Figure:
    """Final values per arm: a marker at the mean over seeds with its 95% t-interval, and each seed as a dot.

    `values` is {metric key: {arm: [value per seed]}}, `metrics` {metric key: subplot title}."""
    metrics = metrics or {k: k for k in values}
    if not any(v for per_arm in values.values() for v in per_arm.values()):
        return empty_figure("No finished runs yet: final values appear when runs are done")
    scale = 100.0 if percent else 1.0
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=list(metrics.values()), horizontal_spacing=0.08)
    arms = list(dict.fromkeys(a for per_arm in values.values() for a in per_arm))
    colours = arm_colours(arms)
    for col, key in enumerate(metrics, start=1):
        per_arm = values.get(key, {})
        for arm in arms:
            v = [x * scale for x in per_arm.get(arm, [])]
            if not v:
                continue
            s = summarise(v)
            half = (s.high - s.mean) if s.n > 1 and np.isfinite(s.high) else 0.0
            fig.add_trace(go.Scatter(
                x=[arm], y=[s.mean], mode="markers", name=f"{arm}: mean", legendgroup=arm, showlegend=col == 1,
                marker=dict(size=12, color=colours[arm], symbol="diamond"),
                error_y=dict(type="data", array=[half], visible=True, thickness=1.5, width=6),
                hovertemplate=f"{arm}: mean %{{y:.3g}} ± %{{error_y.array:.2g}} (95% interval, n={s.n})<extra></extra>",
            ), row=1, col=col)
            fig.add_trace(go.Scatter(
                x=[arm] * len(v), y=v, mode="markers", name=f"{arm}: seeds", legendgroup=arm, showlegend=False,
                marker=dict(size=6, color=colours[arm], opacity=0.55, line=dict(width=1, color="black")),
                hovertemplate=f"{arm} seed: %{{y:.3g}}<extra></extra>",
            ), row=1, col=col)
    fig.update_yaxes(title_text="%" if percent else "value", row=1, col=1)
    fig.update_layout(title=title, template="plotly_white", height=440, margin=dict(t=80, b=120))
    fig.update_xaxes(tickangle=-30)
    return fig


def layer_lines(profiles: dict[str, pd.DataFrame], title: str, ytitle: str, log_y: bool = False,
                xtitle: str = "layer index (input → output)") -> go.Figure:
    """A per-layer quantity, one line per arm (DataFrames with layer, layer_name, value)."""
    profiles = {k: v for k, v in profiles.items() if v is not None and not v.empty}
    if not profiles:
        return empty_figure("Not recorded by these runs")
    colours = arm_colours(profiles)
    fig = go.Figure()
    for label, df in profiles.items():
        df = df.sort_values("layer")
        fig.add_trace(go.Scatter(x=df["layer"] + 1, y=df["value"], mode="lines+markers", name=label,
                                 line=dict(color=colours[label], width=2), marker=dict(size=4),
                                 customdata=df[["layer_name"]],
                                 hovertemplate="%{customdata[0]}: %{y:.3g}<extra>" + label + "</extra>"))
    fig.update_layout(title=title, xaxis_title=xtitle, yaxis_title=ytitle, yaxis_type="log" if log_y else "linear",
                      template="plotly_white", height=420)
    return fig


def ratio_over_training(series: dict[str, pd.DataFrame], title: str, ytitle: str) -> go.Figure:
    """A ratio over iterations per arm: geometric mean over seeds (DataFrames with step, ratio, low, high: the
    min and max over seeds), log scale, with the ratio 1 drawn as a dotted line."""
    series = {k: v for k, v in series.items() if v is not None and not v.empty}
    if not series:
        return empty_figure("Not recorded by these runs")
    colours = arm_colours(series)
    fig = go.Figure()
    for label, df in series.items():
        if (df["high"] > df["low"]).any():
            fig.add_trace(go.Scatter(x=np.concatenate([df["step"], df["step"][::-1]]),
                                     y=np.concatenate([df["high"], df["low"][::-1]]), fill="toself",
                                     fillcolor=_rgba(colours[label], 0.15), line=dict(width=0), hoverinfo="skip",
                                     showlegend=False, legendgroup=label, name=f"{label} min-max band"))
        fig.add_trace(go.Scatter(x=df["step"], y=df["ratio"], mode="lines", name=label, legendgroup=label,
                                 line=dict(color=colours[label], width=2)))
    fig.add_hline(y=1, line=dict(color="grey", dash="dot"))
    fig.update_layout(title=title, xaxis_title="iterations", yaxis_title=ytitle, yaxis_type="log",
                      template="plotly_white", height=420)
    return fig


def speed(iterations: dict[str, list[int | None]], totals: dict[str, int], target: float, title: str) -> go.Figure:
    """Iterations until each seed first reached the target training error, per arm; a seed that never reached it
    is drawn as a cross at its run's last iteration."""
    if not any(iterations.values()):
        return empty_figure("No finished runs yet")
    colours = arm_colours(iterations)
    fig = go.Figure()
    for arm, its in iterations.items():
        reached = [i for i in its if i is not None]
        missed = len(its) - len(reached)
        if reached:
            fig.add_trace(go.Scatter(x=[arm] * len(reached), y=reached, mode="markers", name=f"{arm}: reached",
                                     marker=dict(size=9, color=colours[arm])))
        if missed:
            fig.add_trace(go.Scatter(x=[arm] * missed, y=[totals.get(arm, 0)] * missed, mode="markers",
                                     name=f"{arm}: never reached (drawn at the last iteration)",
                                     marker=dict(size=11, color=colours[arm], symbol="x")))
    fig.update_layout(title=title + f" (target: {100 * target:.0f}% training error)", yaxis_title="iterations",
                      template="plotly_white", height=420, margin=dict(b=120))
    fig.update_xaxes(tickangle=-30)
    return fig


def only_depths(fig: go.Figure, depths, prefix: str = "published") -> go.Figure:
    """Keep only the points at `depths` in the traces whose name starts with `prefix` (the published numbers
    lab.run_figures.depth_summary overlays), dropping traces left empty: published depths the study did not run (1202
    layers, say) would otherwise squeeze its own points into a corner."""
    keep = {float(d) for d in depths}
    data = []
    for trace in fig.data:
        if not (trace.name or "").startswith(prefix):
            data.append(trace)
            continue
        idx = [i for i, x in enumerate(trace.x) if float(x) in keep]
        if not idx:
            continue
        trace.x = [trace.x[i] for i in idx]
        trace.y = [trace.y[i] for i in idx]
        if trace.error_y is not None and trace.error_y.array is not None:
            trace.error_y.array = [trace.error_y.array[i] for i in idx]
        data.append(trace)
    fig.data = data
    return fig
