"""Plain and residual CIFAR networks of He et al. (2015), section 4.2, and their variants.

A network is a 3x3 stem, three stages of 16/32/64 filters (times a width multiplier) on 32/16/8 maps
(for 32x32 inputs), global average pooling and a linear head. Each stage is a stack of *units*; a unit is
`span` convolutions (basic block) or a 1x1-3x3-1x1 bottleneck. In a residual net each unit gets a shortcut,
y = relu(F(x) + shortcut(x)); in a plain net the same unit computes y = relu(F(x)). With shortcut option A a
plain net and its residual twin have exactly the same parameters.

Every 3x3 convolution is a `ConvNorm`, the place where Fig. 7's "layer response" is measured (after BN, before
the ReLU or the addition); every residual unit can report ||F(x)|| / ||shortcut(x)||. Both are written into a
`ProbeRecorder` when one is attached, without host syncs, so probes cost only their own arithmetic.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

KINDS = ("plain", "residual")
BLOCKS = ("basic", "bottleneck")
SHORTCUTS = ("A", "B", "C")
NORMS = ("bn", "none")
INITS = ("he", "xavier", "identity")
SPANS = (1, 2, 3)
STAGE_WIDTHS = (16, 32, 64)
BOTTLENECK_EXPANSION = 4


class ConfigError(ValueError):
    """A model, data or run option that cannot be honoured; the message says what is allowed."""


@dataclass(frozen=True)
class NetSpec:
    """Everything that defines a network's architecture. Stored with each run."""

    kind: str = "residual"      # "plain" (no shortcuts) or "residual" (y = F(x) + x)
    depth: int = 20             # weighted layers: basic 3*span*m + 2 (6n+2 at span 2), bottleneck 9n+2
    block: str = "basic"        # "basic" (3x3 convs) or "bottleneck" (1x1, 3x3, 1x1 with 4x expansion)
    shortcut: str = "A"         # A: zero-pad identity; B: projection where the shape changes; C: projection always
    span: int = 0               # conv layers a shortcut skips; 0 means the paper's (2 basic, 3 bottleneck)
    width: float = 1.0          # multiplier on the 16/32/64 filters
    norm: str = "bn"            # "bn" (BatchNorm after every conv) or "none" (convs get a bias instead)
    init: str = "he"            # "he" (Kaiming normal, fan-in), "xavier", "identity" (Dirac 3x3, Net2Net-style)
    in_channels: int = 3        # from the data set
    num_classes: int = 10       # from the data set

    def resolved(self) -> "NetSpec":
        """Validate every field and fill in the default span; raises ConfigError naming what is allowed."""
        problems = spec_problems(self)
        if problems:
            raise ConfigError("; ".join(problems))
        span = self.span or (3 if self.block == "bottleneck" else 2)
        return NetSpec(**{**asdict(self), "span": span, "shortcut": self.shortcut.upper(), "depth": int(self.depth)})

    @property
    def units_per_stage(self) -> int:
        span = self.span or (3 if self.block == "bottleneck" else 2)
        return (self.depth - 2) // (3 * span)


def valid_depths(block: str = "basic", span: int = 0, up_to: int = 1202) -> list[int]:
    """All depths a network of this block and span can have, ascending, up to `up_to`."""
    span = span or (3 if block == "bottleneck" else 2)
    step = 3 * span
    return list(range(step + 2, up_to + 1, step))


