"""`ImageNetNet`: the plain and residual ImageNet networks of He et al. (2015), Table 1.

A 7x7 stride-2 convolution with BN and ReLU, a 3x3 stride-2 max-pool, four stages of 64, 128, 256, 512 filters
(times the width multiplier; bottleneck units end with 4x that), global average pooling and a linear classifier.
The units are the lab's (`lab.models.units.Unit`), so every unit option, probe and lesion of the CIFAR nets
applies. With shortcut option B (projections where the shape changes) a residual net has exactly the parameters
of torchvision's ResNet of the same depth and, given its weights (`load_torchvision_weights`), computes the same
function: torchvision puts a bottleneck unit's stride on its 3x3 convolution, as `Unit` does. The plain twins
drop the shortcuts.
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvNorm
from .net import CifarNet, stages
from .spec import IMAGENET_WIDTHS, ConfigError, NetSpec


class ImageNetNet(CifarNet):
    """A plain or residual net of the `imagenet` family (see the module docstring)."""

    def __init__(self, spec: NetSpec) -> None:
        nn.Module.__init__(self)
        spec = spec.resolved()
        if spec.family != "imagenet":
            raise ConfigError(f"ImageNetNet builds imagenet-family nets, not {spec.family!r}")
        self.spec = spec
        widths = [max(1, round(w * spec.width)) for w in IMAGENET_WIDTHS]
        self.stem = ConvNorm(spec.in_channels, widths[0], 7, 2, spec.norm, bias_out=spec.init == "fixup")
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.units, cin = stages(spec, widths, widths[0])
        self._finish(spec, cin)

    def enter(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.stem(x)))


def torchvision_names(net: ImageNetNet) -> dict[str, str]:
    """For each entry of `net.state_dict()`, the name of the same tensor in torchvision's ResNet of the same
    depth (conv1, bn1, layer1.0.conv1, ..., layerN.M.downsample.0/1, fc)."""
    spec = net.spec
    index: list[tuple[int, int]] = [(s, i) for s, count in enumerate(spec.stage_units()) for i in range(count)]
    names: dict[str, str] = {}
    for key in net.state_dict():
        name = re.sub(r"^stem\.conv\.", "conv1.", key)
        name = re.sub(r"^stem\.bn\.", "bn1.", name)
        name = re.sub(r"^head\.", "fc.", name)
        m = re.match(r"^units\.(\d+)\.(layers\.(\d+)\.(conv|bn)|shortcut\.(conv|bn))\.(.+)$", key)
        if m:
            stage, i = index[int(m.group(1))]
            prefix = f"layer{stage + 1}.{i}."
            if m.group(3) is not None:
                part = f"{m.group(4)}{int(m.group(3)) + 1}"
            else:
                part = "downsample.0" if m.group(5) == "conv" else "downsample.1"
            name = prefix + part + "." + m.group(6)
        names[key] = name
    return names


def load_torchvision_weights(net: ImageNetNet, state_dict: dict[str, torch.Tensor]) -> None:
    """Load a torchvision ResNet's state dict (for example `torchvision.models.resnet50(weights=...)`'s, or a
    file of them) into a residual imagenet-family net of the same depth, shortcut B, width 1, norm bn, unit
    original. Every tensor must be there with its shape; anything missing or extra is refused in one line."""
    names = torchvision_names(net)
    missing = sorted(v for v in names.values() if v not in state_dict)
    extra = sorted(set(state_dict) - set(names.values()))
    if missing or extra:
        raise ConfigError(f"not the weights of this net: missing {missing[:3]}, unexpected {extra[:3]} "
                          f"({len(missing)} missing, {len(extra)} unexpected)")
    own = net.state_dict()
    for key, name in names.items():
        if own[key].shape != state_dict[name].shape:
            raise ConfigError(f"{name}: shape {tuple(state_dict[name].shape)} where this net has "
                              f"{tuple(own[key].shape)} ({key})")
    net.load_state_dict({key: state_dict[name] for key, name in names.items()})
