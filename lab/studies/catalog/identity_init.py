"""Identity initialisation: does a plain net that starts as (nearly) the identity still degrade?"""
from __future__ import annotations

from .. import comparisons
from ..findings import Analysis
from ..registry import Arm, Study, register

DEPTHS = {"smoke": (8, 14), "cpu": (20, 56), "paper": (20, 56)}   # (shallow reference, deep)


def names(deep: int) -> dict[str, str]:
    return {
        "he": f"plain-{deep}", "identity": f"plain-{deep} identity", "he-nobn": f"plain-{deep} no BN",
        "identity-nobn": f"plain-{deep} identity, no BN", "resnet": f"resnet-{deep}",
    }


def grid(budget: str) -> list[Arm]:
    shallow, deep = DEPTHS[budget]
    n = names(deep)
    return [
        Arm(f"plain-{shallow}", dict(kind="plain", depth=shallow)),
        Arm(n["he"], dict(kind="plain", depth=deep)),
        Arm(n["identity"], dict(kind="plain", depth=deep, init="identity")),
        Arm(n["he-nobn"], dict(kind="plain", depth=deep, norm="none")),
        Arm(n["identity-nobn"], dict(kind="plain", depth=deep, init="identity", norm="none")),
        Arm(n["resnet"], dict(kind="residual", depth=deep)),
    ]


def analyse(data) -> Analysis:
    shallow, deep = DEPTHS[data.plan.budget]
    n = names(deep)
    findings = [
        comparisons.compare_arms(data, "With BN, does identity initialisation change how the deep plain net trains?",
                            n["identity"], n["he"]),
        comparisons.compare_arms(data, "Without BN, does identity initialisation change how the deep plain net trains?",
                            n["identity-nobn"], n["he-nobn"]),
        comparisons.compare_arms(data, "Does the identity-initialised plain net still degrade (train worse than the "
                            "shallow plain net)?", n["identity"], f"plain-{shallow}"),
        comparisons.compare_arms(data, "How does it compare with the ResNet of the same depth?", n["identity"], n["resnet"]),
    ]
    table = comparisons.arm_table(data)
    return Analysis(findings, {"arms": comparisons.table_numbers(table)}, {"arms": table})


def figures(data) -> dict:
    return {
        "curves": ("Training error over iterations", comparisons.curves_figure(data)),
        "finals": ("Final errors per arm", comparisons.finals_figure(data)),
    }


register(Study(
    id="identity-init",
    title="Identity initialisation",
    question="Does a deep plain net whose 3x3 layers start as the identity (Dirac) still train worse than a shallow one?",
    literature=(
        "He et al. (section 1) argue that a deeper model built from a shallower one plus identity layers should be "
        "no worse, and that solvers cannot find such solutions from a random start. Net2Net (Chen et al. 2015) "
        "inserts identity-initialised layers into a trained net and finds the deeper student starts at the "
        "teacher's accuracy and trains faster; it never compares a deepened plain net with its shallow parent. "
        "Delta-orthogonal initialisation trains 10,000-layer plain CNNs (Xiao et al. 2018), and linear residual "
        "nets have no spurious critical points near the identity (Hardt & Ma 2016). Here the plain net's 3x3 "
        "convolutions start as Dirac filters plus 1% of a He draw (so channels are not symmetric), with and "
        "without BN, beside the He-initialised plain net and the ResNet of the same depth."
    ),
    grid={b: grid(b) for b in DEPTHS},
    analyse=analyse,
    figures=figures,
    order=50,
))
