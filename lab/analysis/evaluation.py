"""What the analyses share: evaluation on fixed tensors (the trainer's own `evaluate`), progress and cancel."""
from __future__ import annotations

import contextlib
import math
from typing import Callable

import torch
from torch import nn

from ..train import evaluate as _trainer_evaluate
from .errors import Cancelled

Progress = Callable[[int, int], None]
ShouldStop = Callable[[], bool]


class TensorSet:
    """Fixed (images, labels) on a device, cut into batches the way `DeviceLoader` cuts them, so the trainer's
    `evaluate` runs on it unchanged: the same batches give the same numbers as the trainer's evaluation."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.batch_size = images, labels, int(batch_size)
        self.device = images.device

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]


def evaluate(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500,
             autocast: Callable | None = None) -> tuple[float, float]:
    """(mean cross-entropy in nats, error as a fraction of images) of `net` in eval mode on these images."""
    return _trainer_evaluate(net, TensorSet(images, labels, batch_size), autocast or contextlib.nullcontext)


class Steps:
    """Counts an analysis's units of work, reports them to `progress(done, total)` and raises `Cancelled` at the
    next `check()` once `should_stop()` says so."""

    def __init__(self, total: int, progress: Progress | None = None, should_stop: ShouldStop | None = None) -> None:
        self.total, self.done = int(total), 0
        self.progress, self.should_stop = progress, should_stop
        if progress:
            progress(0, self.total)

    def check(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Cancelled(f"stopped after {self.done} of {self.total} steps")

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.progress:
            self.progress(self.done, self.total)


def finite(value) -> float | None:
    """A float for JSON: NaN and infinities become None (JSON has no such numbers)."""
    value = float(value)
    return value if math.isfinite(value) else None


def finite_list(values) -> list:
    return [finite(v) if v is not None else None for v in values]
