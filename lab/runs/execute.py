"""Execute one stored run: the trainer wired to the results store, with a heartbeat and graceful stops.

Used by `python -m lab run` (in the foreground) and by the worker's child processes (`python -m lab
_execute RUN`). A heartbeat thread writes the run's heartbeat every few seconds and picks up cancel requests;
SIGTERM and Ctrl-C stop the run at the next iteration with a checkpoint, leaving it `interrupted`.
"""
from __future__ import annotations

import os
import signal
import socket
import threading
import time
import traceback

from ..config import RunConfig
from ..data import DataError
from ..models import ConfigError
from ..train import CHECKPOINT, Reporter, train
from .store import Store, StoreError

HEARTBEAT_S = 3.0


class StoreReporter(Reporter):
    """Writes a run's metrics and state to the store; stops the trainer on cancel or on a signal."""

    def __init__(self, store: Store, run_id: str, heartbeat_s: float = HEARTBEAT_S, echo=print) -> None:
        self.store, self.run_id, self.echo = store, run_id, echo
        self.stop_reason: str | None = None   # "cancel" (user) or "signal" (worker shutdown, Ctrl-C)
        self.total = store.get_run(run_id)["total_iterations"]
        self._stop = threading.Event()
        self._closed = threading.Event()
        self._started = time.time()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat_s,), daemon=True, name="heartbeat")
        self._thread.start()

    def _beat(self, every: float) -> None:
        while not self._closed.wait(every):
            try:
                if self.store.heartbeat(self.run_id) and self.stop_reason is None:
                    self.request_stop("cancel")
            except Exception as exc:  # a transient store error must not kill the run; the next beat retries
                print(f"heartbeat failed: {exc}", flush=True)

    def request_stop(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason
        self._stop.set()

    def close(self) -> None:
        self._closed.set()

    def start(self, env, layers, params, resumed_from):
        # a fresh start clears metrics a failed earlier attempt may have left; a resume drops what came after
        # the checkpoint, so the step sequence has neither gaps nor duplicates
        self.store.truncate_after(self.run_id, resumed_from if resumed_from > 0 else -1)
        self.store.update_run(
            self.run_id, env=env, layers=layers, params=params, device=env["device"], pid=os.getpid(),
            host=socket.gethostname(), iteration=resumed_from, heartbeat_at=time.time(),
        )
        self.echo(f"run {self.run_id}: {env['device']} ({env['device_name']}), {env['precision']}, "
              f"{params:,} parameters, starting at iteration {resumed_from}")

    def log(self, step, scalars, layers, progress):
        values = {"iteration": step}
        if "images_per_s" in progress:
            values["images_per_s"] = progress["images_per_s"]
        if "elapsed_s" in progress:
            values["elapsed_s"] = progress["elapsed_s"]
        self.store.log(
            self.run_id,
            scalars=[(step, k, v) for k, v in scalars.items()],
            layers=[(step, k, v) for k, v in layers.items()],
            **values,
        )
        if "train_error" in scalars:
            extra = f" test error {scalars['test_error']:.4f}" if "test_error" in scalars else ""
            self.echo(f"iteration {step}/{self.total}: train loss {scalars['train_loss']:.4f} "
                  f"train error {scalars['train_error']:.4f}{extra} ({scalars['images_per_s']:.0f} images/s)")

    def should_stop(self):
        return self._stop.is_set()

    def finish(self, status, summary, message):
        if status == "cancelled" and self.stop_reason == "signal":
            status, message = "interrupted", f"stopped by a signal at iteration {summary.get('iteration')}; resume to continue"
        values = {k: summary[k] for k in ("final_train_error", "final_val_error", "final_test_error") if summary.get(k) is not None}
        self.store.set_status(self.run_id, status, expect=["running"], message=message,
                              iteration=summary.get("iteration"), cancel_requested=0, **values)
        self.echo(f"run {self.run_id}: {status}" + (f" ({message})" if message else ""))


def execute_run(store: Store, run_id: str, data_dir=None, progress=None, handle_signals: bool = True,
                echo=None) -> str:
    """Train a stored run (status must already be running) and record how it ended; returns the status.

    `echo` prints progress lines (default: print, flushed, so a child's log file is current)."""
    echo = echo or (lambda text: print(text, flush=True))
    run = store.get_run(run_id)
    reporter = StoreReporter(store, run["id"], echo=echo)
    previous = {}
    if handle_signals and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: reporter.request_stop("signal"))
    try:
        cfg = RunConfig.from_dict(run["config"])
        # a deepened run starts from its parent's checkpoint (the trainer refuses a missing one clearly)
        parent = store.run_dir(store.get_run(cfg.deepen_from)["id"]) / CHECKPOINT if cfg.deepen_from else None
        return train(cfg, store.run_dir(run["id"]), reporter, data_dir=data_dir, progress=progress,
                     parent_checkpoint=parent)
    except (ConfigError, DataError, StoreError) as exc:
        store.set_status(run["id"], "failed", expect=["running"], message=str(exc))  # the caller reports it
        return "failed"
    except Exception as exc:
        traceback.print_exc()
        store.set_status(
            run["id"], "failed", expect=["running"],
            message=f"{type(exc).__name__}: {exc} (the run's log has the traceback)",
        )
        return "failed"
    finally:
        reporter.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
