"""Budgets: how long and on what data a study's runs train. The one place to tune them.

- `smoke`: synthetic data and half-width nets, seconds per run: for tests and for checking that a study runs end
  to end.
- `cpu`: Fashion-MNIST (Debian's /usr/share/datasets/fashion-mnist), sized for a 2-core CPU, aiming at each
  study in at most about 30 minutes (the degradation study in at most 15) with enough seeds for a verdict where the
  effect is large. The degradation study trains a shorter schedule of its own (`TUNING`, below); the other
  measured studies take about 30 minutes or less from scratch, where some studies' grids are smaller at this
  budget than at `paper` (see each catalog module). Measured times and verdicts: README, "Studies".
- `paper`: the paper's CIFAR-10 protocol (section 4.2), for a GPU.

A run's configuration is: the budget's preset, then the budget's overrides (`BUDGETS`), then the study's tuning
for that budget (`TUNING`), then the arm's own options, then the seed and any data set override. `study list` and
the Studies page show what a study costs here (lab.runs.estimate), so the numbers below can be tuned by
measurement.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .registry import BUDGET_NAMES, StudyError


@dataclass(frozen=True)
class Budget:
    name: str
    about: str                  # one line for menus
    preset: str                 # a lab.config preset
    seeds: int                  # seeds per arm (2 is the least a verdict needs)
    target_error: float         # training error (fraction) whose first crossing times the speed questions
    overrides: dict = field(default_factory=dict)


BUDGETS: dict[str, Budget] = {
    # half-width nets: a smoke run is a few seconds, and a study's runs a minute or two
    "smoke": Budget("smoke", "synthetic data, half-width nets, seconds per run (for tests)", "smoke", seeds=2,
                    target_error=0.85, overrides=dict(width=0.5)),
    # Half-width nets on batches of 64 without augmentation (training error measures optimisation, which is what
    # Fig. 6 is about), 1,600 iterations, and the paper's 110-layer warm-up for every net (lr 0.01 until the
    # training error of a 20-iteration window is below 60%, then 0.1, /10 at 800 and 1,200). Measured on 2 cores
    # (README, "Studies"): without the warm-up ResNet-56 ends 4 points behind ResNet-20 (14.5% vs 10.1%, one seed;
    # its first few hundred iterations at lr 0.1 are lost to an unstable start); with it the whole Fig. 6 pattern
    # shows: plain-56 20.8% vs plain-20 11.2%, ResNet-56 8.7% vs ResNet-20 8.9% (3 seeds each). Three seeds,
    # because with two the 95% interval of a 10-point gap still covered zero (plain-56's seeds spread widely).
    "cpu": Budget(
        "cpu", "Fashion-MNIST on a 2-core CPU, half-width nets, up to about 30 minutes per study", "quick", seeds=3,
        target_error=0.20,
        overrides=dict(dataset="fashion-mnist", width=0.5, batch_size=64, augment=False, iterations=1600,
                       warmup="on", warmup_error=0.6, log_every=20, eval_every=200, eval_images=2000,
                       grad_every=20, checkpoint_every=400),
    ),
    "paper": Budget("paper", "the paper's CIFAR-10 protocol, 64k iterations (for a GPU)", "paper", seeds=3,
                    target_error=0.15, overrides=dict(dataset="cifar10")),
}
assert tuple(BUDGETS) == BUDGET_NAMES

# Per-study changes to a budget's schedule: study id -> RunConfig overrides (and "seeds"), per budget. Studies
# that share a schedule share runs (at the cpu budget plain and ResNet-20 and -56 at the budget's schedule serve
# depth, responses, gradients, identity-init, preactivation, net2net, shattering, shortcuts, ensembles and
# landscape), so tune a study here only when it must differ.
# At the smoke budget net2net trains N = 12 iterations, so its 2N arms (24 iterations) are the degradation study's
# smoke runs.
# At the cpu budget N = 800, so its 2N arms (1,600 iterations) are the budget's plain-20 and -56 and ResNet-56 runs
# (the responses and gradients studies' too).
# At the cpu budget the degradation study trains batches of 32 for DEGRADATION_CPU_ITERATIONS (a third of the
# images of the budget's schedule) with its periodic evaluations on 1,000 images, for the whole Fig. 6 pattern in
# at most 15 minutes on 2 cores. Measured (README "Studies", 2-core AMD EPYC): at the budget's schedule it took 19.4
# to 25 minutes; batches of 32 for 1,200 iterations 15.9 (evaluations a quarter of a run); this schedule 13.7,
# showing the whole pattern: plain-56 45.1% vs plain-20 20.0% training error (+25.1 points, 95% interval +1.4 to
# +48.8), ResNet-56 18.1% vs ResNet-20 17.1% (no clear difference, -4.2 to +6.2). Its runs are then its own: the
# other studies share the budget's.
# At the cpu budget without-bn trains at lr 0.05, the paper's 0.1 for batches of 128 scaled to the budget's 64. At 0.1
# (measured, README "Studies") 12 of its 15 runs without BN diverged, Fixup and zero-init branches included (all 3
# seeds each), every one within 60 iterations of the warm-up handing over to lr 0.1; the other 3 ended at chance:
# that says more about the learning rate than about normalisation.
DEGRADATION_CPU_ITERATIONS = 1000
TUNING: dict[str, dict[str, dict]] = {
    "smoke": {"net2net": dict(iterations=12)},
    "cpu": {"net2net": dict(iterations=800), "without-bn": dict(lr=0.05),
            "degradation": dict(batch_size=32, iterations=DEGRADATION_CPU_ITERATIONS, eval_images=1000)},
    "paper": {},
}


def budget(name: str) -> Budget:
    if name not in BUDGETS:
        raise StudyError(f"unknown budget {name!r}; known: {', '.join(BUDGETS)}")
    return BUDGETS[name]


def schedule(budget_name: str, study_id: str) -> tuple[str, dict, int]:
    """(preset, RunConfig overrides, seeds) for a study at a budget."""
    b = budget(budget_name)
    tuned = dict(TUNING.get(budget_name, {}).get(study_id, {}))
    seeds = int(tuned.pop("seeds", b.seeds))
    return b.preset, {**b.overrides, **tuned}, seeds


def iterations(budget_name: str, study_id: str) -> int:
    """How many iterations a run of the study trains at this budget (arms that train longer say so in their own
    options, e.g. twice this)."""
    from ..config import make_config

    preset, overrides, _ = schedule(budget_name, study_id)
    return make_config(preset, **overrides).iterations
