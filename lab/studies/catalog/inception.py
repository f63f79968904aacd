"""Inception units with and without shortcuts (Szegedy et al. 2016), and the scaled residual branch.

CIFAR-size Inception units (`--block inception`: 1x1 | 1x1-3x3 | 1x1-3x3-3x3 branches concatenated, a linear 1x1
projection back to the stream), 12n+2 layers, plain (no shortcut) or residual with the branch scaled by 1, 0.3 or
0.1 before the addition. The speed question uses the budget's target training error (lab.studies.stats).
"""
from __future__ import annotations

from .. import comparisons
from ..findings import Analysis
from ..registry import Arm, Study, register

DEPTHS = {"smoke": (14, 26), "cpu": (14, 26), "paper": (26, 50)}
SCALES = {"smoke": (1.0, 0.1), "cpu": (1.0, 0.3, 0.1), "paper": (1.0, 0.3, 0.1)}
# depths with the scaled branches (smoke: fewer runs; cpu: with both depths scaled the study's 24 runs took 35 minutes
# on 2 cores, over the budget's 30; without the scaled 26-layer arms, 18 of those runs, about 24)
SCALED = {"smoke": (14,), "cpu": (14,), "paper": (26, 50)}


def scales(budget: str, depth: int) -> tuple[float, ...]:
    return SCALES[budget] if depth in SCALED[budget] else (1.0,)


def name(depth: int, scale: float | None) -> str:
    """'plain inception-26' or 'residual inception-26 ×0.3' (scale None: the plain net)."""
    return f"plain inception-{depth}" if scale is None else f"residual inception-{depth} ×{scale:g}"


def grid(budget: str) -> list[Arm]:
    arms = []
    for d in DEPTHS[budget]:
        arms.append(Arm(name(d, None), dict(kind="plain", depth=d, block="inception")))
        arms += [Arm(name(d, s), dict(kind="residual", depth=d, block="inception", residual_scale=s))
                 for s in scales(budget, d)]
    return arms


def analyse(data) -> Analysis:
    budget = data.plan.budget
    findings = []
    for d in DEPTHS[budget]:
        plain, res = name(d, None), name(d, 1.0)
        findings += [
            comparisons.compare_speed_arms(data, f"At {d} layers, does the residual Inception net reach the target "
                                      "training error sooner than the plain one?", res, plain),
            comparisons.compare_arms(data, f"At {d} layers, does the residual Inception net end with a lower training "
                                "error than the plain one?", res, plain),
        ]
        findings += [comparisons.compare_arms(data, f"At {d} layers, does scaling the residual branch by {s:g} change "
                                         "the final training error?", name(d, s), res)
                     for s in scales(budget, d) if s != 1.0]
    low, high = DEPTHS[budget]
    findings += [
        comparisons.compare_arms(data, "Does the plain Inception net train worse as it gets deeper?", name(high, None),
                            name(low, None)),
        comparisons.compare_arms(data, "Does the residual Inception net train better as it gets deeper?", name(high, 1.0),
                            name(low, 1.0)),
    ]
    table = comparisons.arm_table(data, speed=True)
    return Analysis(findings, {"arms": comparisons.table_numbers(table)}, {"arms": table})


def figures(data) -> dict:
    return {
        "curves": ("Training error over iterations", comparisons.curves_figure(data, target=True)),
        "speed": ("Iterations to the target training error", comparisons.speed_figure(data)),
        "finals": ("Final errors per arm", comparisons.finals_figure(data)),
    }


register(Study(
    id="inception",
    title="Inception units with and without shortcuts",
    question="Do shortcuts make Inception nets train faster or end lower, and does scaling the residual branch "
             "down (0.3, 0.1) change that?",
    literature=(
        "Szegedy et al. (Inception-v4, Inception-ResNet, 2016, ImageNet): residual Inception nets train much "
        "faster than plain ones, while the final accuracy depends mainly on model size (Inception-ResNet-v1 ended "
        "slightly worse than Inception-v3). With more than about 1000 filters the residual variants died early in "
        "training unless the residual branch was scaled by 0.1 to 0.3 before the addition, which never seemed to "
        "harm accuracy. No CIFAR numbers are published; the nets here are CIFAR-size Inception units in the "
        "paper's three stages, plain or residual, with the same parameters (14 layers: 50,586; 26: 103,898)."
    ),
    grid={b: grid(b) for b in DEPTHS},
    analyse=analyse,
    figures=figures,
    order=100,
))
