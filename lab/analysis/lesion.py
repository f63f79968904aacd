"""Lesion study (Veit, Wilber, Belongie 2016, "Residual networks behave like ensembles of relatively shallow
networks"): the test error of a trained net with units deleted at test time.

Deleting a unit uses the models' lesion contract (`unit.lesioned = True`): a residual unit loses its residual
branch and keeps its shortcut; a plain unit becomes the identity where it keeps the shape of its input, and
cannot be deleted where it changes it (the first unit of a stage). Three measurements:

- each deletable unit deleted alone (Veit Fig. 3), summarised separately for the two kinds of unit: a
  "downsampling" unit changes the shape of its input (the first unit of a later stage), a "shape-keeping" unit
  does not. Veit et al. find deleting a ResNet's downsampling units hurts (their exception) and the others barely
  matter; a plain net cannot delete its downsampling units at all, so only the shape-keeping units compare the
  two nets like with like;
- k shape-keeping units deleted at once, k = 1..n, averaged over `draws` random sets of k (all sets when there
  are no more than `draws` of them; Veit Fig. 5a): the same candidates in a plain net and its residual twin;
- optionally, units reordered: k random swaps of two units that have the same input and output shape (units
  of one stage after its first), averaged over `draws` orders, with the Kendall tau of each order (Fig. 5b).

Each evaluation is one pass over the given images in eval mode (BN running statistics as given: the
checkpoint's, or at init those recalibrated on training batches by lab.analysis.restored).
"""
from __future__ import annotations

import contextlib
import itertools
import math
import random
import statistics
from typing import Callable

import torch
from torch import nn

from .evaluation import Progress, ShouldStop, Steps, evaluate, finite
from .options import RESULT_FORMATS

FORMAT = RESULT_FORMATS["lesion"]   # format 2: each unit's kind named, k-sets from shape-keeping units only
DOWNSAMPLING, SHAPE_KEEPING = "downsampling", "shape-keeping"

UNITS = {
    "error": "fraction of images misclassified (0-1)",
    "loss": "mean cross-entropy (nats)",
    "k": "units deleted at once",
    "swaps": "random swaps of two same-shape units",
    "kendall_tau": "rank correlation of the unit order with the original (1: unchanged)",
}


def unit_table(net: nn.Module, image: torch.Tensor) -> list[dict]:
    """One row per unit of `net.units`, in network order: name, stage (counted by changes of the feature-map
    size), whether it is residual, deletable, whether it keeps the shape of its input (so it can swap places
    with another unit of the same shape), and its `kind`: 'downsampling' or 'shape-keeping'. `image` is one
    input (1, C, H, W) used to trace shapes."""
    shapes = []
    hooks = [u.register_forward_hook(lambda _m, inp, out: shapes.append((tuple(inp[0].shape), tuple(out.shape))))
             for u in net.units]
    was_training = net.training
    try:
        net.eval()
        with torch.no_grad():
            net(image[:1])
    finally:
        for h in hooks:
            h.remove()
        net.train(was_training)
    rows, stage = [], 0
    for i, (unit, (shape_in, shape_out)) in enumerate(zip(net.units, shapes)):
        if shape_in[2:] != shape_out[2:]:
            stage += 1
        rows.append(dict(index=i, name=f"units.{i}", stage=stage, residual=bool(unit.residual),
                         deletable=bool(unit.lesionable()), keeps_shape=shape_in == shape_out,
                         kind=SHAPE_KEEPING if shape_in == shape_out else DOWNSAMPLING, shape=list(shape_out[1:])))
    return rows


@contextlib.contextmanager
def lesioned(net: nn.Module, indices):
    """Delete the units at `indices` for the duration of the block; the previous state comes back after."""
    units = list(net.units)
    before = [u.lesioned for u in units]
    try:
        for i in indices:
            units[i].lesioned = True
        yield net
    finally:
        for u, state in zip(units, before):
            u.lesioned = state


