"""Figures of the analyses: plain functions from result dicts (as `run_analysis` returns and `load_results`
gives back) to plotly figures, like `lab.run_figures`. Errors are plotted in percent. Every trace holds exactly
the plotted numbers, so `lab.run_figures.figure_data` exports them as CSV.
"""
from __future__ import annotations

import math
import statistics

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..run_figures import KIND_TITLES, PALETTE, empty_figure

KIND_ORDER = ("plain", "residual")
KIND_COLOURS = {"plain": PALETTE[3], "residual": PALETTE[0]}  # the depth figure's colours
AT_DASH = {"init": "dot", "checkpoint": "solid"}


def _order(results: list[dict]) -> list[dict]:
    return sorted(results, key=lambda r: (KIND_ORDER.index(r["run"]["kind"]) if r["run"]["kind"] in KIND_ORDER else 9,
                                          r["run"]["depth"], str(r["run"]["label"]), r["run"]["seed"],
                                          r["run"]["at"] != "init", r["run"]["run_id"]))


def labels(results: list[dict]) -> list[str]:
    """A display name per result: the run's label, with the seed and 'at init' only where needed to tell
    results apart."""
    base = [str(r["run"]["label"]) for r in results]
    out = []
    for r, b in zip(results, base):
        name = b
        if base.count(b) > 1 and len({x["run"]["seed"] for x, y in zip(results, base) if y == b}) > 1:
            name += f" seed {r['run']['seed']}"
        out.append(name)
    for i, r in enumerate(results):
        if out.count(out[i]) > 1 and r["run"]["at"] == "init":
            out[i] += " at init"
    for i, r in enumerate(results):
        if out.count(out[i]) > 1:
            out[i] += f" ({r['run']['run_id']})"
    return out


def _pct(values) -> list:
    return [None if v is None else 100 * v for v in values]


def _by_kind(results: list[dict], title: str, x_title: str, y_title: str, height: int = 440):
    """Subplots side by side, plain left and residual right (only the kinds present)."""
    kinds = [k for k in KIND_ORDER if any(r["run"]["kind"] == k for r in results)] or list(KIND_ORDER)
    fig = make_subplots(rows=1, cols=len(kinds), shared_yaxes=True, subplot_titles=[KIND_TITLES[k] for k in kinds],
                        horizontal_spacing=0.05)
    for c in range(1, len(kinds) + 1):
        fig.update_xaxes(title_text=x_title, row=1, col=c)
    fig.update_yaxes(title_text=y_title, row=1, col=1)
    fig.update_layout(title=title, template="plotly_white", height=height, margin=dict(t=80))
    return fig, kinds


def _integer_ticks(fig: go.Figure, largest: int) -> None:
    """Ticks on whole numbers only (units and counts), about a dozen at most."""
    fig.update_xaxes(tick0=0, dtick=max(1, math.ceil(largest / 12)))


def _empty(results, name: str, command: str) -> go.Figure | None:
    if not results:
        return empty_figure(f"No {name} results for the selected runs (python -m lab {command} RUN)")
    return None


# --- lesions (Veit et al.) --------------------------------------------------------------------------------


