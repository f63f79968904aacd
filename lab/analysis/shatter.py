"""Shattered gradients (Balduzzi, Frean, Leary, Lewis, Ma, McWilliams 2017): how alike the input gradients of
nearby inputs are.

Inputs x_i = x0 + t_i d at `points` evenly spaced t_i in [0, 1] on a line through data space (d: towards another
image, or a random direction of a given L2 norm). The gradient of the target (one logit, or the cross-entropy
against x0's label) with respect to each input comes from ONE batched backward pass in eval mode, where BN
uses its running statistics (at init, recalibrated on training batches by lab.analysis.restored: a fresh net's
(0, 1) statistics would make every BN the identity), so the inputs do not interact and row i of the batched gradient is exactly the
gradient at x_i alone. Gradients are computed in fp32 (bf16 rounding would decorrelate them by itself).

The correlation of two gradients is the Pearson correlation of their components (each gradient centred on its
own mean). Grid distances are multiples of dt = 1/(points-1), so pairs are binned exactly by their distance
|t_i - t_j| = lag * dt; each bin holds the mean over its pairs. Plain nets' gradients decorrelate fast with
distance, and faster the deeper the net; residual nets' much more slowly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .evaluation import Progress, ShouldStop, Steps, finite, finite_list

UNITS = {
    "distance_t": "|t_i - t_j|: distance along the line as a fraction of its length",
    "distance": "L2 distance between the two inputs (normalised-input units)",
    "correlation": "Pearson correlation of the two input gradients (1: identical up to scale and offset)",
    "grad_norm": "L2 norm of the input gradient at each point",
    "t": "position on the line x0 + t d",
    "dimensions": "components of each input gradient (C x H x W)",
}


def line(x0: torch.Tensor, d: torch.Tensor, points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(t, inputs): `points` evenly spaced t in [0, 1] and the inputs x0 + t d, shape (points, *x0.shape)."""
    t = torch.linspace(0, 1, points, device=x0.device, dtype=torch.float32)
    xs = x0.float().unsqueeze(0) + t.view(-1, *([1] * x0.dim())) * d.float().unsqueeze(0)
    return t, xs


def input_gradients(net: nn.Module, inputs: torch.Tensor, target: int | str, label: int | None = None) -> torch.Tensor:
    """d(target)/d(input) for every input, (N, D) in fp32, from one batched backward in eval mode.

    `target`: a logit index, or 'loss' (cross-entropy against `label`). The net's mode is restored after."""
    was_training = net.training
    net.eval()
    try:
        x = inputs.detach().clone().float().requires_grad_(True)
        out = net(x).float()
        if target == "loss":
            if label is None:
                raise ValueError("the 'loss' target needs a label")
            y = torch.full((len(x),), int(label), device=x.device, dtype=torch.int64)
            objective = F.cross_entropy(out, y, reduction="sum")  # the sum: each input's own loss, unscaled
        else:
            objective = out[:, int(target)].sum()
        (grad,) = torch.autograd.grad(objective, x)
    finally:
        net.train(was_training)
    return grad.flatten(1)


def correlations(grads: torch.Tensor) -> torch.Tensor:
    """The (N, N) Pearson correlations between rows of `grads` (N, D); a constant row correlates as 0."""
    g = grads.double()
    g = g - g.mean(dim=1, keepdim=True)
    g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-300)
    return g @ g.T


def by_lag(corr: torch.Tensor) -> list[float]:
    """Mean of each diagonal of a symmetric matrix: entry k is the mean over pairs with |i - j| = k."""
    n = corr.shape[0]
    return [float(torch.diagonal(corr, offset=k).mean()) for k in range(n)]


def white_noise_level(dimensions: int, pairs: int) -> float:
    """About the sd of a lag's mean correlation when the gradients are white noise (independent from point to
    point): one pair's Pearson correlation over `dimensions` components has sd about 1/sqrt(dimensions), and the
    mean over `pairs` pairs about 1/sqrt(dimensions * pairs) (pairs that share a point are treated as
    independent, so this is a little low). Correlations within a few of these of zero look like white noise."""
    return 1.0 / (max(1, dimensions) * max(1, pairs)) ** 0.5


def brownian_reference(points: int) -> list[float | None]:
    """The lag-mean correlation (lags 1..points-1 on a grid of `points`) of gradients that are a random walk
    along the line started at x0, i.e. Brownian motion ("brown noise", the reference Balduzzi et al. give for the
    gradients of shallow nets): corr(W(s), W(t)) = sqrt(min(s, t) / max(s, t)), averaged over the grid's pairs
    at each lag (the point t = 0, where W is 0, left out: None at the longest lag, which has no other pair)."""
    i = torch.arange(1, points, dtype=torch.float64)
    return [float(torch.sqrt(i[: points - 1 - k] / i[k:]).mean()) if k < points - 1 else None
            for k in range(1, points)]


def shatter(
    net: nn.Module,
    x0: torch.Tensor,
    direction: torch.Tensor,
    *,
    points: int = 256,
    target: int | str = "loss",
    label: int | None = None,
    summary_distance: float = 1 / 255,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> dict:
    """Gradient correlation against input distance on the line x0 + t * direction, t in [0, 1].

    `x0` and `direction`: one input's shape (C, H, W); `target`: a logit index or 'loss' (with `label`, x0's
    class); `summary_distance`: the distance along the line (fraction of its length) at which `summary` reports
    the correlation (the nearest grid distance is used; the default is neighbouring points at 256 points).
    Returns a JSON-able dict: per distance bin (`distance_t`, `distance`, `correlation`, `pairs`), the gradient
    norm at each point, and `summary`."""
    if points < 3:
        raise ValueError("a line needs at least 3 points")
    steps = Steps(1, progress, should_stop)
    steps.check()
    t, xs = line(x0, direction, points)
    grads = input_gradients(net, xs, target, label)
    corr = correlations(grads)
    means = by_lag(corr)[1:]
    steps.advance()
    dt = 1.0 / (points - 1)
    length = float(direction.float().norm())
    lags = list(range(1, points))
    lag = min(lags, key=lambda k: abs(k * dt - summary_distance))
    return {
        "analysis": "shatter",
        "units": UNITS,
        "points": points,
        "target": target if target == "loss" else int(target),
        "label": None if label is None else int(label),
        "line_length": length,
        "dimensions": int(grads.shape[1]),
        "distance_t": [k * dt for k in lags],
        "distance": [k * dt * length for k in lags],
        "correlation": finite_list(means),
        "pairs": [points - k for k in lags],
        "t": t.tolist(),
        "grad_norm": finite_list(grads.norm(dim=1).tolist()),
        "summary": {"distance_t": lag * dt, "distance": lag * dt * length, "correlation": finite(means[lag - 1])},
        "options": {"points": points, "target": target, "summary_distance": summary_distance},
    }
