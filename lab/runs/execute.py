"""Execute one attempt of a stored run: the trainer wired to the results store, with a heartbeat, ownership and
graceful stops.

Used by `python -m lab run` (in the foreground) and by the worker's child processes (`python -m lab _execute RUN
--attempt TOKEN`). The attempt token says which attempt owns the run: every write this process makes (heartbeat,
metrics, checkpoint, final status) is checked against it, and a process that lost its run (marked interrupted and
resumed elsewhere, deleted) stops at once, says so in its log, writes nothing more and reports "lost". A
heartbeat thread writes the run's heartbeat every few seconds and picks up cancel requests; SIGTERM and Ctrl-C
stop the run at the next iteration with a checkpoint, leaving it `interrupted`.

Which code a row runs depends on its `job` column, through the kinds registered in `lab.runs.kinds`: `train`
(this module's, the trainer) and whatever the layers above register (the analyses, by `lab.analysis.queue`).
Every kind runs under the same token, heartbeat and stops; `JobContext` is what a kind's `execute` gets.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import socket
import threading
import traceback
from collections import deque

from dataclasses import dataclass
from typing import Callable

from ..config import RunConfig
from ..errors import LabError
from ..train import CHECKPOINT, Reporter, train
from .kinds import job_kind, register_kind
from .store import JOBS_DEFAULT, LostRun, Store, StoreError

HEARTBEAT_S = 3.0
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

    def log_tail(self) -> str:
        """The attempt's last log lines, as stored in the run's `log_tail`."""
        return "\n".join(self.tail)

    def _beat(self, every: float) -> None:
        while not self._closed.wait(every):
            try:
                if self.store.heartbeat(self.run_id, self.attempt) and self.stop_reason is None:
                    self.request_stop("cancel")
            except LostRun as exc:
                self.lose(exc)
                return
            except Exception as exc:  # a transient store error must not kill the run; the next beat retries
                print(f"heartbeat failed: {exc}", flush=True)

    def lose(self, exc: LostRun) -> LostRun:
        """Note that the attempt lost its run (stopping it); returns the LostRun to raise."""
        self.lost = self.lost or exc
        self.request_stop("lost")
        return self.lost

    def check(self) -> None:
        """LostRun once the attempt has lost its run: nothing more may be written."""
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
            raise self.lose(exc) from None
        self.echo(f"run {self.run_id}: {env['device']} ({env['device_name']}), {env['precision']}, "
                  f"{params:,} parameters, starting at iteration {resumed_from}")

    def log(self, step, scalars, layers, progress):
        self.check()
        values = {"iteration": step, "log_tail": self.log_tail()}
        if "images_per_s" in progress:
            values["images_per_s"] = progress["images_per_s"]
        if "elapsed_s" in progress:
            values["elapsed_s"] = progress["elapsed_s"]
        try:
            self.store.log(self.run_id, scalars=[(step, k, v) for k, v in scalars.items()],
                           layers=[(step, k, v) for k, v in layers.items()], attempt=self.attempt, **values)
        except LostRun as exc:
            raise self.lose(exc) from None
        if "train_error" in scalars:
            extra = f" test error {scalars['test_error']:.4f}" if "test_error" in scalars else ""
            self.echo(f"iteration {step}/{self.total}: train loss {scalars['train_loss']:.4f} "
                      f"train error {scalars['train_error']:.4f}{extra} ({scalars['images_per_s']:.0f} images/s)")

    def should_stop(self):
        self.check()
        return self._stop.is_set()

    def before_checkpoint(self, step):
        self.check()
        if not self.store.owns(self.run_id, self.attempt):
            raise self.lose(self.store.lost_run(self.run_id, self.attempt))

    def finish(self, status, summary, message):
        self.check()
        if status == "cancelled" and self.stop_reason == "signal":
            status, message = "interrupted", f"stopped by a signal at iteration {summary.get('iteration')}; resume to continue"
        values = {k: summary[k] for k in ("final_train_error", "final_val_error", "final_test_error") if summary.get(k) is not None}
        line = f"run {self.run_id}: {status}" + (f" ({message})" if message else "")
        self.tail.append(line)
        if not self.store.set_status(self.run_id, status, expect=["running"], attempt=self.attempt, message=message,
                                     iteration=summary.get("iteration"), cancel_requested=0,
                                     log_tail=self.log_tail(), **values):
            raise self.lose(self.store.lost_run(self.run_id, self.attempt))
        self.status = status
        self._print(line)

    def end(self, status: str, message: str, **values) -> str:
        """Record how a job's attempt ended (only while it owns the job: else LostRun); returns the status."""
        self.check()
        line = f"job {self.run_id}: {status} ({message})"
        self.tail.append(line)
        if not self.store.set_status(self.run_id, status, expect=["running"], attempt=self.attempt,
                                     message=message, cancel_requested=0, log_tail=self.log_tail(), **values):
            raise self.lose(self.store.lost_run(self.run_id, self.attempt))
        self.status = status
        self._print(line)
        return status

    def fail(self, message: str) -> str:
        """End the attempt as failed with `message`; returns the status recorded ('failed', or 'lost' when
        this attempt no longer owns the run)."""
        line = f"run {self.run_id}: failed ({message})"
        self.tail.append(line)
        if self.store.set_status(self.run_id, "failed", expect=["running"], attempt=self.attempt, message=message,
                                 log_tail=self.log_tail()):
            self.status = "failed"
            return "failed"
        return "lost"