def lesion_units(results: list[dict]) -> go.Figure:
    """Veit Fig. 3: test error with each single unit deleted, against the unit's position, plain and residual
    side by side; shape-keeping units as a line, downsampling units (Veit's exception: deleting them hurts) as
    open diamonds, each kind its own trace; a dashed line per net at its error with nothing deleted. Units that
    cannot be deleted (plain units that change the shape) are left out and named in a note."""
    from .lesion import DOWNSAMPLING, SHAPE_KEEPING, unit_kind

    empty = _empty(results, "lesion", "lesion")
    if empty:
        return empty
    results = _order(results)
    fig, kinds = _by_kind(results, "Test error with one unit deleted (Veit et al. Fig. 3): shape-keeping units "
                          "(line) and downsampling units (◇)", "deleted unit (input → output)", "test error (%)")
    notes = []
    for i, (r, label) in enumerate(zip(results, labels(results))):
        col = kinds.index(r["run"]["kind"]) + 1
        colour = PALETTE[i % len(PALETTE)]
        table, errors = r["unit_table"], r["single"]["error"]
        for unit, name, style in ((SHAPE_KEEPING, label, dict(mode="lines+markers", marker=dict(size=6))),
                                  (DOWNSAMPLING, f"{label}: downsampling units",
                                   dict(mode="markers", marker=dict(size=11, symbol="diamond-open", line=dict(width=2))))):
            kept = [(row, e) for row, e in zip(table, errors) if e is not None and unit_kind(row) == unit]
            if not kept and unit == DOWNSAMPLING:
                continue
            fig.add_trace(go.Scatter(
                x=[row["index"] + 1 for row, _ in kept], y=_pct(e for _, e in kept), name=name, legendgroup=label,
                line=dict(color=colour, width=2), customdata=[[row["name"], row["stage"] + 1, unit] for row, _ in kept],
                hovertemplate="%{customdata[0]} (stage %{customdata[1]}, %{customdata[2]}) deleted: %{y:.2f}%<extra>"
                              + label + "</extra>", **style,
            ), row=1, col=col)
        n = len(table)
        fig.add_trace(go.Scatter(
            x=[1, n], y=_pct([r["baseline"]["error"]] * 2), mode="lines", name=f"{label}: nothing deleted",
            legendgroup=label, line=dict(color=colour, width=1.2, dash="dash"),
            hovertemplate="nothing deleted: %{y:.2f}%<extra>" + label + "</extra>",
        ), row=1, col=col)
        fixed = [str(row["index"] + 1) for row in table if not row["deletable"]]
        if fixed:
            notes.append(f"{label}: units {', '.join(fixed)} change the shape and cannot be deleted")
    _integer_ticks(fig, max(len(r["unit_table"]) for r in results))
    if notes:
        fig.add_annotation(text="<br>".join(notes), xref="paper", yref="paper", x=0, y=-0.2, showarrow=False,
                           xanchor="left", yanchor="top", align="left", font=dict(size=11, color="#555"))
        fig.update_layout(margin=dict(b=90 + 14 * len(notes)))
    return fig


def lesion_deleted(results: list[dict]) -> go.Figure:
    """Veit Fig. 5a: test error against the number of shape-keeping units deleted at once (k = 0 is the intact
    net; the same candidates in a plain net and its residual twin), mean over random sets of k with the sd as
    error bars, plain and residual side by side. Results of format 1 drew their sets from every deletable unit
    (a ResNet's downsampling ones too): their traces say so."""
    empty = _empty(results, "lesion", "lesion")
    if empty:
        return empty
    results = _order(results)
    fig, kinds = _by_kind(results, "Test error with k shape-keeping units deleted (Veit et al. Fig. 5a)",
                          "shape-keeping units deleted at once (k)", "test error (%)")
    for i, (r, label) in enumerate(zip(results, labels(results))):
        d = r["deleted"]
        name = label if d.get("units") == "shape-keeping" else f"{label} (sets from every deletable unit)"
        fig.add_trace(go.Scatter(
            x=[0] + d["k"], y=_pct([r["baseline"]["error"]] + d["error_mean"]), mode="lines+markers", name=name,
            line=dict(color=PALETTE[i % len(PALETTE)], width=2), marker=dict(size=6),
            error_y=dict(type="data", array=_pct([0.0] + d["error_sd"]), visible=True, thickness=1.2, width=3),
            customdata=[[1]] + [[n] for n in d["sets"]],
            hovertemplate="k=%{x}: %{y:.2f}% ± %{error_y.array:.2f} (%{customdata[0]} sets)<extra>" + label + "</extra>",
        ), row=1, col=kinds.index(r["run"]["kind"]) + 1)
    _integer_ticks(fig, max(len(r["deleted"]["k"]) for r in results))
    return fig