@contextlib.contextmanager
def reordered(net: nn.Module, order: list[int]):
    """Run the units in `order` (a permutation of their indices) for the duration of the block."""
    original = net.units
    net.units = nn.Sequential(*[original[i] for i in order])
    try:
        yield net
    finally:
        net.units = original


def kendall_tau(order: list[int]) -> float:
    """Kendall's tau between `order` and 0..n-1: 1 unchanged, -1 reversed."""
    n = len(order)
    if n < 2:
        return 1.0
    s = sum((1 if order[j] > order[i] else -1) for i in range(n) for j in range(i + 1, n))
    return s / (n * (n - 1) / 2)


def deletion_sets(deletable: list[int], k: int, draws: int, rng: random.Random) -> tuple[list[tuple[int, ...]], bool]:
    """The sets of k units to delete: all of them when there are at most `draws`, else `draws` distinct random
    ones. Returns (sets, exhaustive)."""
    n = len(deletable)
    if math.comb(n, k) <= draws:
        return list(itertools.combinations(deletable, k)), True
    seen: set[tuple[int, ...]] = set()
    while len(seen) < draws:
        seen.add(tuple(sorted(rng.sample(deletable, k))))
    return sorted(seen), False


def swap_orders(table: list[dict], swaps: int, draws: int, rng: random.Random) -> list[list[int]]:
    """`draws` unit orders, each the original order after `swaps` random swaps of two same-shape units."""
    groups: dict[tuple, list[int]] = {}
    for row in table:
        if row["keeps_shape"]:
            groups.setdefault(tuple(row["shape"]), []).append(row["index"])
    groups = {k: v for k, v in groups.items() if len(v) >= 2}
    if not groups:
        return []
    keys = sorted(groups)
    weights = [math.comb(len(groups[k]), 2) for k in keys]  # every swappable pair equally likely
    orders = []
    for _ in range(draws):
        order = list(range(len(table)))
        for _ in range(swaps):
            members = groups[rng.choices(keys, weights)[0]]
            a, b = rng.sample(members, 2)
            order[a], order[b] = order[b], order[a]
        orders.append(order)
    return orders


def unit_kind(row: dict) -> str:
    """A unit-table row's kind (rows of format-1 results carry only `keeps_shape`)."""
    return row.get("kind") or (SHAPE_KEEPING if row["keeps_shape"] else DOWNSAMPLING)


def by_kind(table: list[dict], single_error: list, baseline: float | None) -> dict:
    """Single deletions summarised per kind of unit: the deletable units' indices, their errors, and the mean and
    largest error increase over the intact net (None where a kind has no deletable unit)."""
    out = {}
    for kind in (SHAPE_KEEPING, DOWNSAMPLING):
        rows = [(r["index"], e) for r, e in zip(table, single_error) if unit_kind(r) == kind and e is not None]
        up = [e - baseline for _, e in rows] if baseline is not None else []
        out[kind] = {"units": [i for i, _ in rows], "error": [e for _, e in rows],
                     "units_total": sum(unit_kind(r) == kind for r in table),
                     "mean_increase": finite(statistics.fmean(up)) if up else None,
                     "max_increase": finite(max(up)) if up else None}
    return out


def _summary(values: list[float]) -> dict:
    return dict(mean=statistics.fmean(values), sd=statistics.stdev(values) if len(values) > 1 else 0.0,
                min=min(values), max=max(values), n=len(values))


