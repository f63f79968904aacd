"""Units: a branch F with an optional shortcut around it, y = post(shortcut(x) + F(x)) or, plain, y = post(F(x)).

Activation placements (He et al. 2016, "Identity Mappings in Deep Residual Networks", Fig. 4 / Table 2), shown
for a basic unit of span 2 (a bottleneck unit is the same with 1x1, 3x3, 1x1):

| unit              | branch F                              | after the addition |
|-------------------|---------------------------------------|--------------------|
| `original`        | conv-BN-ReLU-conv-BN                  | ReLU               |
| `bn-after-add`    | conv-BN-ReLU-conv                     | BN, ReLU           |
| `relu-before-add` | conv-BN-ReLU-conv-BN-ReLU             | -                  |
| `relu-preact`     | ReLU-conv-BN-ReLU-conv-BN             | -                  |
| `preact` (full)   | BN-ReLU-conv-BN-ReLU-conv             | -                  |

As in the paper's code, a pre-activation net activates the stem's output (conv-BN-ReLU) so its first unit starts
with a bare conv, a unit that changes the shape applies its BN-ReLU before the shortcut splits off (the
projection or zero-padding sees the activated input), and the net ends with BN-ReLU before the pooling.
A plain net has no addition, so every placement gives the same conv-BN-ReLU chain: only 'original' is built.
Every placement has the same parameter count as the original (the BNs move, their total does not):
853,018 at depth 56, 1,727,962 at 110, 1,661,274 for the 164-layer bottleneck net.

Around the addition: the branch is multiplied by `residual_scale` (Szegedy et al.'s scaling) and, with
`branch_init` 'zero', by a learnable scalar alpha that starts at 0 (ReZero / SkipInit); the shortcut by
`shortcut_scale`. With init 'fixup' every branch layer carries Fixup's scalar biases and its last layer a scalar
multiplier; a projection shortcut sees the input plus the first scalar bias, as in Zhang et al.'s code.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvNorm, ProbeRecorder, make_shortcut
from .spec import BOTTLENECK_EXPANSION, ConfigError, NetSpec


class Unit(nn.Module):
    """`span` 3x3 convolutions (basic) or a 1x1-3x3-1x1 bottleneck, with an optional shortcut around them.

    Every unit variant has `residual`, `lesioned` (Veit et al.'s lesion: when True the unit computes
    `lesion_output(x)`), `lesionable()` and `lesion_output(x)`, `layers` (its branch layers in order; the last
    one produces F) and `output_layer()`.
    """

    def __init__(self, cin: int, cout: int, stride: int, spec: NetSpec, first: bool = False) -> None:
        super().__init__()
        self.residual = spec.kind == "residual"
        self.reshapes = stride != 1 or cin != cout
        self.placement = spec.unit
        self.fixup = spec.init == "fixup"
        # full pre-activation: a reshaping unit activates its input before the shortcut splits off; the net's
        # first unit follows the activated stem and has no pre-activation at all
        self.shared_preact = spec.unit == "preact" and self.reshapes and not first
        self._build_branch(cin, cout, stride, spec, first)
        self.shortcut: nn.Module | None = (
            make_shortcut(cin, cout, stride, spec.shortcut, spec.norm) if self.residual else None)
        self.post_bn = nn.BatchNorm2d(cout) if spec.unit == "bn-after-add" and spec.norm == "bn" else nn.Identity()
        self.post_relu = spec.unit in ("original", "bn-after-add")
        self.residual_scale = float(spec.residual_scale)
        self.shortcut_scale = float(spec.shortcut_scale)
        rezero = spec.branch_init == "zero" and self.residual
        self.register_parameter("alpha", nn.Parameter(torch.zeros(())) if rezero else None)
        self.recorder: ProbeRecorder | None = None
        self.lesioned = False

    # --- structure --------------------------------------------------------------------------------------
    def _build_branch(self, cin: int, cout: int, stride: int, spec: NetSpec, first: bool) -> None:
        if spec.block == "bottleneck":
            mid = cout // BOTTLENECK_EXPANSION
            shapes = [(cin, mid, 1, 1), (mid, mid, 3, stride), (mid, cout, 1, 1)]
        else:
            shapes = [(cin if i == 0 else cout, cout, 3, stride if i == 0 else 1) for i in range(spec.span)]
        order = "pre" if spec.unit == "preact" else "post"
        last = len(shapes) - 1
        self.layers = nn.ModuleList(
            ConvNorm(a, b, k, s, spec.norm, order=order, preactivate=not (i == 0 and first),
                     bn=not (i == last and spec.unit == "bn-after-add"),
                     bias_in=self.fixup, bias_out=self.fixup, scale=self.fixup and i == last,
                     dirac=spec.conv == "dirac" and k == 3)
            for i, (a, b, k, s) in enumerate(shapes)
        )
        self.order = order

    def output_layer(self) -> ConvNorm:
        """The layer whose output is the branch F (before any post-branch ReLU or scaling)."""
        return self.layers[-1]

    # --- computation ------------------------------------------------------------------------------------
    def _enter(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers[0].activate(x) if self.shared_preact else x

    def branch(self, a: torch.Tensor) -> torch.Tensor:
        """F on the (possibly pre-activated) unit input `a`."""
        y = F.relu(a) if self.placement == "relu-preact" else a
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            y = layer(y, activated=i == 0 and self.shared_preact)
            if i < last and self.order == "post":
                y = F.relu(y)
        return F.relu(y) if self.placement == "relu-before-add" else y

    def shortcut_path(self, a: torch.Tensor) -> torch.Tensor:
        if self.fixup and not isinstance(self.shortcut, nn.Identity):
            a = a + self.layers[0].bias_in  # Fixup: a projection sees the first scalar bias too
        s = self.shortcut(a)
        return s * self.shortcut_scale if self.shortcut_scale != 1 else s

    def _finish(self, y: torch.Tensor) -> torch.Tensor:
        y = self.post_bn(y)
        return F.relu(y) if self.post_relu else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lesioned:
            return self.lesion_output(x)
        a = self._enter(x)
        f = self.branch(a)
        if not self.residual:
            return self._finish(f)
        s = self.shortcut_path(a)
        if self.residual_scale != 1:
            f = f * self.residual_scale
        if self.alpha is not None:
            f = f * self.alpha
        if self.recorder is not None:
            self.recorder.record_residual(f, s)
        return self._finish(f + s)

    # --- lesions ----------------------------------------------------------------------------------------
    def lesionable(self) -> bool:
        """A residual unit can always lose its branch (the shortcut stays); a plain unit only where it keeps
        the shape, by becoming the identity."""
        return self.residual or not self.reshapes

    def lesion_output(self, x: torch.Tensor) -> torch.Tensor:
        """What the unit computes when lesioned: its shortcut path followed by its own post-addition
        activation (relu(shortcut(x)) for the original unit), or x for a plain unit."""
        if self.residual:
            return self._finish(self.shortcut_path(self._enter(x)))
        if self.reshapes:
            raise ConfigError("a plain unit that changes the shape of its input cannot be replaced by the identity")
        return x  # x is the previous unit's ReLU output, so relu(x) == x