def lesion_reordered(results: list[dict]) -> go.Figure:
    """Veit Fig. 5b: test error against the Kendall tau of the unit order after random swaps of same-shape
    units (tau 1 is the trained order), mean over random orders with the sd as error bars."""
    results = [r for r in results if r.get("reordered") and r["reordered"]["swaps"]]
    empty = _empty(results, "reordering", "lesion --reorder")
    if empty:
        return empty
    results = _order(results)
    fig, kinds = _by_kind(results, "Test error with units reordered (Veit et al. Fig. 5b)",
                          "Kendall tau of the unit order (1: as trained)", "test error (%)")
    for i, (r, label) in enumerate(zip(results, labels(results))):
        o = r["reordered"]
        fig.add_trace(go.Scatter(
            x=[1.0] + o["kendall_tau"], y=_pct([r["baseline"]["error"]] + o["error_mean"]), mode="lines+markers",
            name=label, line=dict(color=PALETTE[i % len(PALETTE)], width=2), marker=dict(size=6),
            error_y=dict(type="data", array=_pct([0.0] + o["error_sd"]), visible=True, thickness=1.2, width=3),
            customdata=[[0]] + [[s] for s in o["swaps"]],
            hovertemplate="%{customdata[0]} swaps, tau %{x:.2f}: %{y:.2f}%<extra>" + label + "</extra>",
        ), row=1, col=kinds.index(r["run"]["kind"]) + 1)
    fig.update_xaxes(autorange="reversed")
    return fig


# --- loss landscape (Li et al.) ---------------------------------------------------------------------------


def landscape_1d(results: list[dict], log_loss: bool = True) -> go.Figure:
    """1-D slices of several runs overlaid: training loss (left, log scale by default) and training error
    (right) against the step along each run's filter-normalised direction. Plain nets dashed."""
    results = [r for r in results if r.get("dimensions") == 1]
    empty = _empty(results, "1-D landscape", "landscape")
    if empty:
        return empty
    results = _order(results)
    fig = make_subplots(rows=1, cols=2, subplot_titles=["training loss", "training error"], horizontal_spacing=0.09)
    for i, (r, label) in enumerate(zip(results, labels(results))):
        colour = PALETTE[i % len(PALETTE)]
        dash = "dash" if r["run"]["kind"] == "plain" else "solid"
        for col, key, values in ((1, "loss", r["loss"]), (2, "error", _pct(r["error"]))):
            fig.add_trace(go.Scatter(
                x=r["alpha"], y=values, mode="lines+markers", name=label if col == 1 else f"{label} error",
                legendgroup=label, showlegend=col == 1, line=dict(color=colour, width=2, dash=dash),
                marker=dict(size=4),
                hovertemplate="α=%{x:.2f}: " + ("%{y:.4g}" if key == "loss" else "%{y:.2f}%") + "<extra>" + label + "</extra>",
            ), row=1, col=col)
    images = sorted({r["images"] for r in results})
    fig.update_xaxes(title_text="step along the direction (filter-normalised)")
    fig.update_yaxes(title_text="cross-entropy (nats)", type="log" if log_loss else "linear", row=1, col=1)
    fig.update_yaxes(title_text="error (%)", row=1, col=2)
    fig.update_layout(title=f"Loss landscape, 1-D slices (Li et al.) on {', '.join(map(str, images))} training images",
                      template="plotly_white", height=440, margin=dict(t=80))
    return fig


