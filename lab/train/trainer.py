"""The training loop: `train` builds a `Trainer` (data, net, optimizer, a restored checkpoint) and runs it.

A `Trainer` holds what a run changes as it goes (the step, the logging window, the optimizer) and names each
thing the loop does once per iteration (`train_step`), per logging window (`log_window`, with `evaluation` and
`probe_layers`) and per checkpoint (`checkpoint`); `run` is the loop itself."""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ..checkpoint import CHECKPOINT, FORMAT, restore, rng_state, save_checkpoint
from ..config import RunConfig, validate
from ..datasets import DeviceLoader, make_splits
from ..models import CifarNet, count_parameters, forward_macs, net_for
from ..probes import (
    InputGradNorms, grad_norms, initial_gradients, layer_names, responses, update_ratios, weight_snapshot,
)
from ..runtime import compile_cache_dir, environment, resolve_device, resolve_precision, use_compile_cache
from .deepening import PARENT, deepened_net
from .reporters import BackgroundLog, Reporter
from .schedule import learning_rate, load_momentum, make_optimizer, set_learning_rate, warmup_over
from .state import BatchOrder, Progress, Window

GRAPH_MODES = ("reduce-overhead", "max-autotune")  # compile modes that capture CUDA graphs on a GPU


def _autocast_factory(device: torch.device, precision: str) -> Callable[[], contextlib.AbstractContextManager]:
    if precision == "bf16":
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def _sync(device: torch.device) -> None:
    """Wait for the device's queued work (a GPU's; the CPU has none), so a clock read next measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compile_model(net: torch.nn.Module, cfg: RunConfig, cache: Path) -> torch.nn.Module:
    """`net` compiled in `cfg.compile_mode`, sharing its parameters and buffers (the eager `net` still runs
    the probe steps and evaluations), with the compiled code cached in `cache` for later runs."""
    use_compile_cache(cache)
    return torch.compile(net, mode=cfg.compile_mode)


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
    path of its checkpoint.pt) deepened to `cfg.depth` (at the parent's depth: the parent's net unchanged). With
    `cfg.deepen_schedule` 'restart' it trains on a fresh schedule of its own: its own `iterations`, the
    learning-rate schedule (and warm-up) from step 0, a new optimizer (no momentum carried over); with
    'continue' it keeps the parent's momentum buffers (new units start without) and trains every iteration at
    the parent's final learning rate. The child records its parent (id, iteration, depth) in its environment
    and summary.

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
        return Trainer(cfg, Path(run_dir), reporter, device, data_dir, resume, progress, parent_checkpoint).run()
    writer = BackgroundLog(reporter)
    try:
        return Trainer(cfg, Path(run_dir), writer, device, data_dir, resume, progress, parent_checkpoint).run()
    finally:
        writer.close()  # the queued windows are written however the run ended


class Trainer:
    """One run: set up by `__init__` (in this order, which fixes the use of the random number generators:
    seed, data, net, optional deepening, optimizer, restored checkpoint), trained by `run`."""

    def __init__(self, cfg: RunConfig, run_dir: Path, reporter: Reporter, device: torch.device, data_dir,
                 resume: bool, progress: Callable[[int, int], None] | None, parent_checkpoint) -> None:
        self.cfg, self.run_dir, self.reporter, self.device = cfg, run_dir, reporter, device
        self.on_progress = progress
        run_dir.mkdir(parents=True, exist_ok=True)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.precision = resolve_precision(cfg.precision, device)
        self.autocast = _autocast_factory(device, self.precision)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest conv algorithms once
        torch.manual_seed(cfg.seed)
        self._load_data(data_dir)
        momentum = self._build_net(resume, parent_checkpoint)
        self.optimizer = make_optimizer(self.net, cfg, device)
        self.ckpt_path = run_dir / CHECKPOINT
        self._restore(resume, momentum)
        self.batches = BatchOrder(self.train_loader, cfg.seed, device)

    # --- set-up -------------------------------------------------------------------------------------------
    def _load_data(self, data_dir) -> None:
        cfg, device = self.cfg, self.device
        self.splits = splits = make_splits(cfg.dataset, data_dir, cfg.val_fraction, limit=cfg.train_limit,
                                          normalize=cfg.normalize, image_size=cfg.image_size,
                                          image_folder=cfg.image_folder or None)
        info = splits.info
        memfmt = dict(channels_last=cfg.channels_last)
        self.train_loader = DeviceLoader(
            splits.train, splits.mean, splits.std, device, cfg.batch_size, augment=cfg.augment, flip=info.flip,
            **memfmt,
        )
        eval_batch = max(cfg.batch_size, 500)
        self.val_loader = DeviceLoader(splits.val, splits.mean, splits.std, device, eval_batch, **memfmt)
        self.test_loader = DeviceLoader(splits.test, splits.mean, splits.std, device, eval_batch, **memfmt)
        self.probe_images, self.probe_labels = self.val_loader.batch(
            torch.arange(min(cfg.probe_batch, len(self.val_loader)), device=device))

    def _build_net(self, resume: bool, parent_checkpoint) -> dict | None:
        """The net (eager `net`, and `model`, the one the training steps run: compiled or the same), the parent
        record of a deepened run; returns the parent's momentum buffers for a fresh 'continue' child."""
        cfg, run_dir, info = self.cfg, self.run_dir, self.splits.info
        net = net_for(cfg.net_spec(info.channels, info.classes))
        self.parent_record, momentum = None, None
        if cfg.deepen_from:
            if resume and (run_dir / CHECKPOINT).exists():  # a resumed child restores its own checkpoint later
                record_path = run_dir / PARENT
                self.parent_record = json.loads(record_path.read_text()) if record_path.exists() else None
            else:
                grown = deepened_net(cfg, parent_checkpoint, net.spec, self.train_loader)
                net, self.parent_record, momentum = grown.net, grown.record, grown.momentum
                (run_dir / PARENT).write_text(json.dumps(self.parent_record))
        self.macs = forward_macs(net, info.size)
        net = net.to(self.device)
        if cfg.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.net = net
        self.cache = compile_cache_dir() if cfg.compile else None
        self.model = compile_model(net, cfg, self.cache) if cfg.compile else net
        self.graphs = cfg.compile and cfg.compile_mode in GRAPH_MODES and self.device.type == "cuda"
        self.weights = [p for _, p in net.weight_layers()]
        self.input_grads = InputGradNorms(net)
        return momentum

    def _restore(self, resume: bool, momentum: dict | None) -> None:
        """The progress and window to start from: the run's checkpoint's, else a fresh start's (a 'continue'
        child's with its parent's momentum and final rate, without warm-up)."""
        cfg = self.cfg
        continued = cfg.deepen_schedule == "continue" and bool(cfg.deepen_from)
        self.state = Progress(warming=cfg.uses_warmup() and not continued)
        if continued and self.parent_record:
            self.state.fixed_lr = float(self.parent_record["lr"])
        if momentum:
            load_momentum(self.optimizer, self.net, momentum)
        self.window = Window(self.device)
        if resume and self.ckpt_path.exists():
            saved = restore(self.ckpt_path, self.net, self.optimizer, self.device)
            for group in self.optimizer.param_groups:  # this device's SGD kind, whichever device saved it
                group["fused"] = True if self.device.type == "cuda" else None
            self.state = Progress.from_state(saved)
            self.window.load_state(saved.get("window"))
        self.resumed_from = self.state.step

    def _environment(self) -> dict:
        cfg, device, splits, continued = self.cfg, self.device, self.splits, self.state.fixed_lr is not None
        env = environment(device) | {
            "precision": self.precision, "channels_last": cfg.channels_last, "compile": cfg.compile,
            "compile_mode": cfg.compile_mode if cfg.compile else None,
            "compile_cache": str(self.cache) if self.cache else None,
            "cudnn_benchmark": device.type == "cuda", "fused_sgd": device.type == "cuda",
            "milestones": [] if continued else cfg.milestone_iterations(),
            "warmup": cfg.uses_warmup() and not continued, "forward_macs": self.macs,
            "train_images": len(splits.train), "val_images": len(splits.val), "test_images": len(splits.test),
            "normalisation": splits.normalisation(),
        }
        env["background_log"] = isinstance(self.reporter, BackgroundLog)
        if self.parent_record:
            env["parent"] = self.parent_record
        return env

    # --- the loop -----------------------------------------------------------------------------------------
    def run(self) -> str:
        """Train to `cfg.iterations`; returns 'done', 'diverged' or 'cancelled'."""
        cfg, state = self.cfg, self.state
        self.reporter.start(self._environment(), layer_names(self.net), count_parameters(self.net), self.resumed_from)
        self.started = time.perf_counter()
        if state.step == 0 and cfg.probes:
            # the gradients before any step: one backward pass on the probe batch, no optimizer step
            initial = initial_gradients(self.net, self.probe_images, self.probe_labels, self.autocast)
            self.reporter.log(0, {}, self.probe_layers({k: [v] for k, v in initial.items()}, with_responses=True),
                              {"iteration": 0})
        self.model.train()
        while state.step < cfg.iterations:
            if self.reporter.should_stop():
                return self.cancel()
            x, y = self.batches.batch(state.step)
            lr = self.learning_rate()
            set_learning_rate(self.optimizer, lr)
            self.train_step(x, y)
            if state.step % cfg.log_every == 0 or state.step % cfg.eval_every == 0 or state.step == cfg.iterations:
                if not self.log_window(lr):
                    return "diverged"
            if state.step % cfg.checkpoint_every == 0 or state.step == cfg.iterations:
                self.timed_checkpoint()
        return self.finish()

    def learning_rate(self) -> float:
        """The rate of the coming iteration; a warm-up still on at the first milestone ends there."""
        state = self.state
        if state.fixed_lr is not None:
            return state.fixed_lr
        if state.warming and warmup_over(state.step, self.cfg.milestone_iterations()):
            self.end_warmup()
        return learning_rate(state.step, self.cfg, state.warming)

    def end_warmup(self) -> None:
        """Back to the schedule's rate from the coming iteration on; the iterations trained at the warm-up rate
        are kept (checkpoint) and logged (the scalar `warmup_end`, with the window that holds the next one)."""
        self.state.warming = False
        self.state.warmup_end = self.state.step

    def elapsed(self) -> float:
        return self.state.elapsed_s + time.perf_counter() - self.started

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One optimizer step on (x, y), with the gradient probes on probe steps."""
        state, window, optimizer = self.state, self.window, self.optimizer
        probe_step = self.cfg.probes and (state.step + 1) % self.cfg.grad_every == 0
        # gradients are dropped before the forward pass: a captured (CUDA-graph) backward then writes fresh
        # .grad tensors each step, and nothing of the previous step is alive when the graph replays
        optimizer.zero_grad(set_to_none=True)
        if self.graphs and not probe_step:
            torch.compiler.cudagraph_mark_step_begin()  # the last step's graph outputs are no longer read
        # input-gradient hooks exist only on probe steps, which run the eager net on the same parameters and BN
        # buffers (a compiled one would not see hooks added after compilation)
        with self.input_grads if probe_step else contextlib.nullcontext():
            with self.autocast():
                out = (self.net if probe_step else self.model)(x)
            loss = F.cross_entropy(out.float(), y)
            loss.backward()
        state.step += 1
        if probe_step:
            window.samples["grad_norm"].append(grad_norms(self.weights))
            window.samples["input_grad_norm"].append(self.input_grads.norms())
            before = weight_snapshot(self.weights)
        optimizer.step()
        if probe_step:
            window.samples["update_ratio"].append(update_ratios(self.weights, before))
        window.add(state.step, loss, out, y)

    # --- logging windows and evaluations ------------------------------------------------------------------
    def log_window(self, lr: float) -> bool:
        """Log the window that ends at this step (with an evaluation when one is due); False if it diverged."""
        cfg, state, window, reporter = self.cfg, self.state, self.window, self.reporter
        step = state.step
        is_eval = step % cfg.eval_every == 0 or step == cfg.iterations
        first = step - window.batches  # the window holds iterations first+1 .. step
        train_loss, train_err, bad, images_per_s = window.summary()
        scalars = {
            "train_loss": train_loss, "train_error": train_err, "lr": lr, "images_per_s": images_per_s,
            "elapsed_s": self.elapsed(), "epoch": step / self.batches.per_epoch,
        }
        if bad >= 0 or not math.isfinite(train_loss):
            bad_step = int(bad) if bad >= 0 else step
            reporter.log(step, scalars, {}, {"iteration": step, "images_per_s": images_per_s, "elapsed_s": self.elapsed()})
            msg = f"loss became NaN or infinite at iteration {bad_step} (lr {lr:g}); the run stopped there"
            reporter.finish("diverged", {"iteration": step, "diverged_at": bad_step}, msg)
            return False
        state.window_errors.append(train_err)
        if state.warmup_end is not None and first <= state.warmup_end < step:
            scalars["warmup_end"] = float(state.warmup_end)  # this window's iterations after it are at the base rate
        if state.warming and train_err < cfg.warmup_error:
            self.end_warmup()  # the paper's 110-layer warm-up: back to the base rate once error < 80%
        if is_eval:
            scalars |= self.evaluation(final=step == cfg.iterations)
        layers = self.probe_layers(window.samples, with_responses=is_eval)
        reporter.log(step, scalars, layers, {"iteration": step, "images_per_s": images_per_s, "elapsed_s": self.elapsed()})
        window.reset()
        if self.on_progress:
            self.on_progress(step, cfg.iterations)
        return True

    def evaluation(self, final: bool) -> dict[str, float]:
        limit = 0 if final else self.cfg.eval_images
        val_loss, val_err = evaluate(self.net, self.val_loader, self.autocast, limit)
        test_loss, test_err = evaluate(self.net, self.test_loader, self.autocast, limit)
        self.state.final_errors = {"final_val_error": val_err, "final_test_error": test_err}
        return {"val_loss": val_loss, "val_error": val_err, "test_loss": test_loss, "test_error": test_err}

    def probe_layers(self, samples: dict[str, list[torch.Tensor]], with_responses: bool) -> dict[str, list[float]]:
        """The window's mean gradient norms, input-gradient norms and update ratios and (at evaluations) the
        response metrics, in one host copy."""
        # (an update ratio is NaN at a step whose weight was exactly zero before it: average the other steps)
        out = {k: torch.stack(v).nanmean(0) if k == "update_ratio" else torch.stack(v).mean(0)
               for k, v in samples.items() if v}
        if self.cfg.probes and with_responses:
            out |= responses(self.net, self.probe_images, self.autocast)
        # one host copy for all probes
        flat = torch.cat([v.float() for v in out.values()]).tolist() if out else []
        result, i = {}, 0
        for k, v in out.items():
            result[k] = flat[i : i + len(v)]
            i += len(v)
        return result

    # --- checkpoints and the end --------------------------------------------------------------------------
    def checkpoint(self) -> None:
        self.reporter.before_checkpoint(self.state.step)
        save_checkpoint(self.ckpt_path, {
            "format": FORMAT, "model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
            **replace(self.state, elapsed_s=self.elapsed()).state(),
            "config": asdict(self.cfg), "rng": rng_state(self.device), "window": self.window.state(),
        })

    def timed_checkpoint(self) -> None:
        """A checkpoint whose write is left out of the window's throughput."""
        _sync(self.device)  # the steps queued before the checkpoint count as training, not as its write
        t0 = time.perf_counter()
        self.checkpoint()
        self.window.exclude(time.perf_counter() - t0)  # throughput counts training only

    def cancel(self) -> str:
        self.checkpoint()
        step = self.state.step
        self.reporter.finish("cancelled", {"iteration": step}, f"cancelled at iteration {step}; resume to continue")
        return "cancelled"

    def finish(self) -> str:
        state = self.state
        if self.resumed_from == self.cfg.iterations:
            # resumed after its last iteration (it stopped before recording its end): the final evaluation again
            self.evaluation(final=True)
        tail = max(1, len(state.window_errors) // 50)
        summary = {
            "iteration": state.step,
            "final_train_error": sum(state.window_errors[-tail:]) / tail if state.window_errors else None,
            **state.final_errors,
        }
        if state.warmup_end is not None:
            summary["warmup_end"] = state.warmup_end
        if self.parent_record:
            summary |= {"parent_id": self.parent_record["id"], "parent_iteration": self.parent_record["iteration"]}
        self.reporter.finish("done", summary, None)
        return "done"
