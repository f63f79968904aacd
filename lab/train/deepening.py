"""A run that grows from a trained parent (`deepen_from`): the parent's net rebuilt from its checkpoint and
deepened (`lab.models.deepen`), the child's record of its parent, and, for `deepen_schedule` 'continue', the
parent's momentum and final learning rate for the child to go on with."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import load_checkpoint
from ..config import RunConfig
from ..datasets import DeviceLoader
from ..models import CifarNet, ConfigError, NetSpec, deepen
from ..models.deepen import child_names
from .schedule import momentum_by_name, schedule_rate

PARENT = "parent.json"      # a deepened run's record of its parent, kept beside its checkpoint
DEEPEN_BATCHES = 4          # training batches whose activations set a deepened net's new BN statistics
# options a child shares with its parent (and `init` when either is Fixup)
SAME_AS_PARENT = ("kind", "block", "width", "span", "shortcut", "norm", "unit", "residual_scale", "shortcut_scale",
                  "branch_init", "conv", "dataset")


@dataclass
class Grown:
    """A child net built from its parent: the net, its record of the parent (stored in parent.json, the run's
    environment and summary) and, when it continues the parent's optimizer, the parent's momentum buffers
    under the child's parameter names (None otherwise)."""

    net: CifarNet
    record: dict
    momentum: dict[str, torch.Tensor] | None = None


def _parent_config(cfg: RunConfig, state: dict) -> RunConfig:
    """The parent's configuration, refused (ConfigError) when the parent is not the same net at a depth no
    larger than the child's."""
    who = f"deepen_from {cfg.deepen_from!r}"
    parent_cfg = RunConfig.from_dict(state["config"])
    same = list(SAME_AS_PARENT) + (["init"] if "fixup" in (cfg.init, parent_cfg.init) else [])
    differ = [f"{k} {getattr(parent_cfg, k)!r} (this run: {getattr(cfg, k)!r})" for k in same
              if getattr(parent_cfg, k) != getattr(cfg, k)]
    if differ:
        raise ConfigError(f"{who}: a deepened net keeps its parent's kind, block, width and options, but the "
                          f"parent has {'; '.join(differ)}")
    if parent_cfg.depth > cfg.depth:
        raise ConfigError(f"{who}: depth {cfg.depth} must be at least the parent's {parent_cfg.depth} (equal: "
                          "the parent's net unchanged, trained on)")
    return parent_cfg


def _bn_batches(cfg: RunConfig, train_loader: DeviceLoader) -> list[torch.Tensor]:
    """DEEPEN_BATCHES training batches (inputs, on the CPU) in an order seeded from the run's seed."""
    g = torch.Generator(device=train_loader.device).manual_seed(cfg.seed)
    train_loader.generator = g
    order = torch.randperm(len(train_loader), device=train_loader.device, generator=g)
    bs = train_loader.batch_size
    return [train_loader.batch(order[i * bs : (i + 1) * bs])[0].float().cpu()
            for i in range(min(DEEPEN_BATCHES, train_loader.batches_per_epoch()))]


def deepened_net(cfg: RunConfig, parent_checkpoint: str | Path | None, spec: NetSpec,
                 train_loader: DeviceLoader) -> Grown:
    """The parent run's net rebuilt from its checkpoint and deepened to `cfg.depth` (`lab.models.deepen`, the
    new BN statistics measured on DEEPEN_BATCHES training batches; at the parent's own depth the parent's net
    unchanged), and the child's record of its parent. With `cfg.deepen_schedule` 'continue' the record holds
    the parent's final learning rate (`lr`) and the result the parent's momentum buffers. Refused (ConfigError)
    when the checkpoint is missing or the parent is not the same net at a depth no larger than `cfg.depth`."""
    if parent_checkpoint is None or not Path(parent_checkpoint).is_file():
        raise ConfigError(f"deepen_from {cfg.deepen_from!r}: the parent's checkpoint "
                          f"{str(parent_checkpoint or '(none given)')!r} does not exist; the parent must have "
                          "trained (finished or interrupted) and kept its checkpoint")
    state = load_checkpoint(Path(parent_checkpoint))
    parent_cfg = _parent_config(cfg, state)
    parent = CifarNet(parent_cfg.net_spec(spec.in_channels, spec.num_classes))
    parent.load_state_dict(state["model"])
    if parent_cfg.depth == cfg.depth:
        child, batches = parent, []
    else:
        batches = _bn_batches(cfg, train_loader)
        child = deepen(parent, cfg.depth, data=batches, noise=cfg.deepen_noise, where=cfg.deepen_where,
                       generator=torch.Generator().manual_seed(cfg.seed))
    record = {"id": cfg.deepen_from, "iteration": int(state["step"]), "depth": parent_cfg.depth,
              "where": cfg.deepen_where, "noise": cfg.deepen_noise, "bn_batches": len(batches)}
    if cfg.deepen_schedule != "continue":
        return Grown(child, record)
    rename = child_names(parent.spec, child.spec, cfg.deepen_where)
    momentum = {rename(name): buf for name, buf in momentum_by_name(parent, parent_cfg, state["optimizer"]).items()}
    record |= {"schedule": "continue", "lr": schedule_rate(state["optimizer"])}
    return Grown(child, record, momentum)
