"""Published numbers (He et al. 2015 and public reproductions), for reference overlays and tables.

CIFAR-10 test error in percent. Each entry names its source so a plot can say where a point comes from.
"""
from __future__ import annotations

PAPER = "He et al. 2015 (arXiv:1512.03385)"

# (source, kind, depth) -> (mean test error %, sd or None, note)
CIFAR10_TEST_ERROR: list[dict] = [
    *[dict(source=f"{PAPER}, Table 6", kind="residual", depth=d, error=e, sd=None, note=n)
      for d, e, n in ((20, 8.75, ""), (32, 7.51, ""), (44, 7.17, ""), (56, 6.97, ""),
                      (110, 6.43, "best of 5; 6.61 ± 0.16 mean"), (1202, 7.93, ""))],
    dict(source=f"{PAPER}, Fig. 6 (read off the curve)", kind="plain", depth=20, error=9.0, sd=None, note="approximate"),
    dict(source=f"{PAPER}, Fig. 6 (read off the curve)", kind="plain", depth=56, error=13.0, sd=None, note="approximate"),
    *[dict(source="nabla0001/resnet (5 runs, 64k it)", kind=k, depth=d, error=e, sd=s, note="")
      for k, d, e, s in (("plain", 20, 9.78, 0.13), ("plain", 56, 12.95, 0.22), ("residual", 20, 8.51, 0.22),
                         ("residual", 56, 7.40, 0.27), ("residual", 110, 7.14, 0.20))],
    *[dict(source="akamaster/pytorch_resnet_cifar10 (best epoch, 200 ep)", kind="residual", depth=d, error=e, sd=None, note="best epoch")
      for d, e in ((20, 8.27), (32, 7.37), (44, 6.90), (56, 6.61), (110, 6.32))],
    *[dict(source="gcr/torch-residual-networks (200 ep)", kind="residual", depth=d, error=e, sd=None, note="")
      for d, e in ((20, 8.29), (32, 7.63), (44, 7.14), (56, 6.94), (110, 6.73))],
]

# Paper Table 6: parameters (option A, 10 classes, exact) and the paper's rounded figure
TABLE6_PARAMS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962, 1202: 19_421_274}

# ImageNet top-1 error % (Table 2, 10-crop): the deeper plain net is worse
IMAGENET_TOP1 = {("plain", 18): 27.94, ("plain", 34): 28.54, ("residual", 18): 27.88, ("residual", 34): 25.03}


def reference_points(dataset: str = "cifar10") -> list[dict]:
    """Reference test errors for a data set (only CIFAR-10 has published numbers here)."""
    return list(CIFAR10_TEST_ERROR) if dataset == "cifar10" else []
