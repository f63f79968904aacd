"""Shortcut span: a fixed number of weighted layers, only the number of layers a shortcut skips varies."""
from __future__ import annotations

from .. import comparisons
from ..findings import Analysis
from ..registry import Arm, Study, register

# depth 38 has 12 convolutions per stage: spans 1, 2, 3, 4, 6 and 12 (one shortcut per stage) divide it;
# depth 26 (cpu) has 8: spans 1, 2, 4 and 8; depth 14 (smoke) has 4: spans 1, 2 and 4. At the cpu budget depth 38's
# 21 runs would take an estimated 34 minutes from scratch on 2 cores (from the degradation study's measured speed),
# over the budget's 30; depth 26's 15 took 3,123 s of training (README, "Studies"), about 27 minutes.
DEPTH = {"smoke": 14, "cpu": 26, "paper": 38}
SPANS = {"smoke": (1, 2, 4), "cpu": (1, 2, 4, 8), "paper": (1, 2, 3, 4, 6, 12)}
PAPER_SPAN = 2


def arm(depth: int, span: int) -> str:
    return f"resnet-{depth} span {span}"


def grid(budget: str) -> list[Arm]:
    d = DEPTH[budget]
    return [Arm(arm(d, s), dict(kind="residual", depth=d, span=s)) for s in SPANS[budget]] + \
        [Arm(f"plain-{d}", dict(kind="plain", depth=d))]


def analyse(data) -> Analysis:
    d = DEPTH[data.plan.budget]
    base = arm(d, PAPER_SPAN)
    findings = [comparisons.compare_arms(data, f"Does a span of {s} train differently from the paper's span of 2?",
                                    arm(d, s), base) for s in SPANS[data.plan.budget] if s != PAPER_SPAN]
    findings.append(comparisons.compare_arms(data, "Does the plain net train worse than the paper's span of 2?",
                                        f"plain-{d}", base))
    findings.append(comparisons.compare_speed_arms(data, "Does a single-layer shortcut (span 1) train faster or slower "
                                              "than span 2?", arm(d, 1), base))
    table = comparisons.arm_table(data, speed=True)
    notes = []
    done = table.dropna(subset=["train_error_mean"])
    if len(done) > 1:
        best = done.sort_values("train_error_mean").iloc[0]
        notes.append(f"Lowest mean final training error: {best['arm']} ({best['train_error_mean']:.1f}%, "
                     f"{int(best['done'])} seed(s)); the findings above say which differences are clear.")
    return Analysis(findings, {"arms": comparisons.table_numbers(table)}, {"arms": table}, notes)


def figures(data) -> dict:
    return {
        "curves": ("Training error over iterations, per span", comparisons.curves_figure(data, target=True)),
        "finals": ("Final errors per span", comparisons.finals_figure(data)),
        "speed": ("Iterations to the target training error", comparisons.speed_figure(data)),
    }


register(Study(
    id="span",
    title="Shortcut span",
    question="With the number of weighted layers fixed, does it matter how many layers a shortcut skips?",
    literature=(
        "He et al. (section 3.2): \"Experiments in this paper involve a function F that has two or three layers, "
        "while more layers are possible. But if F has only a single layer, Eqn. (1) is similar to a linear layer: "
        "y = W1 x + x, for which we have not observed advantages.\" No numbers are published, for a span of 1 or for "
        "spans of 4 and more. This study keeps the number of weighted layers fixed and varies only the span, "
        "beside the plain net: at 38 layers (12 convolutions per stage) spans 1, 2, 3, 4, 6 and 12 (one shortcut "
        "per stage, almost a plain net); at the cpu budget 26 layers (8 per stage) and spans 1, 2, 4 and 8."
    ),
    grid={b: grid(b) for b in DEPTH},
    analyse=analyse,
    figures=figures,
    order=40,
))
