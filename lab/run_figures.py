"""Figure builders: plain functions from stored results (pandas DataFrames) to plotly figures.

No Streamlit here: the dashboard pages, the CLI's export and the tests all call these. Errors are plotted in
percent. Every builder returns a figure whose traces hold exactly the plotted numbers, so `figure_data` can
export them as CSV.
"""
from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import hex_to_rgb, qualitative, unlabel_rgb
from plotly.subplots import make_subplots

from .reference import reference_points
from .series import GROUP_FIELDS, aggregate_seeds, downsample_minmax, ema, mean_sd

PALETTE = qualitative.D3 + qualitative.Set2
KIND_TITLES = {"plain": "plain", "residual": "residual (ResNet)"}
X_AXES = {"iterations": "iterations", "epochs": "epochs", "wall time": "wall time (minutes)"}
BANDS = ("min-max", "sd", "none")


def plotly_text(text) -> str:
    """User text (a tag, a label holding one) made safe for a plotly trace name, title or hover template: plotly
    renders a subset of HTML there (a tag could become a live link), and hover templates substitute %{...}.
    Plotly turns the entities back into the characters on screen; `figure_data` does for CSV."""
    return html.escape(str(text), quote=True).replace("%", "&#37;")


def depth_colors(depths) -> dict:
    return {d: PALETTE[i % len(PALETTE)] for i, d in enumerate(sorted(set(int(x) for x in depths)))}


def _rgba(colour: str, alpha: float) -> str:
    """A palette colour ('#1f77b4' or 'rgb(102,194,165)': plotly's palettes have both kinds) with transparency."""
    r, g, b = hex_to_rgb(colour) if colour.startswith("#") else unlabel_rgb(colour)
    return f"rgba({int(r)},{int(g)},{int(b)},{alpha})"


def empty_figure(message: str, height: int = 360) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font=dict(size=15))
    fig.update_layout(xaxis=dict(visible=False), yaxis=dict(visible=False), height=height, template="plotly_white")
    return fig


