"""From a study's declaration to runs: the configurations it needs at a budget, the stored runs that already
answer them, its status, and queueing only what is missing.

Run reuse: a stored run answers a planned configuration when their experiment configurations are identical
(`lab.config.experiment_config`: every RunConfig field but the bookkeeping ones: tag, preset, device, threads,
compile) and it is done, diverged (a result too), running or queued; such a run is never trained again, whichever
study or sweep queued it. A planned run whose stored twin was cancelled, interrupted or failed is queued again to
resume from its checkpoint. Simulated runs (lab.fill, tagged `simulated`) never count. Membership is computed, not stored: a study's runs are the stored training runs whose
experiment matches one of its arms (any seed), so runs reused from elsewhere count; runs the study queues itself
carry the tag `study:<id>` only to make them easy to find on the Runs page.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from ..config import RunConfig, experiment_config, make_config
from ..data import DATASETS
from ..fill import TAG as SIMULATED
from ..models import ConfigError
from ..runs.store import RESUMABLE, Store, new_id
from .budgets import schedule
from .registry import Arm, Study, StudyError

ANSWERED = ("done", "diverged", "running", "queued")    # a run in these states is reused, never trained twice
FINISHED = ("done", "diverged")
# which stored run answers a planned one when several do (e.g. the same sweep queued twice)
PREFERENCE = {"done": 0, "diverged": 1, "running": 2, "queued": 3, "interrupted": 4, "cancelled": 5, "failed": 6}


def study_tag(study_id: str) -> str:
    return f"study:{study_id}"


@dataclass
class PlannedArm:
    arm: Arm
    configs: list[RunConfig] = field(default_factory=list)   # one per seed; empty when unavailable
    problem: str | None = None                               # why this build cannot run the arm

    @property
    def name(self) -> str:
        return self.arm.name


@dataclass
class Plan:
    study: Study
    budget: str
    seeds: int
    dataset: str | None           # the data set override (None: the budget's)
    arms: list[PlannedArm]

    def available(self) -> list[PlannedArm]:
        return [a for a in self.arms if a.problem is None]

    def unavailable(self) -> dict[str, str]:
        return {a.name: a.problem for a in self.arms if a.problem is not None}

    def configs(self) -> list[RunConfig]:
        return [c for a in self.available() for c in a.configs]

    def dataset_name(self) -> str:
        configs = self.configs()
        return configs[0].dataset if configs else (self.dataset or "")


def make_plan(study: Study, budget: str = "cpu", seeds: int | None = None, dataset: str | None = None) -> Plan:
    """The study's runs at `budget` (seeds 0..n-1 per arm). Arms this build cannot run (an option value it does
    not have yet) are kept with the reason, so a study declared ahead of its options shows what it waits for."""
    preset, overrides, default_seeds = schedule(budget, study.id)
    if seeds is not None and (not isinstance(seeds, int) or seeds < 1):
        raise StudyError(f"seeds must be a positive integer, got {seeds!r}")
    if dataset is not None and dataset not in DATASETS:
        raise StudyError(f"unknown data set {dataset!r}; known: {', '.join(DATASETS)}")
    n_seeds = seeds or default_seeds
    planned = []
    for arm in study.arms(budget):
        if arm.job != "train":
            planned.append(PlannedArm(arm, problem=f"analysis jobs ({arm.job!r}) are not planned by this build"))
            continue
        options = {**overrides, **arm.options, "tag": study_tag(study.id)}
        if dataset is not None:
            options["dataset"] = dataset
        try:
            configs = [make_config(preset, **options, seed=s) for s in range(arm.seeds or n_seeds)]
        except (ConfigError, TypeError) as exc:
            planned.append(PlannedArm(arm, problem=str(exc)))
            continue
        planned.append(PlannedArm(arm, configs))
    return Plan(study, budget, n_seeds, dataset, planned)


# --- matching stored runs -------------------------------------------------------------------------------------


def experiment_key(cfg: RunConfig, with_seed: bool = True) -> tuple:
    """A hashable form of the experiment configuration (equal keys: the same experiment)."""
    values = experiment_config(cfg)
    if not with_seed:
        values.pop("seed", None)
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in values.items()))


def keyed_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Stored training runs with their experiment keys (`_key`: without the seed; `_seed`). Runs whose stored
    configuration this version cannot read are left out: they cannot be the same experiment."""
    if runs.empty:
        return runs.assign(_key=pd.Series(dtype=object), _seed=pd.Series(dtype=int))
    if "job" in runs.columns:  # analysis jobs share the runs table; only training runs answer a study's arms
        runs = runs[runs["job"].fillna("train") == "train"]
    if "tag" in runs.columns:  # simulated results (lab.fill) are never taken for measurements
        runs = runs[runs["tag"] != SIMULATED]
    keys, seeds, keep = [], [], []
    for i, config in zip(runs.index, runs["config"]):
        try:
            cfg = RunConfig.from_dict(config if isinstance(config, dict) else {})
        except (ConfigError, TypeError):
            continue
        keys.append(experiment_key(cfg, with_seed=False))
        seeds.append(cfg.seed)
        keep.append(i)
    out = runs.loc[keep].copy()
    out["_key"] = keys
    out["_seed"] = seeds
    return out