def placed_device(configured: str, slot_device: str | None) -> str:
    """The device a run trains on: its executor's slot (a worker's GPU, as the child sees it) unless the run
    asks for the CPU or no slot was given."""
    return slot_device if slot_device and configured != "cpu" else configured


@dataclass
class JobContext:
    """What a kind's `execute` gets: the store, the claimed row (`row`, decoded), the attempt's reporter (its
    ownership, log and stop requests), and where and with what the row runs."""
    store: Store
    row: dict
    reporter: StoreReporter
    data_dir: str | None = None
    device: str | None = None          # the executor's slot device ('cuda:0' in a child that sees one GPU)
    progress: Callable | None = None   # progress(done, total), for a foreground bar


def execute_run(store: Store, run_id: str, data_dir=None, progress=None, handle_signals: bool = True,
                echo=None, attempt: str | None = None, device: str | None = None) -> str:
    """Execute a stored row (status must already be running) by its kind (`lab.runs.kinds`: a training run, an
    analysis job) and record how it ended; returns the status this attempt recorded ('done', 'failed',
    'diverged', 'cancelled', 'interrupted'), or 'lost' when the attempt lost its run and stopped without
    recording anything.

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
        kind = job_kind(run.get("job") or JOBS_DEFAULT)
        if kind.check is not None:
            kind.check(run)
        context = JobContext(store, run, reporter, data_dir=data_dir, device=device, progress=progress)
        return kind.execute(context)
    except LostRun as exc:
        echo(f"{exc}; this attempt stopped without writing anything more (the run's state is the new owner's)")
        return "lost"
    except LabError as exc:
        return _fail(reporter, str(exc), echo)
    except Exception as exc:
        traceback.print_exc()
        return _fail(reporter, f"{type(exc).__name__}: {exc} (the run's log has the traceback)", echo)
    finally:
        reporter.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _train(context: JobContext) -> str:
    """The `train` kind: train the row's RunConfig, deepened from its stored parent's checkpoint if it has one."""
    store, run, reporter = context.store, context.row, context.reporter
    cfg = RunConfig.from_dict(run["config"])
    if placed_device(cfg.device, context.device) != cfg.device:
        cfg = dataclasses.replace(cfg, device=placed_device(cfg.device, context.device))
    parent = None
    if cfg.deepen_from:  # a deepened run starts from its parent's checkpoint (the trainer refuses a missing one)
        parent = store.run_dir(deepened_parent(store, run)) / CHECKPOINT
    train(cfg, store.run_dir(run["id"]), reporter, data_dir=context.data_dir, progress=context.progress,
          parent_checkpoint=parent)
    return reporter.status or "lost"


def deepened_parent(store: Store, run: dict) -> str:
    """The id of the run a deepened run starts from: the parent stored when it was queued (its `deepen_from`
    resolved then), never that prefix resolved again, which may name another run by now. StoreError when it
    has none or that run was deleted."""
    parent_id = run.get("parent_id")
    if not parent_id:
        ref = run["config"].get("deepen_from")
        raise StoreError(f"run {run['id']} deepens {ref!r}, but there was no run {ref!r} when it was queued; queue "
                         f"it again naming its parent's id")
    try:
        return store.get_run(parent_id)["id"]  # a full id: it names that run or none (ids never prefix each other)
    except StoreError:
        raise StoreError(f"run {run['id']} deepens run {parent_id}, which is not in the store any more "
                         f"(deleted)") from None


register_kind(JOBS_DEFAULT, _train)


def _fail(reporter: StoreReporter, message: str, echo) -> str:
    try:
        status = reporter.fail(message)
    except StoreError as exc:  # the store itself is failing (a full disk): the process exit tells the worker
        echo(f"run {reporter.run_id}: failed ({message}); recording that failed too: {exc}")
        return "failed"
    if status == "lost":
        echo(f"run {reporter.run_id}: this process no longer owns the run; its failure ({message}) is not recorded")
    return status
