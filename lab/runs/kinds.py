"""Job kinds: what the runs layer executes for a row of the runs table, by the row's `job` column.

The runs layer (store, queue, worker, executors) moves rows through their life cycle without knowing what a row
does: a kind registered here says how to execute a claimed row (`execute`) and how to check its options
(`check`). `train` is the runs layer's own kind (`lab.runs.execute` registers it); each analysis ('lesion',
'landscape', 'shatter') is registered by `lab.analysis.queue`, the module that queues them. The layers above
register their kinds; this module imports none of them.

A process that executes rows must therefore have imported the modules that register them. The worker's children
and Ray tasks all execute through the lab's top-level entry point, `python -m lab _execute` (its `cmd_execute`,
in the CLI layer above every other), which imports `lab.analysis.queue` before it executes anything: the one
place that knows every layer names the kinds, and the runs layer stays ignorant of them. A process that calls
`execute_run` itself (a test, a notebook) imports the modules of the kinds it executes. A row whose kind no
loaded module registered fails with one line naming it: nothing is guessed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import StoreError


@dataclass(frozen=True)
class JobKind:
    """How the runs layer executes rows of one kind.

    `execute(context) -> status`: run the row under `context.reporter`'s attempt (a `lab.runs.execute.JobContext`)
    and return the status the attempt recorded ('done', 'cancelled', ...). It raises `LabError` subclasses for
    failures meant for the user: the runs layer records them as the row's one-line message.
    `check(row) -> None`: raise a `LabError` when the row's options cannot be executed (None: every row is fine)."""
    name: str
    execute: Callable
    check: Callable[[dict], object] | None = None


_KINDS: dict[str, JobKind] = {}


def register_kind(name: str, execute: Callable, check: Callable[[dict], object] | None = None) -> JobKind:
    """Register (or replace: re-importing a module must not fail) the kind called `name`; returns it."""
    kind = JobKind(name, execute, check)
    _KINDS[name] = kind
    return kind


def job_kind(name: str) -> JobKind:
    """The kind registered as `name`, or StoreError naming the kinds this process knows."""
    try:
        return _KINDS[name]
    except KeyError:
        known = ", ".join(sorted(_KINDS)) or "none"
        raise StoreError(f"no job kind {name!r} is registered in this process (known: {known}); execute rows "
                         f"through `python -m lab _execute`, which loads every kind the lab has") from None


def kinds() -> list[str]:
    """The names of the registered kinds, sorted."""
    return sorted(_KINDS)
