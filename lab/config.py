"""One run's full configuration (`RunConfig`), the presets, and validation that lists every problem."""
from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import asdict, dataclass, field, fields, replace

from .datasets import DATASETS, NORMALIZATIONS, TRAIN_IMAGES, held_out
from .models import (
    BLOCKS, BRANCH_INITS, CONVS, DEEPEN_WHERE, FAMILIES, INITS, KINDS, NORMS, SHORTCUTS, UNITS, ConfigError, NetSpec,
    deepen_problems, spec_problems,
)
from .runtime import DEVICE_PATTERN, DEVICES_ALLOWED

PRECISIONS = ("auto", "fp32", "bf16")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
WARMUPS = ("auto", "on", "off")
DEEPEN_SCHEDULES = ("restart", "continue")


def opt(default, help: str, choices: tuple | None = None):
    """A RunConfig field with its help text (shown by the CLI and the dashboard) and, for a closed set of
    values, the allowed `choices` (the dashboard offers them; validation names them)."""
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class RunConfig:
    """Everything that defines a run. Saved with its results, so every plotted number can be traced back."""

    # --- model (see lab.models.NetSpec) ---
    kind: str = opt("residual", "'plain' (no shortcuts) or 'residual' (y = F(x) + x)", choices=KINDS)
    depth: int = opt(20, "weighted layers: 3*span*n+2 for basic units (6n+2 at span 2), 9n+2 for bottleneck, "
                         "12n+2 for inception; at most 2000")
    block: str = opt("basic", "'basic' (3x3 convs), 'bottleneck' (1x1-3x3-1x1, 4x expansion) or 'inception' "
                              "(1x1 | 1x1-3x3 | 1x1-3x3-3x3 concatenated, then a 1x1 projection)", choices=BLOCKS)
    shortcut: str = opt("A", "A zero-pad identity, B projection where shapes change, C projection always",
                        choices=SHORTCUTS)
    span: int = opt(0, "3x3 convs a shortcut skips: any divisor of the 3x3 convs per stage, (depth-2)/3 "
                       "(depth 38: 1, 2, 3, 4, 6, 12); 0: the block's own (2 basic, 3 bottleneck, 4 inception)")
    width: float = opt(1.0, "multiplier on 16/32/64 filters (the paper: 1; the quick preset and the cpu study "
                            "budget: 0.5, half-width nets, a deviation that keeps CPU runs short)")
    norm: str = opt("bn", "'bn' (BatchNorm after every conv) or 'none' (biased convs)", choices=NORMS)
    init: str = opt("he", "'he' (Kaiming normal, fan-in, for the convs and also the classifier: the paper "
                          "says only that it initialises as He et al. 2015, so the classifier's init is the lab's "
                          "choice), 'xavier', 'identity' (Dirac 3x3) or 'fixup' (residual, norm none: last layer "
                          "of each branch and the classifier at zero, scalar biases and multipliers)", choices=INITS)
    unit: str = opt("original", "where BN and ReLU sit around the addition (He et al. 2016): original, preact "
                                "(full pre-activation), bn-after-add, relu-before-add, relu-preact; residual nets",
                    choices=UNITS)
    residual_scale: float = opt(1.0, "the residual branch is multiplied by this before the addition "
                                     "(Szegedy et al.: 0.1-0.3); residual nets")
    shortcut_scale: float = opt(1.0, "the shortcut is multiplied by this before the addition (He et al. 2016: "
                                     "0.5 fails); residual nets")
    branch_init: str = opt("none", "'zero': a learnable scalar on each residual branch, starting at 0 "
                                   "(ReZero / SkipInit)", choices=BRANCH_INITS)
    conv: str = opt("standard", "'dirac': every 3x3 conv of a unit is alpha * identity + beta * W / ||W|| "
                                "(DiracNets: a plain net with a learnable identity in each layer)", choices=CONVS)
    # --- deepening a trained net (Net2DeeperNet, lab.models.deepen) ---
    deepen_from: str = opt("", "start from this run's checkpoint (id or unique prefix), deepened to `depth` by "
                               "units that compute the identity (at the parent's depth: the same net), then train "
                               "on (see deepen_schedule); '' trains from scratch")
    deepen_noise: float = opt(0.0, "noise on the new identity convs, in units of their He std (0: exact identity)")
    deepen_where: str = opt("spread", "where the new units go: 'spread' evenly between the parent's units of each "
                                      "stage, or at each stage's 'end'", choices=DEEPEN_WHERE)
    # --- data ---
    dataset: str = opt("cifar10", "cifar10, cifar100, mnist, fashion-mnist, synthetic, or imagefolder (your own "
                                  "images: see image_folder)")
    augment: bool = opt(True, "pad 4 + random crop + horizontal flip (no flip for digits), as the paper; the cpu "
                              "study budget trains without it, so training error measures optimisation alone")
    val_fraction: float = opt(0.1, "held out of the training set (the paper's 45k/5k)")
    train_limit: int = opt(0, "keep only this many training images (0: all)")
    # --- schedule (units: iterations = optimizer steps of one batch) ---
    iterations: int = opt(64000, "the paper stops at 64k")
    batch_size: int = opt(128, "images per iteration")
    lr: float = opt(0.1, "base learning rate")
    momentum: float = opt(0.9, "SGD momentum")
    weight_decay: float = opt(1e-4, "L2 weight decay on all parameters")
    scalar_lr: float = opt(1.0, "learning rate of the scalar parameters (Fixup's biases and multipliers, a zero-init "
                                "branch scalar) as a multiple of the schedule's; Zhang et al. train Fixup's at 0.1")
    milestones: tuple[float, ...] = opt((0.5, 0.75), "lr x lr_decay at these fractions of `iterations` (32k, 48k of 64k)")
    lr_decay: float = opt(0.1, "lr multiplier at each milestone")
    warmup: str = opt("auto", "lr warmup_lr until training error < warmup_error; auto: on for depth >= 110",
                      choices=WARMUPS)
    warmup_lr: float = opt(0.01, "learning rate during warm-up")
    warmup_error: float = opt(0.8, "fraction of the training window misclassified")
    # --- probes and logging (every N iterations) ---
    log_every: int = opt(100, "training loss/error window, lr, throughput")
    eval_every: int = opt(2000, "validation and test error, layer responses")
    eval_images: int = opt(0, "images of val/test used at periodic evaluations (0: all; the final one uses all)")
    grad_every: int = opt(100, "per-layer gradient norms are sampled every N iterations; each logging window logs "
                               "the mean of its samples (one sample when equal to log_every)")
    probes: bool = opt(True, "gradient norms and layer responses")
    probe_batch: int = opt(256, "fixed held-out images for the response probe")
    checkpoint_every: int = opt(2000, "iterations between checkpoints (and one at the end)")
    # --- runtime ---
    device: str = opt("auto", "'auto', 'cpu', 'cuda', 'cuda:N'")
    precision: str = opt("auto", "'fp32', 'bf16' (autocast) or 'auto' (bf16 where the hardware has it)",
                         choices=PRECISIONS)
    channels_last: bool = opt(True, "NHWC memory layout (faster for convs on CPU and GPU)")
    compile: bool = opt(False, "torch.compile the model")
    compile_mode: str = opt("default", "with compile: 'default' (fused kernels), 'reduce-overhead' (plus CUDA "
                                       "graphs: one launch per step on a GPU) or 'max-autotune' (plus kernel "
                                       "autotuning, slower to compile); compiled code is cached per user "
                                       "(~/.cache/lab/compile, or $LAB_COMPILE_CACHE)", choices=COMPILE_MODES)
    threads: int = opt(0, "CPU threads for this run (0: torch's default; at most 1024)")
    seed: int = opt(0, "seed for init, batch order and augmentation (0 to 2**63-1)")
    # --- bookkeeping ---
    preset: str = opt("paper", "the preset the run started from")
    tag: str = opt("", "free text to group and filter runs (at most 200 characters, no control characters)")
    # --- data: input normalisation (lab.datasets.NORMALIZATIONS) ---
    normalize: str = opt("channel", "'channel': subtract the training set's per-channel mean and divide by its "
                                    "per-channel std (the lab's default, a deviation from the paper); 'pixel-mean': "
                                    "subtract the training set's mean image pixel by pixel, no rescaling (the "
                                    "paper's, section 4.2; the paper preset uses it)", choices=NORMALIZATIONS)

    # --- model family (lab.models.FAMILIES) ---
    family: str = opt("cifar", "'cifar': the paper's CIFAR nets (3x3 stem, 3 stages of 16/32/64 filters, depth 6n+2); "
                               "'imagenet': its ImageNet nets, Table 1 (7x7 stem and max-pool, 4 stages of "
                               "64-512 filters; depths 18 and 34 with basic units, 50, 101 and 152 with bottleneck "
                               "units; the paper uses shortcut B there)", choices=FAMILIES)
    # --- your own images (dataset 'imagefolder', lab.imagefolder) ---
    image_folder: str = opt("", "dataset imagefolder: the folder with train/CLASS/*.jpg and val/CLASS/*.jpg "
                                "(torchvision's ImageFolder layout, as Imagenette ships); '': the data folder "
                                "(--data)")
    image_size: int = opt(0, "dataset imagefolder: the side in pixels of the squares the net sees (random crops "
                             "for training, the centre for evaluation; 0: 224, the paper's; 64, 112, 160 for small "
                             "budgets); images are decoded once into a cache at 256/224 of it")
    epochs: float = opt(0.0, "passes over the training images; when above 0 it sets iterations (epochs x "
                             "training images / batch_size) when the run is configured; 0: iterations as given")

    # --- deepening: the child's schedule (lab.train.deepening) ---
    deepen_schedule: str = opt("restart", "with deepen_from (ignored without): 'restart' trains the child on a fresh schedule of its own "
                                          "(lr and warm-up from step 0, a new optimizer: a warm restart); 'continue' "
                                          "keeps the parent's momentum and trains at the parent's final learning "
                                          "rate throughout", choices=DEEPEN_SCHEDULES)

    def net_spec(self, in_channels: int = 3, num_classes: int = 10) -> NetSpec:
        return NetSpec(
            kind=self.kind, depth=self.depth, block=self.block, shortcut=self.shortcut, span=self.span,
            width=self.width, norm=self.norm, init=self.init, unit=self.unit, residual_scale=self.residual_scale,
            shortcut_scale=self.shortcut_scale, branch_init=self.branch_init, conv=self.conv, in_channels=in_channels,
            num_classes=num_classes, family=self.family,
        )

    def milestone_iterations(self) -> list[int]:
        return [int(round(m * self.iterations)) for m in self.milestones]

    def uses_warmup(self) -> bool:
        return self.warmup == "on" or (self.warmup == "auto" and self.depth >= 110)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        d = dict(d)
        if "milestones" in d:
            d["milestones"] = tuple(d["milestones"])
        return cls(**d)

    def label(self) -> str:
        """Short human name, e.g. 'plain-56', 'resnet-110 (B, bottleneck)', 'resnet-56 (preact)' or
        'plain-20 → 56 (deepened)' (the parent's depth read from its run id, which starts with kind and depth)."""
        name = "resnet" if self.kind == "residual" else "plain"
        base = f"{name}-{self.depth}"
        extras = []
        if self.deepen_from:
            parent = re.match(r"(?:plain|resid)(\d+)-", str(self.deepen_from))
            base = f"{name}-{parent.group(1)} → {self.depth}" if parent else base
            extras.append("deepened" if parent else f"deepened from {self.deepen_from}")
        if self.kind == "residual" and self.shortcut != "A":
            extras.append(self.shortcut)
        for name, default in (("block", "basic"), ("norm", "bn"), ("init", "he")):
            if getattr(self, name) != default:
                extras.append(getattr(self, name))
        if self.span not in (0, 2) and self.block == "basic":
            extras.append(f"span {self.span}")
        if self.width != 1.0:
            extras.append(f"x{self.width:g}")
        if self.unit != "original":
            extras.append(self.unit)
        if self.residual_scale != 1:
            extras.append(f"branch x{self.residual_scale:g}")
        if self.shortcut_scale != 1:
            extras.append(f"shortcut x{self.shortcut_scale:g}")
        if self.scalar_lr != 1:
            extras.append(f"scalars at lr x{self.scalar_lr:g}")
        if self.branch_init != "none":
            extras.append(f"{self.branch_init}-init branch scalar")
        if self.conv != "standard":
            extras.append(f"{self.conv} convs")
        if self.deepen_from and self.deepen_noise:
            extras.append(f"noise {self.deepen_noise:g}")
        if self.deepen_from and self.deepen_where != "spread":
            extras.append(f"new units at stage {self.deepen_where}s")
        if self.deepen_from and self.deepen_schedule == "continue":
            extras.append("parent's schedule continued")
        return base + (f" ({', '.join(extras)})" if extras else "")


