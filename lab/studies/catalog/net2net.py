"""Net2Net deepening: a trained plain net deepened by identity units (Net2DeeperNet) and trained on, against the
shallow net trained as long and the deep nets trained from scratch as long.

N is the study's number of iterations (`lab.studies.budgets`: half the budget's, so the comparison arms trained
2N are the budget's runs of those nets, shared with the responses and gradients studies). The deepened arm's runs
start from the parent arm's run of the same seed and train N more on a fresh schedule of their own (lr from step 0, the
milestones at fractions of their own N); the comparison arms train 2N from scratch (their milestones at fractions
of 2N). Every final number is therefore after 2N iterations in total.
"""
from __future__ import annotations

from ...figures import join_parent_curves
from .. import common
from .. import figures as sfig
from ..budgets import iterations
from ..findings import TEST_ERROR, Analysis
from ..registry import Arm, Study, register

ID = "net2net"
DEPTHS = {"smoke": (8, 14), "cpu": (20, 56), "paper": (20, 56)}   # (shallow parent, deep)


def names(budget: str) -> dict[str, str]:
    shallow, deep = DEPTHS[budget]
    n = iterations(budget, ID)
    return {
        "parent": f"plain-{shallow} ({n} it)",
        "deepened": f"plain-{shallow} → {deep} ({n} + {n} it)",
        "shallow": f"plain-{shallow} ({2 * n} it)",
        "plain": f"plain-{deep} ({2 * n} it)",
        "resnet": f"resnet-{deep} ({2 * n} it)",
    }


def grid(budget: str) -> list[Arm]:
    shallow, deep = DEPTHS[budget]
    n, twice = names(budget), 2 * iterations(budget, ID)
    return [
        Arm(n["parent"], dict(kind="plain", depth=shallow)),
        Arm(n["deepened"], dict(kind="plain", depth=deep), deepen=n["parent"]),
        Arm(n["shallow"], dict(kind="plain", depth=shallow, iterations=twice)),
        Arm(n["plain"], dict(kind="plain", depth=deep, iterations=twice)),
        Arm(n["resnet"], dict(kind="residual", depth=deep, iterations=twice)),
    ]


def analyse(data) -> Analysis:
    n = names(data.plan.budget)
    findings = [
        common.compare_arms(data, "Does the deepened plain net end worse than the shallow one trained as long "
                            "(does degradation come back)?", n["deepened"], n["shallow"]),
        common.compare_arms(data, "Does it end with a higher test error than the shallow one trained as long?",
                            n["deepened"], n["shallow"], "final_test_error", TEST_ERROR),
        common.compare_arms(data, "How far is it from the ResNet of the same depth trained as long?",
                            n["deepened"], n["resnet"]),
        common.compare_arms(data, "Does deepening a trained net beat training the deep plain net from scratch?",
                            n["deepened"], n["plain"]),
    ]
    table = common.arm_table(data)
    notes = [f"{n['deepened']} starts from the final checkpoint of {n['parent']} (same seed) and trains on a "
             "fresh schedule of its own; every other arm trains from scratch, so all final numbers are after the "
             "same total number of iterations."]
    return Analysis(findings, {"arms": common.table_numbers(table)}, {"arms": table}, notes)


def joined_curves(data, name: str = "train_error") -> dict[str, list]:
    """Per arm, (total iterations, values) of each run; a deepened run's series starts with its parent's."""
    frame = data.frame()
    scalars = data.scalars(name)
    if frame.empty or scalars.empty:
        return {}
    joined = join_parent_curves(frame, scalars[scalars["run_id"].isin(frame["id"])])
    out = {}
    for arm in data.arm_names:
        runs = frame[frame["arm"] == arm]["id"]
        series = [joined[(joined["run_id"] == rid) & joined["value"].notna()].sort_values("step") for rid in runs]
        out[arm] = [(g["step"].to_numpy(float), g["value"].to_numpy(float)) for g in series if len(g)]
    return out


def figures(data) -> dict:
    deepened = names(data.plan.budget)["deepened"]
    return {
        "curves": ("Training error over total iterations (the deepened net joined to its parent)", sfig.arm_curves(
            joined_curves(data), f"Training error (smoothed) over total iterations; {deepened} continues its "
            "parent's curve")),
        "finals": ("Final errors after the same total iterations", common.finals_figure(data)),
    }


register(Study(
    id=ID,
    title="Net2Net: deepening a trained plain net",
    question="Does a trained plain net deepened by identity units and trained on end worse than the shallow net "
             "trained as long, and how far from a ResNet of the same depth?",
    literature=(
        "He et al. (section 1) argue that a deeper model made of a trained shallower one plus identity layers is "
        "no worse by construction, and that solvers cannot find such solutions from a random start. Net2Net (Chen, "
        "Goodfellow, Shlens 2015) builds exactly that deeper net (Net2DeeperNet: Dirac convs, BN that undoes "
        "itself) and finds on ImageNet that the deeper student starts at the teacher's accuracy and trains faster "
        "than from scratch; it never compares a deepened plain net with its shallow parent trained as long. No "
        "numbers are published for this comparison on CIFAR-size nets."
    ),
    grid={b: grid(b) for b in DEPTHS},
    analyse=analyse,
    figures=figures,
    order=90,
))
