"""Execute one attempt of a stored run: the trainer wired to the results store, with a heartbeat, ownership and
graceful stops.

Used by `python -m lab run` (in the foreground) and by the worker's child processes (`python -m lab _execute RUN
--attempt TOKEN`). The attempt token says which attempt owns the run: every write this process makes (heartbeat,
metrics, checkpoint, final status) is checked against it, and a process that lost its run (marked interrupted and
resumed elsewhere, deleted) stops at once, says so in its log, writes nothing more and reports "lost". A
heartbeat thread writes the run's heartbeat every few seconds and picks up cancel requests; SIGTERM and Ctrl-C
stop the run at the next iteration with a checkpoint, leaving it `interrupted`.

A row whose `job` is an analysis ('lesion', 'landscape', 'shatter'; see `lab.analysis.queue`) is executed the
same way, by the analysis instead of the trainer: same token, heartbeat and stops, its progress (units of work)
in `iteration` / `total_iterations`, its result saved for the run it analyses, none when it is stopped.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import socket
import threading
import time
import traceback
from collections import deque

from ..analysis.errors import AnalysisError, Cancelled
from ..checkpoint import CheckpointError
from ..config import RunConfig
from ..data import DataError
from ..models import ConfigError
from ..train import CHECKPOINT, Reporter, train
from .store import JOBS_DEFAULT, LostRun, Store, StoreError

HEARTBEAT_S = 3.0
PARENT_POLL_S = 2.0   # how often a job waiting for its run to finish training looks again
LOG_TAIL_LINES = 40   # log lines kept in the store (runs.log_tail), for runs whose log file is on another host


class StoreReporter(Reporter):
    """Writes one attempt's metrics and state to the store; stops the trainer on cancel, on a signal, or when
    the attempt lost its run (then raising LostRun, so nothing more is written)."""

    def __init__(self, store: Store, run_id: str, attempt: str, heartbeat_s: float = HEARTBEAT_S, echo=print,
                 total: int | None = None) -> None:
        self.store, self.run_id, self.attempt, self._print = store, run_id, attempt, echo
        self.stop_reason: str | None = None   # "cancel" (user), "signal" (worker shutdown, Ctrl-C), "lost"
        self.lost: LostRun | None = None
        self.status: str | None = None        # the status this attempt recorded at its end
        self.total = total if total is not None else store.get_run(run_id)["total_iterations"]
        self.tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        self._stop = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat_s,), daemon=True, name="heartbeat")
        self._thread.start()

    # --- plumbing -------------------------------------------------------------------------------------
    def echo(self, text: str) -> None:
        self.tail.append(text)
        self._print(text)

    def _log_tail(self) -> str:
        return "\n".join(self.tail)

    def _beat(self, every: float) -> None:
        while not self._closed.wait(every):
            try:
                if self.store.heartbeat(self.run_id, self.attempt) and self.stop_reason is None:
                    self.request_stop("cancel")
            except LostRun as exc:
                self._lose(exc)
                return
            except Exception as exc:  # a transient store error must not kill the run; the next beat retries
                print(f"heartbeat failed: {exc}", flush=True)

    def _lose(self, exc: LostRun) -> LostRun:
        self.lost = self.lost or exc
        self.request_stop("lost")
        return self.lost

    def _check(self) -> None:
        if self.lost is not None:
            raise self.lost

    def request_stop(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason
        self._stop.set()

    def close(self) -> None:
        self._closed.set()

    # --- the Reporter interface -----------------------------------------------------------------------
    def start(self, env, layers, params, resumed_from):
        if resumed_from == 0:
            stored = self.store.metric_count(self.run_id)
            if stored:  # starting over would delete them: only `resume --from-scratch` may (it archives them)
                raise StoreError(
                    f"run {self.run_id} has {stored} stored metric values but no checkpoint to continue from; "
                    f"resume it with --from-scratch to train it again from iteration 0 (its metrics are archived)")
        try:
            # a resume drops what came after the checkpoint, so the step sequence has neither gaps nor duplicates
            self.store.truncate_after(self.run_id, resumed_from if resumed_from > 0 else -1, attempt=self.attempt)
            self.store.update_attempt(
                self.run_id, self.attempt, env=env, layers=layers, params=params, device=env["device"],
                pid=os.getpid(), host=socket.gethostname(), iteration=resumed_from,
            )
            self.store.heartbeat(self.run_id, self.attempt)
        except LostRun as exc:
            raise self._lose(exc) from None
        self.echo(f"run {self.run_id}: {env['device']} ({env['device_name']}), {env['precision']}, "
                  f"{params:,} parameters, starting at iteration {resumed_from}")

    def log(self, step, scalars, layers, progress):
        self._check()
        values = {"iteration": step, "log_tail": self._log_tail()}
        if "images_per_s" in progress:
            values["images_per_s"] = progress["images_per_s"]
        if "elapsed_s" in progress:
            values["elapsed_s"] = progress["elapsed_s"]
        try:
            self.store.log(self.run_id, scalars=[(step, k, v) for k, v in scalars.items()],
                           layers=[(step, k, v) for k, v in layers.items()], attempt=self.attempt, **values)
        except LostRun as exc:
            raise self._lose(exc) from None
        if "train_error" in scalars:
            extra = f" test error {scalars['test_error']:.4f}" if "test_error" in scalars else ""
            self.echo(f"iteration {step}/{self.total}: train loss {scalars['train_loss']:.4f} "
                      f"train error {scalars['train_error']:.4f}{extra} ({scalars['images_per_s']:.0f} images/s)")

    def should_stop(self):
        self._check()
        return self._stop.is_set()

    def before_checkpoint(self, step):
        self._check()
        if not self.store.owns(self.run_id, self.attempt):
            raise self._lose(self.store._lost(self.run_id, self.attempt))

    def finish(self, status, summary, message):
        self._check()
        if status == "cancelled" and self.stop_reason == "signal":
            status, message = "interrupted", f"stopped by a signal at iteration {summary.get('iteration')}; resume to continue"
        values = {k: summary[k] for k in ("final_train_error", "final_val_error", "final_test_error") if summary.get(k) is not None}
        line = f"run {self.run_id}: {status}" + (f" ({message})" if message else "")
        self.tail.append(line)
        if not self.store.set_status(self.run_id, status, expect=["running"], attempt=self.attempt, message=message,
                                     iteration=summary.get("iteration"), cancel_requested=0,
                                     log_tail=self._log_tail(), **values):
            raise self._lose(self.store._lost(self.run_id, self.attempt))
        self.status = status
        self._print(line)

    def fail(self, message: str) -> str:
        """End the attempt as failed with `message`; returns the status recorded ('failed', or 'lost' when
        this attempt no longer owns the run)."""
        line = f"run {self.run_id}: failed ({message})"
        self.tail.append(line)
        if self.store.set_status(self.run_id, "failed", expect=["running"], attempt=self.attempt, message=message,
                                 log_tail=self._log_tail()):
            self.status = "failed"
            return "failed"
        return "lost"


def placed_device(configured: str, slot_device: str | None) -> str:
    """The device a run trains on: its executor's slot (a worker's GPU, as the child sees it) unless the run
    asks for the CPU or no slot was given."""
    return slot_device if slot_device and configured != "cpu" else configured


def execute_run(store: Store, run_id: str, data_dir=None, progress=None, handle_signals: bool = True,
                echo=None, attempt: str | None = None, device: str | None = None) -> str:
    """Train a stored run (status must already be running), or run a stored analysis job, and record how it
    ended; returns the status this attempt recorded ('done', 'failed', 'diverged', 'cancelled', 'interrupted'),
    or 'lost' when the attempt lost its run and stopped without recording anything.

    `attempt`: the token of the attempt this process executes (given by whoever claimed the run); without
    one, the process takes ownership of a running run no attempt owns yet. `device`: where the executor placed
    the run (a worker's GPU slot: 'cuda:0' inside a child that sees one GPU); a run configured for the CPU
    stays there. `echo` prints progress lines (default: print, flushed, so a child's log file is current)."""
    echo = echo or (lambda text: print(text, flush=True))
    run = store.get_run(run_id)
    attempt = store.begin_attempt(run["id"], attempt, pid=os.getpid(), host=socket.gethostname())
    reporter = StoreReporter(store, run["id"], attempt, echo=echo, total=run["total_iterations"])
    previous = {}
    if handle_signals and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: reporter.request_stop("signal"))
    try:
        if (run.get("job") or JOBS_DEFAULT) != JOBS_DEFAULT:
            return _analyse(store, run, reporter, data_dir=data_dir, device=device, progress=progress)
        cfg = RunConfig.from_dict(run["config"])
        if placed_device(cfg.device, device) != cfg.device:
            cfg = dataclasses.replace(cfg, device=placed_device(cfg.device, device))
        parent = None
        if cfg.deepen_from:  # a deepened run starts from its parent's checkpoint (the trainer refuses a missing one)
            parent_id = store.get_run(cfg.deepen_from)["id"]
            store.update_attempt(run["id"], attempt, parent_id=parent_id)
            parent = store.run_dir(parent_id) / CHECKPOINT
        train(cfg, store.run_dir(run["id"]), reporter, data_dir=data_dir, progress=progress, parent_checkpoint=parent)
        return reporter.status or "lost"
    except LostRun as exc:
        echo(f"{exc}; this attempt stopped without writing anything more (the run's state is the new owner's)")
        return "lost"
    except (ConfigError, DataError, CheckpointError, StoreError, AnalysisError) as exc:
        return _fail(reporter, str(exc), echo)
    except Exception as exc:
        traceback.print_exc()
        return _fail(reporter, f"{type(exc).__name__}: {exc} (the run's log has the traceback)", echo)
    finally:
        reporter.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _fail(reporter: StoreReporter, message: str, echo) -> str:
    try:
        status = reporter.fail(message)
    except StoreError as exc:  # the store itself is failing (a full disk): the process exit tells the worker
        echo(f"run {reporter.run_id}: failed ({message}); recording that failed too: {exc}")
        return "failed"
    if status == "lost":
        echo(f"run {reporter.run_id}: this process no longer owns the run; its failure ({message}) is not recorded")
    return status


def _analyse(store: Store, job: dict, reporter: StoreReporter, data_dir=None, device: str | None = None,
             progress=None) -> str:
    """Execute analysis job `job` under the reporter's attempt: wait while the run it analyses still trains,
    run the analysis with progress and cancel, save its result for that run, record the job's end."""
    from ..analysis.jobs import run_analysis  # the analyses load only in processes that run one
    from ..analysis.queue import check_job
    from ..analysis.results import save_result
    from ..runtime import resolve_device

    job_id, attempt = job["id"], reporter.attempt
    parent_id, name, options = check_job(job)
    where = str(resolve_device(placed_device("auto", device)))
    try:
        store.update_attempt(job_id, attempt, pid=os.getpid(), host=socket.gethostname(), device=where, iteration=0)
    except LostRun as exc:
        raise reporter._lose(exc) from None
    started = time.perf_counter()

    def should_stop() -> bool:
        # asked at every unit of work (an evaluation: seconds), so a cancel lands at the next one
        reporter._check()
        if store.heartbeat(job_id, attempt) and reporter.stop_reason is None:
            reporter.request_stop("cancel")
        return reporter.should_stop()

    def on_progress(done: int, total: int) -> None:
        reporter._check()
        try:
            store.log(job_id, attempt=attempt, iteration=done, total_iterations=total,
                      elapsed_s=time.perf_counter() - started, log_tail=reporter._log_tail())
        except LostRun as exc:
            raise reporter._lose(exc) from None
        if done == 0 or done == total or done % max(1, total // 10) == 0:
            reporter.echo(f"job {job_id}: {done}/{total}")
        if progress is not None:
            progress(done, total)

    def note(text: str) -> None:  # a state worth showing before any progress: the log tail and the run's note
        reporter.echo(text)
        try:
            store.update_attempt(job_id, attempt, message=text, log_tail=reporter._log_tail())
        except LostRun as exc:
            raise reporter._lose(exc) from None

    try:
        _wait_for_training(store, parent_id, options, should_stop, note)
        run = store.get_run(parent_id)
        reporter.echo(f"job {job_id}: {name} of run {parent_id} ({run.get('label')}, {run['status']}) on {where}, "
                      f"options {_options_line(options)}")
        result_key, result = run_analysis(store, parent_id, name, options, data_dir=data_dir, device=where,
                                          progress=on_progress, should_stop=should_stop)
    except Cancelled as exc:
        signal_stop = reporter.stop_reason == "signal"
        status = "interrupted" if signal_stop else "cancelled"
        message = f"{exc} by a signal; queue it again to redo it" if signal_stop else f"{exc}; no result saved"
        return _end(reporter, status, message)
    if not store.owns(job_id, attempt):  # nothing is written by an attempt that lost its job
        raise reporter._lose(store._lost(job_id, attempt))
    save_result(store, parent_id, result_key, result)
    total = store.get_run(job_id)["total_iterations"]
    return _end(reporter, "done", f"saved result {result_key!r} of run {parent_id} ({result['elapsed_s']:.1f} s)",
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


def _end(reporter: StoreReporter, status: str, message: str, **values) -> str:
    """Record how a job's attempt ended (only while it owns the job: else LostRun); returns the status."""
    line = f"job {reporter.run_id}: {status} ({message})"
    reporter.tail.append(line)
    if not reporter.store.set_status(reporter.run_id, status, expect=["running"], attempt=reporter.attempt,
                                     message=message, cancel_requested=0, log_tail=reporter._log_tail(), **values):
        raise reporter._lose(reporter.store._lost(reporter.run_id, reporter.attempt))
    reporter.status = status
    reporter._print(line)
    return status


def _options_line(options: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(options.items()))
