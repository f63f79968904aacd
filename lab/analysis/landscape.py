"""Loss-landscape slices (Li, Xu, Taylor, Studer, Goldstein 2018, "Visualizing the loss landscape of neural
nets"): the loss along filter-normalised random directions around a network's weights.

A direction has one random Gaussian tensor per parameter, rescaled filter by filter: each filter of the
direction (a conv weight's output channel, a linear weight's output row) gets the L2 norm of the same filter of
the weights, so the slice is comparable across nets of different scale. Parameters with one dimension (BN
weights and biases, conv and linear biases) are zero in the direction, as in the paper. BN running statistics
are buffers, not parameters: they stay as given at every point (the checkpoint's, or at init those recalibrated
on training batches by lab.analysis.restored; the net is evaluated in eval mode, without augmentation, on a
fixed set of images).

`slice_grid` is model-agnostic: it moves any module's parameters to w + sum_i c_i d_i and calls an `evaluate`
callback there, so the same code slices a CifarNet or a toy module with a known loss surface.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from .evaluation import Progress, ShouldStop, Steps, evaluate, finite

UNITS = {
    "alpha": "step along the first direction, in filter-norm units (1: each filter moved by its own norm)",
    "beta": "step along the second direction, same units",
    "loss": "mean cross-entropy (nats)",
    "error": "fraction of images misclassified (0-1)",
}

Direction = dict[str, torch.Tensor]


def filter_normalised_directions(model: nn.Module, count: int = 1, seed: int = 0) -> list[Direction]:
    """`count` random directions in `model`'s parameter space, filter-normalised (see the module docstring).

    The random numbers come from a CPU generator seeded with `seed`, drawn parameter by parameter in
    `named_parameters` order, first direction first: the same seed gives the same directions on any device,
    and the first of two directions is the one-direction result."""
    gen = torch.Generator().manual_seed(int(seed))
    out = []
    for _ in range(count):
        direction = {}
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if p.dim() <= 1:
                direction[name] = torch.zeros(p.shape, dtype=p.dtype, device=p.device)
                continue
            # scaled in float64, then stored in the parameter's dtype: the norms match to that dtype's precision
            w = p.detach().cpu().double().reshape(p.shape[0], -1)
            d = noise.double().reshape(p.shape[0], -1)
            d = d * (w.norm(dim=1, keepdim=True) / d.norm(dim=1, keepdim=True).clamp_min(1e-12))
            direction[name] = d.reshape(p.shape).to(device=p.device, dtype=p.dtype)
        out.append(direction)
    return out


def slice_grid(
    model: nn.Module,
    evaluate_here: Callable[[], dict[str, float]],
    directions: list[Direction],
    coords: list[tuple[float, ...]],
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> list[dict[str, float]]:
    """Evaluate `evaluate_here()` with the parameters moved to w + sum_i c_i * directions[i], for each
    coordinate tuple c in `coords`; returns one dict per point. The weights are restored exactly afterwards,
    also on an error or a cancel."""
    params = dict(model.named_parameters())
    origin = {name: p.detach().clone() for name, p in params.items()}
    steps = Steps(len(coords), progress, should_stop)
    out = []
    try:
        with torch.no_grad():
            for c in coords:
                steps.check()
                for name, p in params.items():
                    moved = origin[name].clone()
                    for ci, d in zip(c, directions):
                        if ci:
                            moved.add_(d[name], alpha=float(ci))
                    p.copy_(moved)
                out.append(evaluate_here())
                steps.advance()
    finally:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(origin[name])
    return out


def axis(points: int, span: float) -> list[float]:
    """`points` evenly spaced steps over [-span, span] (an odd count includes 0)."""
    return [float(v) for v in np.linspace(-span, span, points)]


def landscape(
    net: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    points: int = 21,
    span: float = 1.0,
    two_d: bool = False,
    seed: int = 0,
    batch_size: int = 500,
    autocast: Callable | None = None,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> dict:
    """Loss and error of `net` (eval mode) on these images along one filter-normalised direction (a curve of
    `points` steps over [-span, span]) or, with `two_d`, on a `points` x `points` grid over two directions.

    Returns a JSON-able dict: `alpha` (and `beta`), `loss` and `error` (lists for 1-D; for 2-D lists of rows,
    one row per beta, each over alpha, as plotly's contour wants them), and `origin`: loss and error of the
    unmoved weights. The same `seed` gives the same directions."""
    if points < 2:
        raise ValueError("a slice needs at least 2 points")
    if not span > 0:
        raise ValueError("span must be positive")
    directions = filter_normalised_directions(net, 2 if two_d else 1, seed)
    alphas = axis(points, span)
    coords = [(b, a) for b in alphas for a in alphas] if two_d else [(a,) for a in alphas]
    if two_d:  # the grid loops beta outside, alpha inside: directions in (beta, alpha) order match coords
        directions = directions[::-1]

    def here() -> dict[str, float]:
        loss, err = evaluate(net, images, labels, batch_size, autocast)
        return {"loss": loss, "error": err}

    was_training = net.training
    net.eval()
    try:
        origin = here()
        values = slice_grid(net, here, directions, coords, progress, should_stop)
    finally:
        net.train(was_training)
    loss = [finite(v["loss"]) for v in values]
    error = [finite(v["error"]) for v in values]
    result = {
        "analysis": "landscape",
        "units": UNITS,
        "dimensions": 2 if two_d else 1,
        "images": len(labels),
        "alpha": alphas,
        "origin": {"loss": finite(origin["loss"]), "error": finite(origin["error"])},
        "options": {"points": points, "span": span, "seed": seed, "batch_size": batch_size},
    }
    if two_d:
        result |= {"beta": alphas, "loss": [loss[i : i + points] for i in range(0, len(loss), points)],
                   "error": [error[i : i + points] for i in range(0, len(error), points)]}
    else:
        result |= {"loss": loss, "error": error}
    return result
