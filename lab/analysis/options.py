"""The analyses' options (defaults, help, validation) and result names: light, so the CLI can build its
parser without importing the analyses themselves."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import AnalysisError


def parse_at(text: str | int | None) -> str | int:
    """'init' (or 0), 'checkpoint' (or None / ''), or an iteration number."""
    if text is None or text == "" or text == "checkpoint":
        return "checkpoint"
    if text == "init":
        return "init"
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise AnalysisError(f"--at takes 'init' or an iteration number, got {text!r}") from None
    return "init" if value == 0 else value


@dataclass(frozen=True)
class Option:
    default: Any
    help: str
    check: Callable[[Any], bool] = lambda v: True
    rule: str = ""            # what `check` allows, for the message


def _int(lo: int, hi: int | None = None) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo and (hi is None or v <= hi)


# Upper bounds on what an analysis may be asked to compute, so one option cannot tie up a worker for days or
# exhaust its memory. Lesions: `draws` evaluations per k (k = 1..deletable units) and per swap count. Landscape:
# `points` evaluations on a 1-D slice, points^2 on a 2-D grid (Li et al. use 51 per axis). Shattering: a batch
# of `points` inputs in one backward pass and a points x points correlation matrix (Balduzzi et al. use 256).
MAX_DRAWS = 100
MAX_SWAPS = 10_000
MAX_LANDSCAPE_POINTS = 1001
MAX_LANDSCAPE_POINTS_2D = 101
MAX_SHATTER_POINTS = 1024
MAX_SPAN = 100.0
MAX_SEED = 2**63 - 1  # as a run's seed (RunConfig)
# At init, the BN running statistics are recalibrated on this many training batches (of the run's batch size)
# before an analysis (lab.analysis.restored): a fresh net's (0, 1) statistics make every BN the identity, and
# the analyses concern normalised nets. 20 batches (1,280 images at batch 64) are a few seconds on a CPU for a
# 110-layer net and enough for per-channel means and variances.
BN_BATCHES = 20
MAX_BN_BATCHES = 1000
BN_STATISTICS = ("recalibrated", "running", "none")
# The format each analysis's results have today; a stored result of an older format does not answer a study's
# arm (lesion format 2: each unit's kind, k-sets from shape-keeping units only).
RESULT_FORMATS = {"lesion": 2, "landscape": 1, "shatter": 1}


def _target(v) -> bool:
    return v == "loss" or (isinstance(v, int) and not isinstance(v, bool) and v >= 0)


def _towards(v) -> bool:
    return v in ("auto", "random") or (isinstance(v, int) and not isinstance(v, bool) and v >= 0)


AT = Option("checkpoint", "'checkpoint' (the run's last one), 'init', or the checkpoint's iteration",
            lambda v: v in ("checkpoint", "init") or (isinstance(v, int) and v >= 0), "checkpoint, init or an iteration")
BN = Option(BN_BATCHES, "at init: training batches to recalibrate the BN running statistics on first (0: keep a "
            "fresh net's (0, 1) statistics, which make every BN the identity); ignored for trained weights",
            _int(0, MAX_BN_BATCHES), f"an integer from 0 to {MAX_BN_BATCHES}")


@dataclass(frozen=True)
class Analysis:
    name: str
    title: str
    options: dict[str, Option] = field(default_factory=dict)


ANALYSES: dict[str, Analysis] = {
    "lesion": Analysis("lesion", "Lesions: test error with units deleted (Veit et al.)", {
        "draws": Option(5, "random sets of k units per k (and orders per swap count)", _int(1, MAX_DRAWS),
                        f"an integer from 1 to {MAX_DRAWS}"),
        "reorder": Option(False, "also measure reordered units", lambda v: isinstance(v, bool), "true or false"),
        "max_swaps": Option(0, "reordering: 1..max_swaps swaps (0: one per swappable unit)", _int(0, MAX_SWAPS),
                            f"an integer from 0 to {MAX_SWAPS:,}"),
        "images": Option(0, "first M test images (0: the whole test set)", _int(0), "an integer >= 0"),
        "seed": Option(0, "seed of the random choices", _int(0, MAX_SEED), f"an integer from 0 to {MAX_SEED}"),
        "at": AT,
        "bn_batches": BN,
    }),
    "landscape": Analysis("landscape", "Loss landscape along filter-normalised directions (Li et al.)", {
        "points": Option(21, f"points per axis over [-span, span] (at most {MAX_LANDSCAPE_POINTS}; "
                         f"{MAX_LANDSCAPE_POINTS_2D} with two_d)", _int(2, MAX_LANDSCAPE_POINTS),
                         f"an integer from 2 to {MAX_LANDSCAPE_POINTS}"),
        "span": Option(1.0, "half-width of the slice in filter-norm units",
                       lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= MAX_SPAN,
                       f"a number in (0, {MAX_SPAN:g}]"),
        "two_d": Option(False, "a 2-D grid over two directions", lambda v: isinstance(v, bool), "true or false"),
        "images": Option(2000, "first M training images", _int(1), "an integer >= 1"),
        "seed": Option(0, "seed of the random directions", _int(0, MAX_SEED), f"an integer from 0 to {MAX_SEED}"),
        "at": AT,
        "bn_batches": BN,
    }),
    "shatter": Analysis("shatter", "Shattered gradients: input-gradient correlation vs distance (Balduzzi et al.)", {
        "points": Option(256, f"inputs on the line (at most {MAX_SHATTER_POINTS}: one batch, an N x N matrix)",
                         _int(3, MAX_SHATTER_POINTS), f"an integer from 3 to {MAX_SHATTER_POINTS}"),
        "target": Option("loss", "'loss' (cross-entropy against x0's label) or a logit index", _target,
                         "'loss' or a class index"),
        "image": Option(0, "x0: this validation image", _int(0), "an integer >= 0"),
        "towards": Option("auto", "direction: towards this validation image, 'random', or 'auto' (the next "
                          "validation image of another class)", _towards, "auto, random or an image index"),
        "norm": Option(0.0, "length of a random direction (0: the distance from x0 to the 'auto' image)",
                       lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0, "a number >= 0"),
        "summary_distance": Option(1 / 255, "distance along the line (fraction) of the summary correlation",
                                   lambda v: isinstance(v, (int, float)) and 0 < v <= 1, "a number in (0, 1]"),
        "seed": Option(0, "seed of a random direction", _int(0, MAX_SEED), f"an integer from 0 to {MAX_SEED}"),
        "at": AT,
        "bn_batches": BN,
    }),
}


def resolve_options(name: str, options: dict | None = None) -> dict:
    """The analysis's options with defaults filled in; AnalysisError naming every bad or unknown option."""
    if name not in ANALYSES:
        raise AnalysisError(f"unknown analysis {name!r}; known: {', '.join(ANALYSES)}")
    spec = ANALYSES[name].options
    given = {k: v for k, v in (options or {}).items() if v is not None}
    problems = [f"unknown option {k!r} (known: {', '.join(spec)})" for k in given if k not in spec]
    values = {k: given.get(k, o.default) for k, o in spec.items()}
    if "at" in values:
        values["at"] = parse_at(values["at"])
    problems += [f"{k} must be {spec[k].rule}, got {v!r}" for k, v in values.items() if not spec[k].check(v)]
    if name == "landscape" and values["two_d"] is True and _int(2, MAX_LANDSCAPE_POINTS)(values["points"]) \
            and values["points"] > MAX_LANDSCAPE_POINTS_2D:
        problems.append(f"points must be an integer from 2 to {MAX_LANDSCAPE_POINTS_2D} with two_d (a points x "
                        f"points grid: at most {MAX_LANDSCAPE_POINTS_2D ** 2:,} evaluations), got {values['points']}")
    if problems:
        raise AnalysisError(f"{name}: " + "; ".join(problems))
    return values


