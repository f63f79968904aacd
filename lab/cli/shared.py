"""What the command groups share: the shared flags (each defined here once), opening the store, the progress bar,
percentages, and starting a background worker.

Heavy imports happen inside the functions, so `lab --help` stays quick.
"""
from __future__ import annotations

import argparse
import sys

from ..errors import ConfigError, StoreError

RESULTS_HELP = "results folder (default: $LAB_RESULTS or results/); $LAB_DB_URL selects another database"
DATA_HELP = "data folder (default: $LAB_DATA or data/)"


def add_results(p: argparse.ArgumentParser) -> None:
    """`--results DIR`: the one definition of the flag."""
    p.add_argument("--results", metavar="DIR", default=None, help=RESULTS_HELP)


def add_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="DIR", default=None, help=DATA_HELP)


def add_slot_flags(p: argparse.ArgumentParser, what: str = "if this starts a worker", per_gpu: bool = True) -> None:
    """`--slots` and `--per-gpu`: how many runs a worker trains at once."""
    p.add_argument("--slots", type=int, default=0,
                   help=f"runs at once {what} (0: the worker's automatic choice for this machine; on a CPU the "
                        f"threads are split between them)")
    if per_gpu:
        p.add_argument("--per-gpu", type=int, default=1, help=f"runs packed on each GPU {what}")


def add_worker_flags(p: argparse.ArgumentParser) -> None:
    """The flags of a command that queues work and starts a background worker unless one is running."""
    p.add_argument("--no-worker", action="store_true", help="only queue; do not start a background worker")
    add_slot_flags(p)
    add_data(p)


def check_slots(slots: int, per_gpu: int) -> None:
    from ..runs.worker import slot_problems

    problems = slot_problems(slots, per_gpu)
    if problems:
        raise ConfigError("; ".join(problems))


def start_worker(store, args, say_running: bool = True, prefix: str = "") -> int | None:
    """With the worker flags: start a background worker unless --no-worker or one is running; says which
    (that one is running only with `say_running`). Returns the new worker's pid, else None."""
    if getattr(args, "no_worker", False):
        return None
    from ..runs.worker import ensure_worker

    pid = ensure_worker(store, slots=getattr(args, "slots", 0), per_gpu=getattr(args, "per_gpu", 1),
                        data_dir=getattr(args, "data", None))
    if pid or say_running:
        print(prefix + (f"started a background worker (pid {pid})" if pid else
                        "a worker is already running for this store"))
    return pid


def open_store(args, create: bool = True, readonly: bool = False, missing_ok: bool = False):
    """The store `--results` names (default: $LAB_RESULTS or results/). With `missing_ok`, None where there is
    no store yet (a reader shows 'nothing yet' instead of an error)."""
    from ..runs.store import Store

    try:
        return Store(args.results, create=create, readonly=readonly)
    except StoreError:
        if missing_ok and not create:
            return None
        raise


class Progress:
    """A progress bar on stderr (tqdm), or nothing when `quiet`: `update(done, total)`, `write(line)`, `close()`.
    `total` None: unknown until the first update."""

    def __init__(self, total: int | None = None, unit: str = "it", desc: str | None = None, quiet: bool = False):
        self.bar = None
        if not quiet:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit=unit, desc=desc, dynamic_ncols=True, file=sys.stderr)

    @property
    def callback(self):
        """The `progress(done, total)` callable for the engine; None when quiet (the engine skips reporting)."""
        return self.update if self.bar is not None else None

    def update(self, done: int, total: int | None = None) -> None:
        if total is not None:
            self.bar.total = total
        self.bar.update(done - self.bar.n)

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def pct(x) -> str:
    """A fraction as a percentage with two decimals; '-' for None or NaN."""
    return "-" if x is None or x != x else f"{100 * x:.2f}%"
