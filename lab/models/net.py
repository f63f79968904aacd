"""`CifarNet`: the plain and residual CIFAR networks of He et al. (2015), section 4.2, and their variants.

A network is a 3x3 stem, three stages of 16/32/64 filters (times a width multiplier) on 32/16/8 maps (for 32x32
inputs), global average pooling and a linear head. Each stage is a stack of units (basic, bottleneck or
Inception; see `lab.models.units` and `lab.models.inception`); the first unit of stages 2 and 3 halves the map.
With shortcut option A a plain net and its residual twin have exactly the same parameters.

Every conv is a `ConvNorm`; the 3x3 ones are where Fig. 7's "layer response" is measured; every residual unit
can report ||F(x)|| / ||shortcut(x)||. Both are written into a `ProbeRecorder` when one is attached.
"""
from __future__ import annotations

from dataclasses import fields

import torch
import torch.nn.functional as F
from torch import nn

from .inception import InceptionUnit
from .init import initialise
from .layers import ConvNorm, ProbeRecorder
from .spec import BOTTLENECK_EXPANSION, STAGE_WIDTHS, ConfigError, NetSpec
from .units import Unit


def stages(spec: NetSpec, widths: list[int], cin: int) -> tuple[nn.Sequential, int]:
    """The units of every stage, in order, and the channels they end with. The first unit of every stage but
    the first halves the map; bottleneck units widen their output by BOTTLENECK_EXPANSION."""
    expansion = BOTTLENECK_EXPANSION if spec.block == "bottleneck" else 1
    unit_class = InceptionUnit if spec.block == "inception" else Unit
    units = []
    for stage, (w, count) in enumerate(zip(widths, spec.stage_units())):
        cout = w * expansion
        for i in range(count):
            stride = 2 if stage > 0 and i == 0 else 1
            units.append(unit_class(cin, cout, stride, spec, first=stage == 0 and i == 0))
            cin = cout
    return nn.Sequential(*units), cin


class CifarNet(nn.Module):
    """A plain or residual network built from a NetSpec (see the module docstring)."""

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        spec = spec.resolved()
        self.spec = spec
        if spec.family != "cifar":
            raise ConfigError(f"CifarNet builds cifar-family nets; use build_net for family {spec.family!r}")
        widths = [max(1, round(w * spec.width)) for w in STAGE_WIDTHS]
        fixup = spec.init == "fixup"
        self.stem = ConvNorm(spec.in_channels, widths[0], 3, 1, spec.norm, bias_out=fixup)
        self.units, cin = stages(spec, widths, widths[0])
        self._finish(spec, cin)

    def _finish(self, spec: NetSpec, cin: int) -> None:
        """The end of the net: the pre-activation nets' final BN-ReLU, the classifier, the initialisation."""
        fixup = spec.init == "fixup"
        # pre-activation nets end with the last unit's sum: activate it before pooling (BN-ReLU, or ReLU)
        self.final_bn = nn.BatchNorm2d(cin) if spec.unit == "preact" and spec.norm == "bn" else nn.Identity()
        self.final_relu = spec.unit in ("preact", "relu-preact")
        self.register_parameter("head_bias", nn.Parameter(torch.zeros(1)) if fixup else None)  # Fixup's bias2
        self.head = nn.Linear(cin, spec.num_classes)
        initialise(self, spec.init)

    def enter(self, x: torch.Tensor) -> torch.Tensor:
        """The stem: conv-BN-ReLU (the imagenet family adds its max-pool)."""
        return F.relu(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.enter(x)
        x = self.units(x)
        x = self.final_bn(x)
        if self.final_relu:
            x = F.relu(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        if self.head_bias is not None:
            x = x + self.head_bias
        return self.head(x)

    # --- probe plumbing -------------------------------------------------------------------------------
    def response_layers(self) -> list[tuple[str, ConvNorm]]:
        """The 3x3 ConvNorm layers in network order, with their names (Fig. 7's layers)."""
        return [(n, m) for n, m in self.named_modules() if isinstance(m, ConvNorm) and m.is_response]

    def residual_units(self) -> list[tuple[str, Unit]]:
        """The units that have a shortcut, in network order (empty for a plain net)."""
        return [(n, m) for n, m in self.named_modules() if isinstance(m, Unit) and m.residual]

    def weight_layers(self) -> list[tuple[str, nn.Parameter]]:
        """Every conv and linear weight, in network order: the layers whose gradient norms are recorded."""
        return [
            (n[: -len(".weight")], p)
            for n, p in self.named_parameters()
            if n.endswith("weight") and p.dim() in (2, 4)
        ]

    def attach(self, recorder: ProbeRecorder | None) -> None:
        """Route response statistics of the next forward passes into `recorder` (None detaches)."""
        for m in self.modules():
            if isinstance(m, (ConvNorm, Unit)):
                m.recorder = recorder


def net_for(spec: NetSpec) -> CifarNet:
    """The network a NetSpec describes, of its family (a `CifarNet`, or an `ImageNetNet`, which is one)."""
    if spec.family == "imagenet":
        from .imagenet import ImageNetNet

        return ImageNetNet(spec)
    return CifarNet(spec)


def build_net(kind: str = "residual", depth: int = 20, **options) -> CifarNet:
    """Build a network: `build_net("plain", 56, shortcut="A", num_classes=10)`, or one of the paper's ImageNet
    nets: `build_net("residual", 50, family="imagenet", block="bottleneck", shortcut="B", num_classes=1000)`.
    Unknown options are refused."""
    names = {f.name for f in fields(NetSpec)} - {"kind", "depth"}
    unknown = sorted(set(options) - names)
    if unknown:
        raise ConfigError(f"unknown model option(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    return net_for(NetSpec(kind=kind, depth=depth, **options))
