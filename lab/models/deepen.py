"""Net2DeeperNet (Chen, Goodfellow, Shlens 2016) on a built net: grow it to a larger depth by inserting units
that compute the identity, so the deeper net starts with its parent's function.

The child is the net of the same spec at the new depth (same kind, block, width, span, shortcut, placement,
normalisation and scaling). Each stage keeps its parent units, in order and with their weights copied unchanged
(stem, head and every other parameter and buffer too), and gains new units:

- where: "spread" (default) puts the new units evenly between the parent's units of each stage (20 -> 56: each
  parent unit is followed by two new ones), "end" puts them at the end of each stage. A stage's first unit is
  always a parent unit (it changes the shape; a new unit keeps it).
- a new plain unit: every conv a Dirac (identity) filter with zero bias, every BN set to undo its own
  normalisation, gamma = sqrt(running_var + eps), beta = running_mean, so relu(I relu(v)) = relu(v) keeps the
  function. Only basic units can do this (a bottleneck or Inception branch is narrower than the stream).
- a new residual unit: its branch starts at zero (the last layer's BN gamma and beta at 0, or the last conv at 0
  without BN after it: a DiracNets conv by its alpha and beta, its W kept; ReZero's alpha and Fixup's zero last
  layer already are), the other branch layers keep the child's own initialisation, so every parameter gets a
  gradient within a few steps; a 1x1 projection shortcut (option C) becomes the identity like a plain layer, and the BN
  after the addition (unit 'bn-after-add') undoes itself.

BN statistics of the new units: with `data` (an iterable of input batches, e.g. a few training batches) the net
runs them in training mode with the new units passed through as the identity; each new unit's identity BNs take
the per-channel mean and (population) variance of the activations reaching the unit (they all see its input:
a Dirac conv passes it on), and the other BNs of a new residual branch average their own batch statistics. The
parent's BN buffers are not touched. Without data the identity BNs keep running statistics (0, 1) and
gamma = sqrt(1 + eps): the identity in eval mode. Either way the deepened net computes its parent's function in
eval mode (up to float rounding); with data it is also close to it in training mode.

`noise` adds Gaussian noise to every Dirac filter, with standard deviation `noise` times the He standard deviation
sqrt(2 / fan_in) of that conv, to break the symmetry of the copied channels (Net2Net adds a little noise too);
it applies only to the identity convs (a new residual branch is random already).
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Iterable

import torch
from torch import nn

from .layers import ConvNorm, DiracConv2d
from .net import CifarNet
from .spec import ConfigError, NetSpec
from .units import Unit

DEEPEN_WHERE = ("spread", "end")


def deepen_problems(spec: NetSpec) -> list[str]:
    """Why a net of this spec cannot grow by identity units (empty when it can)."""
    problems = []
    if spec.kind == "plain" and spec.block != "basic":
        problems.append(
            f"a plain {spec.block} unit cannot compute the identity (its branch is narrower than the stream); "
            "deepen a plain basic net or a residual one")
    if spec.family != "cifar":
        problems.append(f"only the CIFAR family's nets (three equal stages) can be deepened, not {spec.family!r}")
    if spec.kind == "residual" and spec.unit == "relu-before-add" and spec.branch_init != "zero":
        problems.append("a relu-before-add unit's branch ends in a ReLU, so a new unit whose branch starts at zero "
                        "gets no gradient through it (a ReLU's gradient at zero is zero) and never trains; use "
                        "branch_init 'zero' (its scalar starts the branch at zero instead) or another unit")
    if spec.kind == "residual" and spec.shortcut_scale != 1:
        problems.append(f"with shortcut_scale {spec.shortcut_scale:g} a unit whose branch is zero computes "
                        f"{spec.shortcut_scale:g} x its input, not the identity")
    return problems


def _positions(m1: int, m2: int, where: str) -> tuple[list[int], list[int]]:
    """(child index of each parent unit, child indices of the new units) within one stage."""
    new = m2 - m1
    order: list[bool] = []  # True: a parent unit
    if where == "end":
        order = [True] * m1 + [False] * new
    else:
        for j in range(m1):
            order += [True] + [False] * ((j + 1) * new // m1 - j * new // m1)
    return [i for i, old in enumerate(order) if old], [i for i, old in enumerate(order) if not old]


def child_names(spec: NetSpec, child_spec: NetSpec, where: str = "spread"):
    """A function from a parameter or buffer name of a net of `spec` to the name of the same tensor in its
    deepened child of `child_spec` (a unit's names follow the unit to its place in the child; `where` as in
    `deepen`). With equal depths every name stays."""
    m1, m2 = spec.units_per_stage, child_spec.units_per_stage
    old_at, _ = _positions(m1, m2, where)
    mapping = {stage * m1 + j: stage * m2 + c for stage in range(3) for j, c in enumerate(old_at)}

    def rename(key: str) -> str:
        if not key.startswith("units."):
            return key
        _, index, rest = key.split(".", 2)
        return f"units.{mapping[int(index)]}.{rest}"

    return rename


def _identity_bn(bn: nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor) -> None:
    """Make `bn` undo its own normalisation: in eval mode bn(x) = x exactly (up to rounding)."""
    bn.running_mean.copy_(mean)
    bn.running_var.copy_(var)
    bn.weight.copy_(torch.sqrt(var + bn.eps))
    bn.bias.copy_(mean)


def _dirac(conv: nn.Conv2d, noise: float, generator: torch.Generator | None) -> None:
    """Make `conv` the identity (plus noise). A DiracNets conv gets alpha = 1 and beta = noise * sqrt(2) (its
    normalised W has unit norm per filter, He noise about sqrt(2))."""
    fan_in = conv.in_channels * math.prod(conv.kernel_size)
    if isinstance(conv, DiracConv2d):
        conv.alpha.fill_(1.0)
        conv.beta.fill_(noise * math.sqrt(2.0))
    else:
        nn.init.dirac_(conv.weight)
        if noise:
            eps = torch.randn(conv.weight.shape, generator=generator) * (noise * math.sqrt(2.0 / fan_in))
            conv.weight.add_(eps.to(conv.weight))
    if conv.bias is not None:
        conv.bias.zero_()


def _identity_layers(unit: Unit) -> tuple[list[ConvNorm], list[nn.BatchNorm2d]]:
    """The layers of a new unit that become the identity, and the BNs that undo themselves (all see the unit's
    input)."""
    layers = [] if unit.residual else list(unit.layers)
    if unit.residual and isinstance(unit.shortcut, ConvNorm):
        layers.append(unit.shortcut)
    bns = [m.norm_layer() for m in layers if m.norm_layer() is not None]
    if isinstance(unit.post_bn, nn.BatchNorm2d):
        bns.append(unit.post_bn)
    return layers, bns


def _zero_branch(unit: Unit) -> None:
    """Start a new residual unit's branch at zero, keeping a path for the gradient (never two zeros in a row)."""
    if unit.alpha is not None:
        unit.alpha.zero_()  # ReZero / SkipInit: the scalar alone is enough
        return
    out = unit.output_layer()
    bn = out.norm_layer()
    if bn is not None and out.order == "post":
        bn.weight.zero_()
        bn.bias.zero_()
    else:
        if isinstance(out.conv, DiracConv2d):
            # its filters are alpha * delta + beta * W / ||W||: alpha = beta = 0 is the zero filter, and W keeps
            # the child's own initialisation, so beta's gradient <g, W / ||W||> is not zero and W's follows once
            # beta has moved (W at zero too would leave both without a gradient for good)
            out.conv.alpha.zero_()
            out.conv.beta.zero_()
        else:
            out.conv.weight.zero_()
        if out.conv.bias is not None:
            out.conv.bias.zero_()
        if out.bias_out is not None:
            out.bias_out.zero_()


