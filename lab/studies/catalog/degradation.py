"""Degradation (the paper's Fig. 6): deeper plain nets train worse, deeper residual nets better."""
from __future__ import annotations

from ...run_figures import depth_summary
from ...reference import cite
from .. import comparisons
from ..findings import Analysis
from ..registry import Arm, Study, register

DEPTHS = {"smoke": (8, 14), "cpu": (20, 56), "paper": (20, 32, 44, 56)}


def net(kind: str, depth: int) -> str:
    return f"{'plain' if kind == 'plain' else 'resnet'}-{depth}"


def depths_of(data) -> list[int]:
    return sorted({int(a.arm.options["depth"]) for a in data.plan.arms})


def analyse(data) -> Analysis:
    depths = depths_of(data)
    low, high = depths[0], depths[-1]
    findings = [
        comparisons.compare_arms(data, "Does the plain net train worse as it gets deeper?", net("plain", high), net("plain", low)),
        comparisons.compare_arms(data, "Does the residual net train better as it gets deeper?", net("residual", high),
                            net("residual", low)),
    ]
    findings += [comparisons.compare_arms(data, f"Does the residual net train better than the plain net at {d} layers?",
                                     net("residual", d), net("plain", d)) for d in depths]
    table = comparisons.arm_table(data)
    return Analysis(findings, {"arms": comparisons.table_numbers(table)}, {"arms": table})


def figures(data) -> dict:
    return {
        "curves": ("Training curves (Fig. 6)", comparisons.fig6_figure(data)),
        "depth": ("Final error vs depth", depth_summary(data.frame(("done",)))),
        "finals": ("Final errors per arm", comparisons.finals_figure(data)),
    }


register(Study(
    id="degradation",
    title="Degradation (Fig. 6)",
    question="Does a deeper plain net train worse than a shallower one, while a deeper residual net trains better?",
    literature=(
        "He et al. (Fig. 6, CIFAR-10): the training error of plain nets rises from 20 to 56 layers while that of "
        f"ResNets falls; plain-20 ends at {cite('fig6-plain-20')} test error and plain-56 at "
        f"{cite('fig6-plain-56')} (read off the curves). A reproduction (nabla0001/resnet, 5 runs): plain-20 "
        f"{cite('nabla-plain-20')}, plain-56 {cite('nabla-plain-56')}, ResNet-20 {cite('nabla-residual-20')}, "
        f"ResNet-56 {cite('nabla-residual-56')}. On ImageNet (Table 2, top-1): plain-34 {cite('imagenet-plain-34')} "
        f"vs plain-18 {cite('imagenet-plain-18')}, ResNet-34 {cite('imagenet-residual-34')} vs ResNet-18 "
        f"{cite('imagenet-residual-18')}. Li et al. (2018, their own schedule): 56 layers without shortcuts "
        f"{cite('li-plain-56')} test error, with shortcuts {cite('li-residual-56')}. The cpu budget's runs differ "
        "from the paper's protocol beyond data set and schedule: half-width nets, no augmentation, and per-channel "
        "mean and std normalisation (the paper subtracts the per-pixel mean; the paper budget does too); every "
        "budget initialises the classifier He-normal, which the paper does not specify."
    ),
    grid={b: [Arm(net(k, d), dict(kind=k, depth=d)) for k in ("plain", "residual") for d in ds]
          for b, ds in DEPTHS.items()},
    analyse=analyse,
    figures=figures,
    published=("fig6-plain-20", "fig6-plain-56", "nabla-plain-20", "nabla-plain-56", "nabla-residual-20",
               "nabla-residual-56", "imagenet-plain-18", "imagenet-plain-34", "imagenet-residual-18",
               "imagenet-residual-34", "li-plain-56", "li-residual-56"),
    order=10,
))
