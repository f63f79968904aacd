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


def _int(lo: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _target(v) -> bool:
    return v == "loss" or (isinstance(v, int) and not isinstance(v, bool) and v >= 0)


def _towards(v) -> bool:
    return v in ("auto", "random") or (isinstance(v, int) and not isinstance(v, bool) and v >= 0)


AT = Option("checkpoint", "'checkpoint' (the run's last one), 'init', or the checkpoint's iteration",
            lambda v: v in ("checkpoint", "init") or (isinstance(v, int) and v >= 0), "checkpoint, init or an iteration")


@dataclass(frozen=True)
class Analysis:
    name: str
    title: str
    options: dict[str, Option] = field(default_factory=dict)


ANALYSES: dict[str, Analysis] = {
    "lesion": Analysis("lesion", "Lesions: test error with units deleted (Veit et al.)", {
        "draws": Option(5, "random sets of k units per k (and orders per swap count)", _int(1), "an integer >= 1"),
        "reorder": Option(False, "also measure reordered units", lambda v: isinstance(v, bool), "true or false"),
        "max_swaps": Option(0, "reordering: 1..max_swaps swaps (0: one per swappable unit)", _int(0), "an integer >= 0"),
        "images": Option(0, "first M test images (0: the whole test set)", _int(0), "an integer >= 0"),
        "seed": Option(0, "seed of the random choices", _int(0), "an integer >= 0"),
        "at": AT,
    }),
    "landscape": Analysis("landscape", "Loss landscape along filter-normalised directions (Li et al.)", {
        "points": Option(21, "points per axis over [-span, span]", _int(2), "an integer >= 2"),
        "span": Option(1.0, "half-width of the slice in filter-norm units",
                       lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0, "a number > 0"),
        "two_d": Option(False, "a 2-D grid over two directions", lambda v: isinstance(v, bool), "true or false"),
        "images": Option(2000, "first M training images", _int(1), "an integer >= 1"),
        "seed": Option(0, "seed of the random directions", _int(0), "an integer >= 0"),
        "at": AT,
    }),
    "shatter": Analysis("shatter", "Shattered gradients: input-gradient correlation vs distance (Balduzzi et al.)", {
        "points": Option(256, "inputs on the line", _int(3), "an integer >= 3"),
        "target": Option("loss", "'loss' (cross-entropy against x0's label) or a logit index", _target,
                         "'loss' or a class index"),
        "image": Option(0, "x0: this validation image", _int(0), "an integer >= 0"),
        "towards": Option("auto", "direction: towards this validation image, 'random', or 'auto' (the next "
                          "validation image of another class)", _towards, "auto, random or an image index"),
        "norm": Option(0.0, "length of a random direction (0: the distance from x0 to the 'auto' image)",
                       lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0, "a number >= 0"),
        "summary_distance": Option(1 / 255, "distance along the line (fraction) of the summary correlation",
                                   lambda v: isinstance(v, (int, float)) and 0 < v <= 1, "a number in (0, 1]"),
        "seed": Option(0, "seed of a random direction", _int(0), "an integer >= 0"),
        "at": AT,
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
    if problems:
        raise AnalysisError(f"{name}: " + "; ".join(problems))
    return values


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