@dataclass
class Slot:
    """One planned run and the stored run that answers it (None: missing)."""

    arm: str
    config: RunConfig
    run: dict | None = None

    @property
    def state(self) -> str:
        return self.run["status"] if self.run is not None else "missing"


def match(plan: Plan, runs: pd.DataFrame) -> tuple[list[Slot], pd.DataFrame]:
    """(a slot per planned run, every stored run of the study's arms with an `arm` column).

    `runs` is the store's runs table (e.g. `lab.runs.monitor.overview`). A slot takes the best stored run of its
    exact configuration (done before running before queued ...); the members are all stored runs of an arm's
    experiment, any seed, so the analysis also uses seeds found beyond the planned ones."""
    keyed = keyed_runs(runs)
    arm_of = {}
    for pa in plan.available():
        if pa.configs:
            arm_of.setdefault(experiment_key(pa.configs[0], with_seed=False), pa.name)
    members = keyed[keyed["_key"].map(lambda k: k in arm_of)].copy() if not keyed.empty else keyed.copy()
    members["arm"] = members["_key"].map(arm_of) if not members.empty else pd.Series(dtype=object)
    if not members.empty:
        members["_rank"] = members["status"].map(PREFERENCE).fillna(9)
        members = members.sort_values(["_rank", "created_at"], ascending=[True, False])
    slots = []
    for pa in plan.available():
        for cfg in pa.configs:
            key = experiment_key(cfg, with_seed=False)
            # map, not ==: pandas would compare a tuple element-wise against a Series of the same length
            hit = members[members["_key"].map(lambda k: k == key) & (members["_seed"] == cfg.seed)] \
                if not members.empty else members
            slots.append(Slot(pa.name, cfg, hit.iloc[0].to_dict() if len(hit) else None))
    if not members.empty:
        members = members.drop(columns=["_rank"])
    return slots, members


# --- status ------------------------------------------------------------------------------------------------------


@dataclass
class Status:
    """Where a study stands at a budget: counts of its planned runs by state, and time estimates (seconds)."""

    planned: int = 0
    done: int = 0
    diverged: int = 0
    running: int = 0
    queued: int = 0
    resumable: int = 0          # cancelled, interrupted or failed: `study run` queues them to resume
    missing: int = 0
    unavailable: dict = field(default_factory=dict)   # arm -> why this build cannot run it
    eta_s: float | None = None          # until the running and queued runs finish (one slot)
    to_queue_s: float | None = None     # the runs `study run` would queue now
    total_s: float | None = None        # every planned run, from scratch
    basis: str = ""                     # what the estimates rest on

    @property
    def state(self) -> str:
        finished = self.done + self.diverged
        if self.planned and finished == self.planned:
            return "done"
        if self.running:
            return "running"
        if self.queued:
            return "queued"
        return "incomplete" if finished else "not started"

    @property
    def active(self) -> bool:
        return bool(self.running or self.queued)

    def as_dict(self) -> dict:
        keys = ("planned", "done", "diverged", "running", "queued", "resumable", "missing", "unavailable", "eta_s",
                "to_queue_s", "total_s", "basis")
        return {"state": self.state, **{k: getattr(self, k) for k in keys}}


