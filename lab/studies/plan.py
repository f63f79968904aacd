"""From a study's declaration to runs: the configurations it needs at a budget, the stored runs that already
answer them, its status, and queueing only what is missing.

Run reuse: a stored run answers a planned configuration when their experiment configurations are identical
(`lab.config.experiment_config`: every RunConfig field but the bookkeeping ones: tag, preset, device, threads,
compile) and it is done, diverged (a result too), running or queued; such a run is never trained again, whichever
study or sweep queued it. A planned run whose stored twin was cancelled, interrupted or failed is queued again to
resume from its checkpoint. Simulated runs (lab.fill, tagged `simulated`) never count. Membership is computed, not stored: a study's runs are the stored training runs whose
experiment matches one of its arms (any seed), so runs reused from elsewhere count; runs the study queues itself
carry the tag `study:<id>` only to make them easy to find on the Runs page.

Two other kinds of arm (lab.studies.registry.Arm):
- a deepened arm (`deepen`): each run starts from the parent arm's run of the same seed (its `deepen_from` is
  that run's id, known only once it is stored), so a stored run answers it when it has the planned configuration
  apart from `deepen_from` and its parent (the store's `parent_id`, else its `deepen_from`) is one of the parent
  arm's runs of that seed. Queueing creates the parent first and the child after it with `deepen_from` set, so
  the child is claimed after its parent and waits for it (the store does not claim a run whose parent is queued
  or running).
- an analysis arm (`job` 'lesion', 'landscape' or 'shatter', `of` a training arm): one analysis job per run of
  that arm. It is done when the analysed run has the result (lab.analysis.results, however it was made: a job
  or the CLI); otherwise the job rows (lab.analysis.queue.analysis_jobs) give its state. Queueing calls
  `queue_analysis` for each missing one, right after the training runs, since a job waits for its run too.
  A build without lab.analysis.queue reports such arms as unavailable with the reason.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from ..config import RunConfig, experiment_config, make_config
from ..datasets import DATASETS
from ..fill import TAG as SIMULATED
from ..models import ConfigError
from ..runs.monitor import RATE_COLUMNS
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
    configs: list[RunConfig] = field(default_factory=list)   # one per seed (an analysis arm: the analysed runs')
    problem: str | None = None                               # why this build cannot run the arm
    options: dict = field(default_factory=dict)              # an analysis arm's resolved analysis options

    @property
    def name(self) -> str:
        return self.arm.name

    @property
    def result(self) -> str:
        """An analysis arm's result name ('lesion', 'shatter-init', ...)."""
        from ..analysis.options import result_name

        return result_name(self.arm.job, self.options)


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
        """The training runs (an analysis arm's configs are those of the runs it analyses)."""
        return [c for a in self.available() if not a.arm.analysis for c in a.configs]

    def arm(self, name: str) -> PlannedArm | None:
        return next((a for a in self.arms if a.name == name), None)

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
    planned: list[PlannedArm] = []
    for arm in study.arms(budget):
        by_name = {a.name: a for a in planned}
        if arm.analysis:
            planned.append(_analysis_arm(arm, by_name[arm.of]))
            continue
        options = {**overrides, **arm.options, "tag": study_tag(study.id)}
        if dataset is not None:
            options["dataset"] = dataset
        seeds_here = range(arm.seeds or n_seeds)
        if arm.deepen is not None:
            parent = by_name[arm.deepen]
            if parent.problem is not None:
                planned.append(PlannedArm(arm, problem=f"it deepens {parent.name}, which cannot run: {parent.problem}"))
                continue
            seeds_here = [s for s in seeds_here if s in {c.seed for c in parent.configs}]
        try:
            configs = [make_config(preset, **options, seed=s) for s in seeds_here]
        except (ConfigError, TypeError) as exc:
            planned.append(PlannedArm(arm, problem=str(exc)))
            continue
        planned.append(PlannedArm(arm, configs))
    return Plan(study, budget, n_seeds, dataset, planned)


def analysis_queue():
    """lab.analysis.queue (background analysis jobs), or None where this build does not have it."""
    try:
        from ..analysis import queue
    except ImportError:
        return None
    return queue


def _analysis_arm(arm: Arm, of: PlannedArm) -> PlannedArm:
    """An analysis arm: the analysed arm's runs, the analysis's resolved options, or why it cannot be planned."""
    from ..analysis.errors import AnalysisError
    from ..analysis.options import resolve_options

    if of.problem is not None:
        return PlannedArm(arm, problem=f"it analyses {of.name}, which cannot run: {of.problem}")
    try:
        options = resolve_options(arm.job, dict(arm.options))
    except AnalysisError as exc:
        return PlannedArm(arm, problem=str(exc))
    if analysis_queue() is None:
        return PlannedArm(arm, problem=f"{arm.job} jobs need background analysis jobs (lab.analysis.queue), "
                                       "which this build does not have yet; results made with "
                                       f"`python -m lab {arm.job} RUN` are used")
    return PlannedArm(arm, list(of.configs), options=options)


