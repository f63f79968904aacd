"""What defines a network (`NetSpec`), the allowed values of each option, and the depth rules.

Two families of nets: `cifar` (He et al. 2015, section 4.2; the lab's default) and `imagenet` (the paper's
Table 1, see the end of this docstring).

Depth counts the weighted layers on the longest path from input to output: the 3x3 stem, the layers of every
unit on the main path (never the shortcut projections), and the linear head. A net has three stages of `m` units
each, so depth = 3 * L * m + 2, where L is the number of weighted layers on a unit's longest path:

- basic units: L = span, the number of 3x3 convs a shortcut skips (any span that divides the 3x3 convs of a
  stage; the paper's span is 2, giving 6n+2: 20, 32, 44, 56, 110, 1202);
- bottleneck units (1x1, 3x3, 1x1): L = 3, giving 9n+2 (164, 1001);
- Inception units (1x1 | 1x1-3x3 | 1x1-3x3-3x3, concatenated, then a 1x1 projection): L = 4 (1x1, 3x3, 3x3,
  projection on the longest branch), giving 12n+2 (14, 26, 38, 50, 62, ...). The shorter parallel branches add
  width, not depth.

The `imagenet` family follows the paper's Table 1: a 7x7 stride-2 stem with BN and ReLU, a 3x3 stride-2 max-pool,
four stages of 64, 128, 256, 512 filters (times the width multiplier; x4 at the output of bottleneck units), global
average pooling and a linear classifier. Its depths are the table's: 18 and 34 with basic units (span 2), 50,
101 and 152 with bottleneck units; the stage sizes are `IMAGENET_STAGES`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from ..errors import ConfigError  # noqa: F401 (re-exported)

KINDS = ("plain", "residual")
BLOCKS = ("basic", "bottleneck", "inception")
SHORTCUTS = ("A", "B", "C")
NORMS = ("bn", "none")
INITS = ("he", "xavier", "identity", "fixup")
# The activation placements of He et al. 2016, "Identity Mappings in Deep Residual Networks", Table 2 / Fig. 4.
UNITS = ("original", "preact", "bn-after-add", "relu-before-add", "relu-preact")
BRANCH_INITS = ("none", "zero")
CONVS = ("standard", "dirac")
STAGE_WIDTHS = (16, 32, 64)
BOTTLENECK_EXPANSION = 4
# Each Inception branch is this fraction of the stage's width (16/32/64 x width): 8/16/32 channels per branch
# at width 1, so the concatenation (3 branches) is 1.5x the stream and the 1x1 projection brings it back.
INCEPTION_BRANCH = 0.5
SCALE_RANGE = (0.0, 10.0)   # residual_scale and shortcut_scale: (exclusive, inclusive)
MAX_DEPTH = 10_000
FAMILIES = ("cifar", "imagenet")
IMAGENET_WIDTHS = (64, 128, 256, 512)
# The paper's Table 1: units per stage for each depth, and the unit they use.
IMAGENET_STAGES: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}




def default_span(block: str) -> int:
    """Weighted layers on a unit's longest path, when `span` is left at 0: 2 (basic), 3 (bottleneck), 4 (Inception)."""
    return {"bottleneck": 3, "inception": 4}.get(block, 2)


@dataclass(frozen=True)
class NetSpec:
    """Everything that defines a network's architecture. Stored with each run."""

    kind: str = "residual"      # "plain" (no shortcuts) or "residual" (y = F(x) + x)
    depth: int = 20             # weighted layers: basic 3*span*m + 2 (6n+2 at span 2), bottleneck 9n+2, inception 12n+2
    block: str = "basic"        # "basic" (3x3 convs), "bottleneck" (1x1, 3x3, 1x1; 4x expansion), "inception"
    shortcut: str = "A"         # A: zero-pad identity; B: projection where the shape changes; C: projection always
    span: int = 0               # weighted layers a shortcut skips; 0: the block's (2 basic, 3 bottleneck, 4 inception)
    width: float = 1.0          # multiplier on the 16/32/64 filters
    norm: str = "bn"            # "bn" (BatchNorm after every conv) or "none" (convs get a bias instead)
    init: str = "he"            # "he" (Kaiming normal, fan-in), "xavier", "identity" (Dirac 3x3), "fixup"
    unit: str = "original"      # activation placement (He et al. 2016): original, preact, bn-after-add, ...
    residual_scale: float = 1.0  # the branch is multiplied by this before the addition (Szegedy et al.: 0.1-0.3)
    shortcut_scale: float = 1.0  # the shortcut is multiplied by this before the addition (He et al. 2016, Table 1)
    branch_init: str = "none"   # "zero": a learnable scalar per branch starting at 0 (ReZero / SkipInit)
    conv: str = "standard"      # "dirac": unit 3x3 convs are alpha * identity + beta * normalised W (DiracNets)
    in_channels: int = 3        # from the data set
    num_classes: int = 10       # from the data set
    family: str = "cifar"       # "cifar" (3 stages of 16/32/64, 3x3 stem) or "imagenet" (Table 1: 7x7 stem, 4 stages)

    def resolved(self) -> "NetSpec":
        """Validate every field and fill in the default span; raises ConfigError naming what is allowed."""
        problems = spec_problems(self)
        if problems:
            raise ConfigError("; ".join(msg for _, msg in problems))
        return NetSpec(**{
            **asdict(self), "span": self.span or default_span(self.block), "shortcut": self.shortcut.upper(),
            "depth": int(self.depth), "width": float(self.width),
            "residual_scale": float(self.residual_scale), "shortcut_scale": float(self.shortcut_scale),
        })

    @property
    def units_per_stage(self) -> int:
        """Units in each of the three stages of a `cifar`-family net."""
        return (self.depth - 2) // (3 * (self.span or default_span(self.block)))

    def stage_units(self) -> tuple[int, ...]:
        """Units in each stage: three equal stages (cifar), or the paper's Table 1 (imagenet)."""
        if self.family == "imagenet":
            return IMAGENET_STAGES[self.depth][1]
        return (self.units_per_stage,) * 3


