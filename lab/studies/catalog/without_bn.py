"""Training deep nets without normalisation: which nets train, which diverge, and what the scalings buy.

Plain and residual nets with BN, without BN, and without BN plus a scaling at initialisation: for residual nets
a learnable scalar per branch starting at zero (`--branch-init zero`, ReZero / SkipInit) and Fixup
(`--init fixup`, its scalar biases and multipliers trained at a tenth of the learning rate as in Zhang et al.'s
code, `--scalar-lr 0.1`); for plain nets the Dirac-parameterised conv of DiracNets (`--conv dirac`), the plain net's way
of starting near the identity. A diverged run (a NaN or infinite loss) is a result: it is counted and named,
never averaged into a final error.
"""
from __future__ import annotations

from ...datasets import dataset_info
from ...reference import cite
from ...series import mean_sd
from .. import comparisons
from ..findings import EFFECT, NO_CLEAR, NOT_ENOUGH, Analysis, Finding
from ..registry import Arm, Study, register
from ..stats import MIN_SEEDS

# At the cpu budget 20 layers only: the seven variants at 20 and 56 are 42 runs, an estimated 70 minutes from scratch
# on 2 cores (from the degradation study's measured speed), over the budget's 30; the gradients study has the plain
# and residual nets without BN at 56. The paper budget has 20, 56 and 110.
DEPTHS = {"smoke": (14,), "cpu": (20,), "paper": (20, 56, 110)}
VARIANTS = {   # variant -> (kinds it applies to, options on top of the net)
    "BN": (("plain", "residual"), dict()),
    "no BN": (("plain", "residual"), dict(norm="none")),
    "no BN, Dirac": (("plain",), dict(norm="none", conv="dirac")),
    "no BN, zero-init branch": (("residual",), dict(norm="none", branch_init="zero")),
    "no BN, Fixup": (("residual",), dict(norm="none", init="fixup", scalar_lr=0.1)),
}


def name(kind: str, depth: int, variant: str) -> str:
    """Arm names; the BN and plain no-BN ones are those of the gradients study ('plain-56 (no BN)')."""
    return f"{'plain' if kind == 'plain' else 'resnet'}-{depth}" + ("" if variant == "BN" else f" ({variant})")


def arms_at(depth: int) -> list[tuple[str, str, str]]:
    """(arm, kind, variant) at one depth, plain first."""
    return [(name(k, depth, v), k, v) for k in ("plain", "residual") for v, (kinds, _) in VARIANTS.items()
            if k in kinds]


def grid(budget: str) -> list[Arm]:
    return [Arm(arm, dict(kind=k, depth=d, **VARIANTS[v][1])) for d in DEPTHS[budget] for arm, k, v in arms_at(d)]


# A finished seed whose final training error is within this of chance (90% for 10 classes) did not learn.
CHANCE_MARGIN = 0.05


def chance_error(data, arm: str) -> float:
    """Training error of guessing (1 - 1/classes) on the arm's data set."""
    configs = data.plan.arm(arm).configs
    return 1.0 - 1.0 / dataset_info(configs[0].dataset).classes if configs else 0.9