# Fields that say how, where or under which name a run was executed, not what was run. Two runs whose
# configurations differ only in these are the same experiment: the studies reuse either for the other.
BOOKKEEPING = ("tag", "preset", "device", "threads", "compile", "compile_mode")


def experiment_config(cfg: RunConfig) -> dict:
    """The fields that define `cfg` as an experiment (every field but BOOKKEEPING), with defaults made explicit
    where two spellings build the same run (span 0 is the block's default span), so equal dicts mean the same
    experiment. Values are JSON-like (tuples as lists)."""
    values = json.loads(cfg.to_json())
    for name in BOOKKEEPING:
        values.pop(name, None)
    try:
        values["span"] = cfg.net_spec().resolved().span
    except ConfigError:  # an invalid spec keeps its span as given; it cannot equal a valid one anyway
        pass
    return values


PRESETS: dict[str, dict] = {
    # The paper's CIFAR-10 protocol (section 4.2): its schedule, and its per-pixel mean subtraction.
    "paper": dict(normalize="pixel-mean"),
    # The quick demo (lab.demo): degradation on a 2-core CPU in minutes. The schedule of the degradation study at
    # the cpu budget (half-width nets, batches of 32 without augmentation, the warm-up for every net), shortened to
    # 800 iterations with lighter probes and evaluations, so that its four runs (plain and ResNet-20 and -56) are
    # done in about 3.5 minutes on 2 AVX2 cores, two at a time on one thread each (scripts/time_demo.py times
    # them). A training window is logged every 20 iterations (the first curve points within
    # seconds), an evaluation on 500 + 500 images every 200.
    "quick": dict(
        dataset="fashion-mnist", width=0.5, batch_size=32, augment=False, iterations=800, warmup="on",
        warmup_error=0.6, log_every=20, eval_every=200, eval_images=500, grad_every=100, checkpoint_every=400,
    ),
    # The paper's ImageNet protocol (section 3.4) on an image folder: batch 256, lr 0.1 divided by 10 at a third
    # and two thirds of the run (the paper divides it when the error plateaus, up to 60e4 iterations), weight
    # decay 1e-4, momentum 0.9, 224 px crops, shortcut B. On a smaller folder give the length in passes over
    # it (--epochs with --image-folder). Its augmentation is a random 224 crop of the image resized to 256 and
    # a flip (the paper also varies the scale and the colour).
    "imagenet": dict(
        family="imagenet", shortcut="B", depth=18, dataset="imagefolder", image_size=224, iterations=600_000,
        batch_size=256, lr=0.1, milestones=(1 / 3, 2 / 3), weight_decay=1e-4, momentum=0.9, log_every=100,
        eval_every=2000, eval_images=10_000, checkpoint_every=2000,
    ),
    # Seconds: for tests and for checking that everything runs.
    "smoke": dict(
        dataset="synthetic", iterations=24, batch_size=32, log_every=4, eval_every=12, eval_images=256,
        grad_every=4, checkpoint_every=12, probe_batch=64, train_limit=2048,
    ),
}


