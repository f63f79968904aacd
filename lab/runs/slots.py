"""How many runs a worker runs at once: the number of slots that finishes the queued runs soonest on this machine.

On a GPU that is one run per GPU (`per_gpu` packs more). On the CPU the choice is between few runs with many
threads each and many runs with few threads: small nets (half width, batches of 32) gain almost nothing from a
second thread, since each convolution is too small to split well, while two runs side by side on two cores
each go at nearly full speed (measured on 2 AVX2 cores: a half-width 56-layer run took 217 s alone with both
threads, and 182-205 s beside another such run with one thread each). `auto_slots` models that: a run's work
is its multiply-adds (`estimate.training_macs` + `evaluation_macs`); `t` threads speed it up by
`t / (1 + (t - 1) * serial)`, where the serial share falls as a convolution's work (batch size x width squared)
grows; the runs are placed longest first on the slots; the slot count with the soonest end wins (fewer slots
on a tie). Slots never exceed the cores, the runs, or what the memory holds.
"""
from __future__ import annotations

import os
from typing import Iterable

import torch

from ..config import RunConfig

# What one CPU run may take at most (its process, the data set on the device, the net and its activations):
# slots beyond what the available memory holds at this size are not used.
RUN_MEMORY_BYTES = 3 * 2**29
# The serial share of a run's work at the paper's convolution size (batch 128, full width) is
# 1 / (1 + PARALLEL_AT_PAPER_SIZE): two threads then run it 1.6x as fast as one.
PARALLEL_AT_PAPER_SIZE = 3.0


def auto_slots(device: str = "auto", runs=None, per_gpu: int = 1, cores: int | None = None,
               gpus: int | None = None, memory_bytes: int | None = None) -> tuple[int, str]:
    """(slots, reason): the number of runs at once that finishes `runs` soonest here, and one sentence why.

    `device`: the worker's device ('auto', 'cpu', 'cuda', ...). `runs`: a Store (its queued training runs), or
    RunConfigs (or their dicts), e.g. those about to be queued; None or none: one slot. `cores`, `gpus` and
    `memory_bytes` (available memory) override what this machine has (tests)."""
    if gpus is None:
        gpus = torch.cuda.device_count() if device != "cpu" and torch.cuda.is_available() else 0
    if gpus and device != "cpu":
        n = gpus * max(1, per_gpu)
        return n, f"{n} run{'s' * (n > 1)} at once: {max(1, per_gpu)} per GPU on {gpus} GPU{'s' * (gpus > 1)}"
    cores = cores or os.cpu_count() or 1
    configs = _configs(runs)
    if not configs:
        return 1, f"nothing queued: one run at a time with {_threads(cores)}"
    memory = memory_bytes if memory_bytes is not None else _available_memory()
    fit = max(1, memory // RUN_MEMORY_BYTES) if memory else cores
    most = max(1, min(cores, len(configs), fit))
    works = sorted((_work(c) for c in configs), key=lambda w: -w[0])
    ends = {k: _makespan(works, k, cores // k) for k in range(1, most + 1)}
    best = min(k for k in ends if ends[k] <= min(ends.values()) * (1 + 1e-9))  # fewer slots on a tie
    what = f"{len(configs)} queued run{'s' * (len(configs) > 1)}"
    if best == 1:
        return 1, f"one run at a time with {_threads(cores)} finishes {what} soonest on {cores} cores"
    held = " (as many as the memory holds)" if best == fit < min(cores, len(configs)) else ""
    return best, (f"{best} runs at once, {_threads(cores // best)} each{held}: {what} finish soonest side by side "
                  f"on {cores} cores")


def _threads(n: int) -> str:
    return f"{n} thread{'s' * (n != 1)}"


def _configs(runs) -> list[RunConfig]:
    if runs is None:
        return []
    if hasattr(runs, "runs") and hasattr(runs, "root"):  # a Store: the training runs waiting in its queue
        queued = runs.runs(status=["queued"])
        runs = [] if queued.empty else list(queued["config"])
    out = []
    for c in runs if isinstance(runs, Iterable) else []:
        try:
            out.append(c if isinstance(c, RunConfig) else RunConfig.from_dict(dict(c)))
        except (TypeError, ValueError):
            continue  # a row this lab cannot read: its run fails on its own; it does not decide the slots
    return out


def _work(cfg: RunConfig) -> tuple[float, float]:
    """(multiply-adds of the whole run, its serial share with threads)."""
    from .estimate import evaluation_macs, training_macs

    try:
        macs = training_macs(cfg) + evaluation_macs(cfg)
    except Exception:  # a model or data set the estimate cannot size: count it by its iterations
        macs = float(cfg.iterations * cfg.batch_size)
    size = cfg.batch_size * cfg.width ** 2 / 128.0
    return macs, 1.0 / (1.0 + PARALLEL_AT_PAPER_SIZE * size)


def _speedup(threads: int, serial: float) -> float:
    return threads / (1.0 + (threads - 1) * serial)


def _makespan(works: list[tuple[float, float]], slots: int, threads: int) -> float:
    """When the last run ends with `slots` slots of `threads` threads each, runs placed longest first on the
    slot that frees up first (the worker's queue order when runs are queued longest first)."""
    loads = [0.0] * slots
    for macs, serial in works:
        i = loads.index(min(loads))
        loads[i] += macs / _speedup(max(1, threads), serial)
    return max(loads)


def _available_memory() -> int | None:
    """Bytes of memory available now (Linux: MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