# --- matching stored runs -------------------------------------------------------------------------------------


def experiment_key(cfg: RunConfig, with_seed: bool = True) -> tuple:
    """A hashable form of the experiment configuration (equal keys: the same experiment)."""
    values = experiment_config(cfg)
    if not with_seed:
        values.pop("seed", None)
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in values.items()))


def keyed_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Stored training runs with their experiment keys (`_key`: without the seed; `_seed`; for a deepened run
    `_grown`, its key with `deepen_from` blanked, and `_parent`, its parent's id). Runs whose stored
    configuration this version cannot read are left out: they cannot be the same experiment."""
    if runs.empty:
        return runs.assign(_key=pd.Series(dtype=object), _seed=pd.Series(dtype=int), _grown=pd.Series(dtype=object),
                           _parent=pd.Series(dtype=object))
    if "job" in runs.columns:  # analysis jobs share the runs table; only training runs answer a study's arms
        runs = runs[runs["job"].fillna("train") == "train"]
    if "tag" in runs.columns:  # simulated results (lab.fill) are never taken for measurements
        runs = runs[runs["tag"] != SIMULATED]
    ids = [str(i) for i in runs["id"]]
    keys, seeds, grown, parents, keep = [], [], [], [], []
    for i, config, parent_id in zip(runs.index, runs["config"],
                                    runs["parent_id"] if "parent_id" in runs.columns else [None] * len(runs)):
        try:
            cfg = RunConfig.from_dict(config if isinstance(config, dict) else {})
        except (ConfigError, TypeError):
            continue
        keys.append(experiment_key(cfg, with_seed=False))
        seeds.append(cfg.seed)
        parent = None
        if cfg.deepen_from:
            parent = parent_id if isinstance(parent_id, str) and parent_id else _resolve(cfg.deepen_from, ids)
        grown.append(experiment_key(replace(cfg, deepen_from=""), with_seed=False) if cfg.deepen_from else None)
        parents.append(parent)
        keep.append(i)
    out = runs.loc[keep].copy()
    out["_key"] = keys
    out["_seed"] = seeds
    out["_grown"] = grown
    out["_parent"] = parents
    return out


def _resolve(ref: str, ids: list[str]) -> str | None:
    """The id that `ref` (an id or a unique prefix, as `deepen_from` may hold) names among `ids`."""
    if ref in ids:
        return ref
    found = [i for i in ids if i.startswith(ref)]
    return found[0] if len(found) == 1 else None


@dataclass
class Slot:
    """One planned run (or analysis job) and the stored run (or job, or result) that answers it (None: missing).

    An analysis slot's `config` is the analysed run's planned configuration, `target` the analysed run's id
    (None until it is stored), and `run` the job row, or {'id': the analysed run, 'status': 'done'} when the
    result is stored."""

    arm: str
    config: RunConfig
    run: dict | None = None
    job: str = "train"
    target: str | None = None

    @property
    def state(self) -> str:
        return self.run["status"] if self.run is not None else "missing"

    @property
    def analysis(self) -> bool:
        return self.job != "train"


def _ranked(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        return df
    df = df.assign(_rank=df["status"].map(PREFERENCE).fillna(9))
    return df.sort_values(["_rank", "created_at"], ascending=[True, False]).drop(columns=["_rank"])


def match(plan: Plan, runs: pd.DataFrame, store: Store | None = None,
          keyed: pd.DataFrame | None = None) -> tuple[list[Slot], pd.DataFrame]:
    """(a slot per planned run and analysis job, every stored run of the study's training arms with an `arm`
    column).

    `runs` is the store's runs table (e.g. `lab.runs.monitor.overview`); `store` is read for analysis arms (their
    results and job rows; without it their slots are missing). A slot takes the best stored run of its exact
    configuration (done before running before queued ...); the members are all stored runs of an arm's
    experiment, any seed, so the analysis also uses seeds found beyond the planned ones. `keyed`: `keyed_runs(runs)`
    made already (a page matching several studies against one run list makes it once)."""
    keyed = keyed_runs(runs) if keyed is None else keyed
    train = [pa for pa in plan.available() if not pa.arm.analysis]
    # an arm's configurations differ only in the seed: one key (without the seed) per arm
    arm_key = {pa.name: experiment_key(pa.configs[0], with_seed=False) for pa in train if pa.configs}
    arm_of = {}
    for pa in train:
        if pa.configs and pa.arm.deepen is None:
            arm_of.setdefault(arm_key[pa.name], pa.name)
    members = keyed[keyed["_key"].map(lambda k: k in arm_of)].copy() if not keyed.empty else keyed.copy()
    members["arm"] = members["_key"].map(arm_of) if not members.empty else pd.Series(dtype=object)
    # deepened arms, in the study's order (a deepened arm may deepen another): same experiment but for
    # `deepen_from`, and a parent among the parent arm's runs of the same seed
    for pa in train:
        if pa.arm.deepen is None or not pa.configs or keyed.empty:
            continue
        key = experiment_key(pa.configs[0], with_seed=False)
        parents = members[members["arm"] == pa.arm.deepen]
        seed_of = dict(zip(parents["id"], parents["_seed"]))
        same = keyed["_grown"].map(lambda k: k == key).to_numpy(bool)
        grew = [seed_of.get(p) == s for p, s in zip(keyed["_parent"], keyed["_seed"])]
        hit = keyed[same & np.asarray(grew, dtype=bool)]
        if len(hit):
            members = pd.concat([members, hit.assign(arm=pa.name)])
    members = _ranked(members)
    slots: list[Slot] = []
    run_of: dict[tuple[str, int], str] = {}
    for pa in train:
        for cfg in pa.configs:
            if pa.arm.deepen is None:
                key = arm_key[pa.name]
                # map, not ==: pandas would compare a tuple element-wise against a Series of the same length
                hit = members[members["_key"].map(lambda k: k == key) & (members["_seed"] == cfg.seed)] \
                    if not members.empty else members
            else:
                hit = members[(members["arm"] == pa.name) & (members["_seed"] == cfg.seed)] \
                    if not members.empty else members
                parent = run_of.get((pa.arm.deepen, cfg.seed))
                if len(hit) and parent is not None:   # the child of the parent this plan uses, where there is one
                    own = hit[hit["_parent"] == parent]
                    hit = own if len(own) else hit
            slot = Slot(pa.name, cfg, hit.iloc[0].to_dict() if len(hit) else None)
            if slot.run is not None:
                run_of[(pa.name, cfg.seed)] = slot.run["id"]
            slots.append(slot)
    for pa in plan.available():
        if pa.arm.analysis:
            for cfg in pa.configs:
                target = run_of.get((pa.arm.of, cfg.seed))
                slots.append(Slot(pa.name, cfg, _analysis_state(store, pa, target), pa.arm.job, target))
    return slots, members


def _analysis_state(store: Store | None, pa: PlannedArm, target: str | None) -> dict | None:
    """What answers an analysis slot: the stored result ('done'), else the best job row of this analysis with
    these options (lab.analysis.queue.analysis_jobs), else None."""
    if store is None or target is None:
        return None
    from ..analysis.options import result_matches
    from ..analysis.results import load_results

    found = load_results(store, [target], pa.result).get(target)
    if found is not None and result_matches(found, pa.options):  # not a result made with other BN statistics
        return {"id": target, "status": "done"}
    queue = analysis_queue()
    jobs = queue.analysis_jobs(store, target) if queue is not None else pd.DataFrame()
    if jobs.empty:
        return None
    import json

    def same(config) -> bool:
        options = json.loads(config) if isinstance(config, str) else config
        return isinstance(options, dict) and options == pa.options

    jobs = jobs[(jobs["job"] == pa.arm.job) & jobs["config"].map(same) & (jobs["status"] != "done")]
    return _ranked(jobs).iloc[0].to_dict() if len(jobs) else None


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
    eta_s: float | None = None          # until the running and queued runs finish (as many at once as run now)
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
            done = store.runs(status=["done"], columns=RATE_COLUMNS)
            if not done.empty and {"iterations", "batch_size"} <= set(done.columns):
                images = done["iterations"].astype(float) * done["batch_size"].astype(float)
                done = done[images >= MIN_MEASURED_IMAGES]
            self._done = done

    def runs(self, status=None, columns=None):
        """The store's runs of `status` (RATE_COLUMNS of them: what the estimates read), each status read once."""
        if status is not None and list(status) == ["done"]:
            return self._done
        key = None if status is None else tuple(status)
        read = self.__dict__.setdefault("_read", {})
        if key not in read:  # read once, like the finished runs: one page's estimates share them
            read[key] = self._store.runs(status=status, columns=RATE_COLUMNS)
        return read[key]

    def __getattr__(self, name):
        return getattr(self._store, name)


