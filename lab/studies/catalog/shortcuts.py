"""Shortcut options A/B/C (the paper's Table 3 question, on CIFAR-size nets)."""
from __future__ import annotations

from ...reference import cite
from .. import comparisons
from ..findings import TEST_ERROR, Analysis
from ..registry import Arm, Study, register

# At the cpu budget 56 layers only: at 20 and 56 its 18 runs took 4,817 s of training on 2 cores (README,
# "Studies"), about 42 minutes from scratch, over the budget's 30; the 56-layer options alone took 3,516 s (about
# 30 minutes), and 56 layers is where the options differed (C +3.4 points of test error over A, against +0.4 at 20).
DEPTHS = {"smoke": (8, 14), "cpu": (56,), "paper": (20, 56)}
# The plain nets are context (no finding uses them; the degradation study compares them); at the cpu budget they
# are left out, which keeps the study near 30 minutes from scratch on 2 cores.
PLAIN = {"smoke": True, "cpu": False, "paper": True}


def name(depth: int, shortcut: str | None) -> str:
    return f"plain-{depth}" if shortcut is None else f"resnet-{depth} ({shortcut})"


def grid(budget: str) -> list[Arm]:
    arms = []
    for d in DEPTHS[budget]:
        if PLAIN[budget]:
            arms.append(Arm(name(d, None), dict(kind="plain", depth=d)))
        arms += [Arm(name(d, s), dict(kind="residual", depth=d, shortcut=s)) for s in ("A", "B", "C")]
    return arms


def analyse(data) -> Analysis:
    findings = []
    for d in DEPTHS[data.plan.budget]:
        for other in ("B", "C"):
            findings.append(comparisons.compare_arms(
                data, f"At {d} layers, does option {other} reach a different test error than option A?",
                name(d, other), name(d, "A"), "final_test_error", TEST_ERROR))
    table = comparisons.arm_table(data)
    return Analysis(findings, {"arms": comparisons.table_numbers(table)}, {"arms": table})


def figures(data) -> dict:
    return {
        "finals": ("Final errors per shortcut option", comparisons.finals_figure(data)),
        "curves": ("Training error over iterations", comparisons.curves_figure(data)),
    }


register(Study(
    id="shortcuts",
    title="Shortcut options A/B/C",
    question="Do projection shortcuts (B: where the shape changes; C: everywhere) beat parameter-free "
             "zero-padding shortcuts (A)?",
    literature=(
        "He et al. (Table 3, ImageNet top-1, 10-crop): plain-34 " + cite("table3-plain-34") + ", ResNet-34 A "
        + cite("table3-A") + ", B " + cite("table3-B") + ", C " + cite("table3-C") + ": B is slightly better "
        "than A, C marginally better than B; the small differences suggest projections are not essential to the "
        "degradation problem, and the paper uses A on CIFAR. He et al. 2016 (Identity Mappings, CIFAR-10 "
        "ResNet-110): a 1x1 convolution on every shortcut gave " + cite("preact-shortcut-conv") + " test error "
        "against " + cite("preact-shortcut-original") + " with identity shortcuts."
    ),
    grid={b: grid(b) for b in DEPTHS},
    analyse=analyse,
    figures=figures,
    published=("table3-plain-34", "table3-A", "table3-B", "table3-C", "preact-shortcut-original",
               "preact-shortcut-conv", "preact-shortcut-scaling"),
    order=70,
))
