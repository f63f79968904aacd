"""The background worker: claims queued runs from the store and hands each to an executor that runs it.

Executors (`lab/runs/executors/`): `local` (the default) runs each claimed run in its own child process on this
host, one per slot (one run per GPU, `per_gpu` packs several; on the CPU `slots` at a time); `ray` submits each
as a Ray task to a Ray cluster, which places it on a node with its GPU share free. One worker per results
folder, host and executor (a lock file keeps a second one out; workers on other hosts, or with other results
folders on one database, share the queue safely: claims are atomic).

Runs are independent of the worker: each attempt's process writes its own heartbeat, metrics and final status
under the attempt token the claim gave it. The worker watches what its executor reports: an attempt whose
process or task ended while the store still says `running` under its token is marked `interrupted` (else
whoever next reads the store marks it, finding its process gone or its heartbeat stale), so nothing stays
`running` forever; with `retries` it is queued again, to resume from its last checkpoint, up to that many times
per run (counted in the run's `executor` artifact, so a restarted worker keeps counting). A cancel request is a
store flag the run obeys within seconds; a run that has not stopped `cancel_grace_s` after the request is marked
`cancelled` and its process stopped by the executor.
"""
from __future__ import annotations

import fcntl
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..runtime import PROJECT_ROOT
from .executors import Ended, Executor
from .executors.local import LocalExecutor, Slot, plan_slots  # noqa: F401  (Slot, plan_slots: their old home)
from .store import LostRun, Store, StoreError, new_id
from .slots import auto_slots  # the number of runs at once that finishes the queue soonest (re-exported)

POLL_S = 1.0
STALE_GRACE_S = 15.0
CANCEL_GRACE_S = 60.0     # a run still running this long after a cancel request is stopped by its executor
MAX_PER_GPU = 64
MAX_SLOTS = 256
MAX_RETRIES = 100
RETRIES_ARTIFACT = "executor"  # per run: {"retries": n, "history": [one entry per attempt that was retried]}
WORKER_LOG = "worker.log"      # in the results folder: what the workers `ensure_worker` starts print
WORKER_LOG_MAX_BYTES = 5 * 2**20   # a worker log past this is rotated when the next worker starts
WORKER_LOG_BACKUPS = 3             # worker.log.1 (the newest) .. worker.log.3 are kept


def lock_name(executor: str, host: str | None = None) -> str:
    """The worker lock's file name for `executor` on `host` (default: this one). The host is part of the name:
    a results folder on a network file system shared by several hosts holds one lock per host, so a worker on
    one host never keeps out (nor, where the file system's locks do not reach across hosts, shares a lock with)
    the workers of another."""
    host = re.sub(r"[^A-Za-z0-9._-]", "_", host or socket.gethostname())[:64] or "host"
    return f"worker-{host}.lock" if executor == "local" else f"worker-{host}-{executor}.lock"


def open_worker_log(root: Path):
    """The results folder's worker log, opened for appending; one past WORKER_LOG_MAX_BYTES is first rotated
    (worker.log -> worker.log.1 -> ... -> worker.log.N, the oldest dropped), so it never grows without end."""
    path = Path(root) / WORKER_LOG
    try:
        big = path.stat().st_size > WORKER_LOG_MAX_BYTES
    except OSError:
        big = False
    if big:
        for i in range(WORKER_LOG_BACKUPS - 1, 0, -1):
            older = path.with_name(f"{WORKER_LOG}.{i}")
            if older.exists():
                os.replace(older, path.with_name(f"{WORKER_LOG}.{i + 1}"))
        os.replace(path, path.with_name(f"{WORKER_LOG}.1"))
    return open(path, "ab")


def slot_problems(slots: int, per_gpu: int) -> list[str]:
    """What is wrong with a worker's slot settings (empty when nothing)."""
    problems = []
    if not (isinstance(slots, int) and 0 <= slots <= MAX_SLOTS):
        problems.append(f"--slots must be from 0 (automatic) to {MAX_SLOTS}, got {slots!r}")
    if not (isinstance(per_gpu, int) and 1 <= per_gpu <= MAX_PER_GPU):
        problems.append(f"--per-gpu must be from 1 to {MAX_PER_GPU}, got {per_gpu!r}")
    return problems


def dispatch_problems(retries: int, cancel_grace_s: float) -> list[str]:
    """What is wrong with a worker's retry and cancel settings (empty when nothing)."""
    problems = []
    if not (isinstance(retries, int) and 0 <= retries <= MAX_RETRIES):
        problems.append(f"--retries must be from 0 to {MAX_RETRIES}, got {retries!r}")
    if not (isinstance(cancel_grace_s, (int, float)) and 1 <= cancel_grace_s <= 86400):
        problems.append(f"--cancel-grace must be from 1 to 86400 seconds, got {cancel_grace_s!r}")
    return problems