def _worker_slots(store) -> int:
    """How many runs the live workers of this store run at once (0 without a store or a worker)."""
    if store is None:
        return 0
    try:
        return sum(int(w.get("slots") or 1) for w in store.live_workers())
    except Exception:   # an estimate never stops a status
        return 0


def status(plan: Plan, slots: list[Slot], store: Store | None = None, estimate: bool = True,
           parallel: int = 1) -> Status:
    """Counts of the planned runs by state, and (with `estimate`) times: until the queued and running runs are
    done (`eta_s`: as many at a time as are running now, as the store's live workers have slots, or `parallel`,
    e.g. the slots of a worker about to start, whichever is most), for what is still to queue, and for the whole
    study from scratch (one run at a time)."""
    st = Status(planned=len(slots), unavailable=plan.unavailable())
    for s in slots:
        state = s.state
        if state in ("done", "diverged", "running", "queued", "missing"):
            setattr(st, state, getattr(st, state) + 1)
        else:
            st.resumable += 1
    slots = [s for s in slots if not s.analysis]   # the estimates are of training runs
    if estimate and slots:
        from ..runs.estimate import estimate_sweep

        if store is not None and not isinstance(store, FinishedRunsOnce):
            store = FinishedRunsOnce(store)
        todo = [s.config for s in slots if s.state not in ANSWERED]
        queued = [s.config for s in slots if s.state == "queued"]
        total = estimate_sweep(store, [s.config for s in slots])
        st.total_s = total.seconds
        st.to_queue_s = estimate_sweep(store, todo).seconds if todo else 0.0
        # every estimate here rests on the rates of the whole study's widths: the total's basis names them (an
        # estimate of no runs, when nothing is queued, has no basis of its own)
        st.basis = total.basis + ("; analysis jobs not included" if st.planned > len(slots) else "")
        eta = estimate_sweep(store, queued).seconds if queued else 0.0
        for s in slots:
            if s.state == "running":
                left = s.run.get("eta_s")
                if left is None or not math.isfinite(float(left)):
                    done_part = (s.run.get("iteration") or 0) / max(1, s.config.iterations)
                    left = estimate_sweep(store, [s.config]).seconds * (1 - done_part)
                eta += float(left)
        at_once = max(1, int(parallel), sum(s.state == "running" for s in slots), _worker_slots(store))
        st.eta_s = eta / min(at_once, max(1, len(queued) + st.running)) if (queued or st.running) else None
    return st


