"""The trainer: the paper's SGD schedule on device-resident data, with probes, checkpoints and resume.

`train(cfg, run_dir, reporter)` runs one configuration to the end (or until the reporter asks it to stop) and
reports metrics through a `Reporter`; `lab.runs.execute.StoreReporter`-style reporters persist them. Iterations are
counted from 1: the metrics logged at step s describe the state after s optimizer steps.

Logging windows: the training loss and error logged at step s are averages over the `log_every` iterations that
end at s. Gradient norms are sampled after the backward pass of every iteration divisible by `grad_every`, and
each window logs the mean of its samples: with `grad_every` < `log_every` an average over the window, with the
two equal (the presets) the single sample at the window's last iteration.

This module needs torch only (no database, no plotting), so it runs wherever a run executes.
"""
from __future__ import annotations

import contextlib
import json
import math
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .checkpoint import CHECKPOINT, FORMAT, load_checkpoint, restore, rng_state, save_checkpoint
from .config import RunConfig, validate
from .data import DeviceLoader, make_splits
from .models import CifarNet, ConfigError, NetSpec, count_parameters, deepen, forward_macs
from .probes import (
    WEIGHT_METRICS, InputGradNorms, grad_norms, initial_gradients, layer_names, responses, update_ratios,
    weight_snapshot,
)
from .runtime import compile_cache_dir, environment, resolve_device, resolve_precision, use_compile_cache

PARENT = "parent.json"      # a deepened run's record of its parent, kept beside its checkpoint
DEEPEN_BATCHES = 4          # training batches whose activations set a deepened net's new BN statistics
LOG_QUEUE = 8               # logging windows a background writer may hold before the trainer waits for it
GRAPH_MODES = ("reduce-overhead", "max-autotune")  # compile modes that capture CUDA graphs on a GPU


class Reporter:
    """Receives what a run produces. The default does nothing; subclasses store or print it.

    `background_log`: whether the trainer may call `log` on a writer thread of its own (`BackgroundLog`), so
    the training thread keeps the GPU fed while a window's metrics are committed. None (the default) lets the
    trainer choose: yes on a GPU, no on the CPU. A reporter whose `should_stop` depends on what `log` received
    sets it False."""

    background_log: bool | None = None

    def start(self, env: dict, layers: dict, params: int, resumed_from: int) -> None: ...

    def log(self, step: int, scalars: dict[str, float], layers: dict[str, list[float]], progress: dict) -> None: ...

    def should_stop(self) -> bool:
        return False

    def before_checkpoint(self, step: int) -> None:
        """Called before each checkpoint write; raising stops the run without writing it (a process that lost
        its run must not overwrite the checkpoint of the attempt that now owns it)."""

    def finish(self, status: str, summary: dict, message: str | None) -> None: ...


@dataclass
class MemoryReporter(Reporter):
    """Keeps everything in lists; used by tests and the benchmark."""

    scalars: list[tuple[int, str, float]] = field(default_factory=list)
    layers: list[tuple[int, str, list[float]]] = field(default_factory=list)
    env: dict = field(default_factory=dict)
    layer_names: dict = field(default_factory=dict)
    status: str | None = None
    summary: dict = field(default_factory=dict)
    message: str | None = None
    stop_at: int | None = None   # ask the trainer to stop once this step has been logged
    _last_step: int = 0
    background_log = False       # should_stop reads what log recorded

    def start(self, env, layers, params, resumed_from):
        self.env, self.layer_names = env, layers

    def log(self, step, scalars, layers, progress):
        self._last_step = step
        self.scalars += [(step, k, v) for k, v in scalars.items()]
        self.layers += [(step, k, v) for k, v in layers.items()]

    def should_stop(self):
        return self.stop_at is not None and self._last_step >= self.stop_at

    def finish(self, status, summary, message):
        self.status, self.summary, self.message = status, summary, message


