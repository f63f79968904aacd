"""Statistics behind the verdicts, over independent seeds (scipy.stats does the arithmetic).

- `summarise`: mean, sample sd and the 95% t-interval of the mean of one arm's values.
- `difference`: the difference of two arms' means with a 95% interval: Welch's t-interval (unequal variances),
  or a percentile bootstrap over seeds when both arms have at least `BOOTSTRAP_MIN_SEEDS` (below that a bootstrap
  interval is too narrow to trust). Fewer than `MIN_SEEDS` values in an arm: no interval, "not enough seeds".
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
    method: str          # "welch", "bootstrap", "no spread" (every seed gave the same value) or "" (not enough)
    confidence: float = CONFIDENCE

    @property
    def enough(self) -> bool:
        return self.n_a >= MIN_SEEDS and self.n_b >= MIN_SEEDS

    @property
    def clear(self) -> bool:
        """The interval excludes zero."""
        return self.enough and (self.low > 0 or self.high < 0)

    def as_dict(self) -> dict:
        return {**asdict(self), "enough": self.enough, "clear": self.clear}


def difference(a, b, confidence: float = CONFIDENCE, method: str = "auto", seed: int = 0) -> Difference:
    """mean(a) - mean(b) over independent seeds, with a `confidence` interval (see the module docstring)."""
    va, vb = finite(a), finite(b)
    sa, sb = summarise(va), summarise(vb)
    diff = sa.mean - sb.mean if sa.n and sb.n else math.nan
    out = Difference(sa.n, sb.n, sa.mean, sb.mean, sa.sd, sb.sd, diff, math.nan, math.nan, "", confidence)
    if not out.enough:
        return out
    if sa.sd == 0 and sb.sd == 0:
        out.low = out.high = diff
        out.method = "no spread"
        return out
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