def landscape_2d(results: list[dict], max_nets: int = 4) -> go.Figure:
    """2-D slices as contour maps of log10 of the training loss, one panel per run (plain first), on a shared
    colour scale; the marker at (0, 0) is the trained weights."""
    results = [r for r in results if r.get("dimensions") == 2]
    empty = _empty(results, "2-D landscape", "landscape --2d")
    if empty:
        return empty
    results = _order(results)[:max_nets]
    names = labels(results)
    fig = make_subplots(rows=1, cols=len(results), subplot_titles=names, horizontal_spacing=0.06)
    grids = [[[math.log10(v) if v is not None and v > 0 else None for v in row] for row in r["loss"]] for r in results]
    flat = [v for g in grids for row in g for v in row if v is not None]
    lo, hi = (min(flat), max(flat)) if flat else (0.0, 1.0)
    for i, (r, label, z) in enumerate(zip(results, names, grids)):
        fig.add_trace(go.Contour(
            x=r["alpha"], y=r["beta"], z=z, name=f"{label} log10 loss", zmin=lo, zmax=hi, colorscale="Viridis",
            contours=dict(showlabels=True, labelfont=dict(size=9, color="white")), ncontours=20,
            showscale=i == 0, colorbar=dict(title="log10 loss"),
            hovertemplate="α=%{x:.2f}, β=%{y:.2f}: log10 loss %{z:.3f}<extra>" + label + "</extra>",
        ), row=1, col=i + 1)
        fig.add_trace(go.Scatter(x=[0.0], y=[0.0], mode="markers", name=f"{label} weights", showlegend=False,
                                 marker=dict(symbol="x", size=9, color="white", line=dict(width=1, color="black")),
                                 hoverinfo="skip"), row=1, col=i + 1)
        fig.update_xaxes(title_text="α", row=1, col=i + 1)
    fig.update_yaxes(title_text="β", row=1, col=1)
    fig.update_layout(title="Loss landscape, 2-D slices (Li et al.): log10 training loss", template="plotly_white",
                      height=460, margin=dict(t=90))
    return fig


# --- shattered gradients (Balduzzi et al.) --------------------------------------------------------------


BN_NAMES = {"recalibrated": "BN recalibrated", "running": "BN (0, 1): the identity", "none": "no BN"}


def _bn(result: dict) -> str:
    """The BN statistics a result was made with (results that do not say used the running statistics)."""
    from .options import result_bn_statistics

    return result_bn_statistics(result)


def _bn_note(results: list[dict]) -> str:
    """One line saying which BN statistics the results were made with, at init and trained."""
    parts = []
    for at, where in (("init", "at init"), ("checkpoint", "trained")):
        found = sorted({_bn(r) for r in results if r["run"]["at"] == at})
        if not found:
            continue
        words = {"recalibrated": "BN running statistics recalibrated on training batches",
                 "running": ("BN running statistics (0, 1), so every BN is the identity" if at == "init"
                             else "BN running statistics as trained"),
                 "none": "nets without BN"}
        parts.append(f"{where}: " + "; ".join(words[b] for b in found))
    return " · ".join(parts)


def _annotate(fig: go.Figure, text: str) -> None:
    fig.add_annotation(text=text, xref="paper", yref="paper", x=0, y=1.0, yanchor="bottom", xanchor="left",
                       showarrow=False, font=dict(size=11, color="#555"))


def shatter_distance(results: list[dict], log_x: bool = True) -> go.Figure:
    """Correlation of input gradients against the distance between inputs (fraction of the line), one line per
    net; dotted at initialisation, solid trained. Balduzzi et al.'s references: white noise (correlation 0 at
    every distance: deep plain nets) and Brownian-motion gradients (brown noise, a random walk along the line:
    shallow nets). A note says which BN statistics the results used; results at init made with a fresh net's
    (0, 1) statistics are named so."""
    from .shatter import brownian_reference

    empty = _empty(results, "gradient shattering", "shatter")
    if empty:
        return empty
    results = _order(results)
    fig = go.Figure()
    for i, (r, label) in enumerate(zip(results, labels(results))):
        if r["run"]["at"] == "init" and _bn(r) != "recalibrated":
            label += f" ({BN_NAMES[_bn(r)]})"
        fig.add_trace(go.Scatter(
            x=r["distance_t"], y=r["correlation"], mode="lines", name=label,
            line=dict(color=PALETTE[i % len(PALETTE)], width=2, dash=AT_DASH.get(r["run"]["at"], "solid")),
            hovertemplate="distance %{x:.4f}: correlation %{y:.3f}<extra>" + label + "</extra>",
        ))
    points = max(results, key=lambda r: len(r["distance_t"]))
    x = points["distance_t"]
    fig.add_trace(go.Scatter(x=x, y=brownian_reference(len(x) + 1), mode="lines",
                             name="Brownian-motion gradients (brown noise; Balduzzi et al.)",
                             line=dict(color="grey", width=1.5, dash="dash"),
                             hovertemplate="random walk: %{y:.3f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[x[0], x[-1]], y=[0.0, 0.0], mode="lines", name="white noise (Balduzzi et al.)",
                             line=dict(color="grey", width=1.5, dash="dot"), hoverinfo="skip"))
    fig.update_layout(title="Gradient correlation vs input distance (Balduzzi et al.)",
                      xaxis_title="distance between inputs (fraction of the line)", yaxis_title="correlation",
                      xaxis_type="log" if log_x else "linear", template="plotly_white", height=460,
                      margin=dict(t=100))
    _annotate(fig, _bn_note(results))
    return fig


