"""An analysis job executed by the runs layer: the `execute` of the analysis kinds that `lab.analysis.queue`
registers with `lab.runs.kinds`.

The runs layer claims the job's row and calls `execute_job` under the attempt's reporter (same token,
heartbeat and stops as training); this module waits while the analysed run still trains, runs the analysis
with progress (units of work in the row's `iteration` / `total_iterations`) and cancel, saves the result for
the analysed run, and records the job's end. A stopped job saves nothing.
"""
from __future__ import annotations

import os
import socket
import time

from ..runs.execute import JobContext, placed_device
from ..runs.store import LostRun, Store, StoreError
from .errors import AnalysisError, Cancelled

PARENT_POLL_S = 2.0   # how often a job waiting for its run to finish training looks again


def execute_job(context: JobContext) -> str:
    """Execute the analysis job `context.row`: wait while the run it analyses still trains, run the analysis
    with progress and cancel, save its result for that run, record the job's end; returns the status."""
    from ..runtime import resolve_device
    from .jobs import run_analysis  # the analyses load only in processes that run one
    from .queue import check_job
    from .results import save_result

    store, job, reporter = context.store, context.row, context.reporter
    job_id, attempt = job["id"], reporter.attempt
    parent_id, name, options = check_job(job)
    where = str(resolve_device(placed_device("auto", context.device)))
    try:
        store.update_attempt(job_id, attempt, pid=os.getpid(), host=socket.gethostname(), device=where, iteration=0)
    except LostRun as exc:
        raise reporter.lose(exc) from None
    started = time.perf_counter()

    def should_stop() -> bool:
        # asked at every unit of work (an evaluation: seconds), so a cancel lands at the next one
        reporter.check()
        if store.heartbeat(job_id, attempt) and reporter.stop_reason is None:
            reporter.request_stop("cancel")
        return reporter.should_stop()

    def on_progress(done: int, total: int) -> None:
        reporter.check()
        try:
            store.log(job_id, attempt=attempt, iteration=done, total_iterations=total,
                      elapsed_s=time.perf_counter() - started, log_tail=reporter.log_tail())
        except LostRun as exc:
            raise reporter.lose(exc) from None
        if done == 0 or done == total or done % max(1, total // 10) == 0:
            reporter.echo(f"job {job_id}: {done}/{total}")
        if context.progress is not None:
            context.progress(done, total)

    def note(text: str) -> None:  # a state worth showing before any progress: the log tail and the run's note
        reporter.echo(text)
        try:
            store.update_attempt(job_id, attempt, message=text, log_tail=reporter.log_tail())
        except LostRun as exc:
            raise reporter.lose(exc) from None

    try:
        _wait_for_training(store, parent_id, options, should_stop, note)
        run = store.get_run(parent_id)
        reporter.echo(f"job {job_id}: {name} of run {parent_id} ({run.get('label')}, {run['status']}) on {where}, "
                      f"options {_options_line(options)}")
        result_key, result = run_analysis(store, parent_id, name, options, data_dir=context.data_dir, device=where,
                                          progress=on_progress, should_stop=should_stop)
    except Cancelled as exc:
        signal_stop = reporter.stop_reason == "signal"
        status = "interrupted" if signal_stop else "cancelled"
        message = f"{exc} by a signal; queue it again to redo it" if signal_stop else f"{exc}; no result saved"
        return reporter.end(status, message)
    if not store.owns(job_id, attempt):  # nothing is written by an attempt that lost its job
        raise reporter.lose(store.lost_run(job_id, attempt))
    save_result(store, parent_id, result_key, result)
    total = store.get_run(job_id)["total_iterations"]
    return reporter.end("done", f"saved result {result_key!r} of run {parent_id} ({result['elapsed_s']:.1f} s)",
                        iteration=total, elapsed_s=time.perf_counter() - started)


def _wait_for_training(store: Store, parent_id: str, options: dict, should_stop, note) -> None:
    """Weights that are still training are not the run's result: wait while the analysed run is running (the
    store's queue holds a job back while its run is queued or running; a run resumed meanwhile is waited for)."""
    try:
        store.get_run(parent_id)
    except StoreError:
        raise AnalysisError(f"run {parent_id}, which this job analyses, is not in the store any more (deleted)") from None
    if options.get("at") == "init":
        return
    said = False
    while store.get_run(parent_id)["status"] == "running":
        if not said:
            note(f"waiting for run {parent_id} to finish training")
            said = True
        if should_stop():
            raise Cancelled(f"stopped while waiting for run {parent_id} to finish training")
        time.sleep(PARENT_POLL_S)
    if said:
        note(f"run {parent_id} finished training ({store.get_run(parent_id)['status']}); analysing it")


def _options_line(options: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(options.items()))
