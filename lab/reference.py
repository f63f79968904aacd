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


# --- numbers the studies quote (lab.studies) ---------------------------------------------------------------
# Each: key, the studies that quote it, what was measured, value (test error % unless `unit` says otherwise),
# sd (or None), source, and a note: "approximate" (read off a figure) or "unconfirmed" (not checked against
# the source's own text: show it as such).
PREACT = "He et al. 2016, Identity Mappings (arXiv:1603.05027)"
LI = "Li et al. 2018, loss landscapes (arXiv:1712.09913)"

STUDY_NUMBERS: list[dict] = [
    *[dict(key=f"table6-resnet-{d}", studies=("depth",), what=f"ResNet-{d}", value=e, sd=None,
           unit="% test error, CIFAR-10", source=f"{PAPER}, Table 6", note="")
      for d, e in ((20, 8.75), (32, 7.51), (44, 7.17), (56, 6.97), (110, 6.43))],
    dict(key="table6-resnet-110-mean", studies=("depth",), what="ResNet-110, mean of 5 runs", value=6.61, sd=0.16,
         unit="% test error, CIFAR-10", source=f"{PAPER}, Table 6", note=""),
    *[dict(key=f"fig6-plain-{d}", studies=("degradation",), what=f"plain-{d}", value=e, sd=None,
           unit="% test error, CIFAR-10", source=f"{PAPER}, Fig. 6 (read off the curve)", note="approximate")
      for d, e in ((20, 9.0), (56, 13.0))],
    *[dict(key=f"nabla-{k}-{d}", studies=("degradation",), what=f"{'plain' if k == 'plain' else 'ResNet'}-{d}",
           value=e, sd=s, unit="% test error, CIFAR-10", source="nabla0001/resnet (5 runs, 64k iterations)", note="")
      for k, d, e, s in (("plain", 20, 9.78, 0.13), ("plain", 56, 12.95, 0.22), ("residual", 20, 8.51, 0.22),
                         ("residual", 56, 7.40, 0.27))],
    *[dict(key=f"imagenet-{k}-{d}", studies=("degradation", "imagenet-degradation"), what=f"{'plain' if k == 'plain' else 'ResNet'}-{d}",
           value=e, sd=None, unit="% top-1 error, ImageNet (10-crop)", source=f"{PAPER}, Table 2", note="")
      for (k, d), e in IMAGENET_TOP1.items()],
    *[dict(key=f"table3-resnet-{d}", studies=("imagenet-degradation",), what=f"ResNet-{d}", value=e, sd=None,
           unit="% top-1 error, ImageNet (10-crop)", source=f"{PAPER}, Table 3", note="")
      for d, e in ((50, 22.85), (101, 21.75), (152, 21.43))],
    *[dict(key=f"li-{k}-{d}", studies=("degradation", "landscape"), what=f"{d} layers, {'with' if k == 'residual' else 'without'} shortcuts",
           value=e, sd=None, unit="% test error, CIFAR-10 (their schedule: 300 epochs, weight decay 5e-4)",
           source=LI, note="")
      for k, d, e in (("residual", 20, 7.37), ("plain", 20, 8.18), ("residual", 56, 5.89), ("plain", 56, 13.31),
                      ("residual", 110, 5.79), ("plain", 110, 16.44))],
    *[dict(key=f"table3-{name}", studies=("shortcuts",), what=what, value=e, sd=None,
           unit="% top-1 error, ImageNet (10-crop)", source=f"{PAPER}, Table 3", note="unconfirmed")
      for name, what, e in (("plain-34", "plain-34", 28.54), ("A", "ResNet-34 A", 25.03), ("B", "ResNet-34 B", 24.52),
                            ("C", "ResNet-34 C", 24.19))],
    *[dict(key=f"preact-shortcut-{name}", studies=studies, what=what, value=e, sd=None,
           unit="% test error, CIFAR-10, ResNet-110 (median of 5)", source=PREACT, note="")
      for name, studies, what, e in (
          ("original", ("shortcuts", "preactivation"), "identity shortcuts (original)", 6.61),
          ("scaling", ("shortcuts", "preactivation"), "constant scaling 0.5 on both paths", 12.35),
          ("exclusive-gating-6", ("preactivation",), "exclusive gating, gate bias -6", 8.70),
          ("exclusive-gating-7", ("preactivation",), "exclusive gating, gate bias -7", 9.81),
          ("shortcut-gating-0", ("preactivation",), "shortcut-only gating, bias 0", 12.86),
          ("shortcut-gating-6", ("preactivation",), "shortcut-only gating, bias -6", 6.91),
          ("conv", ("shortcuts", "preactivation"), "1x1 conv shortcut on every unit", 12.22))],
    *[dict(key=f"preact-{d}-{name}", studies=("bottleneck", "preactivation"),
           what=f"ResNet-{d} ({'bottleneck' if d == 164 else 'basic'}), {what}", value=e, sd=None,
           unit="% test error, CIFAR-10", source=PREACT, note="")
      for name, what, e110, e164 in (("original", "original units", 6.61, 5.93),
                                     ("bn-after-add", "BN after addition", 8.17, 6.50),
                                     ("relu-before-add", "ReLU before addition", 7.84, 6.14),
                                     ("relu-preact", "ReLU-only pre-activation", 6.71, 5.91),
                                     ("preact", "full pre-activation", 6.37, 5.46))
      for d, e in ((110, e110), (164, e164))],
    *[dict(key=f"preact-1001-{name}", studies=("preactivation",), what=what, value=e, sd=None,
           unit="% test error, CIFAR-10", source=PREACT, note="")
      for name, what, e in (("original", "ResNet-1001, original units", 7.61),
                            ("preact", "ResNet-1001, pre-activation", 4.92),
                            ("preact-batch64", "ResNet-1001, pre-activation, batch 64", 4.62))],
    dict(key="rezero-resnet56-speed", studies=("without-bn",), what="ReZero ResNet-56: faster convergence", value=32.0,
         sd=None, unit="% faster convergence, ResNet-56 on CIFAR-10", source="Bachlechner et al. 2020, ReZero "
         "(arXiv:2003.04887)", note=""),
]
_NUMBERS = {n["key"]: n for n in STUDY_NUMBERS}


def study_numbers(study: str) -> list[dict]:
    """The published numbers a study quotes, in the order they are listed above."""
    return [n for n in STUDY_NUMBERS if study in n["studies"]]


def cite(key: str, with_source: bool = False) -> str:
    """A published number as text: '6.61%', '≈ 13.0%' (read off a figure), '24.19% (unconfirmed)', with the
    sd where there is one ('12.95 ± 0.22%') and, with `with_source`, where it comes from."""
    n = _NUMBERS[key]
    unit = "%" if n["unit"].startswith("%") else f" {n['unit']}"
    text = f"{n['value']:.2f}" + (f" ± {n['sd']:.2f}" if n["sd"] is not None else "") + unit
    if n["note"] == "approximate":
        text = "≈ " + f"{n['value']:.1f}" + unit
    elif n["note"] == "unconfirmed":
        text += " (unconfirmed)"
    return text + (f" ({n['source']})" if with_source else "")
