"""Plain and residual networks of He et al. (2015): the CIFAR nets of section 4.2 and their variants, and the
ImageNet nets of Table 1.

- `spec`: `NetSpec`, the allowed values of each option, depth rules (`valid_depths`, `nearest_depths`,
  `valid_spans`) and validation (`spec_problems`);
- `layers`: `ConvNorm`, option-A shortcut, `ProbeRecorder`; `units`: basic and bottleneck units and their
  activation placements; `inception`: the Inception unit;
- `net`: `CifarNet`, `build_net`, `net_for`; `imagenet`: `ImageNetNet` (Table 1) and torchvision's weights; `init`: initialisation schemes (He, Xavier, identity, Fixup);
- `deepen`: Net2DeeperNet surgery on a built net; `registry`: model names; `cost`: parameters and MACs.
"""
from .cost import count_parameters, forward_macs
from .deepen import DEEPEN_WHERE, deepen, deepen_problems
from .inception import InceptionUnit
from .init import fixup_, initialise
from .layers import ConvNorm, DiracConv2d, PadShortcut, ProbeRecorder
from .imagenet import ImageNetNet, load_torchvision_weights
from .net import CifarNet, build_net, net_for
from .model_names import create_model, list_models, register
from .spec import (
    BLOCKS, BOTTLENECK_EXPANSION, BRANCH_INITS, CONVS, FAMILIES, IMAGENET_STAGES, INCEPTION_BRANCH, INITS, KINDS, NORMS, SHORTCUTS,
    STAGE_WIDTHS, UNITS, ConfigError, NetSpec, default_span, nearest_depths, spec_problems, valid_depths,
    valid_spans,
)
from .units import Unit

__all__ = [
    "BLOCKS", "BOTTLENECK_EXPANSION", "BRANCH_INITS", "CONVS", "FAMILIES", "IMAGENET_STAGES", "ImageNetNet", "DEEPEN_WHERE", "INCEPTION_BRANCH", "INITS", "KINDS",
    "NORMS", "SHORTCUTS", "STAGE_WIDTHS", "UNITS", "CifarNet", "ConfigError", "ConvNorm", "DiracConv2d",
    "InceptionUnit", "NetSpec", "PadShortcut", "ProbeRecorder", "Unit", "build_net", "count_parameters",
    "create_model", "deepen", "deepen_problems", "default_span", "fixup_", "forward_macs", "initialise",
    "list_models", "load_torchvision_weights", "nearest_depths", "net_for", "register", "spec_problems", "valid_depths", "valid_spans",
]