def nearest_depths(depth: int, block: str = "basic", span: int = 0) -> list[int]:
    """The valid depths just below and just above `depth` (one or two of them)."""
    span = span or (3 if block == "bottleneck" else 2)
    step = 3 * span
    below = 2 + step * max(1, (depth - 2) // step)
    above = below + step if below < depth else below
    return sorted({d for d in (below, above) if d >= step + 2 and d != depth} or {step + 2})


def spec_problems(spec: NetSpec) -> list[str]:
    """Every problem with a NetSpec, as messages; empty when it is valid."""
    problems = []
    if spec.kind not in KINDS:
        problems.append(f"kind {spec.kind!r} is not one of {', '.join(KINDS)}")
    if spec.block not in BLOCKS:
        problems.append(f"block {spec.block!r} is not one of {', '.join(BLOCKS)}")
    if str(spec.shortcut).upper() not in SHORTCUTS:
        problems.append(f"shortcut {spec.shortcut!r} is not one of {', '.join(SHORTCUTS)}")
    if spec.norm not in NORMS:
        problems.append(f"norm {spec.norm!r} is not one of {', '.join(NORMS)}")
    if spec.init not in INITS:
        problems.append(f"init {spec.init!r} is not one of {', '.join(INITS)}")
    if spec.span not in (0, *SPANS):
        problems.append(f"span {spec.span!r} is not one of {', '.join(map(str, SPANS))}")
    elif spec.block == "bottleneck" and spec.span not in (0, 3):
        problems.append("a bottleneck unit has 3 convolutions, so its shortcut span is 3")
    if not (isinstance(spec.width, (int, float)) and 0.0625 <= spec.width <= 16):
        problems.append(f"width {spec.width!r} must be a number from 0.0625 to 16")
    if not (isinstance(spec.in_channels, int) and spec.in_channels >= 1):
        problems.append(f"in_channels {spec.in_channels!r} must be a positive integer")
    if not (isinstance(spec.num_classes, int) and spec.num_classes >= 2):
        problems.append(f"num_classes {spec.num_classes!r} must be an integer >= 2")
    if not isinstance(spec.depth, int) or isinstance(spec.depth, bool):
        problems.append(f"depth {spec.depth!r} must be an integer")
    elif spec.block in BLOCKS and spec.span in (0, *SPANS) and not (spec.block == "bottleneck" and spec.span not in (0, 3)):
        span = spec.span or (3 if spec.block == "bottleneck" else 2)
        step = 3 * span
        if spec.depth < step + 2 or (spec.depth - 2) % step:
            rule = f"{step}n+2"
            near = " or ".join(map(str, nearest_depths(spec.depth, spec.block, span)))
            problems.append(
                f"depth {spec.depth} is not valid for {spec.block} units of span {span} "
                f"(depth must be {rule}); nearest valid depths: {near}"
            )
    return problems


# ----------------------------------------------------------------------------------------------------------
# Probes


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


class ConvNorm(nn.Module):
    """Convolution followed by BatchNorm (or a biased convolution when norm is "none")."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=norm == "none")
        self.bn = nn.BatchNorm2d(cout) if norm == "bn" else nn.Identity()
        self.is_response = kernel == 3  # Fig. 7 measures the 3x3 layers
        self.recorder: ProbeRecorder | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        if self.recorder is not None and self.is_response:
            self.recorder.record_response(y)
        return y


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


class Unit(nn.Module):
    """`span` convolutions (or a bottleneck) with an optional shortcut around them."""

    def __init__(self, cin: int, cout: int, stride: int, spec: NetSpec) -> None:
        super().__init__()
        if spec.block == "bottleneck":
            mid = cout // BOTTLENECK_EXPANSION
            shapes = [(cin, mid, 1, 1), (mid, mid, 3, stride), (mid, cout, 1, 1)]
        else:
            shapes = [(cin if i == 0 else cout, cout, 3, stride if i == 0 else 1) for i in range(spec.span)]
        self.layers = nn.ModuleList(ConvNorm(a, b, k, s, spec.norm) for a, b, k, s in shapes)
        self.residual = spec.kind == "residual"
        self.shortcut: nn.Module | None = None
        if self.residual:
            reshape = stride != 1 or cin != cout
            if spec.shortcut == "C" or (spec.shortcut == "B" and reshape):
                self.shortcut = ConvNorm(cin, cout, 1, stride, spec.norm)
            elif reshape:
                self.shortcut = PadShortcut(cin, cout, stride)
            else:
                self.shortcut = nn.Identity()
        self.recorder: ProbeRecorder | None = None
        self.reshapes = stride != 1 or cin != cout
        self.lesioned = False  # Veit et al.'s lesion: compute the unit with its residual branch removed

    def lesionable(self) -> bool:
        """A residual unit can always lose its branch (the shortcut stays); a plain unit only where it keeps
        the shape, by becoming the identity."""
        return self.residual or not self.reshapes

    def lesion_output(self, x: torch.Tensor) -> torch.Tensor:
        """What the unit computes when lesioned: relu(shortcut(x)) for a residual unit, x for a plain one."""
        if self.residual:
            return F.relu(self.shortcut(x))
        if self.reshapes:
            raise ConfigError("a plain unit that changes the shape of its input cannot be replaced by the identity")
        return x  # x is the previous unit's ReLU output, so relu(x) == x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lesioned:
            return self.lesion_output(x)
        y = x
        for i, layer in enumerate(self.layers):
            y = layer(y)
            if i < len(self.layers) - 1:
                y = F.relu(y)
        if self.residual:
            s = self.shortcut(x)
            if self.recorder is not None:
                self.recorder.record_residual(y, s)
            y = y + s
        return F.relu(y)


class CifarNet(nn.Module):
    """A plain or residual network built from a NetSpec (see the module docstring)."""

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        spec = spec.resolved()
        self.spec = spec
        widths = [max(1, round(w * spec.width)) for w in STAGE_WIDTHS]
        expansion = BOTTLENECK_EXPANSION if spec.block == "bottleneck" else 1
        self.stem = ConvNorm(spec.in_channels, widths[0], 3, 1, spec.norm)
        units, cin = [], widths[0]
        for stage, w in enumerate(widths):
            cout = w * expansion
            for i in range(spec.units_per_stage):
                units.append(Unit(cin, cout, 2 if stage > 0 and i == 0 else 1, spec))
                cin = cout
        self.units = nn.Sequential(*units)
        self.head = nn.Linear(cin, spec.num_classes)
        initialise(self, spec.init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = self.units(x)
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

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


def initialise(model: nn.Module, scheme: str, generator: torch.Generator | None = None) -> None:
    """Initialise conv and linear weights by `scheme`; BN starts at weight 1, bias 0; biases at 0."""
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


def build_net(kind: str = "residual", depth: int = 20, **options) -> CifarNet:
    """Build a network: `build_net("plain", 56, shortcut="A", num_classes=10)`. Unknown options are refused."""
    names = {f.name for f in fields(NetSpec)} - {"kind", "depth"}
    unknown = sorted(set(options) - names)
    if unknown:
        raise ConfigError(f"unknown model option(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    return CifarNet(NetSpec(kind=kind, depth=depth, **options))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------------------
# Registry: names like resnet56, plain20, resnet164 (bottleneck for 9n+2 depths above 100).

_REGISTRY: dict[str, Callable[..., CifarNet]] = {}


def register(name: str, kind: str, depth: int, **fixed) -> None:
    def make(**options) -> CifarNet:
        return build_net(kind, depth, **{**fixed, **options})

    make.__doc__ = f"{kind} net, depth {depth}" + (f", {fixed}" if fixed else "")
    _REGISTRY[name] = make


for _d in (20, 32, 44, 56, 110, 1202):
    register(f"resnet{_d}", "residual", _d)
    register(f"plain{_d}", "plain", _d)
for _d in (164, 1001):
    register(f"resnet{_d}", "residual", _d, block="bottleneck")
    register(f"plain{_d}", "plain", _d, block="bottleneck")


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, in a natural order."""
    rx = re.compile("^" + re.escape(pattern).replace(r"\*", ".*") + "$")
    key = lambda n: (re.sub(r"\d+", "", n), int(re.sub(r"\D+", "", n) or 0))  # noqa: E731
    return sorted((n for n in _REGISTRY if rx.match(n)), key=key)


def create_model(name: str, **options) -> CifarNet:
    """Build a registered model by name; unknown names are refused with the list of known ones."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    return _REGISTRY[name](**options)


def forward_macs(model: CifarNet, image_size: int = 32) -> int:
    """Multiply-adds of one forward pass of one image (convolutions and the head)."""
    total = 0

    def hook(m, _inp, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out.numel() * m.in_channels // m.groups * math.prod(m.kernel_size)
        elif isinstance(m, nn.Linear):
            total += m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, model.spec.in_channels, image_size, image_size))
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return total
