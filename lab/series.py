"""Series processing for plots: debiased EMA smoothing, min/max-preserving downsampling, seed aggregation."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.signal import lfilter

# The run fields that make two runs "the same experiment" apart from the seed.
# the label tells apart what these fields do not: unit placement, scalings, a deepened run's parent depth
GROUP_FIELDS = ("kind", "depth", "dataset", "preset", "block", "shortcut", "span", "width", "norm", "init",
                "iterations", "batch_size", "lr", "tag", "label")


def ema(values: np.ndarray, weight: float) -> np.ndarray:
    """Debiased exponential moving average (as TensorBoard's smoothing): weight 0 is no smoothing.

    NaNs are skipped (they neither enter the average nor reset it), and stay NaN in the output.
    """
    values = np.asarray(values, dtype=float)
    if weight <= 0 or len(values) == 0:
        return values.copy()
    # dividing by the sum of the weights so far is the debiasing that keeps early points honest (pandas'
    # ewm(adjust=True, ignore_na=True)); both sums are one linear recursion each over the values present
    present = ~np.isnan(values)
    sums = lfilter([1.0], [1.0, -weight], values[present])
    norms = lfilter([1.0], [1.0, -weight], np.ones(int(present.sum())))
    out = np.full(len(values), np.nan)
    out[present] = sums / norms
    return out


def downsample_minmax(x: np.ndarray, ys: list[np.ndarray], max_points: int, key: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """Keep at most about `max_points` points: per bucket, the points where ys[key] is smallest and largest
    (and the first and last point overall), so spikes and dips survive. All arrays are cut at the same indices."""
    n = len(x)
    if n <= max_points or max_points < 4:
        return x, ys
    buckets = max(1, max_points // 2)
    edges = np.linspace(0, n, buckets + 1).astype(int)
    y = ys[key]
    keep = {0, n - 1}
    for lo, hi in zip(edges[:-1], edges[1:]):
        if hi <= lo:
            continue
        seg = y[lo:hi]
        if np.all(np.isnan(seg)):
            keep.add(lo)
            continue
        keep.add(lo + int(np.nanargmin(seg)))
        keep.add(lo + int(np.nanargmax(seg)))
    idx = np.array(sorted(keep))
    return x[idx], [a[idx] for a in ys]


def aggregate_seeds(curves: list[tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """Mean, sd, min and max across seeds of curves given as (x, y) pairs, on the x values they share.

    Curves of runs still in progress are shorter: each x keeps the seeds that reached it (column `n`).
    """
    curves = [(np.asarray(x), np.asarray(y, dtype=float)) for x, y in curves if len(x)]
    if not curves:
        return pd.DataFrame(columns=["x", "mean", "sd", "min", "max", "n"])
    if all(x.dtype.kind in "iuf" and len(x) == len(y) and not np.isnan(x).any() and np.all(np.diff(x) > 0)
           for x, y in curves):
        return _aggregate_sorted(curves)
    table = pd.concat([pd.Series(y, index=x) for x, y in curves], axis=1)
    table = table[~table.index.duplicated()].sort_index()
    out = pd.DataFrame({
        "x": table.index.to_numpy(dtype=float),
        "mean": table.mean(axis=1).to_numpy(),
        "sd": table.std(axis=1, ddof=1).fillna(0).to_numpy() if table.shape[1] > 1 else np.zeros(len(table)),
        "min": table.min(axis=1).to_numpy(),
        "max": table.max(axis=1).to_numpy(),
        "n": table.notna().sum(axis=1).to_numpy(),
    })
    return out


def _aggregate_sorted(curves: list[tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """`aggregate_seeds` for curves whose x values are finite and strictly increasing, on one seeds x points
    matrix (NaN where a seed has no point) instead of pandas' index alignment: the same statistics, far faster
    for many seeds of long curves."""
    first = curves[0][0]
    if all(len(x) == len(first) and np.array_equal(x, first) for x, _ in curves[1:]):
        # the common case: seeds of one configuration logged at the same steps (the same summary buckets)
        xs, table = first.astype(float), np.column_stack([y for _, y in curves])
    else:
        xs = np.unique(np.concatenate([x.astype(float) for x, _ in curves]))
        table = np.full((len(xs), len(curves)), np.nan)
        for j, (x, y) in enumerate(curves):
            table[np.searchsorted(xs, x.astype(float)), j] = y
    present = ~np.isnan(table)
    n = present.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(present, table, 0.0).sum(axis=1) / n
        if table.shape[1] > 1:  # sample sd; 0 where fewer than two seeds reached x
            dev = np.where(present, table - mean[:, None], 0.0)
            sd = np.where(n > 1, np.sqrt((dev ** 2).sum(axis=1) / (n - 1)), 0.0)
        else:
            sd = np.zeros(len(xs))
        lo = np.where(n > 0, np.where(present, table, np.inf).min(axis=1), np.nan)
        hi = np.where(n > 0, np.where(present, table, -np.inf).max(axis=1), np.nan)
    return pd.DataFrame({"x": xs, "mean": mean, "sd": sd, "min": lo, "max": hi, "n": n})


def mean_sd(values) -> tuple[float, float, int]:
    """Mean, sample standard deviation (0 for one value) and count of the finite values."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v)