# --- queueing ----------------------------------------------------------------------------------------------------


@dataclass
class Queued:
    created: list[str] = field(default_factory=list)    # new runs
    resumed: list[str] = field(default_factory=list)    # cancelled/interrupted/failed runs queued to resume
    reused: list[str] = field(default_factory=list)     # done, diverged, running or queued already


def queue_missing(store: Store, plan: Plan, runs: pd.DataFrame | None = None) -> Queued:
    """Queue the plan's runs that no stored run answers, and resume its resumable ones; returns what happened.

    Training runs first (in one transaction, the costliest first, so that the slots of a worker finish together),
    then deepened runs, each after its parent with `deepen_from` its parent's id, then analysis jobs of the
    study's runs (stored or just queued: a job waits for its run)."""
    if runs is None:
        runs = store.runs()
    slots, _ = match(plan, runs, store)
    out = Queued()
    run_of = {(s.arm, s.config.seed): s.run["id"] for s in slots if s.run is not None and not s.analysis}
    new = []
    for s in slots:
        if s.analysis or (s.state == "missing" and plan.arm(s.arm).arm.deepen is not None):
            continue
        if s.state in ANSWERED:
            out.reused.append(s.run["id"])
        elif s.state in RESUMABLE:
            store.requeue(s.run["id"])
            out.resumed.append(s.run["id"])
        else:
            new.append(s)
    sweep_id = new_id(f"study-{plan.study.id}")[:64]
    if new:
        from ..runs.estimate import longest_first
        from ..runs.sweep import queue_sweep

        new = [new[i] for i in longest_first([s.config for s in new])]
        created = queue_sweep(store, [s.config for s in new], sweep_id=sweep_id).check().ids
        out.created += created
        run_of.update({(s.arm, s.config.seed): rid for s, rid in zip(new, created)})
    for s in slots:   # deepened runs, in the study's order: a parent is stored (or queued) before its child
        parent = plan.arm(s.arm).arm.deepen
        if s.analysis or parent is None or s.state != "missing":
            continue
        parent_id = run_of.get((parent, s.config.seed))
        if parent_id is None:
            continue
        (rid,) = store.create_runs([replace(s.config, deepen_from=parent_id)], sweep_id=sweep_id, parent_id=parent_id)
        out.created.append(rid)
        run_of[(s.arm, s.config.seed)] = rid
    queue = analysis_queue()
    for s in slots:
        if not s.analysis or queue is None:
            continue
        if s.state in ANSWERED:
            out.reused.append(s.run["id"])
            continue
        target = run_of.get((plan.arm(s.arm).arm.of, s.config.seed))
        if target is not None:
            out.created.append(queue.queue_analysis(store, target, s.job, plan.arm(s.arm).options))
    return out
