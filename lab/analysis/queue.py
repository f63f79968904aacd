"""Analyses as background jobs: rows of the runs table that the worker claims and executes like training runs.

A job is a row with `job` = the analysis ('lesion', 'landscape', 'shatter'), `parent_id` = the run it analyses
and `config` = the analysis's resolved options as JSON, created and listed through the store's jobs API
(`Store.create_job`, `Store.jobs`; resuming a job is `Store.requeue_job`: the same row runs again). Importing
this module registers each analysis as a job kind with the runs layer (`lab.runs.kinds`), whose `execute` is
`background.execute_job` (loaded when a job runs) and whose `check` is `check_job`. The worker claims a job like
any queued run and its child (`python -m lab _execute JOB --attempt TOKEN`) runs `jobs.run_analysis` under the
same ownership rules as training: heartbeat, cancel, progress in `iteration` / `total_iterations` (the analysis's units of work, known
once it starts: 0 until then), a final status with a one-line message. The result is saved for the analysed
run under `result_name(name, options)`, where `results.load_results` finds it; a cancelled or failed job
writes no result.

Light (no torch): the CLI and the dashboard queue jobs without loading the analyses.
"""
from __future__ import annotations

import json

import pandas as pd

from ..runs.kinds import register_kind
from ..runs.store import IN_FLIGHT, JOBS_DEFAULT, Store
from .errors import AnalysisError
from .options import ANALYSES, RESULTS, resolve_options, result_name


def queue_analysis(store: Store, run_ref: str, name: str, options: dict | None = None) -> str:
    """Queue analysis `name` of stored run `run_ref` (an id or a unique prefix) with `options`; returns the job id.

    An identical job (same run, analysis and resolved options) that is queued or running is returned instead
    of a new one. Raises StoreError for an unknown run, AnalysisError for an unknown analysis, bad options or a
    run that is itself an analysis job. A run without a checkpoint can be queued (a queued or running run is
    waited for); its job fails, saying so, if there is still none when it runs."""
    opts = resolve_options(name, options)
    run = store.get_run(run_ref)
    if (run.get("job") or JOBS_DEFAULT) != JOBS_DEFAULT:
        raise AnalysisError(f"{run['id']} is a {run['job']} job, not a training run: analyses take a training run")
    label = f"{result_name(name, opts)} of {run.get('label') or run['id']}"
    return store.create_job(name, run["id"], opts, label=label, dataset=run.get("dataset"))


def queue_result(store: Store, run_ref: str, result: str) -> str:
    """Queue the job that produces result `result` ('lesion', 'landscape-2d', 'shatter-init', ...) of a run."""
    if result not in RESULTS:
        raise AnalysisError(f"unknown result {result!r}; known: {', '.join(RESULTS)}")
    name, options = RESULTS[result]
    return queue_analysis(store, run_ref, name, options)


def _decoded(config) -> dict | None:
    try:
        value = json.loads(config) if isinstance(config, str) else config
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


JOB_COLUMNS = ["id", "job", "parent_id", "status", "label", "dataset", "iteration", "total_iterations", "progress",
               "eta_s", "elapsed_s", "device", "host", "pid", "created_at", "started_at", "finished_at", "heartbeat_at",
               "message", "options", "result", "run_label", "run_seed", "run_status", "tag", "images_per_s",
               "final_test_error", "final_train_error", "config"]


def analysis_jobs(store: Store, run_id: str | None = None) -> pd.DataFrame:
    """The analysis job rows, newest first (all, or those of one analysed run), with `options` (a dict),
    `result` (the result name it saves), `run_label` / `run_seed` / `run_status` of the analysed run (None
    when that run was deleted), `progress` (0..1) and `eta_s` (seconds while running; NaN when unknown)."""
    rows = store.jobs(parent_id=run_id)
    parents = store.run_summaries(r["parent_id"] for r in rows)
    for r in rows:
        r["options"] = _decoded(r["config"]) or {}
        r["config"] = r["options"]
        r["result"] = _result_of(r["job"], r["options"])
        parent = parents.get(r["parent_id"], {})
        r["run_label"], r["run_seed"], r["run_status"] = parent.get("label"), parent.get("seed"), parent.get("status")
    df = pd.DataFrame(rows) if rows else pd.DataFrame(columns=[c for c in JOB_COLUMNS if c not in ("progress", "eta_s")])
    done = df["iteration"].fillna(0).astype(float)
    total = df["total_iterations"].fillna(0).astype(float)
    df["progress"] = (done / total.where(total > 0)).fillna(0.0).clip(0, 1)
    per_step = df["elapsed_s"].astype(float) / done.where(done > 0)
    df["eta_s"] = ((total - done) * per_step).where(df["status"] == "running")
    return df.reset_index(drop=True)


def _result_of(name: str, options: dict) -> str | None:
    try:
        return result_name(name, resolve_options(name, options))
    except AnalysisError:
        return None


def latest_jobs(store: Store, run_ids, statuses=None) -> dict[tuple[str, str], dict]:
    """{(run id, result name): job row}: the newest job of each result of these runs (of those `statuses`)."""
    wanted = set(run_ids)
    jobs = analysis_jobs(store)
    out: dict[tuple[str, str], dict] = {}
    if jobs.empty:
        return out
    mask = jobs["parent_id"].isin(wanted)
    if statuses is not None:
        mask &= jobs["status"].isin(list(statuses))
    for r in jobs[mask].to_dict("records"):
        out.setdefault((r["parent_id"], r["result"]), r)
    return out


def in_flight(store: Store, run_ids) -> dict[tuple[str, str], dict]:
    """{(run id, result name): job row} of the queued or running jobs of these runs (the newest per result)."""
    return latest_jobs(store, run_ids, IN_FLIGHT)


def describe(job: dict) -> str:
    """What a job does, in words: 'lesion of plain-56 seed 0 (plain56-...), draws 5, ...' (options that differ
    from the defaults only)."""
    name = job.get("job")
    spec = ANALYSES.get(name)
    options = job.get("options") or {}
    changed = [f"{k} {v}" for k, v in options.items() if spec is None or k not in spec.options
               or spec.options[k].default != v]
    of = job.get("run_label")
    of = f"{of} seed {job.get('run_seed')} ({job.get('parent_id')})" if of else f"deleted run {job.get('parent_id')}"
    return f"{job.get('result') or name} of {of}" + (f": {', '.join(changed)}" if changed else "")


def check_job(job: dict) -> tuple[str, str, dict]:
    """(analysed run id, analysis name, options) of a job row, or AnalysisError saying what is wrong with it."""
    name, parent = job.get("job"), job.get("parent_id")
    if name not in ANALYSES:
        raise AnalysisError(f"job {job.get('id')} asks for {name!r}, which this lab cannot run (known: {', '.join(ANALYSES)})")
    if not parent:
        raise AnalysisError(f"job {job.get('id')} names no run to analyse")
    options = _decoded(job.get("config"))
    if options is None:
        raise AnalysisError(f"job {job.get('id')}'s options are not a JSON object")
    return parent, name, resolve_options(name, options)



def _execute_job(context) -> str:
    from .background import execute_job  # the analyses load only in processes that run a job

    return execute_job(context)


for _name in ANALYSES:
    register_kind(_name, _execute_job, check_job)