def valid_depths(block: str = "basic", span: int = 0, up_to: int = 1202, family: str = "cifar") -> list[int]:
    """All depths a network of this block and span can have, ascending, up to `up_to`."""
    if family == "imagenet":
        return [d for d, (b, _) in IMAGENET_STAGES.items() if b == block and d <= up_to]
    step = 3 * (span or default_span(block))
    return list(range(step + 2, up_to + 1, step))


def nearest_depths(depth: int, block: str = "basic", span: int = 0) -> list[int]:
    """The valid depths just below and just above `depth` (one or two of them)."""
    step = 3 * (span or default_span(block))
    below = 2 + step * max(1, (depth - 2) // step)
    above = below + step if below < depth else below
    return sorted({d for d in (below, above) if d >= step + 2 and d != depth} or {step + 2})


def valid_spans(depth: int, block: str = "basic") -> list[int]:
    """The spans a net of this depth can have: for basic units every divisor of the 3x3 convs per stage,
    (depth - 2) / 3 (depth 38: 1, 2, 3, 4, 6, 12); bottleneck and Inception units have one fixed span."""
    if not isinstance(depth, int) or depth < 5 or (depth - 2) % 3:
        return []
    per_stage = (depth - 2) // 3
    if block == "basic":
        return [s for s in range(1, per_stage + 1) if per_stage % s == 0]
    fixed = default_span(block)
    return [fixed] if per_stage % fixed == 0 else []


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _choice(problems: list[tuple[str, str]], name: str, value, allowed: tuple) -> bool:
    if value not in allowed:
        problems.append((name, f"{name} {value!r} is not one of {', '.join(map(str, allowed))}"))
        return False
    return True


def _imagenet_problems(spec: NetSpec) -> list[tuple[str, str]]:
    """The `imagenet` family's rules: Table 1's depths, each with its unit, and the span of that unit."""
    if spec.block == "inception":
        return [("", "the imagenet family has basic and bottleneck units (Table 1); Inception units are cifar-family "
                     "only")]
    table = ", ".join(f"{d} ({b})" for d, (b, _) in IMAGENET_STAGES.items())
    if spec.depth not in IMAGENET_STAGES:
        return [("depth", f"depth {spec.depth} is not an imagenet-family depth; the paper's Table 1 has {table}")]
    block = IMAGENET_STAGES[spec.depth][0]
    if spec.block != block:
        return [("", f"an imagenet-family net of depth {spec.depth} uses {block} units (block {block!r}); "
                     f"Table 1 has {table}")]
    if spec.span not in (0, default_span(block)):
        return [("span", f"imagenet-family {block} units have span {default_span(block)} "
                         f"(span 0 or {default_span(block)})")]
    return []


def _depth_problems(spec: NetSpec) -> list[tuple[str, str]]:
    """The depth rule for this block and span; refusals name the nearest depths and the spans that fit."""
    if not isinstance(spec.depth, int) or isinstance(spec.depth, bool):
        return [("depth", f"depth {spec.depth!r} must be an integer")]
    if spec.family == "imagenet":
        return _imagenet_problems(spec)
    if spec.depth > MAX_DEPTH:
        return [("depth", f"depth {spec.depth} is more than {MAX_DEPTH}")]
    span = spec.span or default_span(spec.block)
    step = 3 * span
    if spec.depth >= step + 2 and (spec.depth - 2) % step == 0:
        return []
    rule = f"{step}n+2"
    near = " or ".join(map(str, nearest_depths(spec.depth, spec.block, span)))
    msg = (f"depth {spec.depth} is not valid for {spec.block} units of span {span} (depth must be {rule}); "
           f"nearest valid depths: {near}")
    if spec.block == "basic":
        spans = valid_spans(spec.depth, "basic")
        msg += (f"; at depth {spec.depth} the span can be {', '.join(map(str, spans))}" if spans
                else f"; no span fits depth {spec.depth} (basic depths are 3*span*n+2)")
    return [("depth", msg)]


def _placement_problems(spec: NetSpec) -> list[tuple[str, str]]:
    """Combinations of unit placement, scaling and initialisation that define no sensible network, as
    (field, message) pairs."""
    problems: list[tuple[str, str]] = []
    residual = spec.kind == "residual"
    if spec.unit != "original":
        if spec.block == "inception":
            problems.append(("unit", f"unit {spec.unit!r} is defined for basic and bottleneck blocks; "
                                     "an Inception unit uses unit 'original'"))
        if not residual:
            problems.append(("unit",
                f"unit {spec.unit!r} needs a residual net: without the addition every placement gives the same "
                "conv-BN-ReLU chain as a plain net with unit 'original' (its plain twin)"))
    if not residual:
        if spec.residual_scale != 1:
            problems.append(("residual_scale",
                             "residual_scale needs a residual net (a plain net has no addition to scale)"))
        if spec.shortcut_scale != 1:
            problems.append(("shortcut_scale", "shortcut_scale needs a residual net (a plain net has no shortcut)"))
        if spec.branch_init == "zero":
            problems.append(("branch_init", "branch_init 'zero' needs a residual net "
                                            "(a plain unit whose branch is zero passes nothing on)"))
    if spec.init == "fixup":
        problems += [("init", msg) for msg in _fixup_problems(spec, residual)]
    if spec.conv == "dirac" and spec.init == "identity":
        problems.append(("conv", "conv 'dirac' has the identity built in (alpha * delta); init 'identity' would "
                                 "add nothing: use init 'he'"))
    return problems


def _fixup_problems(spec: NetSpec, residual: bool) -> list[str]:
    """What init 'fixup' needs of the rest of the spec (every message is about the init field)."""
    problems = []
    if not residual:
        problems.append("init 'fixup' needs a residual net (it zeroes the last layer of each residual branch)")
    if spec.norm != "none":
        problems.append("init 'fixup' replaces normalisation: use norm 'none'")
    if spec.block == "inception":
        problems.append("init 'fixup' is defined for basic and bottleneck blocks (branches of equal length)")
    if spec.unit != "original":
        problems.append("init 'fixup' uses unit 'original' (Zhang et al.'s placement)")
    if spec.branch_init != "none":
        problems.append("init 'fixup' has its own scalar multiplier per branch: use branch_init 'none'")
    if spec.conv != "standard":
        problems.append("init 'fixup' scales He-initialised weights, which Dirac convs normalise away: "
                        "use conv 'standard'")
    return problems


def spec_problems(spec: NetSpec) -> list[tuple[str, str]]:
    """Every problem with a NetSpec as (field, message) pairs, the field being the option at fault ('' where
    none is: in_channels and num_classes come from the data set); empty when it is valid."""
    problems: list[tuple[str, str]] = []
    choices_ok = all([
        _choice(problems, "kind", spec.kind, KINDS),
        _choice(problems, "block", spec.block, BLOCKS),
        _choice(problems, "norm", spec.norm, NORMS),
        _choice(problems, "init", spec.init, INITS),
        _choice(problems, "unit", spec.unit, UNITS),
        _choice(problems, "branch_init", spec.branch_init, BRANCH_INITS),
        _choice(problems, "conv", spec.conv, CONVS),
        _choice(problems, "family", spec.family, FAMILIES),
    ])
    if str(spec.shortcut).upper() not in SHORTCUTS:
        problems.append(("shortcut", f"shortcut {spec.shortcut!r} is not one of {', '.join(SHORTCUTS)}"))
    span_ok = isinstance(spec.span, int) and not isinstance(spec.span, bool) and spec.span >= 0
    if not span_ok:
        problems.append(("span", f"span {spec.span!r} must be an integer >= 1 (0: the block's own)"))
    elif spec.block in ("bottleneck", "inception") and spec.span not in (0, default_span(spec.block)):
        span_ok = False
        fixed = default_span(spec.block)
        what = "a bottleneck unit has 3 convolutions" if spec.block == "bottleneck" else (
            "an Inception unit has 4 weighted layers on its longest path")
        problems.append(("span", f"{what}, so its shortcut span is {fixed} (span 0 or {fixed})"))
    for name in ("residual_scale", "shortcut_scale"):
        v = getattr(spec, name)
        if not (_is_number(v) and SCALE_RANGE[0] < v <= SCALE_RANGE[1]):
            problems.append((name, f"{name} {v!r} must be a number above {SCALE_RANGE[0]:g} and at most "
                                   f"{SCALE_RANGE[1]:g}"))
    if not (_is_number(spec.width) and 0.0625 <= spec.width <= 16):
        problems.append(("width", f"width {spec.width!r} must be a number from 0.0625 to 16"))
    if not (isinstance(spec.in_channels, int) and spec.in_channels >= 1):
        problems.append(("", f"in_channels {spec.in_channels!r} must be a positive integer"))
    if not (isinstance(spec.num_classes, int) and spec.num_classes >= 2):
        problems.append(("", f"num_classes {spec.num_classes!r} must be an integer >= 2"))
    if choices_ok and span_ok:
        problems += _depth_problems(spec)
        problems += _placement_problems(spec)
    elif not (isinstance(spec.depth, int) and not isinstance(spec.depth, bool)):
        problems.append(("depth", f"depth {spec.depth!r} must be an integer"))
    return problems