MIN_MEASURED_IMAGES = 20_000   # training images a finished run needs to tell this machine's throughput


class FinishedRunsOnce:
    """The store, with its finished runs read once: time estimates (lab.runs.estimate) read them to learn this
    machine's throughput, and a status makes several estimates (a page shows several studies). Runs too short to
    measure throughput (smoke runs: start-up and evaluation dominate, so they would make every estimate far too
    long) are left out; with none left the estimate measures the machine instead."""

    def __init__(self, store: Store | None) -> None:
        self._store = store
        self._done = None
        if store is not None:
            done = store.runs(status=["done"])
            if not done.empty and {"iterations", "batch_size"} <= set(done.columns):
                images = done["iterations"].astype(float) * done["batch_size"].astype(float)
                done = done[images >= MIN_MEASURED_IMAGES]
            self._done = done

    def runs(self, status=None):
        if status is not None and list(status) == ["done"]:
            return self._done
        return self._store.runs(status=status)

    def __getattr__(self, name):
        return getattr(self._store, name)


def status(plan: Plan, slots: list[Slot], store: Store | None = None, estimate: bool = True) -> Status:
    """Counts of the planned runs by state, and (with `estimate`) times: until the queued and running runs are
    done, for what is still to queue, and for the whole study from scratch (one run at a time)."""
    st = Status(planned=len(slots), unavailable=plan.unavailable())
    for s in slots:
        state = s.state
        if state in ("done", "diverged", "running", "queued", "missing"):
            setattr(st, state, getattr(st, state) + 1)
        else:
            st.resumable += 1
    if estimate and slots:
        from ..runs.estimate import estimate_sweep

        if store is not None and not isinstance(store, FinishedRunsOnce):
            store = FinishedRunsOnce(store)
        todo = [s.config for s in slots if s.state not in ANSWERED]
        queued = [s.config for s in slots if s.state == "queued"]
        st.total_s = estimate_sweep(store, [s.config for s in slots]).seconds
        st.to_queue_s = estimate_sweep(store, todo).seconds if todo else 0.0
        full = estimate_sweep(store, queued)
        st.basis = full.basis
        eta = full.seconds if queued else 0.0
        for s in slots:
            if s.state == "running":
                left = s.run.get("eta_s")
                if left is None or not math.isfinite(float(left)):
                    done_part = (s.run.get("iteration") or 0) / max(1, s.config.iterations)
                    left = estimate_sweep(store, [s.config]).seconds * (1 - done_part)
                eta += float(left)
        st.eta_s = eta if (queued or st.running) else None
    return st


# --- queueing ----------------------------------------------------------------------------------------------------


@dataclass
class Queued:
    created: list[str] = field(default_factory=list)    # new runs
    resumed: list[str] = field(default_factory=list)    # cancelled/interrupted/failed runs queued to resume
    reused: list[str] = field(default_factory=list)     # done, diverged, running or queued already


def queue_missing(store: Store, plan: Plan, runs: pd.DataFrame | None = None) -> Queued:
    """Queue the plan's runs that no stored run answers, and resume its resumable ones; returns what happened."""
    if runs is None:
        runs = store.runs()
    slots, _ = match(plan, runs)
    out = Queued()
    new = []
    for s in slots:
        if s.state in ANSWERED:
            out.reused.append(s.run["id"])
        elif s.state in RESUMABLE:
            store.requeue(s.run["id"])
            out.resumed.append(s.run["id"])
        else:
            new.append(s.config)
    if new:
        out.created = store.create_runs(new, sweep_id=new_id(f"study-{plan.study.id}")[:64])
    return out