def groups(runs: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Runs grouped by everything but the seed, in (kind, depth, label) order, each with a display label."""
    if runs.empty:
        return []
    fields = [f for f in GROUP_FIELDS if f in runs.columns]
    text = runs[fields].astype(str)
    # one code per distinct combination of the fields' texts (row-wise string joins cost far more at 1,000 runs)
    codes, _ = pd.factorize(pd.Series(list(zip(*(text[f].to_numpy() for f in fields))), index=runs.index))
    out = []
    for _, g in runs.groupby(codes, sort=False):
        first = g.iloc[0]
        label = str(first.get("label") or f"{first['kind']}-{first['depth']}")
        if first.get("tag"):
            label += f" [{first['tag']}]"
        out.append((label, g))
    labels = [lbl for lbl, _ in out]
    # same label for different experiments (e.g. other lr): add the data set / preset to tell them apart
    for i, (label, g) in enumerate(out):
        if labels.count(label) > 1:
            first = g.iloc[0]
            out[i] = (f"{label} ({first['dataset']}, {first['preset']}, lr {first['lr']:g})", g)
    out.sort(key=lambda t: (str(t[1].iloc[0]["kind"]), int(t[1].iloc[0]["depth"]), t[0]))
    return out


def _x_mapper(series: dict, run_id: str, x: str):
    """Function step -> x value for one run (iterations, epochs or wall-time minutes)."""
    if x == "iterations":
        return lambda steps: np.asarray(steps, dtype=float)
    name = "epoch" if x == "epochs" else "elapsed_s"
    if (run_id, name) not in series:
        return lambda steps: np.full(len(steps), np.nan)
    xs, ys = series[(run_id, name)]
    scale = 1.0 if x == "epochs" else 1 / 60
    return lambda steps: np.interp(np.asarray(steps, float), xs, ys) * scale


def parent_links(runs: pd.DataFrame) -> dict[str, tuple[str, int | None]]:
    """{child run id: (parent id or unique id prefix, the parent's iteration it grew from, or None if not yet
    recorded)} for the deepened runs among `runs`. The parent is the store's `parent_id` where there is one,
    else the config's `deepen_from`; the iteration comes from the child's environment (`env.parent`)."""
    links = {}
    for _, run in runs.iterrows():
        parent = run.get("parent_id") if "parent_id" in runs.columns else None
        if not isinstance(parent, str) or not parent:
            parent = run.get("deepen_from")
        if not isinstance(parent, str) or not parent:
            continue
        env = run.get("env")
        record = env.get("parent") if isinstance(env, dict) else None
        links[run["id"]] = (parent, int(record["iteration"]) if isinstance(record, dict) else None)
    return links


def join_parent_curves(runs: pd.DataFrame, scalars: pd.DataFrame, ancestors: pd.DataFrame | None = None) -> pd.DataFrame:
    """`scalars` with each deepened run's series continued from its parent's: the parent's rows up to the
    iteration the child grew from, then the child's rows shifted by that iteration (x = total iterations);
    cumulative scalars (epoch, elapsed_s) continue from the parent's value there. A parent is matched by id or
    unique id prefix among the runs in `scalars`; runs whose parent is not there are left as they are.
    `ancestors`: rows of parents that are not among `runs`, so that a parent that grew from another run is
    joined to its own parent first."""
    links = parent_links(runs if ancestors is None or ancestors.empty else pd.concat([runs, ancestors], ignore_index=True))
    if not links or scalars.empty:
        return scalars
    ids = list(scalars["run_id"].unique())
    by_run = {rid: g for rid, g in scalars.groupby("run_id", sort=False)}
    done: dict[str, tuple[pd.DataFrame, int]] = {}

    def joined(rid: str, seen: tuple = ()) -> tuple[pd.DataFrame, int]:
        """(rid's joined rows, the total iterations before rid's own step 0)."""
        if rid in done:
            return done[rid]
        own = by_run.get(rid, scalars.iloc[0:0])
        link = links.get(rid)
        matches = [i for i in ids if i.startswith(link[0])] if link else []
        if len(matches) != 1 or matches[0] in seen + (rid,):
            done[rid] = (own, 0)
            return done[rid]
        parent, parent_offset = joined(matches[0], seen + (rid,))
        own_parent = by_run.get(matches[0])
        at = link[1] if link[1] is not None else int(own_parent["step"].max()) if own_parent is not None else 0
        cut = parent_offset + at
        before = parent[parent["step"] <= cut].assign(run_id=rid)
        after = own.assign(step=own["step"] + cut)
        for name in ("epoch", "elapsed_s"):  # cumulative: the child's count continues the parent's
            ref = before[before["name"] == name]
            if not ref.empty:
                mask = after["name"] == name
                after.loc[mask, "value"] = after.loc[mask, "value"] + ref.sort_values("step")["value"].iloc[-1]
        done[rid] = (pd.concat([before, after], ignore_index=True), cut)
        return done[rid]

    parts = [joined(rid)[0] if rid in links else g for rid, g in by_run.items()]
    return pd.concat(parts, ignore_index=True)


def _series_by_run(scalars: pd.DataFrame) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """{(run id, name): (steps, values)} of a long scalars frame, steps ascending, missing values left out (one
    sort of codes: a pandas groupby into thousands of series costs more than the figure)."""
    clean = scalars[scalars["value"].notna()]
    if clean.empty:
        return {}
    runs, run_ids = pd.factorize(clean["run_id"])
    names, name_list = pd.factorize(clean["name"])
    steps, values = clean["step"].to_numpy(float), clean["value"].to_numpy(float)
    order = np.lexsort((steps, names, runs))
    key = runs[order] * len(name_list) + names[order]
    cuts = np.flatnonzero(np.diff(key)) + 1
    run_ids, name_list = np.asarray(run_ids, dtype=object), np.asarray(name_list, dtype=object)
    steps, values = steps[order], values[order]
    return {(run_ids[key[a] // len(name_list)], name_list[key[a] % len(name_list)]): (steps[a:b], values[a:b])
            for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(key)])}


def _seed_mean_line(fig: go.Figure, col: int, curves: list, mappers: list, name: str, group: str, colour: str,
                    style: tuple[float, str], band: str, max_points: int) -> None:
    """One configuration's line in panel `col`: the mean of its seeds' `curves` (each with the mapper of its x
    axis), downsampled to about `max_points` (minima and maxima kept), with a min-max or sd band behind it."""
    width, dash = style
    agg = aggregate_seeds(curves)
    xs = agg["x"].to_numpy(float)
    if mappers:  # epochs or wall time: each seed's own mapping of the steps, averaged
        xs = np.nanmean([f(xs) for f in mappers], axis=0)
    cols = [agg[c].to_numpy(float) for c in ("mean", "min", "max", "sd")]
    xs, (mean, lo, hi, sd) = downsample_minmax(xs, cols, max_points)
    seeds = len(curves)
    if seeds > 1 and band != "none":
        lower, upper = (lo, hi) if band == "min-max" else (mean - sd, mean + sd)
        fig.add_trace(go.Scatter(x=np.concatenate([xs, xs[::-1]]), y=np.concatenate([upper, lower[::-1]]),
                                 fill="toself", fillcolor=_rgba(colour, 0.15), line=dict(width=0),
                                 hoverinfo="skip", showlegend=False, legendgroup=group,
                                 name=f"{name} {band} band"), row=1, col=col)
    fig.add_trace(go.Scatter(
        # a single point draws no line: show it as a marker
        x=xs, y=mean, mode="lines" if len(xs) > 1 else "markers", legendgroup=group,
        name=name + (f" (mean of {seeds})" if seeds > 1 else ""),
        line=dict(color=colour, width=width, dash=dash), marker=dict(color=colour, size=7),
        hovertemplate=f"{name}<br>%{{x:.4g}}: %{{y:.2f}}%<extra></extra>",
    ), row=1, col=col)


def training_curves(
    runs: pd.DataFrame,
    scalars: pd.DataFrame,
    x: str = "iterations",
    smoothing: float = 0.0,
    log_y: bool = False,
    band: str = "min-max",
    max_points: int = 1200,
    title: str = "Training curves: training error (thin, dashed) and test error (bold)",
    join_parents: bool = False,
    ancestors: pd.DataFrame | None = None,
) -> go.Figure:
    """The paper's Fig. 6: error vs x for plain (left) and residual (right) nets on shared axes.

    One colour per depth; seeds of the same configuration are averaged, with a min-max or sd band. Smoothing
    (debiased EMA, training error only: test error points are exact evaluations) is applied to each run's
    series as given (the views give the stored series' bucket means, `lab.buckets`) before seeds are averaged and before downsampling to about `max_points` points per line (minima and
    maxima kept). `join_parents`: a deepened run's curve starts with its parent's (whose scalars must be in
    `scalars`), x counting the total iterations (`join_parent_curves`, with `ancestors`).
    """
    if runs.empty:
        return empty_figure("No runs selected")
    if scalars.empty:
        return empty_figure("No metrics yet: the selected runs have not logged anything")
    if join_parents:
        scalars = join_parent_curves(runs, scalars, ancestors)
        scalars = scalars[scalars["run_id"].isin(set(runs["id"]))]
    kinds = [k for k in ("plain", "residual") if k in set(runs["kind"])] or ["plain", "residual"]
    fig = make_subplots(rows=1, cols=len(kinds), shared_yaxes=True, shared_xaxes=True,
                        subplot_titles=[KIND_TITLES[k] for k in kinds], horizontal_spacing=0.04)
    colours = depth_colors(runs["depth"])
    series = _series_by_run(scalars)
    drawn = set()   # panels (columns) with at least one curve
    for raw_label, g in groups(runs):
        label = plotly_text(raw_label)
        kind, depth = g.iloc[0]["kind"], int(g.iloc[0]["depth"])
        col = kinds.index(kind) + 1
        colour = colours[depth]
        for metric, width, dash, suffix in (("train_error", 1.2, "dash", "train"), ("test_error", 2.6, "solid", "test")):
            curves, mappers = [], []
            for rid in g["id"]:
                if (rid, metric) not in series:
                    continue
                steps, values = series[(rid, metric)]
                # training error is a noisy per-window mean: smooth it; test error is an exact evaluation
                weight = smoothing if metric == "train_error" else 0.0
                curves.append((steps, ema(values * 100, weight)))
                if x != "iterations":
                    mappers.append(_x_mapper(series, rid, x))
            if not curves:
                continue
            _seed_mean_line(fig, col, curves, mappers, f"{label} {suffix}", label, colour, (width, dash), band,
                            max_points)
            drawn.add(col)
    fig.update_yaxes(title_text="error (%)", row=1, col=1)
    fig.update_yaxes(type="log" if log_y else "linear")
    for c in range(1, len(kinds) + 1):
        fig.update_xaxes(title_text=X_AXES.get(x, x), row=1, col=c)
        if c not in drawn:
            fig.add_annotation(text=f"waiting for data: no {kinds[c - 1]} run has logged errors yet",
                               showarrow=False, xref="x domain", yref="y domain", x=0.5, y=0.5, row=1, col=c,
                               font=dict(size=13, color="#666"))
    # showlegend: plotly hides the legend of a single trace, and a lone first curve should still say what it is
    fig.update_layout(title=title, template="plotly_white", height=480, legend=dict(groupclick="togglegroup"),
                      showlegend=True,
                      hovermode="closest", margin=dict(t=80))
    return fig


def depth_summary(runs: pd.DataFrame, reference: bool = False) -> go.Figure:
    """The degradation plot: final training and test error against depth, plain vs residual, mean ± sd over
    seeds (finished runs only). With `reference`, published CIFAR-10 test errors are overlaid, labelled."""
    done = runs[runs["status"] == "done"] if not runs.empty else runs
    if done.empty:
        return empty_figure("No finished runs selected: final errors appear when runs are done")
    fig = make_subplots(rows=1, cols=2, shared_xaxes=True, subplot_titles=["final training error", "final test error"],
                        horizontal_spacing=0.08)
    colours = {"plain": PALETTE[3], "residual": PALETTE[0]}
    table = depth_table(done)
    for kind in ("plain", "residual"):
        t = table[table["kind"] == kind]
        if t.empty:
            continue
        for col, metric in ((1, "train"), (2, "test")):
            # training error dashed with open markers, test error solid with filled ones, as on the curves page
            style = ("dash", "circle-open") if metric == "train" else ("solid", "circle")
            fig.add_trace(go.Scatter(
                x=t["depth"], y=t[f"{metric}_error_mean"], mode="lines+markers", name=f"{kind} ({metric})",
                legendgroup=kind, marker=dict(size=9, color=colours[kind], symbol=style[1]),
                line=dict(color=colours[kind], width=2.5, dash=style[0]),
                error_y=dict(type="data", array=t[f"{metric}_error_sd"], visible=True, thickness=1.5, width=5),
                customdata=t[["seeds"]], hovertemplate=f"{kind}-%{{x}} {metric}: %{{y:.2f}}% ± %{{error_y.array:.2f}} (n=%{{customdata[0]}})<extra></extra>",
            ), row=1, col=col)
    if reference:
        datasets = set(done["dataset"])
        points = reference_points("cifar10")
        symbols = ["diamond", "x", "triangle-up", "square", "star", "cross"]
        sources = list(dict.fromkeys(p["source"] for p in points))
        for i, source in enumerate(sources):
            pts = [p for p in points if p["source"] == source]
            for kind in ("plain", "residual"):
                kp = [p for p in pts if p["kind"] == kind]
                if not kp:
                    continue
                fig.add_trace(go.Scatter(
                    x=[p["depth"] for p in kp], y=[p["error"] for p in kp], mode="markers",
                    name=f"published, CIFAR-10: {source} ({kind})", legendgroup=f"ref-{source}",
                    marker=dict(symbol=symbols[i % len(symbols)], size=10, color=colours[kind], opacity=0.55,
                                line=dict(width=1, color="black")),
                    error_y=dict(type="data", array=[p["sd"] or 0 for p in kp], visible=any(p["sd"] for p in kp)),
                    hovertemplate=f"{source}<br>{kind}-%{{x}}: %{{y:.2f}}% test error (CIFAR-10)<extra></extra>",
                ), row=1, col=2)
        if datasets != {"cifar10"}:
            fig.add_annotation(text=f"published numbers are CIFAR-10; these runs: {', '.join(sorted(datasets))}",
                               xref="paper", yref="paper", x=1, y=-0.22, showarrow=False, xanchor="right",
                               font=dict(size=11, color="#a33"))
    fig.update_xaxes(title_text="depth (layers)")
    fig.update_yaxes(title_text="error (%)", row=1, col=1)
    fig.update_layout(title="Final error vs depth: plain and residual nets", template="plotly_white",
                      height=460, margin=dict(t=80, b=90))
    return fig


def depth_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Finished runs in the shape of the paper's Table 6: one row per (kind, depth, configuration), errors in
    percent as mean and sd over seeds, with the paper's published ResNet test error where there is one."""
    rows = []
    paper = {(p["kind"], p["depth"]): p["error"] for p in reference_points() if "Table 6" in p["source"]}
    for label, g in groups(runs):
        first = g.iloc[0]
        tr_m, tr_s, n = mean_sd(g["final_train_error"].astype(float) * 100)
        te_m, te_s, _ = mean_sd(g["final_test_error"].astype(float) * 100)
        rows.append(dict(
            method=label, kind=first["kind"], depth=int(first["depth"]), dataset=first["dataset"],
            params=int(first["params"]) if pd.notna(first.get("params")) else None, seeds=n,
            train_error_mean=tr_m, train_error_sd=tr_s, test_error_mean=te_m, test_error_sd=te_s,
            paper_test_error=paper.get((first["kind"], int(first["depth"]))) if first["dataset"] == "cifar10" else None,
        ))
    cols = ["method", "kind", "depth", "dataset", "params", "seeds", "train_error_mean", "train_error_sd",
            "test_error_mean", "test_error_sd", "paper_test_error"]
    return pd.DataFrame(rows, columns=cols).sort_values(["kind", "depth"]).reset_index(drop=True)


# --- per-layer views ---------------------------------------------------------------------------------------


def gradient_heatmap(layers: pd.DataFrame, label: str) -> go.Figure:
    """log10 of each layer's gradient norm (rows: layers in network order) over iterations (columns)."""
    label = plotly_text(label)
    if layers.empty:
        return empty_figure(f"{label}: no gradient norms recorded yet")
    grid = layers.pivot_table(index="layer", columns="step", values="value")
    names = layers.drop_duplicates("layer").set_index("layer")["layer_name"].reindex(grid.index)
    z = np.log10(grid.to_numpy(float).clip(min=1e-30))
    fig = go.Figure(go.Heatmap(
        z=z, x=grid.columns.to_numpy(), y=grid.index.to_numpy(), colorscale="Viridis",
        colorbar=dict(title="log10 ‖g‖"), customdata=np.repeat(names.to_numpy()[:, None], grid.shape[1], axis=1),
        hovertemplate="layer %{y} (%{customdata})<br>iteration %{x}<br>log10 ‖g‖ = %{z:.2f}<extra></extra>",
    ))
    fig.update_layout(title=f"Gradient norm per layer over training: {label}", xaxis_title="iterations",
                      yaxis_title="layer (input → output)", template="plotly_white", height=440)
    return fig


def gradient_profile(profiles: dict[str, pd.DataFrame], step_note: str = "", what: str = "‖∂L/∂W‖ (L2)",
                     title: str = "Gradient norm by layer") -> go.Figure:
    """A gradient metric (`what`: the weight-gradient norm by default; input-gradient norms, update ratios)
    against layer index, one line per run (e.g. plain and residual of the same depth), log scale."""
    if not profiles:
        return empty_figure(f"{title}: nothing recorded for the selected runs")
    fig = go.Figure()
    for i, (label, df) in enumerate(profiles.items()):
        label = plotly_text(label)
        df = df.sort_values("layer")
        fig.add_trace(go.Scatter(x=df["layer"], y=df["value"], mode="lines+markers", name=label,
                                 line=dict(color=PALETTE[i % len(PALETTE)], width=2), marker=dict(size=5),
                                 customdata=df[["layer_name"]],
                                 hovertemplate="%{customdata[0]}: %{y:.3g}<extra>" + label + "</extra>"))
    fig.update_layout(title=title + (f" ({step_note})" if step_note else ""),
                      xaxis_title="layer index (input → output)", yaxis_title=what, yaxis_type="log",
                      template="plotly_white", height=420)
    return fig


def gradient_ratio(series: dict[str, pd.DataFrame]) -> go.Figure:
    """First-layer over last-layer gradient norm across training: far below 1 means vanishing gradients."""
    if not series:
        return empty_figure("No gradient norms recorded for the selected runs")
    fig = go.Figure()
    for i, (label, df) in enumerate(series.items()):
        label = plotly_text(label)
        grid = df.pivot_table(index="step", columns="layer", values="value")
        if grid.shape[1] < 2:
            continue
        ratio = grid.iloc[:, 0] / grid.iloc[:, -1]
        fig.add_trace(go.Scatter(x=grid.index, y=ratio, mode="lines", name=label,
                                 line=dict(color=PALETTE[i % len(PALETTE)], width=2)))
    fig.add_hline(y=1, line=dict(color="grey", dash="dot"))
    fig.update_layout(title="First-layer / last-layer gradient norm", xaxis_title="iterations",
                      yaxis_title="‖g_first‖ / ‖g_last‖", yaxis_type="log", template="plotly_white", height=420)
    return fig


def response_profile(profiles: dict[str, pd.DataFrame], title: str = "Layer responses (Fig. 7)",
                     what: str = "std") -> go.Figure:
    """Std of each 3x3 layer's response (or another per-layer value, `what`): top, in network order; bottom,
    sorted by magnitude (descending)."""
    if not profiles:
        return empty_figure("No layer responses recorded for the selected runs")
    fig = make_subplots(rows=2, cols=1, subplot_titles=["layers in network order", "sorted by magnitude"],
                        vertical_spacing=0.14)
    for i, (label, df) in enumerate(profiles.items()):
        label = plotly_text(label)
        df = df.sort_values("layer")
        colour = PALETTE[i % len(PALETTE)]
        values = df["value"].to_numpy(float)
        fig.add_trace(go.Scatter(x=np.arange(1, len(values) + 1), y=values, mode="lines", name=label, legendgroup=label,
                                 line=dict(color=colour, width=2), customdata=df[["layer_name"]],
                                 hovertemplate="%{customdata[0]}: %{y:.3f}<extra>" + label + "</extra>"), row=1, col=1)
        fig.add_trace(go.Scatter(x=np.arange(1, len(values) + 1), y=np.sort(values)[::-1], mode="lines", name=label,
                                 legendgroup=label, showlegend=False, line=dict(color=colour, width=2)), row=2, col=1)
    fig.update_xaxes(title_text="layer index", row=1, col=1)
    fig.update_xaxes(title_text="rank", row=2, col=1)
    fig.update_yaxes(title_text=what, row=1, col=1)
    fig.update_yaxes(title_text=what, row=2, col=1)
    fig.update_layout(title=title, template="plotly_white", height=620)
    return fig


def residual_ratio_profile(profiles: dict[str, pd.DataFrame]) -> go.Figure:
    """||F(x)|| / ||x|| per residual block, in network order: how much each block changes its input."""
    profiles = {k: v for k, v in profiles.items() if not v.empty}
    if not profiles:
        return empty_figure("No residual blocks among the selected runs (plain nets have none)")
    fig = go.Figure()
    for i, (label, df) in enumerate(profiles.items()):
        label = plotly_text(label)
        df = df.sort_values("layer")
        fig.add_trace(go.Scatter(x=df["layer"] + 1, y=df["value"], mode="lines+markers", name=label,
                                 line=dict(color=PALETTE[i % len(PALETTE)], width=2), customdata=df[["layer_name"]],
                                 hovertemplate="%{customdata[0]}: %{y:.3f}<extra>" + label + "</extra>"))
    fig.update_layout(title="Residual ratio ‖F(x)‖ / ‖x‖ per block", xaxis_title="residual block",
                      yaxis_title="‖F(x)‖ / ‖x‖", template="plotly_white", height=420)
    return fig


def response_evolution(layers: pd.DataFrame, label: str, what: str = "response std") -> go.Figure:
    """A per-layer metric at each recorded step, one line per step, early steps light and late steps dark."""
    label = plotly_text(label)
    if layers.empty:
        return empty_figure(f"{label}: nothing recorded yet")
    steps = sorted(layers["step"].unique())
    if len(steps) > 12:
        steps = [steps[int(round(i))] for i in np.linspace(0, len(steps) - 1, 12)]
    fig = go.Figure()
    for i, step in enumerate(steps):
        df = layers[layers["step"] == step].sort_values("layer")
        shade = int(220 - 200 * (i / max(1, len(steps) - 1)))
        fig.add_trace(go.Scatter(x=df["layer"] + 1, y=df["value"], mode="lines", name=f"iteration {step}",
                                 line=dict(color=f"rgb({shade},{shade},255)" if shade > 60 else "rgb(20,20,140)", width=1.8)))
    fig.update_layout(title=f"{what} per layer over training: {label}", xaxis_title="layer index", yaxis_title=what,
                      template="plotly_white", height=420)
    return fig


# --- export helpers -----------------------------------------------------------------------------------------

SIZES = {"column": (700, 480), "wide": (1400, 520), "slide": (1280, 720)}


def print_style(fig: go.Figure, size: str = "column") -> go.Figure:
    """A copy styled for print: white background, black text, readable fonts, legend kept, fixed size.

    `column` fits one column of a two-column paper at 3.5 in (export at scale 2 or more for 300 dpi);
    `wide` spans both columns; `slide` is 16:9."""
    width, height = SIZES[size]
    out = go.Figure(fig)
    out.update_layout(template="simple_white", width=width, height=height, font=dict(family="Arial", size=14, color="black"),
                      title=dict(font=dict(size=16)), legend=dict(font=dict(size=11)), paper_bgcolor="white",
                      plot_bgcolor="white")
    out.update_xaxes(showgrid=True, gridcolor="#e5e5e5", ticks="outside")
    out.update_yaxes(showgrid=True, gridcolor="#e5e5e5", ticks="outside")
    return out


def figure_data(fig: go.Figure) -> pd.DataFrame:
    """The plotted numbers of every trace as a long table: trace, x, y (and error / z where present)."""
    rows = []
    for trace in fig.data:
        name = html.unescape(trace.name) if trace.name else trace.type  # names are escaped for plotly
        if trace.type in ("heatmap", "contour"):  # grids: one row per cell
            z = np.asarray(trace.z, dtype=float)
            xs = np.asarray(trace.x) if trace.x is not None else np.arange(z.shape[1])
            ys = np.asarray(trace.y) if trace.y is not None else np.arange(z.shape[0])
            for i, yv in enumerate(ys):
                for j, xv in enumerate(xs):
                    rows.append(dict(trace=name, x=xv, y=yv, z=z[i, j], error=None))
            continue
        xs = list(trace.x) if trace.x is not None else []
        ys = list(trace.y) if trace.y is not None else []
        err = list(trace.error_y.array) if getattr(trace, "error_y", None) is not None and trace.error_y.array is not None else None
        for i, (xv, yv) in enumerate(zip(xs, ys)):
            rows.append(dict(trace=name, x=xv, y=yv, z=None, error=err[i] if err and i < len(err) else None))
    df = pd.DataFrame(rows, columns=["trace", "x", "y", "z", "error"])
    return df.dropna(axis=1, how="all")
