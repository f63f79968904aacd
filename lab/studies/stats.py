"""Statistics behind the verdicts, over seeds (scipy.stats does the arithmetic).

- `summarise`: mean, sample sd and the 95% t-interval of the mean of one arm's values.
- `difference`: the difference of two arms' means with a 95% interval. A study's arms run the same seeds
  (seed s of every arm shares its data order, and nets of the same shape share their initial weights), so where
  both arms have a value for exactly the same seeds the interval is paired: the t-interval of the per-seed
  differences, or a percentile bootstrap of them with at least `BOOTSTRAP_MIN_SEEDS` pairs. Otherwise (seeds
  missing in one arm, or values without their seeds) it is Welch's t-interval (unequal variances), or a
  percentile bootstrap over seeds with at least `BOOTSTRAP_MIN_SEEDS` in each arm (below that a bootstrap
  interval is too narrow to trust). `Difference.method` names the interval used, and `INTERVALS` says it in
  words. Fewer than `MIN_SEEDS` values in an arm: no interval, "not enough seeds". When every seed of each arm
  gave the same value ("no spread") there is no variation to judge a difference by: no interval, never clear.
- `iterations_to_target`: the first logged iteration at which a run's smoothed training error is at or below a
  target (None when it never gets there), for the questions about speed.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from ..series import ema

CONFIDENCE = 0.95
PAIR_MATCHED_SEEDS = True  # a paired interval where both arms have values for the same seeds (see the docstring)
MIN_SEEDS = 2             # per arm, for any interval
BOOTSTRAP_MIN_SEEDS = 8   # per arm, for a bootstrap interval instead of Welch's
BOOTSTRAP_RESAMPLES = 9999
SMOOTHING = 0.6           # EMA weight on the logged training-error windows before looking for the target


def finite(values) -> np.ndarray:
    """The finite values as a float array (None, NaN and infinities dropped)."""
    out = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return np.asarray(out, dtype=float)


@dataclass
class Summary:
    n: int
    mean: float
    sd: float
    low: float     # 95% t-interval of the mean (NaN with fewer than MIN_SEEDS values)
    high: float

    def as_dict(self) -> dict:
        return asdict(self)


def summarise(values, confidence: float = CONFIDENCE) -> Summary:
    v = finite(values)
    n = len(v)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(v.mean())
    sd = float(v.std(ddof=1)) if n > 1 else 0.0
    if n < MIN_SEEDS:
        return Summary(n, mean, sd, math.nan, math.nan)
    if sd == 0:
        return Summary(n, mean, sd, mean, mean)
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=sd / math.sqrt(n))
    return Summary(n, mean, sd, float(low), float(high))


# method -> how a sentence names the interval
INTERVALS = {
    "paired t": "paired t over matched seeds",
    "paired bootstrap": "paired bootstrap over matched seeds",
    "welch": "Welch's t",
    "bootstrap": "bootstrap over seeds",
}


@dataclass
class Difference:
    """Mean of a minus mean of b, with its interval; `enough` is False with fewer than MIN_SEEDS in an arm."""

    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    sd_a: float
    sd_b: float
    diff: float
    low: float
    high: float
    # "paired t", "paired bootstrap", "welch", "bootstrap", "no spread" (every seed of each arm gave the same value:
    # no interval) or "" (not enough seeds)
    method: str
    confidence: float = CONFIDENCE
    pairs: int = 0       # matched seeds the interval was paired over (0: unpaired)

    @property
    def enough(self) -> bool:
        return self.n_a >= MIN_SEEDS and self.n_b >= MIN_SEEDS

    @property
    def clear(self) -> bool:
        """The interval excludes zero (never without spread: there is nothing to judge a difference by)."""
        return self.enough and self.method != "no spread" and (self.low > 0 or self.high < 0)

    @property
    def interval(self) -> str:
        """The interval's name in words ('' when there is none)."""
        return INTERVALS.get(self.method, "")

    def as_dict(self) -> dict:
        return {**asdict(self), "enough": self.enough, "clear": self.clear}


