"""Is it vanishing gradients? Per-layer gradient norms of plain and residual nets, with and without BN.

The verdict rests on the ratio of the first layer's gradient norm to the last convolution's (the classifier and
shortcut projections left out), at the first recorded window and at the end, beside the training error. Metrics
(PLAN "Layer metrics"): grad_norm (weight gradients, every logging window), and where recorded input_grad_norm
(gradient with respect to each layer's input) and update_ratio (||ΔW|| / ||W|| of an optimizer step).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import comparisons
from ..arm_figures import layer_lines, ratio_over_training
from ..findings import EFFECT, NO_CLEAR, NOT_ENOUGH, Analysis, Finding
from ..registry import Arm, Study, register
from ..stats import MIN_SEEDS, summarise

DEPTHS = {"smoke": (8, 14), "cpu": (20, 56), "paper": (20, 56)}


def name(kind: str, depth: int, norm: str) -> str:
    return f"{'plain' if kind == 'plain' else 'resnet'}-{depth}" + (" (no BN)" if norm == "none" else "")


def grid(budget: str) -> list[Arm]:
    return [Arm(name(k, d, n), dict(kind=k, depth=d, norm=n))
            for n in ("bn", "none") for k in ("plain", "residual") for d in DEPTHS[budget]]


def ends(layer_names: list[str], count: int) -> tuple[int, int]:
    """Indices of the first layer and the last convolution among `count` weight layers in network order: the
    classifier (the last weight layer) and shortcut projections are not part of the chain of 3x3 layers."""
    names = list(layer_names) if len(layer_names) == count else [f"layer {i}" for i in range(count)]
    chain = [i for i, n in enumerate(names[:-1]) if "shortcut" not in n]
    return (chain[0], chain[-1]) if len(chain) >= 2 else (0, max(0, count - 1))


def ratios(df: pd.DataFrame) -> pd.Series:
    """First-layer over last-conv norm at every recorded step of one run's per-layer metric."""
    if df.empty:
        return pd.Series(dtype=float)
    grid_ = df.pivot_table(index="step", columns="layer", values="value").sort_index()
    names = df.drop_duplicates("layer").sort_values("layer")["layer_name"].tolist()
    first, last = ends(names, grid_.shape[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        return grid_.iloc[:, first] / grid_.iloc[:, last]


def run_ratios(data, arm: str, metric: str = "grad_norm", statuses=("done",)) -> list[pd.Series]:
    runs = data.runs(arm, statuses) if not data.members.empty else pd.DataFrame(columns=["id"])
    out = [ratios(data.layer(rid, metric)) for rid in runs["id"]]
    return [r for r in out if len(r)]


def geometric(values) -> dict:
    """Geometric mean of ratios over seeds with the back-transformed 95% t-interval of the mean log10 ratio."""
    logs = [math.log10(v) for v in values if v is not None and v > 0 and math.isfinite(v)]
    s = summarise(logs)
    back = lambda x: 10 ** x if math.isfinite(x) else math.nan  # noqa: E731
    return dict(n=s.n, ratio=back(s.mean), low=back(s.low), high=back(s.high), values=[10 ** v for v in logs])


def direction(g: dict) -> str | None:
    """'larger' / 'smaller' when the interval excludes 1, None when it covers 1 (or is undefined)."""
    if g["n"] < MIN_SEEDS or not math.isfinite(g["low"]):
        return None
    return "larger" if g["low"] > 1 else "smaller" if g["high"] < 1 else None


def fmt(g: dict, parens: bool = True) -> str:
    """'3.02 (95% interval 2.88 to 3.16)', or without parentheses '3.02, 95% interval 2.88 to 3.16'."""
    if not g["n"]:
        return "-"
    if g["n"] < MIN_SEEDS:
        return f"{g['ratio']:.3g} (1 seed)" if parens else f"{g['ratio']:.3g}, 1 seed"
    interval = f"95% interval {g['low']:.3g} to {g['high']:.3g}"
    return f"{g['ratio']:.3g} ({interval})" if parens else f"{g['ratio']:.3g}, {interval}"


def gradient_finding(data, arm: str) -> Finding:
    question = f"Do {arm}'s gradients vanish toward the input?"
    series = run_ratios(data, arm)
    start, end = geometric([s.iloc[0] for s in series]), geometric([s.iloc[-1] for s in series])
    numbers = {"arm": arm, "start": start, "end": end,
               "final_train_error": [100 * v for v in data.finals(arm, "final_train_error")]}
    inputs = run_ratios(data, arm, "input_grad_norm")
    if inputs:
        numbers["input_start"] = geometric([s.iloc[0] for s in inputs])
    err = summarise(data.finals(arm, "final_train_error"))
    if start["n"] < MIN_SEEDS:
        at = comparisons.diverged_at(data.runs(arm, ("diverged",)))
        gone = f"; {len(at)} diverged, at {comparisons.iterations_phrase(at)}" if at else ""
        numbers["diverged_at"] = at
        return Finding(question, NOT_ENOUGH, f"Not enough seeds to tell whether {arm}'s gradients vanish: "
                       f"{start['n']} finished (at least {MIN_SEEDS} needed){gone}.", numbers)
    where = direction(start)
    detail = (f"‖g_first‖/‖g_last‖ {fmt(start)}; at the end {fmt(end)}"
              + (f"; with respect to the layers' inputs at the start {fmt(numbers['input_start'])}" if inputs else "")
              + f"; final training error {100 * err.mean:.1f}% ({start['n']} seeds)")
    if where is None:
        return Finding(question, NO_CLEAR, f"{arm}: at the start, no clear difference between the first layer's and "
                       f"the last convolution's gradient norms: {detail}.", numbers)
    return Finding(question, EFFECT, f"{arm}: at the start, the first layer's gradients are {where} than the last "
                   f"convolution's: {detail}.", numbers)


def synthesis(data, degradation: Finding, deep: str) -> Finding:
    question = f"Is {deep}'s degradation a matter of vanishing gradients?"
    series = run_ratios(data, deep)
    start, end = geometric([s.iloc[0] for s in series]), geometric([s.iloc[-1] for s in series])
    numbers = {"degradation": degradation.numbers, "start": start, "end": end}
    if degradation.outcome == NOT_ENOUGH or start["n"] < MIN_SEEDS:
        return Finding(question, NOT_ENOUGH, f"Not enough seeds to tell: {degradation.numbers.get('n_a', 0)} and "
                       f"{degradation.numbers.get('n_b', 0)} finished runs of the two plain nets.", numbers)
    if not (degradation.outcome == EFFECT and degradation.numbers["difference"] > 0):
        return Finding(question, NO_CLEAR, f"These runs show no clear degradation of {deep} to explain "
                       f"({degradation.text[0].lower() + degradation.text[1:]})", numbers)
    s_dir, e_dir = direction(start), direction(end)
    ratio_text = (f"its first layer's gradient norm is {s_dir + ' than' if s_dir else 'not clearly different from'} its "
                  f"last convolution's at the start (ratio {fmt(start, False)}) and "
                  f"{e_dir + ' than' if e_dir else 'not clearly different from'} it at the end ({fmt(end, False)})")
    d = degradation.numbers
    head = (f"{deep} trains worse than {d['b']} ({d['difference']:+.1f} points, 95% interval {d['low']:+.1f} to "
            f"{d['high']:+.1f}) while {ratio_text}")
    if "smaller" in (s_dir, e_dir):
        return Finding(question, EFFECT, head + ": its early-layer gradients are smaller, so these runs do not rule "
                       "vanishing gradients out.", numbers)
    return Finding(question, EFFECT, head + ": these runs show degradation without vanishing gradients.", numbers)


def analyse(data) -> Analysis:
    shallow, deep = DEPTHS[data.plan.budget]
    degradation = comparisons.compare_arms(data, f"Does plain-{deep} train worse than plain-{shallow}?",
                                      name("plain", deep, "bn"), name("plain", shallow, "bn"))
    findings = [degradation]
    findings += [gradient_finding(data, name(k, deep, n)) for n in ("bn", "none") for k in ("plain", "residual")
                 if data.has_arm(name(k, deep, n))]
    findings.append(synthesis(data, degradation, name("plain", deep, "bn")))
    table = comparisons.arm_table(data)
    ratio_rows = []
    for arm in data.arm_names:
        series = run_ratios(data, arm)
        start, end = geometric([s.iloc[0] for s in series]), geometric([s.iloc[-1] for s in series])
        row = dict(arm=arm, seeds=start["n"], grad_ratio_start=start["ratio"], grad_ratio_end=end["ratio"])
        for metric in ("input_grad_norm", "update_ratio"):
            other = run_ratios(data, arm, metric)
            if other:
                row[f"{metric}_ratio_start"] = geometric([s.iloc[0] for s in other])["ratio"]
        ratio_rows.append(row)
    ratio_table = pd.DataFrame(ratio_rows)
    numbers = {"arms": comparisons.table_numbers(table), "ratios": comparisons.table_numbers(ratio_table)}
    return Analysis(findings, numbers, {"arms": table, "gradient ratios": ratio_table})


def ratio_series(data, arm: str, metric: str = "grad_norm") -> pd.DataFrame:
    series = run_ratios(data, arm, metric, statuses=("done", "diverged", "running"))
    if not series:
        return pd.DataFrame(columns=["step", "ratio", "low", "high"])
    table = pd.concat([np.log10(s.where(s > 0)) for s in series], axis=1)
    return pd.DataFrame({"step": table.index.to_numpy(), "ratio": 10 ** table.mean(axis=1).to_numpy(),
                         "low": 10 ** table.min(axis=1).to_numpy(), "high": 10 ** table.max(axis=1).to_numpy()})


def figures(data) -> dict:
    arms = data.arm_names

    def profiles(metric, when):
        out = {}
        for a in arms:
            df = comparisons.mean_profile(data, a, metric, when)
            if not df.empty:
                out[a] = df
        return out

    out = {
        "ratio": ("First-layer / last-convolution gradient norm over training", ratio_over_training(
            {a: ratio_series(data, a) for a in arms}, "‖g_first‖ / ‖g_last conv‖ (geometric mean over seeds)",
            "ratio")),
        "start": ("Gradient norm per layer at the start", layer_lines(
            profiles("grad_norm", "first"), "Weight-gradient norm per layer, first recorded window", "‖∂L/∂W‖", True)),
        "end": ("Gradient norm per layer at the end", layer_lines(
            profiles("grad_norm", "last"), "Weight-gradient norm per layer, last recorded window", "‖∂L/∂W‖", True)),
    }
    if any(data.recorded(a, "input_grad_norm", ("done", "running")) for a in arms):
        out["input-start"] = ("Input-gradient norm per layer at the start", layer_lines(
            profiles("input_grad_norm", "first"), "‖∂L/∂x‖ per layer (gradient w.r.t. the layer's input), start",
            "‖∂L/∂x‖", True))
    if any(data.recorded(a, "update_ratio", ("done", "running")) for a in arms):
        out["update-start"] = ("Update-to-weight ratio per layer at the start", layer_lines(
            profiles("update_ratio", "first"), "‖ΔW‖ / ‖W‖ per layer, start", "‖ΔW‖ / ‖W‖", True))
        out["update-end"] = ("Update-to-weight ratio per layer at the end", layer_lines(
            profiles("update_ratio", "last"), "‖ΔW‖ / ‖W‖ per layer, end", "‖ΔW‖ / ‖W‖", True))
    out["curves"] = ("Training error over iterations", comparisons.curves_figure(data))
    return out


register(Study(
    id="gradients",
    title="Is it vanishing gradients?",
    question="Do the deep plain net's early-layer gradients vanish, and does that explain why it trains worse?",
    literature=(
        "He et al. (section 4.1): the optimisation difficulty is \"unlikely to be caused by vanishing gradients\": "
        "the nets use BN, which keeps forward signals at non-zero variance, and the backward signals \"exhibit "
        "healthy norms\"; the authors conjecture exponentially low convergence rates, and report that the "
        "degradation persisted with 3x the iterations. With BN, plain nets tend to have exploding rather than "
        "vanishing gradients at initialisation (Yang et al., ICLR 2019). Expect plain-56 with BN to show "
        "early-layer gradients no smaller than late ones while its training error stays above plain-20's; "
        "without BN the gradients of a deep plain net can vanish."
    ),
    grid={b: grid(b) for b in DEPTHS},
    analyse=analyse,
    figures=figures,
    order=60,
))
