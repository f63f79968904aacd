"""Probes: what the lab measures inside a network besides its error. Metric names (stored in
`layer_metrics.metric`), with the layers they have one value for:

- `grad_norm` (every conv and linear weight, `weight_layers()` order): L2 norm of the weight's gradient.
- `input_grad_norm` (the same layers): L2 norm of dLoss/dx for the input x of each layer, the whole gradient
  reaching that tensor (where a unit's input also feeds the shortcut, the shortcut's share is in it).
- `update_ratio` (the same layers): ||W_after - W_before|| / ||W_before|| across one optimizer step (NaN for a
  weight that is exactly zero before the step, e.g. Fixup's zero-initialised layers).
- `response_std` (every 3x3 layer, `response_layers()` order; Fig. 7): std over all elements of the layer's
  output after its BN (before any ReLU or addition), eval mode: BN with its running statistics.
- `response_std_batch` (the same layers): the same response with the probe batch's own BN statistics (training
  mode), the BN buffers left as they were. At step 0 the running statistics are still (0, 1), so this is the
  normalised response there.
- `bn_gamma`, `bn_beta_std` (the same layers; only for nets with BN): mean |gamma| and std of beta of each
  layer's BN (NaN for a 3x3 layer without its own BN).
- `residual_ratio` (every residual unit, only for residual nets): ||F(x)|| / ||shortcut(x)|| per image,
  averaged, eval mode; F as added (after residual_scale and alpha), the shortcut after shortcut_scale.

Each probe returns device tensors with one value per layer; nothing here syncs with the host per layer, so a
caller copies all of a probe's values to the host in one go (`.tolist()` once).
"""
from __future__ import annotations

import contextlib
from functools import partial
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .models import CifarNet, ProbeRecorder

WEIGHT_METRICS = ("grad_norm", "input_grad_norm", "update_ratio")
RESPONSE_METRICS = ("response_std", "response_std_batch", "bn_gamma", "bn_beta_std", "residual_ratio")


def layer_names(model: CifarNet) -> dict[str, list[str]]:
    """{metric: layer names in order} for every metric this net records (see the module docstring)."""
    weights = [n for n, _ in model.weight_layers()]
    responses_ = [n for n, _ in model.response_layers()]
    names = {m: weights for m in WEIGHT_METRICS} | {"response_std": responses_, "response_std_batch": responses_}
    if _has_bn(model):
        names |= {"bn_gamma": responses_, "bn_beta_std": responses_}
    units = [n for n, _ in model.residual_units()]
    if units:
        names["residual_ratio"] = units
    return names


def _has_bn(model: CifarNet) -> bool:
    return any(layer.norm_layer() is not None for _, layer in model.response_layers())


def grad_norms(weights: list[torch.nn.Parameter]) -> torch.Tensor:
    """L2 norms of the gradients of `weights` (missing gradients count as 0), as one float32 device tensor."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in weights]
    return torch.stack(torch._foreach_norm(grads)).float()


@contextlib.contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """Training mode with every BN normalising by the batch's own statistics and leaving its running statistics
    and batch counter untouched (a BN that does not track statistics in training mode updates nothing)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.track_running_stats for m in bns]
    was_training = model.training
    model.train()
    for m in bns:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m, track in zip(bns, saved):
            m.track_running_stats = track
        model.train(was_training)


def _recorded_forward(model: CifarNet, images: torch.Tensor, autocast) -> ProbeRecorder:
    recorder = ProbeRecorder()
    model.attach(recorder)
    try:
        with (autocast or contextlib.nullcontext)():
            model(images)
    finally:
        model.attach(None)
    return recorder


def bn_parameters(model: CifarNet) -> dict[str, torch.Tensor]:
    """{"bn_gamma": mean |gamma|, "bn_beta_std": std(beta)} per 3x3 layer's BN; {} for a net without BN."""
    if not _has_bn(model):
        return {}
    gammas, betas = [], []
    device = next(model.parameters()).device
    nan = torch.full((), float("nan"), device=device)
    for _, layer in model.response_layers():
        bn = layer.norm_layer()
        gammas.append(bn.weight.detach().float().abs().mean() if bn is not None else nan)
        betas.append(bn.bias.detach().float().std() if bn is not None else nan)
    return {"bn_gamma": torch.stack(gammas), "bn_beta_std": torch.stack(betas)}


