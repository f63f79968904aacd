"""Restore a stored run's network for analysis: its trained weights (the last checkpoint) or its initialisation.

The network is built from the run's stored `RunConfig`, exactly as the trainer built it: same seed before
construction (so 'init' is the trainer's step-0 network), same device placement, memory format and autocast
precision, so an evaluation here reproduces the trainer's evaluation of the same weights. Data comes from the
run's own splits (same data set, validation fraction, training limit and normalisation), never augmented.

BN statistics at initialisation: a fresh net's running statistics are (0, 1), so in eval mode every BN is the
identity and the net is effectively un-normalised (its output scale grows or shrinks with depth). The analyses
concern nets with batch normalisation (Balduzzi et al.'s 1/sqrt(L) law for residual nets holds with it), so at
init the analyses have `restore` recalibrate the running statistics on `bn_batches` training batches first (cumulative averages,
the net in training mode, no gradient, no weight change): BN then normalises as it does in training. The result
records which statistics it used (`bn_statistics`: "recalibrated", "running" for the checkpoint's own or a fresh
net's (0, 1) ones, "none" for a net without BN).
"""
from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import RunConfig
from ..datasets import DeviceLoader, Splits, make_splits
from ..models import CifarNet, ConfigError, net_for
from ..runs.store import Store
from ..runtime import resolve_device, resolve_precision
from ..train import CHECKPOINT, _autocast_factory
from .errors import AnalysisError
from .options import parse_at

# The architecture fields a checkpoint's own config must share with its run: a plain and a residual net with
# option A have identical parameter names and shapes, so a swapped checkpoint would otherwise load silently.
ARCHITECTURE = ("kind", "depth", "block", "shortcut", "span", "width", "norm", "init", "dataset")


@dataclass
class Restored:
    """A run's network, ready for analysis, with everything needed to feed it as the trainer did."""

    run: dict                 # the store's row of the run
    cfg: RunConfig
    net: CifarNet             # on `device`, in eval mode
    at: str                   # "checkpoint" (the last one the trainer wrote) or "init"
    step: int                 # optimizer steps the weights have seen (0 at init)
    device: torch.device
    precision: str            # "fp32" or "bf16": the run's precision resolved for this device, as the trainer does
    splits: Splits
    bn_statistics: str = "running"   # "recalibrated" (at init, on training batches), "running" or "none" (no BN)
    bn_images: int = 0               # training images the statistics were recalibrated on

    @property
    def eval_batch(self) -> int:
        """The trainer's evaluation batch size; the same batches give bit-identical evaluations."""
        return max(self.cfg.batch_size, 500)

    def autocast(self):
        """A context-manager factory: the trainer's autocast for this run's precision."""
        return _autocast_factory(self.device, self.precision)

    def images(self, split: str, limit: int = 0, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalised float images, int64 labels) of `split` ('train', 'val' or 'test') on the device, images
        `start`..`start+limit` (limit 0: to the end), in the run's memory format, never augmented."""
        data = {"train": self.splits.train, "val": self.splits.val, "test": self.splits.test}[split]
        n = len(data) - start if not limit else min(limit, len(data) - start)
        if n <= 0:
            raise AnalysisError(f"the {split} split of {self.cfg.dataset} has {len(data)} images; none from {start}")
        loader = DeviceLoader(data.subset(torch.arange(start, start + n)), self.splits.mean, self.splits.std,
                              self.device, self.eval_batch, channels_last=self.cfg.channels_last)
        return loader.batch(torch.arange(n, device=self.device))

    def context(self) -> dict:
        """What a result records about where its numbers come from."""
        return {
            "run_id": self.run["id"], "label": self.run.get("label") or self.cfg.label(), "kind": self.cfg.kind,
            "depth": self.cfg.depth, "dataset": self.cfg.dataset, "seed": self.cfg.seed, "preset": self.cfg.preset,
            "at": self.at, "step": self.step, "total_iterations": self.cfg.iterations,
            "device": str(self.device), "precision": self.precision, "bn_statistics": self.bn_statistics,
            "bn_images": self.bn_images,
        }