def trains(data, arm: str) -> Finding:
    """Did the arm's runs train, stay at chance, or diverge? Diverged seeds are results (with the iteration they
    diverged at), and so are seeds that finished at chance: neither is averaged into a training error."""
    question = f"Does {arm} train or diverge?"
    runs = data.runs(arm, ("done", "diverged"))
    done = runs[runs["status"] == "done"] if not runs.empty else runs
    diverged = runs[runs["status"] == "diverged"] if not runs.empty else runs
    at = comparisons.diverged_at(runs)
    finals = data.finals(arm)
    chance = chance_error(data, arm)
    learned = [100 * v for v in finals if v < chance - CHANCE_MARGIN]
    stuck = [100 * v for v in finals if v >= chance - CHANCE_MARGIN]
    err, sd, _ = mean_sd(learned)
    numbers = {"arm": arm, "done": len(done), "diverged": len(diverged), "diverged_at": at, "at_chance": len(stuck),
               "final_train_error_mean": err, "final_train_error_sd": sd}
    n = len(done) + len(diverged)
    if n < MIN_SEEDS:
        return Finding(question, NOT_ENOUGH, f"Not enough seeds to tell whether {arm} trains: {n} finished (at least "
                       f"{MIN_SEEDS} needed).", numbers)
    where = comparisons.iterations_phrase(at)
    trained = f"final training error {err:.1f}%" + (f" ± {sd:.1f}" if len(learned) > 1 else "")
    at_chance = (f"{len(stuck)} of {n} ended at chance ({', '.join(f'{v:.1f}%' for v in stuck)} training error)"
                 if stuck else "")
    went = f"{len(diverged)} of {n} diverged (at {where})" if len(diverged) else ""
    if not learned:
        if not stuck:
            return Finding(question, EFFECT, f"{arm} diverges: all {n} seeds diverged (at {where}).", numbers)
        return Finding(question, EFFECT, f"{arm} does not train: {'; '.join(filter(None, [at_chance, went]))}.",
                       numbers)
    if len(learned) == n:
        return Finding(question, EFFECT, f"{arm} trains: {n} of {n} seeds finished, {trained}.", numbers)
    if not stuck:
        return Finding(question, NO_CLEAR, f"{arm} sometimes diverges: {len(diverged)} of {n} seeds diverged (at "
                       f"{where}); the others finished with {trained}.", numbers)
    return Finding(question, NO_CLEAR, f"{arm} trains in {len(learned)} of {n} seeds, {trained}; "
                   f"{'; '.join(filter(None, [at_chance, went]))}.", numbers)


def analyse(data) -> Analysis:
    depths = DEPTHS[data.plan.budget]
    findings = [trains(data, arm) for d in depths for arm, _, v in arms_at(d) if v != "BN" and data.has_arm(arm)]
    deep = depths[-1]
    for arm, kind, v in arms_at(deep):
        if v != "BN":
            findings.append(comparisons.compare_arms(data, f"Without BN, does {arm} train worse than with BN?", arm,
                                                name(kind, deep, "BN")))
    table = comparisons.arm_table(data)
    return Analysis(findings, {"arms": comparisons.table_numbers(table)}, {"arms": table})


def figures(data) -> dict:
    return {
        "curves": ("Training error over iterations (a diverged run's curve stops where it diverged)",
                   comparisons.curves_figure(data)),
        "finals": ("Final errors of the runs that finished", comparisons.finals_figure(data)),
    }


register(Study(
    id="without-bn",
    title="Training without normalisation",
    question="Without BN, which plain and residual nets still train and which diverge, and do branch scalings at "
             "initialisation (zero-init branches, Fixup, Dirac convs) bring them back to their BN twins?",
    literature=(
        "Fixup (Zhang et al. 2019): the last layer of each residual branch and the classifier start at zero, the "
        "other branch layers He-initialised and scaled by L^(-1/(2m-2)), with scalar biases and a multiplier (trained at a "
        "tenth of the learning rate in their code, as here); it trains 10,000-layer residual nets without "
        "normalisation. SkipInit (De & Smith 2020) and ReZero "
        "(Bachlechner et al. 2020): a learnable scalar at the end of each branch, starting at zero; ReZero reports "
        + cite("rezero-resnet56-speed") + " faster convergence for ResNet-56 on CIFAR-10. DiracNets (Zagoruyko & "
        "Komodakis 2017): plain nets whose convs are alpha·identity + beta·W/‖W‖ train deep without shortcuts. "
        "Without normalisation or such a scaling, deep nets' signals explode or vanish with depth, so expect the "
        "deep unnormalised nets to diverge or train badly."
    ),
    grid={b: grid(b) for b in DEPTHS},
    analyse=analyse,
    figures=figures,
    published=("rezero-resnet56-speed",),
    order=120,
))