def shatter_depth(results: list[dict]) -> go.Figure:
    """The summary correlation (at the results' fixed distance) against depth: one line per kind, state
    (initialisation dotted, trained solid) and BN statistics, mean ± sd over seeds at each depth, with
    Balduzzi et al.'s 1/sqrt(L) law for residual nets with BN drawn through the shallowest residual net at init.
    A note says which BN statistics the results used."""
    empty = _empty(results, "gradient shattering", "shatter")
    if empty:
        return empty
    fig = go.Figure()
    distances = sorted({round(r["summary"]["distance_t"], 6) for r in results})
    anchor = None
    for kind in KIND_ORDER:
        for at in ("init", "checkpoint"):
            for bn in ("recalibrated", "running", "none"):
                group = [r for r in results if r["run"]["kind"] == kind and r["run"]["at"] == at and _bn(r) == bn
                         and r["summary"]["correlation"] is not None]
                if not group:
                    continue
                depths = sorted({r["run"]["depth"] for r in group})
                per = [[r["summary"]["correlation"] for r in group if r["run"]["depth"] == d] for d in depths]
                means = [statistics.fmean(v) for v in per]
                name = f"{kind} at init, {BN_NAMES[bn]}" if at == "init" else f"{kind} trained"
                fig.add_trace(go.Scatter(
                    x=depths, y=means, mode="lines+markers", name=name,
                    line=dict(color=KIND_COLOURS[kind], width=2.5 if bn != "running" or at != "init" else 1.2,
                              dash=AT_DASH[at]), marker=dict(size=8),
                    error_y=dict(type="data", array=[statistics.stdev(v) if len(v) > 1 else 0.0 for v in per],
                                 visible=True, thickness=1.2, width=4),
                    customdata=[[len(v)] for v in per],
                    hovertemplate=name + " depth %{x}: %{y:.3f} (n=%{customdata[0]})<extra></extra>",
                ))
                if kind == "residual" and at == "init" and bn == "recalibrated" and means[0] > 0:
                    anchor = (depths, means[0])
    if anchor is not None and len(anchor[0]) > 1:
        depths, first = anchor
        fig.add_trace(go.Scatter(
            x=depths, y=[first * math.sqrt(depths[0] / d) for d in depths], mode="lines",
            name="∝ 1/√L (Balduzzi et al., residual with BN)", line=dict(color="grey", width=1.5, dash="dash"),
            hovertemplate="1/√L through the shallowest: %{y:.3f}<extra></extra>"))
    at_text = ", ".join(f"{d:.4g}" for d in distances)
    fig.update_layout(title=f"Gradient correlation at distance {at_text} of the line vs depth",
                      xaxis_title="depth (layers)", yaxis_title="correlation", template="plotly_white", height=460,
                      margin=dict(t=100))
    _annotate(fig, _bn_note(results))
    return fig