class Worker:
    """Claims queued runs for `executor` (default: a LocalExecutor with `slots`, `per_gpu`, `device`,
    `data_dir`) and watches them: marks attempts that ended without recording an end `interrupted`, queues them
    again up to `retries` times, and stops runs that ignore a cancel request for `cancel_grace_s`."""

    def __init__(self, store: Store, slots: int = 0, per_gpu: int = 1, device: str = "auto",
                 idle_exit_s: float | None = None, data_dir: str | None = None, executor: Executor | None = None,
                 retries: int = 0, cancel_grace_s: float = CANCEL_GRACE_S) -> None:
        self.store = store
        self.executor = executor or LocalExecutor(store, slots=slots, per_gpu=per_gpu, device=device,
                                                  data_dir=data_dir)
        self.idle_exit_s = idle_exit_s
        self.retries = retries
        self.cancel_grace_s = cancel_grace_s
        self.id = new_id("worker")
        self.stopping = False
        self._lock_file = None
        self._cancel_seen: dict[str, float] = {}   # run id -> when this worker first saw its cancel request
        self._stopping: set[str] = set()           # runs whose processes the executor is stopping

    # the local executor's slots and children, where the worker kept them before executors
    @property
    def plan(self) -> list[Slot]:
        return self.executor.plan

    @plan.setter
    def plan(self, plan: list[Slot]) -> None:
        self.executor.plan = plan

    @property
    def children(self) -> dict[str, str]:
        return self.executor.active()

    def acquire_lock(self) -> bool:
        """Take the results folder's worker lock for this executor; False when another worker on this host
        holds it."""
        self._lock_file = open(self.store.root / lock_name(self.executor.name), "a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def free_slots(self) -> list:
        return self.executor.free_slots()

    def say(self, text: str) -> None:
        print(f"worker {self.id}: {text}", flush=True)

    def spawn(self, run: dict, slot) -> None:
        where = self.executor.submit(run, slot)
        self.say(f"started run {run['id']} ({run['label']}) {where}")

    def collect(self) -> None:
        """Attempts that ended: one that did not record an end is interrupted (and retried if allowed)."""
        for ended in self.executor.poll():
            self._cancel_seen.pop(ended.run_id, None)
            self._stopping.discard(ended.run_id)
            # only the attempt that ended: a run resumed meanwhile belongs to its new attempt
            if self.store.set_status(ended.run_id, "interrupted", expect=["running"], attempt=ended.attempt,
                                     message=f"{ended.why} before finishing; resume it to continue"):
                self.say(f"run {ended.run_id}: {ended.why}; marked interrupted")
            if self.retries:
                self.retry(ended)

    def retry(self, ended: Ended) -> bool:
        """Queue an interrupted attempt's run again (it resumes from its last checkpoint) unless its retries
        are used up; True when queued. Runs that ended otherwise (done, failed, cancelled) are left alone."""
        from ..checkpoint import checkpoint_problem

        try:
            run = self.store.get_run(ended.run_id)
        except StoreError:
            return False  # deleted
        if run["status"] != "interrupted" or run["attempt"] != ended.attempt:
            return False
        record = self.store.artifact(run["id"], RETRIES_ARTIFACT) or {}
        used = int(record.get("retries", 0))
        if used >= self.retries:
            self.say(f"run {run['id']}: not queued again, its {used} retr{'y' if used == 1 else 'ies'} used")
            return False
        try:
            self.store.requeue(run["id"], checkpoint_problem=checkpoint_problem)
        except StoreError as exc:
            self.say(f"run {run['id']}: cannot be queued again: {exc}")
            return False
        entry = dict(attempt=ended.attempt, why=ended.why, slot=run["slot"], host=run["host"],
                     executor=run["executor"], executor_ref=run["executor_ref"], iteration=run["iteration"],
                     at=time.time(), **{k: v for k, v in ended.details.items() if k in ("node", "returncode")})
        self.store.put_artifact(run["id"], RETRIES_ARTIFACT,
                                {"retries": used + 1, "history": list(record.get("history", [])) + [entry]})
        self.say(f"run {run['id']}: queued again to resume from iteration {run['iteration']} "
                 f"(retry {used + 1} of {self.retries})")
        return True

    def watch(self) -> None:
        """The executor's live attempts: keep a placed run that has no process yet from looking dead (a Ray
        task waiting for its node), and stop runs that ignore a cancel request."""
        now = time.time()
        for run_id, attempt in self.executor.active().items():
            if run_id in self._stopping:
                self.executor.stop(run_id)  # again: executors escalate while a process does not go
                continue
            try:
                run = self.store.get_run(run_id)
            except StoreError:
                continue
            if run["status"] != "running" or run["attempt"] != attempt:
                continue  # it recorded its end, or lost its run: its process exits by itself
            if run["pid"] is None:
                try:
                    self.store.heartbeat(run_id, attempt)
                except LostRun:
                    continue
            if not run["cancel_requested"]:
                continue
            first = self._cancel_seen.setdefault(run_id, now)
            started = run["pid"] is not None
            if started and now - first < self.cancel_grace_s:
                continue
            message = (f"cancelled; it did not stop within {self.cancel_grace_s:g} s of the request, so the "
                       f"worker stopped its process" if started else "cancelled before its process started")
            if self.store.set_status(run_id, "cancelled", expect=["running"], attempt=attempt, cancel_requested=0,
                                     message=message):
                self.say(f"run {run_id}: {message}")
                self._stopping.add(run_id)
                self.executor.stop(run_id)

    def step(self) -> None:
        """One round: heartbeat, collect ended attempts, watch live ones, reap stale runs, start queued runs in
        free slots."""
        self.store.worker_heartbeat(self.id)
        self.collect()
        self.watch()
        self.store.reap_stale(STALE_GRACE_S)
        for slot in self.free_slots():
            if self.stopping:
                break
            run = self.store.claim_next(self.id, executor=self.executor.name)
            if run is None:
                break
            self.spawn(run, slot)

    def run(self) -> int:
        if not self.acquire_lock():
            print(f"another {self.executor.name} worker is already running for {self.store.root}; "
                  f"not starting a second one", flush=True)
            return 0
        self.store.register_worker(self.id, self.executor.capacity(), self.executor.kind())
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: setattr(self, "stopping", True))
        self.say(f"pid {os.getpid()}, {self.executor.describe()}, results {self.store.root}")
        idle_since = time.time()
        try:
            while not self.stopping:
                self.step()
                if self.executor.active():
                    idle_since = time.time()
                elif self.idle_exit_s is not None and time.time() - idle_since > self.idle_exit_s:
                    self.say(f"idle for {self.idle_exit_s:.0f} s, exiting")
                    break
                time.sleep(POLL_S)
        finally:
            self.shutdown()
        return 0

    def shutdown(self) -> None:
        """Release the executor; runs it had to stop on the way out are queued again (not counted as retries),
        so the next worker resumes them."""
        try:
            for run_id, attempt in self.executor.shutdown():
                try:
                    run = self.store.get_run(run_id)
                    if run["status"] not in ("interrupted", "running") or run["attempt"] != attempt:
                        continue  # it finished, was cancelled, or belongs to another attempt now
                    self.store.set_status(run_id, "interrupted", expect=["running"], attempt=attempt,
                                          message="its worker stopped it on the way out; resume it to continue")
                    self.store.requeue(run_id)
                    self.say(f"run {run_id}: stopped with this worker; queued again")
                except StoreError as exc:
                    self.say(f"run {run_id}: stopped with this worker, not queued again: {exc}")
        finally:
            self.store.remove_worker(self.id)
        if self.executor.active():
            self.say(f"{len(self.executor.active())} run(s) go on in their own processes")