class BackgroundLog(Reporter):
    """Wraps a reporter so its `log` calls run in order on a writer thread, through a bounded queue (the trainer
    waits when LOG_QUEUE windows are pending: nothing is dropped).

    Everything else runs on the training thread and keeps its meaning: `before_checkpoint` and `finish` first
    wait until every queued window is written (a checkpoint never runs ahead of the stored metrics, and the
    final status comes after the last of them), and an exception the inner `log` raised (a lost run, a failing
    store) is raised again on the training thread at its next call, `should_stop` included, so a run that lost
    its ownership stops at the next iteration. After such an error nothing more is written. `close` waits for
    the queue and ends the thread; the trainer calls it however the run ends."""

    def __init__(self, inner: Reporter) -> None:
        self.inner = inner
        self._queue: queue.Queue = queue.Queue(maxsize=LOG_QUEUE)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._write, daemon=True, name="metrics-writer")
        self._thread.start()

    def _write(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._error is None:
                    self.inner.log(*item)
            except BaseException as exc:  # kept for the training thread, which raises it
                self._error = exc
            finally:
                self._queue.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def flush(self) -> None:
        """Wait until every queued window has been written; raise what writing one raised."""
        self._queue.join()
        self._raise()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def start(self, env, layers, params, resumed_from):
        self.inner.start(env, layers, params, resumed_from)

    def log(self, step, scalars, layers, progress):
        self._raise()
        self._queue.put((step, scalars, layers, progress))

    def should_stop(self):
        self._raise()
        return self.inner.should_stop()

    def before_checkpoint(self, step):
        self.flush()
        self.inner.before_checkpoint(step)

    def finish(self, status, summary, message):
        self.flush()
        self.inner.finish(status, summary, message)


def learning_rate(step: int, cfg: RunConfig, warming: bool) -> float:
    """The learning rate for iteration `step` (0-based): the warm-up rate while warming, else the base rate
    divided by 1/lr_decay at each milestone passed. A pure function of its inputs, so resume is exact."""
    if warming:
        return cfg.warmup_lr
    passed = sum(step >= m for m in cfg.milestone_iterations())
    return cfg.lr * cfg.lr_decay**passed


def _autocast_factory(device: torch.device, precision: str) -> Callable[[], contextlib.AbstractContextManager]:
    if precision == "bf16":
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def _sync(device: torch.device) -> None:
    """Wait for the device's queued work (a GPU's; the CPU has none), so a clock read next measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_optimizer(net: torch.nn.Module, cfg: RunConfig, device: torch.device) -> torch.optim.SGD:
    """The paper's SGD; on a GPU the fused implementation (one kernel for every parameter's update).

    With `cfg.scalar_lr` other than 1 the scalar parameters (one number each: Fixup's biases and multipliers, a
    zero-init branch scalar) are a second parameter group whose `lr_scale` the schedule multiplies its rate by
    (`set_learning_rate`), as Zhang et al.'s Fixup code trains them at a tenth of the rate."""
    fused = {"fused": True} if device.type == "cuda" else {}
    params = list(net.parameters())
    scalars = [p for p in params if p.numel() == 1]
    if cfg.scalar_lr == 1 or not scalars:
        groups = [{"params": params, "lr_scale": 1.0}]
    else:
        others = [p for p in params if p.numel() != 1]
        groups = [{"params": others, "lr_scale": 1.0}, {"params": scalars, "lr_scale": float(cfg.scalar_lr)}]
    optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **fused)
    set_learning_rate(optimizer, cfg.lr)
    return optimizer


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The schedule's rate `lr` on every parameter group, times the group's `lr_scale`."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def compile_model(net: torch.nn.Module, cfg: RunConfig, cache: Path) -> torch.nn.Module:
    """`net` compiled in `cfg.compile_mode`, sharing its parameters and buffers (the eager `net` still runs
    the probe steps and evaluations), with the compiled code cached in `cache` for later runs."""
    use_compile_cache(cache)
    return torch.compile(net, mode=cfg.compile_mode)


