"""Original vs full pre-activation residual units (He et al. 2016, Identity Mappings), with the published
numbers beside the measured ones."""
from __future__ import annotations

from ...reference import cite
from .. import comparisons
from ..findings import TEST_ERROR, Analysis
from ..registry import Arm, Study, register

# (depth, block) pairs; the paper's ResNet-164 is a bottleneck net
# At the cpu budget 20 and 56 layers: with 110 the study would take about 45 minutes from scratch on 2 cores (its
# six 110-layer runs alone about 26: a ResNet-110 run took 518 s there), over the budget's 30; the paper budget has
# 110 and 164.
NETS = {"smoke": ((8, "basic"), (14, "basic")), "cpu": ((20, "basic"), (56, "basic")),
        "paper": ((56, "basic"), (110, "basic"), (164, "bottleneck"))}
UNITS = ("original", "preact")
PUBLISHED = {(110, "original"): "preact-110-original", (110, "preact"): "preact-110-preact",
             (164, "original"): "preact-164-original", (164, "preact"): "preact-164-preact"}


def name(depth: int, unit: str) -> str:
    return f"resnet-{depth}" + (" (pre-activation)" if unit == "preact" else "")


def grid(budget: str) -> list[Arm]:
    return [Arm(name(d, u), dict(kind="residual", depth=d, block=b, unit=u)) for d, b in NETS[budget] for u in UNITS]


def analyse(data) -> Analysis:
    nets = NETS[data.plan.budget]
    findings = []
    for d, _ in nets:
        findings += [
            comparisons.compare_arms(data, f"At {d} layers, do pre-activation units reach a different test error than "
                                "the original ones?", name(d, "preact"), name(d, "original"), "final_test_error",
                                TEST_ERROR),
            comparisons.compare_arms(data, f"At {d} layers, do pre-activation units train differently from the original "
                                "ones?", name(d, "preact"), name(d, "original")),
        ]
    low, high = nets[0][0], nets[-1][0]
    findings.append(comparisons.compare_arms(data, f"Does the pre-activation net gain from depth ({low} to {high} layers)?",
                                        name(high, "preact"), name(low, "preact"), "final_test_error", TEST_ERROR))
    table = comparisons.arm_table(data)
    entries = [(dict(arm=name(d, u)), name(d, u), name(d, u),
                cite(PUBLISHED[(d, u)]) if PUBLISHED.get((d, u)) else None) for d, _ in nets for u in UNITS]
    rows, comparable, notes = comparisons.beside_published(data, entries, "He et al. 2016", name(low, "original"),
                                                      detail=" (median of 5)")
    numbers = {"arms": comparisons.table_numbers(table), "published": rows, "comparable_with_published": comparable}
    return Analysis(findings, numbers, {"arms": table}, notes)


def figures(data) -> dict:
    return {
        "finals": ("Final errors, original vs pre-activation units", comparisons.finals_figure(data)),
        "curves": ("Training error over iterations", comparisons.curves_figure(data)),
        "test-curves": ("Test error over iterations", comparisons.curves_figure(
            data, name="test_error", title="Test error at each evaluation, mean over seeds")),
    }


register(Study(
    id="preactivation",
    title="Pre-activation units (Identity Mappings)",
    question="Do full pre-activation residual units (BN-ReLU-conv, nothing after the addition) reach a lower error "
             "than the original ones, and more so the deeper the net?",
    literature=(
        "He et al. 2016 (Identity Mappings, CIFAR-10 test error, median of 5 runs): ResNet-110 original units "
        + cite("preact-110-original") + ", full pre-activation " + cite("preact-110-preact") + "; ResNet-164 "
        "(bottleneck) " + cite("preact-164-original") + " vs " + cite("preact-164-preact") + "; ResNet-1001 "
        + cite("preact-1001-original") + " vs " + cite("preact-1001-preact") + ": the gain grows with depth, "
        "since the identity path then carries the signal unchanged between any two units. Other placements: BN "
        "after the addition " + cite("preact-110-bn-after-add") + ", ReLU before the addition "
        + cite("preact-110-relu-before-add") + ", ReLU-only pre-activation " + cite("preact-110-relu-preact")
        + " (ResNet-110)."
    ),
    grid={b: grid(b) for b in NETS},
    analyse=analyse,
    figures=figures,
    published=("preact-110-original", "preact-110-preact", "preact-164-original", "preact-164-preact",
               "preact-1001-original", "preact-1001-preact", "preact-110-bn-after-add",
               "preact-110-relu-before-add", "preact-110-relu-preact"),
    order=110,
))