def ensure_worker(store: Store, slots: int = 0, idle_exit_s: float = 600.0, data_dir: str | None = None,
                  per_gpu: int = 1) -> int | None:
    """Start a detached worker for this store unless a live one exists; returns the new worker's pid or None.

    `slots` and `per_gpu` as for `lab worker` (they apply only when this starts one); `slots` 0 is the number
    that finishes the store's queued runs soonest here (`auto_slots`). The worker is in its own session, so it
    outlives the dashboard or shell that started it; it prints to the results folder's worker.log (rotated).
    """
    if store.live_workers():
        return None
    if not slots:
        slots, _ = auto_slots("auto", store, per_gpu=per_gpu)
    cmd = [sys.executable, "-m", "lab", "worker", "--results", str(store.root.resolve()),
           "--exit-when-idle", str(idle_exit_s), "--slots", str(slots)]
    if per_gpu != 1:
        cmd += ["--per-gpu", str(per_gpu)]
    if data_dir:
        cmd += ["--data", str(Path(data_dir).resolve())]
    log = open_worker_log(store.root)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, cwd=str(PROJECT_ROOT), env=env, close_fds=True)
    log.close()
    threading.Thread(target=proc.wait, daemon=True).start()  # reap it when it exits: no zombie
    deadline = time.time() + 20
    while time.time() < deadline and proc.poll() is None:  # wait until it has registered itself
        if store.live_workers():
            break
        time.sleep(0.2)
    return proc.pid
