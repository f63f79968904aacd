"""Registered model names (timm-style): resnet56, plain20, resnet164 (bottleneck), preresnet110 (full
pre-activation), inception26 / resinception26 (Inception units), ...; the ImageNet nets of Table 1 as resnet18,
resnet34, resnet50, resnet101, resnet152 and their plain twins plain18 ... plain152."""
from __future__ import annotations

import re
from typing import Callable

from .net import CifarNet, build_net
from .spec import IMAGENET_STAGES, ConfigError

_REGISTRY: dict[str, Callable[..., CifarNet]] = {}


def register(name: str, kind: str, depth: int, **fixed) -> None:
    def make(**options) -> CifarNet:
        return build_net(kind, depth, **{**fixed, **options})

    make.__doc__ = f"{kind} net, depth {depth}" + (f", {fixed}" if fixed else "")
    _REGISTRY[name] = make


for _d in (20, 32, 44, 56, 110, 1202):
    register(f"resnet{_d}", "residual", _d)
    register(f"plain{_d}", "plain", _d)
for _d in (164, 1001):
    register(f"resnet{_d}", "residual", _d, block="bottleneck")
    register(f"plain{_d}", "plain", _d, block="bottleneck")
# He et al. 2016: full pre-activation, basic units at 6n+2 and the 164-layer bottleneck net
for _d in (20, 56, 110):
    register(f"preresnet{_d}", "residual", _d, unit="preact")
register("preresnet164", "residual", 164, block="bottleneck", unit="preact")
for _d in (26, 50):
    register(f"inception{_d}", "plain", _d, block="inception")
    register(f"resinception{_d}", "residual", _d, block="inception")
# the paper's ImageNet nets (Table 1), 1000 classes and shortcut B, as torchvision's resnet18 ... resnet152
for _d, (_block, _) in IMAGENET_STAGES.items():
    register(f"resnet{_d}", "residual", _d, family="imagenet", block=_block, shortcut="B", num_classes=1000)
    register(f"plain{_d}", "plain", _d, family="imagenet", block=_block, num_classes=1000)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, in a natural order."""
    rx = re.compile("^" + re.escape(pattern).replace(r"\*", ".*") + "$")
    key = lambda n: (re.sub(r"\d+", "", n), int(re.sub(r"\D+", "", n) or 0))  # noqa: E731
    return sorted((n for n in _REGISTRY if rx.match(n)), key=key)


def create_model(name: str, **options) -> CifarNet:
    """Build a registered model by name; unknown names are refused with the list of known ones."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    return _REGISTRY[name](**options)
