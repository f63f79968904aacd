"""What a network costs: parameters and multiply-adds of one forward pass."""
from __future__ import annotations

import math
import warnings

import torch
from torch import nn


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def forward_macs(model: nn.Module, image_size: int = 32) -> int:
    """Multiply-adds of one forward pass of one image (convolutions and the head)."""
    total = 0

    def hook(m, _inp, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out.numel() * m.in_channels // m.groups * math.prod(m.kernel_size)
        elif isinstance(m, nn.Linear):
            total += m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        was_training = model.training
        model.eval()
        # oneDNN prepares each convolution shape on its first call (seconds for a deep net, once per process);
        # the plain kernels count one image at once
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's note on TF32, which setting the flags touches
            with torch.backends.mkldnn.flags(enabled=False):
                model(torch.zeros(1, model.spec.in_channels, image_size, image_size))
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return total