def make_config(preset: str = "paper", **overrides) -> RunConfig:
    """A RunConfig from a preset plus overrides (None values are ignored); validated, raising ConfigError."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    known = {f.name for f in fields(RunConfig)}
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - known)
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    values = {**PRESETS[preset], **given, "preset": preset}
    if "milestones" in values:
        values["milestones"] = tuple(values["milestones"])
    cfg = validate(RunConfig(**values))
    counted = with_epochs(cfg)
    return cfg if counted is cfg else validate(counted)


MAX_DEPTH = 2000              # weighted layers; the paper's deepest net has 1202
MAX_ITERATIONS = 10_000_000   # the paper trains 64k
MAX_BATCH = 65536
MAX_THREADS = 1024
MAX_SEED = 2**63 - 1
MAX_IMAGES = 100_000_000
MAX_MILESTONES = 100
MAX_SCALAR_LR = 100          # a multiple of the schedule's learning rate
MAX_TAG = 200                 # characters
# Characters refused in tags: control characters (Cc), and format characters that reorder or hide text in a
# terminal or a page (bidirectional overrides and isolates, zero-width joiners at the start), line separators.
_TAG_REFUSED_CATEGORIES = {"Cc", "Zl", "Zp"}
_TAG_REFUSED_CHARS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def train_images(cfg: "RunConfig") -> int | None:
    """Training images a run will have (the data set's training set less the validation hold-out, capped by
    train_limit); None for an unknown data set."""
    total = TRAIN_IMAGES.get(cfg.dataset)
    if total is None or not _is_number(cfg.val_fraction) or not 0 < cfg.val_fraction < 1:
        return None
    n = total - held_out(total, cfg.val_fraction)
    if _is_int(cfg.train_limit) and cfg.train_limit > 0:
        n = min(n, cfg.train_limit)
    return n


def tag_problem(tag) -> str | None:
    """Why `tag` is refused (None when it is fine): tags are free text, printed in tables, legends and files."""
    if not isinstance(tag, str):
        return f"tag must be text, got {tag!r}"
    if len(tag) > MAX_TAG:
        return f"tag must be at most {MAX_TAG} characters, got {len(tag)}"
    bad = sorted({c for c in tag if unicodedata.category(c) in _TAG_REFUSED_CATEGORIES or c in _TAG_REFUSED_CHARS})
    if bad:
        shown = ", ".join(f"U+{ord(c):04X}" for c in bad)
        return f"tag must not hold control or text-direction characters (found {shown}); letters, digits, " \
               f"punctuation, spaces and symbols of any script are fine"
    return None


def field_problems(cfg: RunConfig) -> list[tuple[str, str]]:
    """Every problem with a RunConfig as (option name, message); the message names the allowed values."""
    problems: list[tuple[str, str]] = []

    def need(name: str, cond: bool, msg: str) -> None:
        if not cond:
            problems.append((name, msg))

    def number(name: str, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False, what: str = "") -> None:
        v = getattr(cfg, name)
        ok = _is_number(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
        what = what or f"a finite number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        need(name, ok, f"{name} must be {what}, got {v!r}")

    def integer(name: str, lo: int, hi: int) -> None:
        v = getattr(cfg, name)
        need(name, _is_int(v) and lo <= v <= hi, f"{name} must be a whole number from {lo:,} to {hi:,}, got {v!r}")

    need("dataset", cfg.dataset in DATASETS, f"unknown data set {cfg.dataset!r}; known: {', '.join(DATASETS)}")
    need("preset", cfg.preset in PRESETS, f"unknown preset {cfg.preset!r}; known: {', '.join(PRESETS)}")
    depth_ok = _is_int(cfg.depth) and 1 <= cfg.depth <= MAX_DEPTH
    if not depth_ok:  # one depth problem: this one, not the spec's rules for a depth it cannot have
        problems.append(("depth", f"depth must be from 1 to {MAX_DEPTH} weighted layers, a whole number (the paper's "
                                  f"deepest is 1202), got {cfg.depth!r}"))
    problems += [(name, msg) for name, msg in spec_problems(cfg.net_spec()) if depth_ok or name != "depth"]

    integer("iterations", 1, MAX_ITERATIONS)
    integer("batch_size", 1, MAX_BATCH)
    available = train_images(cfg)
    if _is_int(cfg.batch_size) and available is not None and cfg.batch_size > available:
        problems.append(("batch_size", f"batch_size {cfg.batch_size} is larger than the training set "
                                       f"({available:,} images of {cfg.dataset} after the validation hold-out"
                                       f"{' and train_limit' if cfg.train_limit else ''}); use at most {available}"))
    number("lr", 0, math.inf, lo_open=True, what="a positive number (finite)")
    number("warmup_lr", 0, math.inf, lo_open=True, what="a positive number (finite)")
    number("momentum", 0, 1, hi_open=True)
    number("weight_decay", 0, math.inf, what="a number >= 0 (finite)")
    number("scalar_lr", 0, MAX_SCALAR_LR, lo_open=True)
    number("lr_decay", 0, 1, lo_open=True)
    ms = cfg.milestones
    need("milestones",
         isinstance(ms, (tuple, list)) and len(ms) <= MAX_MILESTONES and all(_is_number(m) and 0 < m < 1 for m in ms)
         and list(ms) == sorted(ms),
         f"milestones must be at most {MAX_MILESTONES} increasing fractions of the run between 0 and 1 "
         f"(exclusive), got {list(ms) if isinstance(ms, (tuple, list)) else ms!r}")
    number("val_fraction", 0, 1, lo_open=True, hi_open=True)
    total = TRAIN_IMAGES.get(cfg.dataset)
    if total and _is_number(cfg.val_fraction) and 0 < cfg.val_fraction < 1 and round(total * cfg.val_fraction) < 1:
        problems.append(("val_fraction", f"val_fraction {cfg.val_fraction!r} holds out no validation image of "
                                         f"{cfg.dataset}'s {total:,}; use at least {1 / total:.2g}"))
    number("warmup_error", 0, 1, lo_open=True)
    need("normalize", cfg.normalize in NORMALIZATIONS,
         f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {cfg.normalize!r}")
    need("warmup", cfg.warmup in WARMUPS, f"warmup must be one of {', '.join(WARMUPS)}, got {cfg.warmup!r}")
    need("compile_mode", cfg.compile_mode in COMPILE_MODES,
         f"compile_mode must be one of {', '.join(COMPILE_MODES)}, got {cfg.compile_mode!r}")
    need("precision", cfg.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got {cfg.precision!r}")
    need("device", isinstance(cfg.device, str) and DEVICE_PATTERN.fullmatch(cfg.device) is not None,
         f"device must be {DEVICES_ALLOWED}, got {cfg.device!r}")
    for name in ("log_every", "eval_every", "grad_every", "checkpoint_every"):
        integer(name, 1, MAX_ITERATIONS)
    integer("probe_batch", 1, MAX_BATCH)
    integer("eval_images", 0, MAX_IMAGES)
    integer("train_limit", 0, MAX_IMAGES)
    integer("threads", 0, MAX_THREADS)
    integer("seed", 0, MAX_SEED)
    for name in ("augment", "probes", "channels_last", "compile"):
        v = getattr(cfg, name)
        need(name, isinstance(v, bool), f"{name} must be true or false, got {v!r}")
    problem = tag_problem(cfg.tag)
    if problem:
        problems.append(("tag", problem))
    problems += deepen_config_problems(cfg)
    problems += image_folder_problems(cfg)
    return problems


def config_problems(cfg: RunConfig) -> list[str]:
    """Every problem with a RunConfig, as messages (empty when it is valid)."""
    return [msg for _, msg in field_problems(cfg)]


def deepen_config_problems(cfg: RunConfig) -> list[tuple[str, str]]:
    """The deepening options' problems as (field, message) pairs; the parent itself (its checkpoint, kind, block,
    width, depth) is checked when the run starts (`lab.train`), since only the store knows it."""
    problems = []
    if not isinstance(cfg.deepen_from, str):
        problems.append(("deepen_from", f"deepen_from must be a run id or '', got {cfg.deepen_from!r}"))
    noise = cfg.deepen_noise
    if not (isinstance(noise, (int, float)) and not isinstance(noise, bool) and math.isfinite(noise) and 0 <= noise <= 10):
        problems.append(("deepen_noise",
                         f"deepen_noise must be a number from 0 to 10 (units of the He std), got {noise!r}"))
    if cfg.deepen_where not in DEEPEN_WHERE:
        problems.append(("deepen_where",
                         f"deepen_where must be one of {', '.join(DEEPEN_WHERE)}, got {cfg.deepen_where!r}"))
    if cfg.deepen_schedule not in DEEPEN_SCHEDULES:
        problems.append(("deepen_schedule", f"deepen_schedule must be one of {', '.join(DEEPEN_SCHEDULES)}, "
                                            f"got {cfg.deepen_schedule!r}"))
    if cfg.deepen_from and not spec_problems(cfg.net_spec()):
        problems += [("deepen_from", f"deepen_from: {p}") for p in deepen_problems(cfg.net_spec())]
    return problems


def image_folder_problems(cfg: RunConfig) -> list[tuple[str, str]]:
    """The image-folder options: only with dataset imagefolder, and a size a net can take."""
    problems = []
    own = cfg.dataset == "imagefolder"
    if not isinstance(cfg.image_folder, str) or "\x00" in cfg.image_folder:
        problems.append(("image_folder", f"image_folder must be a folder's path or '', got {cfg.image_folder!r}"))
    elif cfg.image_folder and not own:
        problems.append(("image_folder", "image_folder is for dataset imagefolder (the built-in data sets live in "
                                         "the data folder, --data)"))
    size = cfg.image_size
    if not (_is_int(size) and (size == 0 or 16 <= size <= 1024)):
        problems.append(("image_size", f"image_size must be 0 (224) or a whole number of pixels from 16 to 1024, "
                                       f"got {size!r}"))
    elif size and not own:
        problems.append(("image_size", f"image_size is for dataset imagefolder; {cfg.dataset} images are "
                                       f"{DATASETS[cfg.dataset].size} px" if cfg.dataset in DATASETS else
                         "image_size is for dataset imagefolder"))
    if not (_is_number(cfg.epochs) and 0 <= cfg.epochs <= 100_000):
        problems.append(("epochs", f"epochs must be a number from 0 to 100,000, got {cfg.epochs!r}"))
    return problems


def with_epochs(cfg: RunConfig) -> RunConfig:
    """`cfg` with `iterations` set from `epochs` (epochs x training images / batch size, rounded up), counting an
    image folder's training images; unchanged when epochs is 0."""
    if not (_is_number(cfg.epochs) and cfg.epochs > 0):
        return cfg
    n = train_images(cfg)
    if n is None and cfg.dataset == "imagefolder":
        if not cfg.image_folder:
            raise ConfigError("epochs with dataset imagefolder needs image_folder (the folder whose training "
                              "images it counts), or give iterations instead")
        from .imagefolder import scan  # a bad folder is a DataError naming it

        total = scan(cfg.image_folder).count("train")
        n = total - held_out(total, cfg.val_fraction)
        if cfg.train_limit:
            n = min(n, cfg.train_limit)
    if not n:
        raise ConfigError(f"epochs needs a data set whose training images are known, not {cfg.dataset!r}")
    return replace(cfg, iterations=max(1, math.ceil(cfg.epochs * n / cfg.batch_size)))