def bn_statistics(options: dict) -> str:
    """The BN statistics a result of these (resolved) options is made with, for a net with BN: 'recalibrated' at
    init with bn_batches > 0, else 'running'."""
    return "recalibrated" if options.get("at") == "init" and options.get("bn_batches", 0) > 0 else "running"


def result_bn_statistics(result: dict) -> str:
    """The BN statistics a stored result was made with; results that do not say (made before the lab recorded
    it, never recalibrated) used the running statistics."""
    return result.get("bn_statistics") or (result.get("run") or {}).get("bn_statistics") or "running"


def result_matches(result: dict, options: dict) -> bool:
    """Whether a stored result answers these options: of its analysis's current format (RESULT_FORMATS), and
    made with the BN statistics they ask for: a result at init made with a fresh net's (0, 1) statistics is not
    taken for a recalibrated one, nor the other way round (a net without BN matches either)."""
    if result.get("format", 1) < RESULT_FORMATS.get(result.get("analysis"), 1):
        return False
    found = result_bn_statistics(result)
    return found == "none" or found == bn_statistics(options)


def result_name(name: str, options: dict) -> str:
    """Where a result is kept: 'lesion', 'landscape', 'landscape-2d', 'shatter', 'shatter-init', ... One name per
    kind of result: a new run of the same analysis replaces the old result."""
    out = name + ("-2d" if options.get("two_d") else "")
    return out + ("-init" if options.get("at") == "init" else "")


# result name -> (analysis, options) that produce it: the inverse of `result_name` for the results the dashboard
# draws, so a page can queue a missing result by its name
RESULTS: dict[str, tuple[str, dict]] = {
    "lesion": ("lesion", {}),
    "landscape": ("landscape", {}),
    "landscape-2d": ("landscape", {"two_d": True}),
    "shatter": ("shatter", {}),
    "shatter-init": ("shatter", {"at": "init"}),
}
