"""Findings: verdict sentences with the numbers behind them, made from the statistics in `stats`.

A finding answers one sub-question of a study ("does plain get worse with depth?") with one sentence that says
no more than its numbers: an effect only when the 95% interval excludes zero, "no clear difference" when it
covers zero or when every seed of each arm gave the same value (no spread to judge a difference by), "not enough
seeds to tell" when an arm has fewer than two finished seeds. The sentence names the interval (paired over
matched seeds, or Welch's); see `stats`. Its `numbers` are what
the sentence was made from (for `study show --json` and exports).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import pandas as pd

from .stats import MIN_SEEDS, Difference, difference, finite, summarise

EFFECT, NO_CLEAR, NOT_ENOUGH, NOT_AVAILABLE = "effect", "no clear difference", "not enough seeds", "not available"
OUTCOMES = (EFFECT, NO_CLEAR, NOT_ENOUGH, NOT_AVAILABLE)


@dataclass
class Finding:
    question: str        # the sub-question, e.g. "Does plain get worse with depth?"
    outcome: str         # one of OUTCOMES
    text: str            # the sentence, with numbers
    numbers: dict = field(default_factory=dict)

    @property
    def decided(self) -> bool:
        """It rests on enough finished runs to say something (an effect or no clear difference)."""
        return self.outcome in (EFFECT, NO_CLEAR)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Analysis:
    """What a study's analysis returns: findings in order, numbers (JSON-able), tables and explanatory notes."""

    findings: list[Finding] = field(default_factory=list)
    numbers: dict = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str | None:
        """The findings' sentences together; None while none of them rests on enough finished runs."""
        if not any(f.decided for f in self.findings):
            return None
        return " ".join(f.text for f in self.findings)


@dataclass(frozen=True)
class Metric:
    """How to speak of one measured quantity: its name, whether it is a percentage, and the verbs for a
    positive and a negative difference (a minus b)."""

    name: str                   # "final training error"
    percent: bool               # values are fractions shown as percent; differences in points
    higher: str                 # "trains worse than"
    lower: str                  # "trains better than"
    digits: int = 1

    def value(self, v: float) -> str:
        if v is None or not math.isfinite(v):
            return "-"
        return f"{100 * v:.{self.digits}f}%" if self.percent else f"{v:#.3g}".rstrip(".")

    def delta(self, v: float) -> str:
        if not math.isfinite(v):
            return "-"
        return f"{self.bound(v)} points" if self.percent else self.bound(v)

    def bound(self, v: float) -> str:
        """A signed difference or interval end; a value that rounds to zero is shown as +0.0, not -0.0."""
        if self.percent:
            return f"{round(100 * v, self.digits) + 0.0:+.{self.digits}f}"
        return f"{v:+.3g}" if float(f"{v:.3g}") != 0 else "+0"

    def scale(self, v: float) -> float:
        """The value in display units (percent for percentages), for the numbers dicts."""
        return 100 * v if self.percent and v is not None and math.isfinite(v) else v


TRAIN_ERROR = Metric("final training error", True, "trains worse than", "trains better than")
TEST_ERROR = Metric("final test error", True, "ends with a higher test error than", "ends with a lower test error than")


def seeds_phrase(n_a: int, n_b: int) -> str:
    return f"{n_a} seeds each" if n_a == n_b else f"{n_a} and {n_b} seeds"


def _extra(notes: dict[str, str]) -> str:
    """' (plain-56: 2 diverged)' style remarks about runs that did not finish."""
    parts = [f"{name}: {text}" for name, text in notes.items() if text]
    return f" ({'; '.join(parts)})" if parts else ""


def compare(question: str, a: str, b: str, values_a, values_b, metric: Metric,
            unfinished: dict[str, str] | None = None) -> Finding:
    """Arm `a` against arm `b` on `metric` (values per seed in the metric's raw units: lists, or {seed: value}
    dicts, which pair the interval where both arms have the same seeds).

    E.g. "plain-56 trains worse than plain-20: final training error 29.6% vs 14.9% (+14.7 points, 95% interval
    +11.0 to +18.4, paired t over matched seeds; 3 seeds each)." `unfinished` adds remarks such as
    {"plain-56": "1 diverged"}."""
    d = difference(values_a, values_b)
    numbers = numbers_of(d, a, b, metric, values_a, values_b)
    extra = _extra(unfinished or {})
    if not d.enough:
        text = (f"Not enough seeds to tell {a} from {b} on {metric.name}: {d.n_a} and {d.n_b} finished "
                f"(at least {MIN_SEEDS} each needed){extra}.")
        return Finding(question, NOT_ENOUGH, text, numbers)
    if d.method == "no spread":
        return Finding(question, NO_CLEAR, f"No spread to judge by between {a} and {b}: every seed of each gave the "
                       f"same {metric.name}, {metric.value(d.mean_a)} vs {metric.value(d.mean_b)} "
                       f"({metric.delta(d.diff)}; {seeds_phrase(d.n_a, d.n_b)}){extra}, so the difference cannot be "
                       "told from seed-to-seed variation.", numbers)
    interval = f"95% interval {metric.bound(d.low)} to {metric.bound(d.high)}, {d.interval}"
    detail = (f"{metric.name} {metric.value(d.mean_a)} vs {metric.value(d.mean_b)} ({metric.delta(d.diff)}, "
              f"{interval}; {seeds_phrase(d.n_a, d.n_b)}){extra}")
    if not d.clear:
        return Finding(question, NO_CLEAR, f"No clear difference between {a} and {b}: {detail}.", numbers)
    verb = metric.higher if d.diff > 0 else metric.lower
    return Finding(question, EFFECT, f"{a} {verb} {b}: {detail}.", numbers)