def validate(cfg: RunConfig) -> RunConfig:
    problems = config_problems(cfg)
    if problems:
        raise ConfigError("; ".join(problems))
    return cfg


def parse_value(name: str, text: str):
    """Parse a command-line or form string for option `name` into the field's type; ConfigError if it can't."""
    types = {f.name: f.type for f in fields(RunConfig)}
    if name not in types:
        raise ConfigError(f"unknown option {name!r}; known: {', '.join(sorted(types))}")
    typ = str(types[name])
    text = str(text).strip()
    if typ.startswith("tuple"):
        _refuse_empty_items(name, text)
    try:
        if typ == "bool":
            low = text.lower()
            if low not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise ValueError
            return low in ("true", "1", "yes", "on")
        if typ == "int":
            return int(text)
        if typ == "float":
            return float(text)
        if typ.startswith("tuple"):
            return tuple(float(t) for t in text.replace(";", ",").split(",")) if text else ()
        return text
    except ValueError:
        hint = {"int": "a whole number", "float": "a number", "bool": "true or false"}.get(
            typ, "comma-separated numbers" if typ.startswith("tuple") else "text")
        raise ConfigError(f"option {name}: {text!r} is not a valid {typ} ({hint})") from None


def _refuse_empty_items(name: str, text: str) -> None:
    """Refuse a list value with an empty item ('0.5,,0.75', a trailing '0.5,'), naming the option and the item,
    rather than read it as fewer values; '' is the empty list."""
    items = text.replace(";", ",").split(",")
    if not text or all(t.strip() for t in items):
        return
    at = next(i for i, t in enumerate(items, 1) if not t.strip())
    where = "after the last comma" if at == len(items) > 1 else f"item {at} of {len(items)}"
    raise ConfigError(f"option {name}: {text!r} has an empty value ({where}); give the values separated by single "
                      f"commas, e.g. 0.5,0.75")
