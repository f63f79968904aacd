"""Net2Net deepening: a trained plain net deepened by identity units (Net2DeeperNet) and trained on, against the
same shallow net trained on with the same schedule, and the nets trained from scratch as long.

N is the study's number of iterations (`lab.studies.budgets`: half the budget's, so the comparison arms trained
2N are the budget's runs of those nets, shared with the responses and gradients studies). Every final number is
after 2N iterations in total. The arms:

- the parent: the shallow plain net, N iterations;
- deepened, restarted: the parent's run of the same seed deepened and trained N more on a fresh schedule of its
  own (lr from step 0, a new optimizer, the milestones at fractions of its own N): two cycles of the schedule,
  the second a warm restart;
- its control, restarted: the parent's run trained N more on the same fresh schedule without deepening (a child
  at the parent's depth): the same two cycles, so the comparison with the deepened arm isolates the deepening;
- deepened, continued, and its control, continued: the same two children trained with `deepen_schedule`
  'continue' (the parent's momentum, and the parent's final learning rate for all N iterations): one schedule
  that goes on at its end, no restart;
- the shallow net, the deep plain net and the ResNet of the same depth trained 2N from scratch on one schedule
  (milestones at fractions of 2N).
"""
from __future__ import annotations

from ...run_figures import join_parent_curves
from .. import comparisons
from .. import arm_figures as sfig
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
        "restarted": f"plain-{shallow} → {shallow} ({n} + {n} it)",
        "deepened_continued": f"plain-{shallow} → {deep} ({n} + {n} it, continued)",
        "continued": f"plain-{shallow} → {shallow} ({n} + {n} it, continued)",
        "shallow": f"plain-{shallow} ({2 * n} it)",
        "plain": f"plain-{deep} ({2 * n} it)",
        "resnet": f"resnet-{deep} ({2 * n} it)",
    }


def grid(budget: str) -> list[Arm]:
    shallow, deep = DEPTHS[budget]
    n, twice = names(budget), 2 * iterations(budget, ID)
    continued = dict(deepen_schedule="continue")
    return [
        Arm(n["parent"], dict(kind="plain", depth=shallow)),
        Arm(n["deepened"], dict(kind="plain", depth=deep), deepen=n["parent"]),
        Arm(n["restarted"], dict(kind="plain", depth=shallow), deepen=n["parent"]),
        Arm(n["deepened_continued"], dict(kind="plain", depth=deep, **continued), deepen=n["parent"]),
        Arm(n["continued"], dict(kind="plain", depth=shallow, **continued), deepen=n["parent"]),
        Arm(n["shallow"], dict(kind="plain", depth=shallow, iterations=twice)),
        Arm(n["plain"], dict(kind="plain", depth=deep, iterations=twice)),
        Arm(n["resnet"], dict(kind="residual", depth=deep, iterations=twice)),
    ]


def analyse(data) -> Analysis:
    n = names(data.plan.budget)
    findings = [
        comparisons.compare_arms(data, "With the same two cycles of the schedule (a warm restart after N iterations), "
                            "does the deepened plain net end worse than the shallow one (does degradation come "
                            "back)?", n["deepened"], n["restarted"]),
        comparisons.compare_arms(data, "Does it end with a higher test error than the shallow one restarted the same "
                            "way?", n["deepened"], n["restarted"], "final_test_error", TEST_ERROR),
        comparisons.compare_arms(data, "Continuing the parent's optimizer and final learning rate instead (no restart), "
                            "does the deepened net end worse than the shallow one continued the same way?",
                            n["deepened_continued"], n["continued"]),
        comparisons.compare_arms(data, "Does the warm restart itself change where the shallow net ends, against one "
                            "schedule of the same total length?", n["restarted"], n["shallow"]),
        comparisons.compare_arms(data, "How far is the deepened net from the ResNet of the same depth trained as long "
                            "(one schedule)?", n["deepened"], n["resnet"]),
        comparisons.compare_arms(data, "Does deepening a trained net beat training the deep plain net from scratch "
                            "(one schedule)?", n["deepened"], n["plain"]),
    ]
    table = comparisons.arm_table(data)
    notes = [f"{n['deepened']} and {n['restarted']} start from the final checkpoint of {n['parent']} (same seed), "
             "one deepened and one not, and both train on a fresh schedule of their own (a warm restart): "
             "the first two verdicts compare them, so the schedule is the same on both sides and only the "
             f"deepening differs. {n['deepened_continued']} and {n['continued']} instead keep the parent's "
             "momentum and final learning rate (deepen_schedule 'continue'): the third verdict. The arms trained "
             f"{2 * iterations(data.plan.budget, ID)} iterations from scratch follow one schedule, so the last "
             "three verdicts compare different schedules; every final number is after the same total number of "
             "iterations."]
    return Analysis(findings, {"arms": comparisons.table_numbers(table)}, {"arms": table}, notes)


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
        "curves": ("Training error over total iterations (each child joined to its parent)", sfig.arm_curves(
            joined_curves(data), f"Training error (smoothed) over total iterations; {deepened} and the other "
            "children continue their parent's curve")),
        "finals": ("Final errors after the same total iterations", comparisons.finals_figure(data)),
    }


register(Study(
    id=ID,
    title="Net2Net: deepening a trained plain net",
    question="Does a trained plain net deepened by identity units and trained on end worse than the shallow net "
             "trained on with the same schedule, and how far from a ResNet of the same depth?",
    literature=(
        "He et al. (section 1) argue that a deeper model made of a trained shallower one plus identity layers is "
        "no worse by construction, and that solvers cannot find such solutions from a random start. Net2Net (Chen, "
        "Goodfellow, Shlens 2015) builds exactly that deeper net (Net2DeeperNet: Dirac convs, BN that undoes "
        "itself) and finds on ImageNet that the deeper student starts at the teacher's accuracy and trains faster "
        "than from scratch; it never compares a deepened plain net with its shallow parent trained as long. No "
        "numbers are published for this comparison on CIFAR-size nets. A deepened child that restarts the "
        "schedule gets a warm restart the shallow net trained on one schedule does not, so the study's control "
        "restarts the shallow net the same way."
    ),
    grid={b: grid(b) for b in DEPTHS},
    analyse=analyse,
    figures=figures,
    order=90,
))