def numbers_of(d: Difference, a: str, b: str, metric: Metric, values_a, values_b) -> dict:
    s = metric.scale
    return {
        "a": a, "b": b, "metric": metric.name, "unit": "%" if metric.percent else "",
        "mean_a": s(d.mean_a), "sd_a": s(d.sd_a), "n_a": d.n_a, "mean_b": s(d.mean_b), "sd_b": s(d.sd_b),
        "n_b": d.n_b, "difference": s(d.diff), "low": s(d.low), "high": s(d.high), "method": d.method,
        "interval": d.interval, "pairs": d.pairs, "confidence": d.confidence,
        "values_a": [s(v) for v in finite(_listed(values_a))], "values_b": [s(v) for v in finite(_listed(values_b))],
        **({"seeds_a": sorted(values_a), "seeds_b": sorted(values_b)}
           if isinstance(values_a, dict) and isinstance(values_b, dict) else {}),
    }


def _listed(values) -> list:
    """Per-seed values in seed order, from a list or a {seed: value} dict."""
    return [values[k] for k in sorted(values)] if isinstance(values, dict) else list(values)


def compare_speed(question: str, a: str, b: str, iters_a: list[int | None], iters_b: list[int | None],
                  target: float, total: int) -> Finding:
    """Which arm first reaches `target` training error sooner (iterations per seed; None: never reached)."""
    ra, rb = [i for i in iters_a if i is not None], [i for i in iters_b if i is not None]
    na, nb = len(iters_a), len(iters_b)
    goal = f"{100 * target:.0f}% training error"
    numbers = {"a": a, "b": b, "target_error": 100 * target, "unit": "iterations", "iterations_a": list(iters_a),
               "iterations_b": list(iters_b), "reached_a": len(ra), "reached_b": len(rb), "total_iterations": total}
    if na < MIN_SEEDS or nb < MIN_SEEDS:
        return Finding(question, NOT_ENOUGH, f"Not enough seeds to tell whether {a} or {b} reaches {goal} sooner: "
                       f"{na} and {nb} finished (at least {MIN_SEEDS} each needed).", numbers)

    def when(name, reached, n):
        if not reached:
            return f"{name} never reached it within {total} iterations (0 of {n} seeds)"
        s = summarise(reached)
        where = f"at iteration {s.mean:.0f}" + (f" ± {s.sd:.0f}" if s.n > 1 else "")
        return f"{name} {where} ({len(reached)} of {n} seeds reached it)"

    if len(ra) == na and len(rb) == nb:
        d = difference(ra, rb)
        numbers.update(difference=d.diff, low=d.low, high=d.high, method=d.method, interval=d.interval)
        detail = (f"iteration {d.mean_a:.0f} vs {d.mean_b:.0f} ({d.diff:+.0f}, 95% interval {d.low:+.0f} to "
                  f"{d.high:+.0f}, {d.interval}; {seeds_phrase(na, nb)})")
        if d.method == "no spread":
            return Finding(question, NO_CLEAR, f"No spread to judge by in how soon {a} and {b} reach {goal}: every "
                           f"seed of each reached it at the same iteration, {d.mean_a:.0f} vs {d.mean_b:.0f} "
                           f"({seeds_phrase(na, nb)}).", numbers)
        if not d.clear:
            return Finding(question, NO_CLEAR, f"No clear difference in how soon {a} and {b} reach {goal}: {detail}.",
                           numbers)
        # a first, as in the numbers that follow
        return Finding(question, EFFECT, f"{a} reaches {goal} {'sooner' if d.diff < 0 else 'later'} than {b}: "
                       f"{detail}.", numbers)
    if len(ra) == na and not rb:
        return Finding(question, EFFECT, f"{a} reaches {goal} and {b} does not: {when(a, ra, na)}; {when(b, rb, nb)}.",
                       numbers)
    if len(rb) == nb and not ra:
        return Finding(question, EFFECT, f"{b} reaches {goal} and {a} does not: {when(b, rb, nb)}; {when(a, ra, na)}.",
                       numbers)
    # some seeds of an arm got there and some did not: the means of those that did would flatter that arm
    return Finding(question, NO_CLEAR, f"No clear difference in how soon {a} and {b} reach {goal} (some seeds "
                   f"never reached it): {when(a, ra, na)}; {when(b, rb, nb)}.", numbers)


def unavailable(question: str, why: str) -> Finding:
    return Finding(question, NOT_AVAILABLE, why, {})
