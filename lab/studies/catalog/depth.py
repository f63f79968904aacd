"""Error vs depth (the paper's Table 6), with the published numbers beside the measured ones."""
from __future__ import annotations

from ...run_figures import depth_summary
from ...reference import cite
from .. import comparisons
from ..arm_figures import only_depths
from ..findings import TEST_ERROR, Analysis
from ..registry import Arm, Study, register

DEPTHS = {"smoke": (8, 14), "cpu": (20, 32, 44, 56), "paper": (20, 32, 44, 56, 110)}
PUBLISHED = {20: "table6-resnet-20", 32: "table6-resnet-32", 44: "table6-resnet-44", 56: "table6-resnet-56",
             110: "table6-resnet-110"}


def net(depth: int) -> str:
    return f"resnet-{depth}"


def analyse(data) -> Analysis:
    depths = sorted({int(a.arm.options["depth"]) for a in data.plan.arms})
    low, high = depths[0], depths[-1]
    findings = [
        comparisons.compare_arms(data, "Does the test error fall as the ResNet gets deeper?", net(high), net(low),
                            "final_test_error", TEST_ERROR),
        comparisons.compare_arms(data, "Does the training error fall as the ResNet gets deeper?", net(high), net(low)),
    ]
    table = comparisons.arm_table(data)
    entries = [(dict(depth=d), f"{d} layers", net(d), cite(PUBLISHED[d]) if PUBLISHED.get(d) else None)
               for d in depths]
    rows, comparable, notes = comparisons.beside_published(data, entries, "the paper's Table 6", net(low))
    numbers = {"arms": comparisons.table_numbers(table), "published": rows, "comparable_with_published": comparable}
    return Analysis(findings, numbers, {"arms": table}, notes)


def figures(data) -> dict:
    depths = [int(a.arm.options["depth"]) for a in data.plan.arms]
    overlay = only_depths(depth_summary(data.frame(("done",)), reference=True), depths)
    return {
        "depth": ("Final error vs depth, with the published numbers at these depths", overlay),
        "curves": ("Training error over iterations", comparisons.curves_figure(data)),
        "finals": ("Final errors per depth", comparisons.finals_figure(data)),
    }


register(Study(
    id="depth",
    title="Error vs depth (Table 6)",
    question="Does a deeper ResNet reach a lower test error, and how do the errors compare with the published ones?",
    literature=(
        f"He et al. (Table 6, CIFAR-10 test error): ResNet-20 {cite('table6-resnet-20')}, ResNet-32 "
        f"{cite('table6-resnet-32')}, ResNet-44 {cite('table6-resnet-44')}, ResNet-56 {cite('table6-resnet-56')}, "
        f"ResNet-110 {cite('table6-resnet-110')} (best of 5; {cite('table6-resnet-110-mean')} mean): deeper is better "
        "up to 110 layers (1202 layers overfit). Reproductions land within about a point of these, and seeds "
        "matter: report the mean and sd over seeds of the final error, not the best one seen."
    ),
    grid={b: [Arm(net(d), dict(kind="residual", depth=d)) for d in ds] for b, ds in DEPTHS.items()},
    analyse=analyse,
    figures=figures,
    published=(*PUBLISHED.values(), "table6-resnet-110-mean"),
    order=20,
))