def _step_generator(device: torch.device, seed: int, step: int) -> torch.Generator:
    """A generator seeded from (seed, step): batch order and augmentation of a step do not depend on history,
    so a resumed run sees exactly the batches an uninterrupted one would."""
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + step) % (2**63))
    return g


@torch.no_grad()
def evaluate(model: CifarNet, loader: DeviceLoader, autocast, limit: int = 0) -> tuple[float, float]:
    """(mean cross-entropy loss, error fraction) over the loader's set (or its first `limit` images)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=loader.device)
    wrong = torch.zeros((), device=loader.device, dtype=torch.int64)
    n = len(loader) if not limit else min(limit, len(loader))
    for start in range(0, n, loader.batch_size):
        index = torch.arange(start, min(n, start + loader.batch_size), device=loader.device)
        x, y = loader.batch(index)
        with autocast():
            out = model(x)
        loss_sum += F.cross_entropy(out.float(), y, reduction="sum")
        wrong += (out.argmax(1) != y).sum()
    model.train(was_training)
    loss, err = (torch.stack([loss_sum, wrong.float()]) / max(1, n)).tolist()
    return loss, err


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

    def state(self) -> dict:
        return {"step": self.step, "schedule": {"warming": self.warming}, "elapsed_s": self.elapsed_s,
                "window_errors": list(self.window_errors), "final_errors": dict(self.final_errors)}

    @classmethod
    def from_state(cls, state: dict) -> "Progress":
        return cls(step=int(state["step"]), warming=bool(state["schedule"]["warming"]),
                   elapsed_s=float(state["elapsed_s"]), window_errors=list(state.get("window_errors", [])),
                   final_errors=dict(state.get("final_errors", {})))


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


def deepened_net(cfg: RunConfig, parent_checkpoint: str | Path | None, spec: NetSpec,
                 train_loader: DeviceLoader) -> tuple[CifarNet, dict]:
    """The parent run's net rebuilt from its checkpoint and deepened to `cfg.depth` (`lab.models.deepen`, the
    new BN statistics measured on DEEPEN_BATCHES training batches), and the child's record of its parent.
    Refused (ConfigError) when the checkpoint is missing or the parent is not the same net at a smaller depth."""
    who = f"deepen_from {cfg.deepen_from!r}"
    if parent_checkpoint is None or not Path(parent_checkpoint).is_file():
        raise ConfigError(f"{who}: the parent's checkpoint {str(parent_checkpoint or '(none given)')!r} does not "
                          "exist; the parent must have trained (finished or interrupted) and kept its checkpoint")
    state = load_checkpoint(Path(parent_checkpoint))
    parent_cfg = RunConfig.from_dict(state["config"])
    same = ["kind", "block", "width", "span", "shortcut", "norm", "unit", "residual_scale", "shortcut_scale",
            "branch_init", "conv", "dataset"] + (["init"] if "fixup" in (cfg.init, parent_cfg.init) else [])
    differ = [f"{k} {getattr(parent_cfg, k)!r} (this run: {getattr(cfg, k)!r})" for k in same
              if getattr(parent_cfg, k) != getattr(cfg, k)]
    if differ:
        raise ConfigError(f"{who}: a deepened net keeps its parent's kind, block, width and options, but the "
                          f"parent has {'; '.join(differ)}")
    if parent_cfg.depth >= cfg.depth:
        raise ConfigError(f"{who}: depth {cfg.depth} must be above the parent's {parent_cfg.depth}")
    parent = CifarNet(parent_cfg.net_spec(spec.in_channels, spec.num_classes))
    parent.load_state_dict(state["model"])
    g = torch.Generator(device=train_loader.device).manual_seed(cfg.seed)
    train_loader.generator = g
    order = torch.randperm(len(train_loader), device=train_loader.device, generator=g)
    bs = train_loader.batch_size
    batches = [train_loader.batch(order[i * bs : (i + 1) * bs])[0].float().cpu()
               for i in range(min(DEEPEN_BATCHES, train_loader.batches_per_epoch()))]
    child = deepen(parent, cfg.depth, data=batches, noise=cfg.deepen_noise, where=cfg.deepen_where,
                   generator=torch.Generator().manual_seed(cfg.seed))
    record = {"id": cfg.deepen_from, "iteration": int(state["step"]), "depth": parent_cfg.depth,
              "where": cfg.deepen_where, "noise": cfg.deepen_noise, "bn_batches": len(batches)}
    return child, record


def train(
    cfg: RunConfig,
    run_dir: str | Path,
    reporter: Reporter | None = None,
    data_dir: str | Path | None = None,
    resume: bool = True,
    progress: Callable[[int, int], None] | None = None,
    parent_checkpoint: str | Path | None = None,
) -> str:
    """Train `cfg` to the end, resuming from `run_dir`'s checkpoint when there is one. Returns the final
    status: 'done', 'diverged' or 'cancelled' (stopped by the reporter; a checkpoint is written first).

    With `cfg.deepen_from`, a fresh start builds the net from the parent's checkpoint (`parent_checkpoint`, the
    path of its checkpoint.pt) deepened to `cfg.depth`, and trains it on a fresh schedule of its own: its own
    `iterations`, the learning-rate schedule (and warm-up) from step 0, a new optimizer (no momentum carried
    over). The child records its parent (id, iteration, depth) in its environment and summary.

    The reporter's `log` runs on a writer thread (`BackgroundLog`) when its `background_log` says so (by
    default: on a GPU). Exceptions the reporter raises (a lost run) and CheckpointError (a checkpoint that
    cannot be read or written) propagate."""
    validate(cfg)
    reporter = reporter or Reporter()
    device = resolve_device(cfg.device)
    background = reporter.background_log
    if background is None:
        background = device.type == "cuda"
    if not background:
        return _train(cfg, Path(run_dir), reporter, device, data_dir, resume, progress, parent_checkpoint)
    writer = BackgroundLog(reporter)
    try:
        return _train(cfg, Path(run_dir), writer, device, data_dir, resume, progress, parent_checkpoint)
    finally:
        writer.close()  # the queued windows are written however the run ended


def _train(cfg: RunConfig, run_dir: Path, reporter: Reporter, device: torch.device, data_dir, resume: bool,
           progress, parent_checkpoint) -> str:
    """`train` with its reporter and device chosen."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    precision = resolve_precision(cfg.precision, device)
    autocast = _autocast_factory(device, precision)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest conv algorithms once
    torch.manual_seed(cfg.seed)

    splits = make_splits(cfg.dataset, data_dir, cfg.val_fraction, limit=cfg.train_limit, normalize=cfg.normalize)
    info = splits.info
    memfmt = dict(channels_last=cfg.channels_last)
    train_loader = DeviceLoader(
        splits.train, splits.mean, splits.std, device, cfg.batch_size, augment=cfg.augment, flip=info.flip,
        **memfmt,
    )
    eval_batch = max(cfg.batch_size, 500)
    val_loader = DeviceLoader(splits.val, splits.mean, splits.std, device, eval_batch, **memfmt)
    test_loader = DeviceLoader(splits.test, splits.mean, splits.std, device, eval_batch, **memfmt)
    probe_images, probe_labels = val_loader.batch(torch.arange(min(cfg.probe_batch, len(val_loader)), device=device))

    net = CifarNet(cfg.net_spec(info.channels, info.classes))
    parent_record = None
    if cfg.deepen_from:
        if resume and (run_dir / CHECKPOINT).exists():  # a resumed child restores its own checkpoint below
            parent_record = json.loads((run_dir / PARENT).read_text()) if (run_dir / PARENT).exists() else None
        else:
            net, parent_record = deepened_net(cfg, parent_checkpoint, net.spec, train_loader)
            (run_dir / PARENT).write_text(json.dumps(parent_record))
    macs = forward_macs(net, info.size)
    net = net.to(device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    cache = compile_cache_dir(run_dir) if cfg.compile else None
    model = compile_model(net, cfg, cache) if cfg.compile else net
    graphs = cfg.compile and cfg.compile_mode in GRAPH_MODES and device.type == "cuda"
    weights = [p for _, p in net.weight_layers()]
    input_grads = InputGradNorms(net)
    optimizer = make_optimizer(net, cfg, device)

    state = Progress(warming=cfg.uses_warmup())
    window = Window(device)
    ckpt_path = run_dir / CHECKPOINT
    if resume and ckpt_path.exists():
        saved = restore(ckpt_path, net, optimizer, device)
        for group in optimizer.param_groups:  # this device's SGD kind, whichever device saved the checkpoint
            group["fused"] = True if device.type == "cuda" else None
        state = Progress.from_state(saved)
        window.load_state(saved.get("window"))
    resumed_from = state.step

    env = environment(device) | {
        "precision": precision, "channels_last": cfg.channels_last, "compile": cfg.compile,
        "compile_mode": cfg.compile_mode if cfg.compile else None, "compile_cache": str(cache) if cache else None,
        "cudnn_benchmark": device.type == "cuda", "fused_sgd": device.type == "cuda",
        "milestones": cfg.milestone_iterations(), "warmup": cfg.uses_warmup(), "forward_macs": macs,
        "train_images": len(splits.train), "val_images": len(splits.val), "test_images": len(splits.test),
        "normalisation": splits.normalisation(),
    }
    env["background_log"] = isinstance(reporter, BackgroundLog)
    if parent_record:
        env["parent"] = parent_record
    reporter.start(env, layer_names(net), count_parameters(net), resumed_from)
    started = time.perf_counter()

    def elapsed() -> float:
        return state.elapsed_s + time.perf_counter() - started

    def checkpoint() -> None:
        reporter.before_checkpoint(state.step)
        save_checkpoint(ckpt_path, {
            "format": FORMAT, "model": net.state_dict(), "optimizer": optimizer.state_dict(),
            **Progress(state.step, state.warming, elapsed(), state.window_errors, state.final_errors).state(),
            "config": asdict(cfg), "rng": rng_state(device), "window": window.state(),
        })

    def probe_layers(samples: dict[str, list[torch.Tensor]], with_responses: bool) -> dict[str, list[float]]:
        """The window's mean gradient norms, input-gradient norms and update ratios and (at evaluations) the
        response metrics, in one host copy."""
        # (an update ratio is NaN at a step whose weight was exactly zero before it: average the other steps)
        out = {k: torch.stack(v).nanmean(0) if k == "update_ratio" else torch.stack(v).mean(0)
               for k, v in samples.items() if v}
        if cfg.probes and with_responses:
            out |= responses(net, probe_images, autocast)
        # one host copy for all probes
        flat = torch.cat([v.float() for v in out.values()]).tolist() if out else []
        result, i = {}, 0
        for k, v in out.items():
            result[k] = flat[i : i + len(v)]
            i += len(v)
        return result

    def evaluation(final: bool) -> dict[str, float]:
        limit = 0 if final else cfg.eval_images
        val_loss, val_err = evaluate(net, val_loader, autocast, limit)
        test_loss, test_err = evaluate(net, test_loader, autocast, limit)
        state.final_errors = {"final_val_error": val_err, "final_test_error": test_err}
        return {"val_loss": val_loss, "val_error": val_err, "test_loss": test_loss, "test_error": test_err}

    def log_window(lr: float) -> bool:
        """Log the window that ends at this step (with an evaluation when one is due); False if it diverged."""
        step = state.step
        is_eval = step % cfg.eval_every == 0 or step == cfg.iterations
        train_loss, train_err, bad, images_per_s = window.summary()
        scalars = {
            "train_loss": train_loss, "train_error": train_err, "lr": lr, "images_per_s": images_per_s,
            "elapsed_s": elapsed(), "epoch": step / batches.per_epoch,
        }
        if bad >= 0 or not math.isfinite(train_loss):
            bad_step = int(bad) if bad >= 0 else step
            reporter.log(step, scalars, {}, {"iteration": step, "images_per_s": images_per_s, "elapsed_s": elapsed()})
            msg = f"loss became NaN or infinite at iteration {bad_step} (lr {lr:g}); the run stopped there"
            reporter.finish("diverged", {"iteration": step, "diverged_at": bad_step}, msg)
            return False
        state.window_errors.append(train_err)
        if state.warming and train_err < cfg.warmup_error:
            state.warming = False  # the paper's 110-layer warm-up: back to the base rate once error < 80%
        if is_eval:
            scalars |= evaluation(final=step == cfg.iterations)
        layers = probe_layers(window.samples, with_responses=is_eval)
        reporter.log(step, scalars, layers, {"iteration": step, "images_per_s": images_per_s, "elapsed_s": elapsed()})
        window.reset()
        if progress:
            progress(step, cfg.iterations)
        return True

    def train_step(x: torch.Tensor, y: torch.Tensor) -> None:
        """One optimizer step on (x, y), with the gradient probes on probe steps."""
        probe_step = cfg.probes and (state.step + 1) % cfg.grad_every == 0
        # gradients are dropped before the forward pass: a captured (CUDA-graph) backward then writes fresh
        # .grad tensors each step, and nothing of the previous step is alive when the graph replays
        optimizer.zero_grad(set_to_none=True)
        if graphs and not probe_step:
            torch.compiler.cudagraph_mark_step_begin()  # the last step's graph outputs are no longer read
        # input-gradient hooks exist only on probe steps, which run the eager net on the same parameters and BN
        # buffers (a compiled one would not see hooks added after compilation)
        with input_grads if probe_step else contextlib.nullcontext():
            with autocast():
                out = (net if probe_step else model)(x)
            loss = F.cross_entropy(out.float(), y)
            loss.backward()
        state.step += 1
        if probe_step:
            window.samples["grad_norm"].append(grad_norms(weights))
            window.samples["input_grad_norm"].append(input_grads.norms())
            before = weight_snapshot(weights)
        optimizer.step()
        if probe_step:
            window.samples["update_ratio"].append(update_ratios(weights, before))
        window.add(state.step, loss, out, y)

    if state.step == 0 and cfg.probes:
        # the gradients before any step: one backward pass on the probe batch, no optimizer step
        initial = initial_gradients(net, probe_images, probe_labels, autocast)
        reporter.log(0, {}, probe_layers({k: [v] for k, v in initial.items()}, with_responses=True), {"iteration": 0})

    batches = BatchOrder(train_loader, cfg.seed, device)
    model.train()
    while state.step < cfg.iterations:
        if reporter.should_stop():
            checkpoint()
            step = state.step
            reporter.finish("cancelled", {"iteration": step}, f"cancelled at iteration {step}; resume to continue")
            return "cancelled"
        x, y = batches.batch(state.step)
        lr = learning_rate(state.step, cfg, state.warming)
        set_learning_rate(optimizer, lr)
        train_step(x, y)

        if state.step % cfg.log_every == 0 or state.step % cfg.eval_every == 0 or state.step == cfg.iterations:
            if not log_window(lr):
                return "diverged"
        if state.step % cfg.checkpoint_every == 0 or state.step == cfg.iterations:
            _sync(device)  # the steps queued before the checkpoint count as training, not as its write
            t0 = time.perf_counter()
            checkpoint()
            window.exclude(time.perf_counter() - t0)  # throughput counts training only

    if resumed_from == cfg.iterations:
        # resumed after its last iteration (it stopped before recording its end): the final evaluation again
        evaluation(final=True)
    tail = max(1, len(state.window_errors) // 50)
    summary = {
        "iteration": state.step,
        "final_train_error": sum(state.window_errors[-tail:]) / tail if state.window_errors else None,
        **state.final_errors,
    }
    if parent_record:
        summary |= {"parent_id": parent_record["id"], "parent_iteration": parent_record["iteration"]}
    reporter.finish("done", summary, None)
    return "done"
