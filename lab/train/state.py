"""Where a run is, beyond its model and optimizer: the logging window's sums, the schedule's progress and the
batch of each step. All three are saved in and restored from checkpoints (the batch order by being a function
of the step alone), so a resumed run logs exactly what an uninterrupted one would."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..datasets import DeviceLoader
from ..probes import WEIGHT_METRICS


def _step_generator(device: torch.device, seed: int, step: int) -> torch.Generator:
    """A generator seeded from (seed, step): batch order and augmentation of a step do not depend on history,
    so a resumed run sees exactly the batches an uninterrupted one would."""
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + step) % (2**63))
    return g


class Window:
    """One logging window's running sums, kept on the device (no host sync per iteration), and its images/s clock.

    Its sums are saved in checkpoints, so a run stopped mid-window and resumed logs exactly the numbers an
    uninterrupted run logs; the throughput clock restarts on resume (it counts only images it timed)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.loss_sum = torch.zeros((), device=device)
        self.wrong = torch.zeros((), device=device, dtype=torch.int64)
        self.first_bad = torch.full((), -1, device=device, dtype=torch.int64)  # first step with a non-finite loss
        self.seen = 0          # images in the window
        self.batches = 0       # iterations in the window
        # per-layer gradient probe samples (grad_norm, input_grad_norm, update_ratio): one device tensor each
        self.samples: dict[str, list[torch.Tensor]] = {k: [] for k in WEIGHT_METRICS}
        self._timed = 0        # images since the clock started
        self._started = time.perf_counter()

    def add(self, step: int, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        detached = loss.detach()
        self.loss_sum += detached
        self.wrong += (logits.detach().argmax(1) != labels).sum()
        self.first_bad = torch.where((self.first_bad < 0) & ~torch.isfinite(detached), step, self.first_bad)
        self.seen += len(labels)
        self.batches += 1
        self._timed += len(labels)

    def summary(self) -> tuple[float, float, float, float]:
        """(mean loss, error fraction, first non-finite step or -1, images/s), in one host copy. The clock is
        read after that copy, which waits for the window's queued device work: images/s is what was done."""
        stats = torch.stack([self.loss_sum / max(1, self.batches), self.wrong.float() / max(1, self.seen),
                             self.first_bad.float()]).tolist()
        seconds = time.perf_counter() - self._started
        return stats[0], stats[1], stats[2], (self._timed / seconds if seconds > 0 else 0.0)

    def exclude(self, seconds: float) -> None:
        """Leave `seconds` (a checkpoint write) out of the window's throughput."""
        self._started += seconds

    def reset(self) -> None:
        self.loss_sum.zero_()
        self.wrong.zero_()
        self.first_bad.fill_(-1)
        self.seen = self.batches = self._timed = 0
        self.samples = {k: [] for k in WEIGHT_METRICS}
        self._started = time.perf_counter()

    def state(self) -> dict:
        return {"loss_sum": self.loss_sum, "wrong": self.wrong, "first_bad": self.first_bad, "seen": self.seen,
                "batches": self.batches, "samples": {k: list(v) for k, v in self.samples.items()}}

    def load_state(self, state: dict | None) -> None:
        """Continue a window saved by `state` (None: a checkpoint from before windows were saved)."""
        if not state:
            return
        self.loss_sum = state["loss_sum"].to(self.device)
        self.wrong = state["wrong"].to(self.device)
        self.first_bad = state["first_bad"].to(self.device)
        self.seen, self.batches = int(state["seen"]), int(state["batches"])
        self.samples = {k: [t.to(self.device) for t in state["samples"].get(k, [])] for k in WEIGHT_METRICS}


@dataclass
class Progress:
    """Where a run is, beyond the model and optimizer: saved in and restored from checkpoints."""

    step: int = 0
    warming: bool = False
    elapsed_s: float = 0.0                                  # training wall time before this attempt
    window_errors: list[float] = field(default_factory=list)  # training error of every logged window
    final_errors: dict[str, float] = field(default_factory=dict)
    warmup_end: int | None = None     # iterations trained at the warm-up rate, once the warm-up has ended
    fixed_lr: float | None = None     # a continued child's rate: its parent's final one, for every iteration

    def state(self) -> dict:
        schedule = {"warming": self.warming}
        if self.warmup_end is not None:
            schedule["warmup_end"] = self.warmup_end
        if self.fixed_lr is not None:
            schedule["fixed_lr"] = self.fixed_lr
        return {"step": self.step, "schedule": schedule, "elapsed_s": self.elapsed_s,
                "window_errors": list(self.window_errors), "final_errors": dict(self.final_errors)}

    @classmethod
    def from_state(cls, state: dict) -> "Progress":
        schedule = state["schedule"]
        warmup_end, fixed_lr = schedule.get("warmup_end"), schedule.get("fixed_lr")
        return cls(step=int(state["step"]), warming=bool(schedule["warming"]),
                   elapsed_s=float(state["elapsed_s"]), window_errors=list(state.get("window_errors", [])),
                   final_errors=dict(state.get("final_errors", {})),
                   warmup_end=None if warmup_end is None else int(warmup_end),
                   fixed_lr=None if fixed_lr is None else float(fixed_lr))


class BatchOrder:
    """The batch of each step: a permutation of the training set per epoch, seeded from (seed, epoch), and
    augmentation seeded from (seed, step), so the batches depend on the step alone."""

    def __init__(self, loader: DeviceLoader, seed: int, device: torch.device) -> None:
        self.loader, self.seed, self.device = loader, seed, device
        self.per_epoch = loader.batches_per_epoch()
        self._order: torch.Tensor | None = None
        self._epoch = -1

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, pos = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            gen = _step_generator(self.device, self.seed, -1 - epoch)
            self._order = torch.randperm(len(self.loader), device=self.device, generator=gen)
            self._epoch = epoch
        self.loader.generator = _step_generator(self.device, self.seed, step)
        size = self.loader.batch_size
        return self.loader.batch(self._order[pos * size : (pos + 1) * size])
