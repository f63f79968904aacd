"""Initialisation schemes: He (Kaiming normal, fan-in), Xavier, identity (Dirac 3x3) and Fixup."""
from __future__ import annotations

import torch
from torch import nn


def initialise(model: nn.Module, scheme: str, generator: torch.Generator | None = None) -> None:
    """Initialise conv and linear weights by `scheme`; BN starts at weight 1, bias 0; biases at 0.

    "fixup" (Zhang et al. 2019) starts from He and then applies Fixup's rule to a residual net (see `fixup_`)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight
            if scheme == "xavier":
                nn.init.xavier_normal_(w)
            else:
                nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu")
            if scheme == "identity" and isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and m.in_channels > 3:
                # Net2Net's question: start each 3x3 layer as the identity map, with a little noise so that
                # channels beyond the identity's reach do not stay symmetric.
                with torch.no_grad():
                    noise = w.clone().mul_(1e-2)
                    nn.init.dirac_(w)
                    w.add_(noise)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if scheme == "fixup":
        fixup_(model)


@torch.no_grad()
def fixup_(model: nn.Module) -> None:
    """Fixup's rule on a He-initialised residual net of L branches with m layers each: every branch layer but
    the last is scaled by L^(-1/(2m-2)), the last layer of each branch and the classifier start at zero (the
    scalar biases start at 0 and the multipliers at 1 where they are built). With m = 1 there is nothing to
    scale: the one layer is the branch's last."""
    units = [u for _, u in model.residual_units()]
    depth = len(units)
    for unit in units:
        layers = list(unit.layers)
        m = len(layers)
        if m > 1:
            factor = depth ** (-1.0 / (2 * m - 2))
            for layer in layers[:-1]:
                layer.conv.weight.mul_(factor)
        nn.init.zeros_(layers[-1].conv.weight)
    nn.init.zeros_(model.head.weight)
    nn.init.zeros_(model.head.bias)
