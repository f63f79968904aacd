"""Executors: where a claimed run's attempt executes. The worker (`lab/runs/worker.py`) claims queued runs from
the store and hands each to its executor; the executor starts `python -m lab _execute RUN --attempt TOKEN`
somewhere, reports when it ends, and can stop it.

- `local` (`executors/local.py`): child processes on this host, one per slot (GPU share or CPU threads).
- `ray` (`executors/ray_cluster.py`): Ray tasks on a Ray cluster, one per run, with the run's GPU share as the
  task's resource request; Ray places them on whichever node has room.

The interface is small so that another scheduler (Slurm through submitit, Kubernetes jobs) fits the same
shape: report free slots, submit a run into one, poll for attempts that ended, stop one, shut down. Executors
never write a run's status: the process that executes the attempt does, and the worker marks an attempt
`interrupted` when the executor reports it ended while the store still says `running` under its token.
Training runs and analysis jobs are both rows the `_execute` entry point runs, so executors need not tell them
apart.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from ...errors import ExecutorError  # noqa: F401 (re-exported)

EXECUTORS = ("local", "ray")




@dataclass
class Ended:
    """An attempt whose process or task is gone. `why` completes "... before finishing", e.g. "its process was
    killed by signal 9" or "its Ray node died"."""
    run_id: str
    attempt: str
    why: str
    details: dict = field(default_factory=dict)  # what the executor knows of where it ran (node, slot, exit code)


class Executor(ABC):
    """Runs attempts of claimed runs. `name` is what the store's `executor` column records for them."""

    name = "executor"

    @abstractmethod
    def describe(self) -> str:
        """One line for the worker's start-up message: how many runs at once, on what."""

    @abstractmethod
    def kind(self) -> str:
        """What the worker registers as its device: a slot name ('cpu', 'cuda:0') or the executor's share."""

    @abstractmethod
    def capacity(self) -> int:
        """How many runs this executor runs at once now (the worker registers this as its slots)."""

    @abstractmethod
    def free_slots(self) -> list:
        """Slots a newly claimed run can be submitted into now (each one run); empty when full."""

    @abstractmethod
    def submit(self, run: dict, slot) -> str:
        """Start the attempt `run["attempt"]` of `run` (a row `claim_next` returned) in `slot`; returns where,
        for the worker's log ("on cuda:1, pid 4242")."""

    @abstractmethod
    def poll(self) -> list[Ended]:
        """Attempts that ended since the last poll (finished, failed, killed, lost with their node)."""

    @abstractmethod
    def active(self) -> dict[str, str]:
        """The attempts this executor is watching: run id -> attempt token."""

    @abstractmethod
    def stop(self, run_id: str) -> None:
        """Stop a run's process now (the fallback when it does not obey a cancel request). Called again each
        round until the attempt ends, so an executor can escalate."""

    def shutdown(self) -> list[tuple[str, str]]:
        """The worker is stopping: release what the executor holds. Returns the (run id, attempt) pairs it
        stopped (those the worker queues again); runs that go on by themselves are not listed."""
        return []


def make_executor(name: str, store, **options) -> Executor:
    """The executor called `name` ('local' or 'ray') for `store`; `options` are its constructor's."""
    if name == "local":
        from .local import LocalExecutor

        return LocalExecutor(store, **options)
    if name == "ray":
        from .ray_cluster import RayExecutor

        return RayExecutor(store, **options)
    raise ExecutorError(f"unknown executor {name!r}; executors: {', '.join(EXECUTORS)}")