def restore(store: Store, run_id: str, at: str | int = "checkpoint", data_dir=None, device: str = "auto",
            bn_batches: int = 0) -> Restored:
    """The network of stored run `run_id` (a unique id prefix is enough) at its last checkpoint or at init.

    `at`: 'checkpoint', 'init' (0 is a synonym) or an iteration number, which must be the checkpoint's own (the
    lab keeps only the last checkpoint). 'init' is the run's network freshly initialised with its seed, exactly
    as the trainer built it; with `bn_batches` > 0 its BN running statistics are then recalibrated on that many
    training batches (the analyses' default, options.BN_BATCHES; 0 leaves them at (0, 1); see the module
    docstring). It needs no checkpoint, so it works for queued runs too. Raises StoreError for an unknown run and
    AnalysisError for a run without a usable checkpoint.
    """
    run = store.get_run(run_id)
    cfg = RunConfig.from_dict(run["config"])
    at = parse_at(at)
    dev = resolve_device(device)
    state = None
    if at != "init":  # checkpoint problems are reported before any data is loaded
        state = _read_checkpoint(store, run, dev)
        _check_fits(run, cfg, state)
        if at != "checkpoint" and at != int(state["step"]):
            raise AnalysisError(
                f"run {run['id']} has no weights at iteration {at}: the lab keeps only the last checkpoint; "
                f"available: init (0) and {int(state['step'])}"
            )
    splits = make_splits(cfg.dataset, data_dir, cfg.val_fraction, limit=cfg.train_limit, normalize=cfg.normalize,
                         image_size=cfg.image_size, image_folder=cfg.image_folder or None)
    spec = cfg.net_spec(splits.info.channels, splits.info.classes)
    with torch.random.fork_rng(devices=[]):  # the trainer's seeding, without disturbing the caller's RNG
        torch.manual_seed(cfg.seed)
        net = net_for(spec)
    step = 0
    if state is not None:
        step = int(state["step"])
        try:
            net.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise AnalysisError(
                f"run {run['id']}'s checkpoint does not fit its network ({cfg.label()}): "
                f"{str(exc).splitlines()[0]}"
            ) from None
        at = "checkpoint"
    net = net.to(dev)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    net.eval()
    restored = Restored(run, cfg, net, at, step, dev, resolve_precision(cfg.precision, dev), splits)
    if not has_bn(net):
        restored.bn_statistics = "none"
    elif at == "init" and bn_batches > 0:
        restored.bn_images = recalibrate_bn(net, training_batches(restored, bn_batches), restored.autocast())
        restored.bn_statistics = "recalibrated"
    return restored


def has_bn(net: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())


def training_batches(r: Restored, batches: int):
    """`batches` batches of the run's batch size from its training split, in an order fixed by the run's seed,
    normalised as the trainer normalises them and never augmented."""
    data = r.splits.train
    gen = torch.Generator().manual_seed(r.cfg.seed)
    order = torch.randperm(len(data), generator=gen)[: batches * r.cfg.batch_size]
    loader = DeviceLoader(data.subset(order), r.splits.mean, r.splits.std, r.device, r.cfg.batch_size,
                          channels_last=r.cfg.channels_last)
    for start in range(0, len(order), r.cfg.batch_size):
        yield loader.batch(torch.arange(start, min(start + r.cfg.batch_size, len(order)), device=r.device))[0]


@torch.no_grad()
def recalibrate_bn(net: torch.nn.Module, batches, autocast=None) -> int:
    """Replace every BN's running statistics by their cumulative average over `batches` (input tensors), the
    net in training mode, so eval mode normalises as training does; the weights do not change. Returns the
    number of images seen; the net is left in eval mode."""
    import contextlib

    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over every batch, not an exponential one
    seen = 0
    net.train()
    try:
        for x in batches:
            with (autocast or contextlib.nullcontext)():
                net(x)
            seen += len(x)
    finally:
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
        net.eval()
    return seen


def checkpoint_path(store: Store, run_id: str) -> Path:
    return store.run_dir(run_id) / CHECKPOINT


def _read_checkpoint(store: Store, run: dict, device: torch.device) -> dict:
    path = checkpoint_path(store, run["id"])
    if run["status"] == "queued":
        raise AnalysisError(
            f"run {run['id']} is queued: it has not trained yet, so there is no checkpoint to analyse "
            f"(analyses at init work: --at init)"
        )
    if not path.exists():
        cfg = RunConfig.from_dict(run["config"])
        raise AnalysisError(
            f"run {run['id']} ({run['status']}, iteration {run.get('iteration') or 0}) has no checkpoint yet; "
            f"the trainer writes one every {cfg.checkpoint_every} iterations and at the end"
        )
    try:
        # weights_only: a checkpoint is data (tensors, dicts, lists, numbers), never code to run
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise AnalysisError(
            f"run {run['id']}'s checkpoint {path} holds more than tensors and plain data, so it is not loaded "
            f"(not a lab checkpoint: {str(exc).splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise AnalysisError(
            f"run {run['id']}'s checkpoint {path} cannot be read: truncated or not a torch file "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no details'})"
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict) or "step" not in state:
        raise AnalysisError(f"run {run['id']}'s checkpoint {path} is not a lab checkpoint (no model weights and step)")
    return state


def _check_fits(run: dict, cfg: RunConfig, state: dict) -> None:
    """Refuse a checkpoint written for another architecture or data set (see ARCHITECTURE)."""
    saved = state.get("config")
    if not isinstance(saved, dict):
        return  # nothing to compare: the state dict's names and shapes are still checked on loading
    try:
        theirs = RunConfig.from_dict(saved)
    except (ConfigError, TypeError):
        raise AnalysisError(f"run {run['id']}'s checkpoint records a configuration this lab cannot read") from None
    differ = [f"{k} {getattr(theirs, k)!r} vs {getattr(cfg, k)!r}" for k in ARCHITECTURE
              if getattr(theirs, k) != getattr(cfg, k)]
    if differ:
        raise AnalysisError(
            f"run {run['id']}'s checkpoint was written for another network or data set ({'; '.join(differ)})"
        )
