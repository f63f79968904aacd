"""The background worker: claims queued runs from the store and runs each in its own child process.

One worker per results folder and host (a lock file keeps a second one out; workers on other hosts, or with
other results folders on one database, share the queue safely: claims are atomic). Slots: one run per GPU by
default (`per_gpu` packs several; each child sees only its GPU, as `cuda:0`, and gets its share of the CPU
threads), and on the CPU `slots` runs at a time (default 1), the CPU threads split between them.

Runs are independent of the worker: each child is in its own session and writes its own heartbeat, metrics and
final status under the attempt token the claim gave it, so runs go on when the worker (or the dashboard that
started it) stops or restarts; a new worker counts the runs still alive on this host against its slots. A run
whose process dies without finishing is marked `interrupted` (at once by the worker that started it, else by
whoever next reads the store and finds its process gone), so nothing stays `running` forever.
"""
from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..runtime import PROJECT_ROOT
from .store import LostRun, Store, new_id

POLL_S = 1.0
STALE_GRACE_S = 15.0
MAX_PER_GPU = 64
MAX_SLOTS = 256


@dataclass
class Slot:
    name: str                  # "cpu" or "cuda:N" (N: the GPU's index on this host)
    env: dict                  # environment for the child: visible GPU, thread counts
    threads: int = 0           # CPU threads for the child (0: torch's default)
    device: str | None = None  # the device the child trains on, as it sees it ("cuda:0": its one visible GPU)


