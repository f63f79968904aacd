"""The layers units are made of: a convolution with its normalisation (`ConvNorm`), the parameter-free option-A
shortcut (`PadShortcut`), and the recorder that layers write their probe statistics into."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProbeRecorder:
    """Collects response statistics during one forward pass, as device tensors (no host sync per layer)."""

    def __init__(self) -> None:
        self.response_std: list[torch.Tensor] = []
        self.residual_ratio: list[torch.Tensor] = []

    def record_response(self, y: torch.Tensor) -> None:
        self.response_std.append(y.detach().float().std())

    def record_residual(self, fx: torch.Tensor, shortcut: torch.Tensor) -> None:
        fx = fx.detach().float().flatten(1)
        sx = shortcut.detach().float().flatten(1)
        # per-image ratio, averaged: an image whose input is tiny does not dominate
        self.residual_ratio.append((fx.norm(dim=1) / sx.norm(dim=1).clamp_min(1e-12)).mean())


def _scalar(value: float) -> nn.Parameter:
    return nn.Parameter(torch.full((1,), float(value)))


def dirac_delta(cout: int, cin: int, kernel: int) -> torch.Tensor:
    """The identity filter bank: output channel o copies input channel o mod cin (cout >= cin), or sums input
    channels i with i mod cout = o (cout < cin): DiracNets' delta, repeated across a change of width."""
    delta = torch.zeros(cout, cin, kernel, kernel)
    c = kernel // 2
    for o in range(cout):
        for i in range(o % cin, cin, cout) if cout < cin else [o % cin]:
            delta[o, i, c, c] = 1.0
    return delta


class DiracConv2d(nn.Conv2d):
    """DiracNets' convolution (Zagoruyko & Komodakis 2017): the filters are alpha * delta + beta * W / ||W||
    (per output channel: alpha starts at 1, beta at 0.1, ||W|| over each whole filter), so every layer carries
    a learnable identity and a plain net of them trains like a residual one. `weight` is W (what the gradient
    and update probes measure)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.alpha = nn.Parameter(torch.ones(self.out_channels))
        self.beta = nn.Parameter(torch.full((self.out_channels,), 0.1))
        self.register_buffer("delta", dirac_delta(self.out_channels, self.in_channels, self.kernel_size[0]))

    def effective_weight(self) -> torch.Tensor:
        v = (-1, 1, 1, 1)
        w = F.normalize(self.weight.flatten(1), dim=1).view_as(self.weight)
        return self.alpha.view(v) * self.delta + self.beta.view(v) * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.effective_weight(), self.bias)


class ConvNorm(nn.Module):
    """A convolution with its BatchNorm, in one of two orders:

    - "post" (the paper's): y = BN(conv(x)); the response (Fig. 7) is the BN output, before any ReLU or addition;
    - "pre" (full pre-activation, He et al. 2016): y = conv(relu(BN(x))), the BN on the layer's input; the
      response is the conv output. `preactivate=False` drops the BN-ReLU (a unit's first layer right after an
      activated stem, or where the unit applies it before its shortcut splits off).

    With norm "none" (or `bn=False`) the convolution gets a bias instead of a BN (none when the BN comes right
    after, outside the layer: `bias=False`). Fixup's scalars: `bias_in` (added to the input), `scale` (multiplies
    the conv output) and `bias_out` (added last), one learnable number each. `dirac`: a `DiracConv2d`.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, norm: str, *, order: str = "post",
                 preactivate: bool = True, bn: bool = True, bias: bool | None = None, bias_in: bool = False,
                 scale: bool = False, bias_out: bool = False, dirac: bool = False) -> None:
        super().__init__()
        has_bn = norm == "bn" and bn and (order == "post" or preactivate)
        self.order = order
        self.preactivate = order == "pre" and preactivate
        if bias is None:  # a BN (here or right after the layer) or Fixup's scalar biases make a conv bias redundant
            bias = norm == "none" and not (bias_in or bias_out)
        conv = DiracConv2d if dirac else nn.Conv2d
        self.conv = conv(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=bias)
        self.bn = nn.BatchNorm2d(cin if order == "pre" else cout) if has_bn else nn.Identity()
        self.register_parameter("bias_in", _scalar(0.0) if bias_in else None)
        self.register_parameter("scale", _scalar(1.0) if scale else None)
        self.register_parameter("bias_out", _scalar(0.0) if bias_out else None)
        self.is_response = kernel == 3  # Fig. 7 measures the 3x3 layers
        self.recorder: ProbeRecorder | None = None

    def activate(self, x: torch.Tensor) -> torch.Tensor:
        """The pre-activation relu(BN(x)) of a "pre" layer (x itself otherwise)."""
        return F.relu(self.bn(x)) if self.preactivate else x

    def forward(self, x: torch.Tensor, activated: bool = False) -> torch.Tensor:
        if not activated:
            x = self.activate(x)
        if self.bias_in is not None:
            x = x + self.bias_in
        y = self.conv(x)
        if self.order == "post":
            y = self.bn(y)
        if self.scale is not None:
            y = y * self.scale
        if self.bias_out is not None:
            y = y + self.bias_out
        if self.recorder is not None and self.is_response:
            self.recorder.record_response(y)
        return y

    def norm_layer(self) -> nn.BatchNorm2d | None:
        """This layer's BN (on its output for "post", on its input for "pre"), or None."""
        return self.bn if isinstance(self.bn, nn.BatchNorm2d) else None


class PadShortcut(nn.Module):
    """Option A: identity, subsampled by striding and zero-padded with new channels. No parameters."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride, self.extra = stride, cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra:
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra))
        return x


def make_shortcut(cin: int, cout: int, stride: int, option: str, norm: str) -> nn.Module:
    """Option A (zero-pad identity), B (1x1 projection where the shape changes) or C (1x1 projection always)."""
    reshape = stride != 1 or cin != cout
    if option == "C" or (option == "B" and reshape):
        return ConvNorm(cin, cout, 1, stride, norm)
    if reshape:
        return PadShortcut(cin, cout, stride)
    return nn.Identity()