def matched(a, b) -> tuple[list, list] | None:
    """Values of a and b given as {seed: value} for exactly the same seeds (non-finite values dropped first), as
    two lists in seed order; None when they are not (lists, or seeds that differ)."""
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return None
    keep = {k: float(v) for k, v in a.items() if v is not None and math.isfinite(float(v))}
    other = {k: float(v) for k, v in b.items() if v is not None and math.isfinite(float(v))}
    if set(keep) != set(other):
        return None
    seeds = sorted(keep)
    return [keep[s] for s in seeds], [other[s] for s in seeds]


def _values(v) -> list:
    return list(v.values()) if isinstance(v, dict) else v


def difference(a, b, confidence: float = CONFIDENCE, method: str = "auto", seed: int = 0,
               paired: bool | None = None) -> Difference:
    """mean(a) - mean(b) with a `confidence` interval (see the module docstring).

    `a` and `b`: lists of per-seed values, or {seed: value} dicts; with dicts for the same seeds the interval is
    paired (`paired` None: as PAIR_MATCHED_SEEDS says; False: never)."""
    pairs = matched(a, b) if (PAIR_MATCHED_SEEDS if paired is None else paired) else None
    va, vb = finite(_values(a)), finite(_values(b))
    sa, sb = summarise(va), summarise(vb)
    diff = sa.mean - sb.mean if sa.n and sb.n else math.nan
    out = Difference(sa.n, sb.n, sa.mean, sb.mean, sa.sd, sb.sd, diff, math.nan, math.nan, "", confidence)
    if not out.enough:
        return out
    if np.ptp(va) == 0 and np.ptp(vb) == 0:  # every seed equal (their sd can round to a hair above zero)
        out.method = "no spread"
        return out
    if pairs is not None:
        d = np.asarray(pairs[0]) - np.asarray(pairs[1])
        # differences all alike (to rounding): a zero-width paired interval would claim certainty; Welch's below
        if np.ptp(d) > 1e-9 * float(np.abs(d).max()):
            out.pairs = len(d)
            return _paired(out, d, confidence, method, seed)
    if method == "bootstrap" or (method == "auto" and min(sa.n, sb.n) >= BOOTSTRAP_MIN_SEEDS):
        res = stats.bootstrap(
            (va, vb), lambda x, y, axis=-1: np.mean(x, axis=axis) - np.mean(y, axis=axis), paired=False,
            vectorized=True, confidence_level=confidence, n_resamples=BOOTSTRAP_RESAMPLES, method="percentile",
            rng=np.random.default_rng(seed),
        )
        out.low, out.high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        out.method = "bootstrap"
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ci = stats.ttest_ind(va, vb, equal_var=False).confidence_interval(confidence)
    out.low, out.high = float(ci.low), float(ci.high)
    out.method = "welch"
    return out


def _paired(out: Difference, d: np.ndarray, confidence: float, method: str, seed: int) -> Difference:
    """The interval of the mean of the per-seed differences `d` (t, or a percentile bootstrap with many pairs)."""
    if method == "bootstrap" or (method == "auto" and len(d) >= BOOTSTRAP_MIN_SEEDS):
        res = stats.bootstrap((d,), np.mean, vectorized=True, confidence_level=confidence,
                              n_resamples=BOOTSTRAP_RESAMPLES, method="percentile", rng=np.random.default_rng(seed))
        out.low, out.high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        out.method = "paired bootstrap"
        return out
    half = float(stats.t.ppf(0.5 + confidence / 2, len(d) - 1)) * float(d.std(ddof=1)) / math.sqrt(len(d))
    out.low, out.high = float(d.mean()) - half, float(d.mean()) + half
    out.method = "paired t"
    return out


def iterations_to_target(steps, errors, target: float, smoothing: float = SMOOTHING) -> int | None:
    """The first logged step at which the EMA-smoothed training error is <= `target`; None if never.

    Errors are the per-window training errors as logged (fractions); the debiased EMA (lab.series.ema) keeps
    one lucky window from counting as having reached the target."""
    steps = np.asarray(steps, dtype=float)
    errors = np.asarray(errors, dtype=float)
    if len(steps) == 0:
        return None
    order = np.argsort(steps)
    smooth = ema(errors[order], smoothing)
    hit = np.flatnonzero(smooth <= target)
    return int(steps[order][hit[0]]) if len(hit) else None