def _threads_env(threads: int) -> dict:
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def plan_slots(slots: int = 0, per_gpu: int = 1, device: str = "auto", gpus: int | None = None) -> list[Slot]:
    """The worker's slots. GPUs: `per_gpu` per GPU (at most `slots` in all, if given); each child sees only its
    GPU (CUDA_VISIBLE_DEVICES), which it calls cuda:0, and gets an equal share of the CPU threads. CPU: `slots`
    (default 1), threads split evenly. `gpus` overrides the number of GPUs found (tests)."""
    if gpus is None:
        gpus = torch.cuda.device_count() if device != "cpu" and torch.cuda.is_available() else 0
    elif device == "cpu":
        gpus = 0
    cores = os.cpu_count() or 1
    if gpus:
        plan = [(g, i) for g in range(gpus) for i in range(max(1, per_gpu))]
        plan = plan[:slots] if slots else plan
        threads = max(1, cores // len(plan))
        return [Slot(f"cuda:{g}", {"CUDA_VISIBLE_DEVICES": str(g), **_threads_env(threads)}, threads, "cuda:0")
                for g, _ in plan]
    n = max(1, slots or 1)
    threads = max(1, cores // n)
    env = {"CUDA_VISIBLE_DEVICES": "", **_threads_env(threads)}
    return [Slot("cpu", env, threads) for _ in range(n)]


def slot_problems(slots: int, per_gpu: int) -> list[str]:
    """What is wrong with a worker's slot settings (empty when nothing)."""
    problems = []
    if not (isinstance(slots, int) and 0 <= slots <= MAX_SLOTS):
        problems.append(f"--slots must be from 0 (automatic) to {MAX_SLOTS}, got {slots!r}")
    if not (isinstance(per_gpu, int) and 1 <= per_gpu <= MAX_PER_GPU):
        problems.append(f"--per-gpu must be from 1 to {MAX_PER_GPU}, got {per_gpu!r}")
    return problems


class Worker:
    def __init__(self, store: Store, slots: int = 0, per_gpu: int = 1, device: str = "auto",
                 idle_exit_s: float | None = None, data_dir: str | None = None) -> None:
        self.store = store
        self.plan = plan_slots(slots, per_gpu, device)
        self.idle_exit_s = idle_exit_s
        self.data_dir = data_dir
        self.id = new_id("worker")
        self.children: dict[str, tuple[subprocess.Popen, Slot, str]] = {}  # run id -> (process, slot, attempt)
        self.stopping = False
        self._lock_file = None

    def acquire_lock(self) -> bool:
        """Take the results folder's worker lock; False when another worker on this host holds it."""
        self._lock_file = open(self.store.root / "worker.lock", "a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def free_slots(self) -> list[Slot]:
        """Slots not taken by a live run on this host (this worker's children or runs it inherited)."""
        free = list(self.plan)
        for run in self.store.active_here():
            for slot in free:
                if slot.name == (run["slot"] or "cpu"):
                    free.remove(slot)
                    break
        return free

    def spawn(self, run: dict, slot: Slot) -> None:
        run_dir = self.store.run_dir(run["id"])
        run_dir.mkdir(parents=True, exist_ok=True)
        log = open(run_dir / "log.txt", "ab")
        cmd = [sys.executable, "-m", "lab", "_execute", run["id"], "--attempt", run["attempt"],
               "--results", str(self.store.root.resolve())]
        if slot.threads:
            cmd += ["--threads", str(slot.threads)]
        if slot.device:
            cmd += ["--device", slot.device]
        if self.data_dir:
            cmd += ["--data", str(Path(self.data_dir).resolve())]
        env = {**os.environ, **slot.env, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=str(PROJECT_ROOT), start_new_session=True)
        log.close()
        self.children[run["id"]] = (proc, slot, run["attempt"])
        try:
            self.store.update_attempt(run["id"], run["attempt"], pid=proc.pid, slot=slot.name, executor_ref=str(proc.pid))
        except LostRun:
            pass  # the child found out first (it failed fast, or its run was cancelled); collect() sees it exit
        print(f"worker {self.id}: started run {run['id']} ({run['label']}) on {slot.name}, pid {proc.pid}", flush=True)

    def collect(self) -> None:
        """Forget children that exited; a run whose child died without recording an end is interrupted."""
        for run_id, (proc, _slot, attempt) in list(self.children.items()):
            rc = proc.poll()
            if rc is None:
                continue
            del self.children[run_id]
            how = f"killed by signal {-rc}" if rc < 0 else f"exited with code {rc}"
            # only the attempt this child ran: a run resumed meanwhile belongs to its new attempt
            if self.store.set_status(run_id, "interrupted", expect=["running"], attempt=attempt,
                                     message=f"its process {how} before finishing; resume it to continue"):
                print(f"worker {self.id}: run {run_id} {how}; marked interrupted", flush=True)

    def step(self) -> None:
        """One round: heartbeat, collect children, reap stale runs, start queued runs in free slots."""
        self.store.worker_heartbeat(self.id)
        self.collect()
        self.store.reap_stale(STALE_GRACE_S)
        for slot in self.free_slots():
            if self.stopping:
                break
            run = self.store.claim_next(self.id)
            if run is None:
                break
            self.spawn(run, slot)

    def run(self) -> int:
        if not self.acquire_lock():
            print(f"another worker is already running for {self.store.root}; not starting a second one", flush=True)
            return 0
        self.store.register_worker(self.id, len(self.plan), self.plan[0].name)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: setattr(self, "stopping", True))
        print(f"worker {self.id}: pid {os.getpid()}, {len(self.plan)} slot(s) on {self.plan[0].name}, "
              f"results {self.store.root}", flush=True)
        idle_since = time.time()
        try:
            while not self.stopping:
                self.step()
                if self.children:
                    idle_since = time.time()
                elif self.idle_exit_s is not None and time.time() - idle_since > self.idle_exit_s:
                    print(f"worker {self.id}: idle for {self.idle_exit_s:.0f} s, exiting", flush=True)
                    break
                time.sleep(POLL_S)
        finally:
            self.store.remove_worker(self.id)
            if self.children:
                print(f"worker {self.id}: {len(self.children)} run(s) go on in their own processes", flush=True)
        return 0


def ensure_worker(store: Store, slots: int = 0, idle_exit_s: float = 600.0, data_dir: str | None = None,
                  per_gpu: int = 1) -> int | None:
    """Start a detached worker for this store unless a live one exists; returns the new worker's pid or None.

    `slots` and `per_gpu` as for `lab worker` (they apply only when this starts one). The worker is in its own
    session, so it outlives the dashboard or shell that started it.
    """
    if store.live_workers():
        return None
    cmd = [sys.executable, "-m", "lab", "worker", "--results", str(store.root.resolve()),
           "--exit-when-idle", str(idle_exit_s)]
    if slots:
        cmd += ["--slots", str(slots)]
    if per_gpu != 1:
        cmd += ["--per-gpu", str(per_gpu)]
    if data_dir:
        cmd += ["--data", str(Path(data_dir).resolve())]
    log = open(Path(store.root) / "worker.log", "ab")
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
