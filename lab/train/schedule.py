"""The paper's optimizer and learning-rate schedule: SGD with momentum, the rate divided at milestones, and the
110-layer warm-up."""
from __future__ import annotations

import torch

from ..config import RunConfig


def learning_rate(step: int, cfg: RunConfig, warming: bool) -> float:
    """The learning rate for iteration `step` (0-based): the warm-up rate while warming, else the base rate
    times lr_decay for each milestone passed. The warm-up ends at the first milestone at the latest (a net
    whose training error never falls below warmup_error still gets the schedule's decays). A pure function of
    its inputs, so resume is exact."""
    milestones = cfg.milestone_iterations()
    if warming and not warmup_over(step, milestones):
        return cfg.warmup_lr
    passed = sum(step >= m for m in milestones)
    return cfg.lr * cfg.lr_decay**passed


def warmup_over(step: int, milestones: list[int]) -> bool:
    """Whether iteration `step` (0-based) is past the last one a warm-up may take: the first milestone's."""
    return bool(milestones) and step >= milestones[0]


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


def schedule_rate(optimizer_state: dict) -> float:
    """The schedule's rate of the last step an optimizer with this state dict took (its first group's rate
    without the group's `lr_scale`)."""
    group = optimizer_state["param_groups"][0]
    return float(group["lr"]) / float(group.get("lr_scale", 1.0))


def momentum_by_name(net: torch.nn.Module, cfg: RunConfig, optimizer_state: dict) -> dict[str, torch.Tensor]:
    """The momentum buffers of an optimizer state dict saved for `net` trained with `cfg` (by `make_optimizer`),
    keyed by parameter name; parameters that never took a step have none."""
    optimizer = make_optimizer(net, cfg, torch.device("cpu"))
    optimizer.load_state_dict(optimizer_state)
    out = {}
    for name, p in net.named_parameters():
        buf = optimizer.state.get(p, {}).get("momentum_buffer")
        if buf is not None:
            out[name] = buf.detach().clone()
    return out


def load_momentum(optimizer: torch.optim.Optimizer, net: torch.nn.Module, buffers: dict[str, torch.Tensor]) -> None:
    """Give `net`'s parameters named in `buffers` those momentum buffers (on each parameter's device, in its
    memory format); the others start without one, as in a fresh optimizer."""
    for name, p in net.named_parameters():
        if name in buffers:
            optimizer.state[p]["momentum_buffer"] = torch.empty_like(p).copy_(buffers[name])