def _measure(child: CifarNet, new_units: list[Unit], data: Iterable) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Run `data` through `child` in training mode with every new unit passed through as the identity; returns
    each new unit's input mean and variance per channel. The other BNs of new units average their batch
    statistics; every other BN normalises with batch statistics and keeps its buffers."""
    device = next(child.parameters()).device
    new_bns = {id(m) for u in new_units for m in u.modules() if isinstance(m, nn.BatchNorm2d)}
    saved = []
    for m in child.modules():
        if isinstance(m, nn.BatchNorm2d):
            saved.append((m, m.track_running_stats, m.momentum))
            if id(m) in new_bns:
                m.reset_running_stats()
                m.momentum = None  # a cumulative average over all batches
            else:
                m.track_running_stats = False  # batch statistics, buffers untouched
    sums: dict[int, list] = {}

    def hook(unit, args, _out):
        x = args[0].detach().double()
        s = sums.setdefault(id(unit), [0, 0.0, 0.0])
        s[0] += x.numel() // x.shape[1]
        s[1] = s[1] + x.sum(dim=(0, 2, 3))
        s[2] = s[2] + (x * x).sum(dim=(0, 2, 3))
        return args[0]  # the unit is the identity for the layers after it

    handles = [u.register_forward_hook(hook) for u in new_units]
    was_training = child.training
    child.train()
    seen = 0
    try:
        with torch.no_grad():
            for batch in data:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                child(x.to(device))
                seen += 1
    finally:
        for h in handles:
            h.remove()
        for m, track, momentum in saved:
            m.track_running_stats, m.momentum = track, momentum
        child.train(was_training)
    if not seen:
        raise ConfigError("deepen: `data` gave no batches to measure the new BN statistics on")
    stats = {}
    for unit in new_units:
        n, s1, s2 = sums[id(unit)]
        mean = s1 / n
        stats[id(unit)] = (mean.float(), (s2 / n - mean * mean).clamp_min(0).float())
    return stats


@torch.no_grad()
def deepen(net: CifarNet, depth: int, data: Iterable | None = None, noise: float = 0.0, where: str = "spread",
           generator: torch.Generator | None = None) -> CifarNet:
    """A deeper net of `net`'s spec at `depth` that computes `net`'s function in eval mode (see the module
    docstring). `data`: input batches (tensors, or (inputs, labels) pairs) for the new BN statistics;
    `noise`: symmetry-breaking noise on the identity convs, in units of their He std; `where`: "spread" or
    "end"; `generator`: for the noise. The child is on `net`'s device, in `net`'s train/eval mode."""
    spec = net.spec
    problems = deepen_problems(spec)
    if where not in DEEPEN_WHERE:
        problems.append(f"where {where!r} is not one of {', '.join(DEEPEN_WHERE)}")
    if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):
        problems.append(f"noise {noise!r} must be a number >= 0")
    if not isinstance(depth, int) or depth <= spec.depth:
        problems.append(f"the deeper net's depth {depth!r} must be an integer above the parent's {spec.depth}")
    if problems:
        raise ConfigError("cannot deepen: " + "; ".join(problems))
    child_spec = replace(spec, depth=depth)
    child = CifarNet(child_spec)  # raises ConfigError naming the nearest valid depths
    param = next(net.parameters())
    child = child.to(device=param.device, dtype=param.dtype)

    m1, m2 = spec.units_per_stage, child.spec.units_per_stage
    _, new_at = _positions(m1, m2, where)
    parent_units, child_units = list(net.units), list(child.units)
    new_units = [child_units[stage * m2 + c] for stage in range(3) for c in new_at]

    state = child.state_dict()
    rename = child_names(spec, child.spec, where)
    for key, value in net.state_dict().items():
        state[rename(key)] = value
    child.load_state_dict(state)
    assert len(parent_units) == 3 * m1 and len(child_units) == 3 * m2

    for unit in new_units:
        if unit.residual:
            _zero_branch(unit)
        layers, _ = _identity_layers(unit)
        for layer in layers:
            _dirac(layer.conv, noise, generator)
    stats = _measure(child, new_units, data) if data is not None else {}
    for unit in new_units:
        _, bns = _identity_layers(unit)
        for bn in bns:
            mean, var = stats.get(id(unit), (torch.zeros_like(bn.running_mean), torch.ones_like(bn.running_var)))
            _identity_bn(bn, mean.to(bn.running_mean), var.to(bn.running_var))
    child.train(net.training)
    return child
