"""Probes: what the lab measures inside a network besides its error.

- Gradient norms: the L2 norm of the gradient of every conv and linear weight, in network order.
- Layer responses (Fig. 7): the standard deviation over all elements of each 3x3 conv's output after BN, before
  the ReLU or the addition, with the model in eval mode on a fixed held-out batch.
- Residual ratio: per residual unit, ||F(x)|| / ||shortcut(x)||, per image, averaged over the batch.

Each probe returns a device tensor with one value per layer; nothing here syncs with the host per layer, so a
caller copies all of a probe's values to the host in one go (`.tolist()` once).
"""
from __future__ import annotations

import torch

from .models import CifarNet, ProbeRecorder


def grad_norms(weights: list[torch.nn.Parameter]) -> torch.Tensor:
    """L2 norms of the gradients of `weights` (missing gradients count as 0), as one float32 device tensor."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in weights]
    return torch.stack(torch._foreach_norm(grads)).float()


@torch.no_grad()
def responses(model: CifarNet, images: torch.Tensor, autocast=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(response std per 3x3 layer, residual ratio per residual unit) on `images`, in eval mode.

    The model's train/eval mode is restored afterwards. `autocast` is a context-manager factory (or None).
    """
    was_training = model.training
    model.eval()
    recorder = ProbeRecorder()
    model.attach(recorder)
    try:
        if autocast is not None:
            with autocast():
                model(images)
        else:
            model(images)
    finally:
        model.attach(None)
        model.train(was_training)
    device = images.device
    std = torch.stack(recorder.response_std) if recorder.response_std else torch.zeros(0, device=device)
    ratio = torch.stack(recorder.residual_ratio) if recorder.residual_ratio else torch.zeros(0, device=device)
    return std, ratio
