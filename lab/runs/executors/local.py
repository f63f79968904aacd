"""The local executor: each run in its own child process on this host, one per slot.

Slots: one run per GPU by default (`per_gpu` packs several; each child sees only its GPU, as `cuda:0`, and gets
its share of the CPU threads), and on the CPU `slots` runs at a time (default 1), the CPU threads split between
them. Each child is in its own session, so it goes on when the worker stops; a new worker counts the runs still
alive on this host against its slots.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from ...runtime import PROJECT_ROOT, mps_status
from ..store import LostRun, Store
from . import Ended, Executor


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


class LocalExecutor(Executor):
    """Child processes on this host (`python -m lab _execute`), one per slot of `plan_slots`."""

    name = "local"

    def __init__(self, store: Store, slots: int = 0, per_gpu: int = 1, device: str = "auto",
                 data_dir: str | None = None) -> None:
        self.store = store
        self.plan = plan_slots(slots, per_gpu, device)
        self.data_dir = data_dir
        self.children: dict[str, tuple[subprocess.Popen, Slot, str]] = {}  # run id -> (process, slot, attempt)

    def describe(self) -> str:
        """The slots, and for runs packed on a GPU whether CUDA MPS lets them run at once (else they time-slice)."""
        packed = len({s.name for s in self.plan}) < len(self.plan) and self.plan[0].name.startswith("cuda")
        mps = mps_status() if packed else None
        return f"{len(self.plan)} slot(s) on {self.plan[0].name}" + (
            "" if mps is None else "; CUDA MPS " + ("running" if mps["running"] else mps["how"]))

    def kind(self) -> str:
        return self.plan[0].name

    def capacity(self) -> int:
        return len(self.plan)

    def free_slots(self) -> list[Slot]:
        """Slots not taken by a live run on this host (this worker's children or runs it inherited)."""
        free = list(self.plan)
        for run in self.store.active_here():
            for slot in free:
                if slot.name == (run["slot"] or "cpu"):
                    free.remove(slot)
                    break
        return free

    def submit(self, run: dict, slot: Slot) -> str:
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
            self.store.update_attempt(run["id"], run["attempt"], pid=proc.pid, slot=slot.name,
                                      executor_ref=str(proc.pid))
        except LostRun:
            pass  # the child found out first (it failed fast, or its run was cancelled); poll() sees it exit
        return f"on {slot.name}, pid {proc.pid}"

    def poll(self) -> list[Ended]:
        """Children that exited (forgotten here; the worker decides what their runs' rows need)."""
        ended = []
        for run_id, (proc, slot, attempt) in list(self.children.items()):
            rc = proc.poll()
            if rc is None:
                continue
            del self.children[run_id]
            how = f"killed by signal {-rc}" if rc < 0 else f"exited with code {rc}"
            ended.append(Ended(run_id, attempt, f"its process {how}", dict(slot=slot.name, returncode=rc)))
        return ended

    def active(self) -> dict[str, str]:
        return {rid: attempt for rid, (_, _, attempt) in self.children.items()}

    def stop(self, run_id: str) -> None:
        """SIGKILL the run's process group (the child is its session's leader)."""
        if run_id in self.children:
            try:
                os.killpg(self.children[run_id][0].pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
