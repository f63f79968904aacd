"""Bottleneck vs basic units at comparable depth and cost.

Pairs with the same number of units per stage: basic 6n+2 against bottleneck 9n+2 (20 vs 29, 56 vs 83, 110 vs
164) have nearly the same parameters and multiply-adds (e.g. 269,722 vs 270,234 parameters, 40.6M vs 41.9M
multiply-adds per 32x32 image at 20 vs 29 layers).

At the cpu budget the deeper pair is 32 vs 47 (n = 5) rather than 56 vs 83: ResNet-83 with bottleneck units trains
at about 150 images/s on 2 cores, 11 minutes a run, which put the study at about 38 minutes from scratch; with 32 vs
47 it took 2,940 s of training, about 25 minutes (README, "Studies"). ResNet-32 is one of the depth study's runs.
"""
from __future__ import annotations

from ...reference import cite
from .. import comparisons
from ..findings import TEST_ERROR, Analysis
from ..registry import Arm, Study, register

PAIRS = {"smoke": ((14, 20),), "cpu": ((20, 29), (32, 47)), "paper": ((20, 29), (56, 83), (110, 164))}


def basic(d: int) -> str:
    return f"resnet-{d} (basic)"


def bottleneck(d: int) -> str:
    return f"resnet-{d} (bottleneck)"


def grid(budget: str) -> list[Arm]:
    arms = []
    for b, n in PAIRS[budget]:
        arms += [Arm(basic(b), dict(kind="residual", depth=b)),
                 Arm(bottleneck(n), dict(kind="residual", depth=n, block="bottleneck"))]
    return arms


def analyse(data) -> Analysis:
    findings = []
    for b, n in PAIRS[data.plan.budget]:
        findings += [
            comparisons.compare_arms(data, f"Does bottleneck-{n} reach a different test error than basic-{b}?",
                                bottleneck(n), basic(b), "final_test_error", TEST_ERROR),
            comparisons.compare_arms(data, f"Does bottleneck-{n} train differently from basic-{b}?", bottleneck(n), basic(b)),
            comparisons.compare_speed_arms(data, f"Does bottleneck-{n} reach the target training error sooner than "
                                      f"basic-{b}?", bottleneck(n), basic(b)),
        ]
    table = comparisons.arm_table(data, speed=True)
    return Analysis(findings, {"arms": comparisons.table_numbers(table)}, {"arms": table})


def figures(data) -> dict:
    return {
        "finals": ("Final errors, basic vs bottleneck", comparisons.finals_figure(data)),
        "curves": ("Training error over iterations", comparisons.curves_figure(data, target=True)),
        "speed": ("Iterations to the target training error", comparisons.speed_figure(data)),
    }


register(Study(
    id="bottleneck",
    title="Bottleneck vs basic units",
    question="At comparable depth and cost, do bottleneck units (1x1, 3x3, 1x1) train and generalise differently "
             "from basic units (two 3x3)?",
    literature=(
        "He et al. introduce bottleneck units for the deeper ImageNet nets to keep the cost down. On CIFAR-10 "
        "(He et al. 2016, Identity Mappings): ResNet-164 with bottleneck units " + cite("preact-164-original") +
        " test error against ResNet-110 with basic units " + cite("preact-110-original") + " (about the same "
        "parameters and cost); with pre-activation units " + cite("preact-164-preact") + " vs "
        + cite("preact-110-preact") + "."
    ),
    grid={b: grid(b) for b in PAIRS},
    analyse=analyse,
    figures=figures,
    published=("preact-110-original", "preact-164-original", "preact-110-preact", "preact-164-preact"),
    order=80,
))