def lesion(
    net: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    draws: int = 5,
    reorder: bool = False,
    max_swaps: int = 0,
    seed: int = 0,
    batch_size: int = 500,
    autocast: Callable | None = None,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> dict:
    """Veit et al.'s lesion study of `net` (a CifarNet-like module with `units`) on these images and labels:
    every deletable unit alone, reported per kind of unit (`single_by_kind`), and k shape-keeping units at once.

    `draws`: random sets per k (and random orders per number of swaps); `reorder`: also measure reordering,
    with 1..`max_swaps` swaps (0: as many as there are swappable units); `seed` fixes the random choices;
    `batch_size` and `autocast` as in the trainer's evaluation. Calls `progress(done, total)` after each
    evaluation and raises `Cancelled` when `should_stop()` is true. Returns a JSON-able dict (see UNITS for
    the units of each number; errors are fractions).
    """
    if draws < 1:
        raise ValueError("draws must be at least 1")
    table = unit_table(net, images)
    deletable = [row["index"] for row in table if row["deletable"]]
    candidates = [i for i in deletable if table[i]["kind"] == SHAPE_KEEPING]   # the same in a plain net and its twin
    rng = random.Random(seed)
    plan = {k: deletion_sets(candidates, k, draws, rng) for k in range(1, len(candidates) + 1)}
    orders = {}
    if reorder:
        swappable = sum(row["keeps_shape"] for row in table)
        for swaps in range(1, (max_swaps or swappable) + 1):
            found = swap_orders(table, swaps, draws, rng)
            if found:
                orders[swaps] = found
    wanted = {(): None} | {(i,): None for i in deletable}
    for sets, _ in plan.values():
        wanted |= {s: None for s in sets}
    steps = Steps(len(wanted) + sum(len(v) for v in orders.values()), progress, should_stop)

    def measure(changed) -> tuple[float, float]:
        """(loss, error) with the net changed by the context manager `changed` (units deleted or reordered)."""
        steps.check()
        with changed:
            out = evaluate(net, images, labels, batch_size, autocast)
        steps.advance()
        return out

    def reordered_error(order) -> float:
        return measure(reordered(net, order))[1]

    # every distinct set is evaluated once: with few deletable units the random sets repeat the single ones
    results = {s: measure(lesioned(net, s)) for s in wanted}
    base_loss, base_err = results[()]
    single_err = [finite(results[(r["index"],)][1]) if r["deletable"] else None for r in table]
    single_loss = [finite(results[(r["index"],)][0]) if r["deletable"] else None for r in table]
    result = {
        "analysis": "lesion",
        "format": FORMAT,
        "units": UNITS,
        "images": len(labels),
        "baseline": {"loss": finite(base_loss), "error": finite(base_err)},
        "unit_table": table,
        "single": {"error": single_err, "loss": single_loss},
        "single_by_kind": by_kind(table, single_err, finite(base_err)),
        "deleted": _deleted(plan, results, candidates),
        "reordered": _reordered(orders, reordered_error) if reorder else None,
        "options": {"draws": draws, "reorder": reorder, "max_swaps": max_swaps, "seed": seed,
                    "batch_size": batch_size},
    }
    return result


def _deleted(plan: dict, results: dict, candidates: list[int]) -> dict:
    """The k-deletion summary: per k, the error over its random sets of shape-keeping units."""
    deleted = {"units": SHAPE_KEEPING, "candidates": candidates, "k": [], "error_mean": [], "error_sd": [],
               "error_min": [], "error_max": [], "sets": [], "exhaustive": []}
    for k, (sets, exhaustive) in plan.items():
        s = _summary([results[x][1] for x in sets])
        for key, value in (("k", k), ("error_mean", s["mean"]), ("error_sd", s["sd"]), ("error_min", s["min"]),
                           ("error_max", s["max"]), ("sets", s["n"]), ("exhaustive", exhaustive)):
            deleted[key].append(value)
    return deleted


def _reordered(orders: dict, error_of: Callable) -> dict:
    """The reordering summary: per number of swaps, the error over its random orders (`error_of(order)`)."""
    out = {"swaps": [], "error_mean": [], "error_sd": [], "kendall_tau": [], "orders": []}
    for swaps, found in orders.items():
        s = _summary([error_of(order) for order in found])
        out["swaps"].append(swaps)
        out["error_mean"].append(s["mean"])
        out["error_sd"].append(s["sd"])
        out["kendall_tau"].append(statistics.fmean(kendall_tau(o) for o in found))
        out["orders"].append(s["n"])
    return out
