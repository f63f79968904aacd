"""The trainer: the paper's SGD schedule on device-resident data, with probes, checkpoints and resume.

`train(cfg, run_dir, reporter)` runs one configuration to the end (or until the reporter asks it to stop) and
reports metrics through a `Reporter`; `lab.runs.execute.StoreReporter`-style reporters persist them. Iterations are
counted from 1: the metrics logged at step s describe the state after s optimizer steps.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .config import RunConfig, validate
from .data import DeviceLoader, make_splits
from .models import CifarNet, count_parameters, forward_macs
from .probes import grad_norms, responses
from .runtime import environment, resolve_device, resolve_precision

CHECKPOINT = "checkpoint.pt"


class Reporter:
    """Receives what a run produces. The default does nothing; subclasses store or print it."""

    def start(self, env: dict, layers: dict, params: int, resumed_from: int) -> None: ...

    def log(self, step: int, scalars: dict[str, float], layers: dict[str, list[float]], progress: dict) -> None: ...

    def should_stop(self) -> bool:
        return False

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


def save_checkpoint(path: Path, state: dict) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def train(
    cfg: RunConfig,
    run_dir: str | Path,
    reporter: Reporter | None = None,
    data_dir: str | Path | None = None,
    resume: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> str:
    """Train `cfg` to the end, resuming from `run_dir`'s checkpoint when there is one. Returns the final
    status: 'done', 'diverged' or 'cancelled' (stopped by the reporter; a checkpoint is written first)."""
    validate(cfg)
    reporter = reporter or Reporter()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    autocast = _autocast_factory(device, precision)
    torch.manual_seed(cfg.seed)

    splits = make_splits(cfg.dataset, data_dir, cfg.val_fraction, limit=cfg.train_limit)
    info = splits.info
    memfmt = dict(channels_last=cfg.channels_last)
    train_loader = DeviceLoader(
        splits.train, splits.mean, splits.std, device, cfg.batch_size, augment=cfg.augment, flip=info.flip,
        **memfmt,
    )
    eval_batch = max(cfg.batch_size, 500)
    val_loader = DeviceLoader(splits.val, splits.mean, splits.std, device, eval_batch, **memfmt)
    test_loader = DeviceLoader(splits.test, splits.mean, splits.std, device, eval_batch, **memfmt)
    probe_images = val_loader.batch(torch.arange(min(cfg.probe_batch, len(val_loader)), device=device))[0]

    net = CifarNet(cfg.net_spec(info.channels, info.classes))
    macs = forward_macs(net, info.size)
    net = net.to(device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    model = torch.compile(net) if cfg.compile else net
    weights = [p for _, p in net.weight_layers()]
    optimizer = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)

    step, warming, elapsed = 0, cfg.uses_warmup(), 0.0
    ckpt_path = run_dir / CHECKPOINT
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, warming, elapsed = state["step"], state["schedule"]["warming"], state["elapsed_s"]
        torch.set_rng_state(state["rng"]["cpu"])
        if device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], device)
    resumed_from = step

    env = environment(device) | {
        "precision": precision, "channels_last": cfg.channels_last, "compile": cfg.compile,
        "milestones": cfg.milestone_iterations(), "warmup": cfg.uses_warmup(), "forward_macs": macs,
        "train_images": len(splits.train), "val_images": len(splits.val), "test_images": len(splits.test),
        "normalisation": {"mean": splits.mean.tolist(), "std": splits.std.tolist()},
    }
    layer_names = {
        "grad_norm": [n for n, _ in net.weight_layers()],
        "response_std": [n for n, _ in net.response_layers()],
        "residual_ratio": [n for n, _ in net.residual_units()],
    }
    reporter.start(env, layer_names, count_parameters(net), resumed_from)

    def checkpoint() -> None:
        save_checkpoint(ckpt_path, {
            "model": net.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
            "schedule": {"warming": warming}, "elapsed_s": elapsed, "config": asdict(cfg),
            "rng": {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
        })

    def probe_layers(window_grads: list[torch.Tensor], with_responses: bool) -> dict[str, list[float]]:
        """The window's mean gradient norms and (at evaluations) the responses, in one host copy."""
        out = {}
        if window_grads:
            out["grad_norm"] = torch.stack(window_grads).mean(0)
        if cfg.probes and with_responses:
            std, ratio = responses(net, probe_images, autocast)
            out["response_std"] = std
            if len(ratio):
                out["residual_ratio"] = ratio
        # one host copy for all probes
        flat = torch.cat([v.float() for v in out.values()]).tolist() if out else []
        result, i = {}, 0
        for k, v in out.items():
            result[k] = flat[i : i + len(v)]
            i += len(v)
        return result

    if step == 0 and cfg.probes:
        reporter.log(0, {}, probe_layers([], with_responses=True), {"iteration": 0})

    bpe = train_loader.batches_per_epoch()
    loss_sum = torch.zeros((), device=device)
    wrong = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    first_bad = torch.full((), -1, device=device, dtype=torch.int64)
    grads: list[torch.Tensor] = []
    window_errors: list[float] = []
    final_errors: dict[str, float] = {}
    window_start, window_images = time.perf_counter(), 0
    last_log_time = time.perf_counter()
    order: torch.Tensor | None = None
    order_epoch = -1
    model.train()

    while step < cfg.iterations:
        if reporter.should_stop():
            checkpoint()
            reporter.finish("cancelled", {"iteration": step}, f"cancelled at iteration {step}; resume to continue")
            return "cancelled"
        epoch, pos = divmod(step, bpe)
        if epoch != order_epoch:
            order = torch.randperm(len(train_loader), device=device, generator=_step_generator(device, cfg.seed, -1 - epoch))
            order_epoch = epoch
        train_loader.generator = _step_generator(device, cfg.seed, step)
        x, y = train_loader.batch(order[pos * cfg.batch_size : (pos + 1) * cfg.batch_size])
        lr = learning_rate(step, cfg, warming)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with autocast():
            out = model(x)
        loss = F.cross_entropy(out.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        step += 1
        if cfg.probes and step % cfg.grad_every == 0:
            grads.append(grad_norms(weights))
        optimizer.step()

        detached = loss.detach()
        loss_sum += detached
        wrong += (out.detach().argmax(1) != y).sum()
        seen += len(y)
        window_images += len(y)
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(detached), step, first_bad)

        is_eval = step % cfg.eval_every == 0 or step == cfg.iterations
        if step % cfg.log_every == 0 or is_eval:
            now = time.perf_counter()
            window_time = now - window_start
            elapsed += now - last_log_time
            last_log_time = now
            batches = max(1, seen // cfg.batch_size)
            stats = torch.stack([loss_sum / batches, wrong.float() / max(1, seen), first_bad.float()]).tolist()
            train_loss, train_err, bad = stats
            images_per_s = window_images / window_time if window_time > 0 else 0.0
            scalars = {
                "train_loss": train_loss, "train_error": train_err, "lr": lr, "images_per_s": images_per_s,
                "elapsed_s": elapsed, "epoch": step / bpe,
            }
            if bad >= 0 or not math.isfinite(train_loss):
                bad_step = int(bad) if bad >= 0 else step
                reporter.log(step, scalars, {}, {"iteration": step, "images_per_s": images_per_s, "elapsed_s": elapsed})
                msg = f"loss became NaN or infinite at iteration {bad_step} (lr {lr:g}); the run stopped there"
                reporter.finish("diverged", {"iteration": step, "diverged_at": bad_step}, msg)
                return "diverged"
            window_errors.append(train_err)
            if warming and train_err < cfg.warmup_error:
                warming = False  # the paper's 110-layer warm-up: back to the base rate once error < 80%
            if is_eval:
                final = step == cfg.iterations
                limit = 0 if final else cfg.eval_images
                val_loss, val_err = evaluate(net, val_loader, autocast, limit)
                test_loss, test_err = evaluate(net, test_loader, autocast, limit)
                scalars |= {"val_loss": val_loss, "val_error": val_err, "test_loss": test_loss, "test_error": test_err}
                final_errors = {"final_val_error": val_err, "final_test_error": test_err}
            layers = probe_layers(grads, with_responses=is_eval)
            grads = []
            elapsed += time.perf_counter() - last_log_time
            last_log_time = time.perf_counter()
            reporter.log(step, scalars, layers, {"iteration": step, "images_per_s": images_per_s, "elapsed_s": elapsed})
            loss_sum.zero_()
            wrong.zero_()
            seen, window_images = 0, 0
            window_start = time.perf_counter()
            if progress:
                progress(step, cfg.iterations)
        if step % cfg.checkpoint_every == 0 or step == cfg.iterations:
            t0 = time.perf_counter()
            checkpoint()
            window_start += time.perf_counter() - t0  # throughput counts training only

    tail = max(1, len(window_errors) // 50)
    summary = {
        "iteration": step,
        "final_train_error": sum(window_errors[-tail:]) / tail if window_errors else None,
        **final_errors,
    }
    reporter.finish("done", summary, None)
    return "done"
