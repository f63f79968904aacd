"""Downsampled copies of logged series: buckets of whole logging intervals for scalar series, evenly spread
steps for per-layer series. Plain numpy (the store uses it, so it stays light to import)."""
from __future__ import annotations

import numpy as np

SUMMARY_POINTS = 500        # at most this many buckets per scalar series
LAYER_SUMMARY_STEPS = 200   # at most this many logged steps per per-layer series


def bucket_width(span: int, every: int, points: int = SUMMARY_POINTS) -> int:
    """Iterations per bucket for a series logged every `every` iterations over `span` iterations: a multiple of
    `every`, so that every full bucket holds the same number of points, and at most about `points` buckets."""
    every = max(1, int(every or 1))
    span = max(int(span or 0), every)
    return every * max(1, -(-span // (every * points)))


def bucket_summary(steps: np.ndarray, values: np.ndarray, width: int, start: int = 0) -> dict[str, np.ndarray]:
    """The series (steps ascending) in buckets of `width` iterations counted from `start` (bucket k holds the
    steps in (start + k*width, start + (k+1)*width]; a step at or before `start` opens a bucket of its own):
    per non-empty bucket the mean step `x`, the `mean`, `min` and `max` of its finite values and their count
    `n` (NaN statistics where a bucket holds no finite value). A series of at most one point per bucket comes
    back as it is."""
    steps = np.asarray(steps, dtype=np.int64)
    values = np.asarray(values, dtype=float)
    if len(steps) == 0:
        empty = np.zeros(0)
        return {"x": empty, "mean": empty, "min": empty, "max": empty, "n": empty}
    keys = np.where(steps > start, (steps - start - 1) // max(1, int(width)), -1 - (start - steps))
    _, first, counts = np.unique(keys, return_index=True, return_counts=True)
    finite = np.isfinite(values)
    filled = np.where(finite, values, 0.0)
    n = np.add.reduceat(finite.astype(float), first)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, np.add.reduceat(filled, first) / n, np.nan)
    lo = np.minimum.reduceat(np.where(finite, values, np.inf), first)
    hi = np.maximum.reduceat(np.where(finite, values, -np.inf), first)
    return {"x": np.add.reduceat(steps.astype(float), first) / counts, "mean": mean,
            "min": np.where(n > 0, lo, np.nan), "max": np.where(n > 0, hi, np.nan), "n": n}


def decimate(count: int, keep: int = LAYER_SUMMARY_STEPS) -> np.ndarray:
    """Indices of at most `keep` of `count` items, evenly spread, the first and the last always among them."""
    if count <= keep:
        return np.arange(count)
    return np.unique(np.round(np.linspace(0, count - 1, keep)).astype(int))
