"""Loss landscapes (Li et al. 2018): 1-D slices along filter-normalised random directions around the trained
weights of plain and residual nets.

Each trained run gets a landscape job (lab.analysis.landscape: training loss in eval mode on the first M training
images, at evenly spaced steps over [-span, span]). Two numbers per slice:
- flatness: log10 of the loss at ±span/2 (mean of the two sides) over the loss at the weights; smaller is a
  flatter, wider basin;
- non-convexity: the fraction of interior points where the loss curve bends down (negative second difference);
  0 for a convex-looking slice, larger for a chaotic one.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ...analysis.result_figures import landscape_1d
from ...reference import cite
from .. import comparisons
from ..findings import Analysis, Metric
from ..registry import Arm, Study, register

DEPTHS = {"smoke": (8, 14), "cpu": (20, 56), "paper": (20, 56, 110)}
# landscape options per budget: at the cpu budget 11 points on 1,000 images, about two minutes per 56-layer net
LANDSCAPE = {"smoke": dict(points=5, images=128), "cpu": dict(points=11, images=1000), "paper": dict()}

FLAT = Metric("log10 loss rise at ±half the slice", False, "has a sharper loss basin than",
              "has a flatter loss basin than")
BENT = Metric("fraction of the slice bending down (non-convexity)", False, "has a less convex loss slice than",
              "has a more convex loss slice than")


def net(kind: str, depth: int) -> str:
    return f"{'plain' if kind == 'plain' else 'resnet'}-{depth}"


def sliced(kind: str, depth: int) -> str:
    return f"landscape of {net(kind, depth)}"


def grid(budget: str) -> list[Arm]:
    nets = [(k, d) for k in ("plain", "residual") for d in DEPTHS[budget]]
    return [Arm(net(k, d), dict(kind=k, depth=d)) for k, d in nets] + \
        [Arm(sliced(k, d), dict(LANDSCAPE[budget]), job="landscape", of=net(k, d)) for k, d in nets]


def _curve(result: dict) -> tuple[np.ndarray, np.ndarray] | None:
    alpha, loss = result.get("alpha") or [], result.get("loss") or []
    if result.get("dimensions") != 1 or len(alpha) < 3 or any(v is None or not math.isfinite(v) for v in loss):
        return None
    return np.asarray(alpha, float), np.asarray(loss, float)


def flatness(result: dict) -> float | None:
    curve = _curve(result)
    origin = result.get("origin", {}).get("loss")
    if curve is None or origin is None or not origin > 0:
        return None
    alpha, loss = curve
    half = float(np.max(np.abs(alpha))) / 2
    side = float(np.mean(np.interp([-half, half], alpha, loss)))
    return math.log10(side / origin) if side > 0 else None


def non_convexity(result: dict) -> float | None:
    curve = _curve(result)
    if curve is None:
        return None
    second = np.diff(curve[1], 2)
    return float(np.mean(second < 0))


def analyse(data) -> Analysis:
    depths = DEPTHS[data.plan.budget]
    low, deep = depths[0], depths[-1]
    findings = [comparisons.compare_results(data, f"Is resnet-{d}'s loss basin flatter than plain-{d}'s?",
                                       sliced("residual", d), sliced("plain", d), flatness, FLAT) for d in depths]
    findings += [
        comparisons.compare_results(data, f"Is resnet-{deep}'s loss slice more convex than plain-{deep}'s?",
                               sliced("residual", deep), sliced("plain", deep), non_convexity, BENT),
        comparisons.compare_results(data, f"Does the plain net's slice get less convex with depth ({low} to {deep} layers)?",
                               sliced("plain", deep), sliced("plain", low), non_convexity, BENT),
    ]
    rows = []
    for k in ("plain", "residual"):
        for d in depths:
            found = comparisons.analysis_results(data, sliced(k, d))
            flat = [v for v in map(flatness, found) if v is not None]
            bent = [v for v in map(non_convexity, found) if v is not None]
            rows.append(dict(arm=sliced(k, d), results=len(found),
                             flatness=float(np.mean(flat)) if flat else None,
                             non_convexity=float(np.mean(bent)) if bent else None,
                             origin_loss=float(np.mean([r["origin"]["loss"] for r in found])) if found else None))
    table = pd.DataFrame(rows)
    return Analysis(findings, {"landscapes": comparisons.table_numbers(table)}, {"landscapes": table})


def figures(data) -> dict:
    found = [r for k in ("plain", "residual") for d in DEPTHS[data.plan.budget]
             for r in comparisons.analysis_results(data, sliced(k, d))]
    return {
        "landscape-1d": ("Loss landscape, 1-D slices (Li et al.)", landscape_1d(found)),
        "finals": ("Final errors of the trained nets", comparisons.finals_figure(data)),
    }


register(Study(
    id="landscape",
    title="Loss landscapes (Li et al.)",
    question="Is a trained ResNet's loss landscape flatter and more convex around its weights than its plain "
             "twin's, and does the plain net's get more chaotic with depth?",
    literature=(
        "Li et al. (2018, filter-normalised directions, CIFAR-10): the 56- and 110-layer nets without shortcuts "
        "show chaotic, non-convex landscapes, the ResNets convex-looking ones, and the chaos grows with depth; "
        f"test error with / without shortcuts: 20 layers {cite('li-residual-20')} / {cite('li-plain-20')}, 56 "
        f"layers {cite('li-residual-56')} / {cite('li-plain-56')}, 110 layers {cite('li-residual-110')} / "
        f"{cite('li-plain-110')} (their schedule: 300 epochs, weight decay 5e-4). They draw 51 points per axis; "
        "the budgets here use fewer."
    ),
    grid={b: grid(b) for b in DEPTHS},
    analyse=analyse,
    figures=figures,
    published=("li-residual-20", "li-plain-20", "li-residual-56", "li-plain-56", "li-residual-110", "li-plain-110"),
    order=140,
))