@torch.no_grad()
def responses(model: CifarNet, images: torch.Tensor, autocast=None) -> dict[str, torch.Tensor]:
    """The response metrics on `images`: {"response_std", "response_std_batch", "bn_gamma", "bn_beta_std",
    "residual_ratio"} as 1-D device tensors (the last three only where the net has BN / residual units).

    Two forward passes: eval mode (running statistics; also the residual ratios) and training mode with the
    batch's own statistics, BN buffers untouched. The model's train/eval mode is restored afterwards.
    `autocast` is a context-manager factory (or None)."""
    was_training = model.training
    try:
        model.eval()
        running = _recorded_forward(model, images, autocast)
        with batch_statistics(model):
            batch = _recorded_forward(model, images, autocast)
    finally:
        model.train(was_training)
    out = {"response_std": torch.stack(running.response_std), "response_std_batch": torch.stack(batch.response_std)}
    out |= bn_parameters(model)
    if running.residual_ratio:
        out["residual_ratio"] = torch.stack(running.residual_ratio)
    return out


class InputGradNorms:
    """Records ||dLoss/dx|| for the input x of every layer in `weight_layers()` (same order as `grad_norm`)
    during the backward passes run inside a `with` block; outside one nothing is hooked, so training steps
    without probes pay nothing.

        with InputGradNorms(net) as probe:
            loss = criterion(net(x), y); loss.backward()
        norms = probe.norms()   # 1-D device tensor; 0 for a layer no gradient reached

    The net's own input gets a gradient only inside the block (for the stem's value). Works on an eager
    module: a compiled one does not see hooks added after compilation."""

    def __init__(self, model: CifarNet) -> None:
        self.modules = [model.get_submodule(name) for name, _ in model.weight_layers()]
        self.device = next(model.parameters()).device
        self._values: list[torch.Tensor | None] = []
        self._handles: list = []

    def __enter__(self) -> "InputGradNorms":
        self._values = [None] * len(self.modules)
        self._handles = [m.register_forward_pre_hook(partial(self._pre_hook, i)) for i, m in enumerate(self.modules)]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _pre_hook(self, i: int, _module, args):
        if not torch.is_grad_enabled():
            return None
        x, replaced = args[0], None
        if not x.requires_grad:  # the net's input: a leaf that now asks for its gradient
            x = replaced = x.detach().requires_grad_(True)
        x.register_hook(partial(self._store, i))
        return (replaced, *args[1:]) if replaced is not None else None

    def _store(self, i: int, grad: torch.Tensor) -> None:
        self._values[i] = grad.detach().float().norm()

    def norms(self) -> torch.Tensor:
        zero = torch.zeros((), device=self.device)
        return torch.stack([v if v is not None else zero for v in self._values])


def weight_snapshot(weights: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    """Copies of `weights` (for `update_ratios` after the optimizer step)."""
    return torch._foreach_mul([p.detach() for p in weights], 1.0)


def update_ratios(weights: list[torch.nn.Parameter], before: list[torch.Tensor]) -> torch.Tensor:
    """||W - W_before|| / ||W_before|| per weight, as one float32 device tensor (NaN where W_before is 0)."""
    now = [p.detach() for p in weights]
    step = torch.stack(torch._foreach_norm(torch._foreach_sub(now, before))).float()
    size = torch.stack(torch._foreach_norm(before)).float()
    return torch.where(size > 0, step / size.clamp_min(torch.finfo(torch.float32).tiny), torch.full_like(size, float("nan")))


def initial_gradients(model: CifarNet, images: torch.Tensor, labels: torch.Tensor,
                      autocast: Callable | None = None) -> dict[str, torch.Tensor]:
    """{"grad_norm", "input_grad_norm"} of one forward and backward pass of the cross-entropy on (images,
    labels), in training mode with the batch's own BN statistics (BN buffers untouched) and no optimizer step:
    the gradients a net has before it has learnt anything. The parameters' gradients are cleared afterwards."""
    weights = [p for _, p in model.weight_layers()]
    model.zero_grad(set_to_none=True)
    try:
        with batch_statistics(model), InputGradNorms(model) as probe:
            with (autocast or contextlib.nullcontext)():
                out = model(images)
            F.cross_entropy(out.float(), labels).backward()
        return {"grad_norm": grad_norms(weights), "input_grad_norm": probe.norms()}
    finally:
        model.zero_grad(set_to_none=True)
