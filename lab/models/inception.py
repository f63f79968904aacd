"""A CIFAR-size Inception unit, plain or with a shortcut around it (Szegedy et al. 2016, Inception-ResNet).

Three branches on the unit input, each conv followed by BN and ReLU:

    1x1                       (w channels)
    1x1 -> 3x3                (w, w)
    1x1 -> 3x3 -> 3x3         (w, w, w)

concatenated (3w channels), then a linear 1x1 projection with BN back to the stream width C (no ReLU: in a
residual unit the ReLU follows the addition, y = relu(shortcut(x) + residual_scale * F(x)); in a plain unit
y = relu(F(x))). w = C * INCEPTION_BRANCH (8/16/32 at width 1).

Downsampling: the first unit of stages 2 and 3 halves the map with stride 2 on the first 3x3 of the two deep
branches (a 1x1 with stride 2 first would discard three quarters of the pixels before any 3x3 sees them) and
on the 1x1 of the shallow branch (it has no other conv; a strided 1x1 is the same subsampling the option-A/B
shortcut does). All three branches then meet on the same half-size grid, and the projection takes the
concatenation to the new stage's width, so the unit is defined for any stride and width change.

Depth: 4 weighted layers on the longest path (1x1, 3x3, 3x3, projection), so depth = 12n + 2; the 1x1 and
1x1-3x3 branches run beside it and add width, not depth.

Parameters at width 1, 10 classes, shortcut A (plain = residual): depth 14 (one unit per stage) 50,586,
26: 103,898, 38: 157,210, 50: 210,522, 62: 263,834; one forward pass of a 32x32 image at depth 26 is 16.2 M
multiply-adds (ResNet-20: 40.6 M). A unit of stream width C costs about 9.75 C^2 weights per pixel against a
basic unit's 18 C^2.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvNorm
from .spec import INCEPTION_BRANCH, NetSpec
from .units import Unit


class InceptionUnit(Unit):
    """An Inception unit with the usual unit contract (residual, lesioned, lesionable(), lesion_output(x))."""

    def _build_branch(self, cin: int, cout: int, stride: int, spec: NetSpec, first: bool) -> None:
        w, n, d = max(1, round(cout * INCEPTION_BRANCH)), spec.norm, spec.conv == "dirac"
        self.branches = nn.ModuleList([
            nn.ModuleList([ConvNorm(cin, w, 1, stride, n)]),
            nn.ModuleList([ConvNorm(cin, w, 1, 1, n), ConvNorm(w, w, 3, stride, n, dirac=d)]),
            nn.ModuleList([ConvNorm(cin, w, 1, 1, n), ConvNorm(w, w, 3, stride, n, dirac=d),
                           ConvNorm(w, w, 3, 1, n, dirac=d)]),
        ])
        self.project = ConvNorm(3 * w, cout, 1, 1, n)
        self.order = "post"

    @property
    def layers(self) -> list[ConvNorm]:
        """Every conv layer of the unit, branch by branch, the projection last."""
        return [layer for branch in self.branches for layer in branch] + [self.project]

    def output_layer(self) -> ConvNorm:
        return self.project

    def branch(self, a: torch.Tensor) -> torch.Tensor:
        outs = []
        for layers in self.branches:
            y = a
            for layer in layers:
                y = F.relu(layer(y))
            outs.append(y)
        return self.project(torch.cat(outs, 1))
