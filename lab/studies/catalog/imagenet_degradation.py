"""Degradation on ImageNet-style data (the paper's Fig. 4 and Table 2): plain-34 trains worse than plain-18,
ResNet-34 better than ResNet-18, on an image folder the user names (for example Imagenette).

The nets are the paper's Table 1 (the `imagenet` family, shortcut B). Budgets:
- `smoke`: the generated image folder (`lab.imagefolder.synthetic_folder`: the lab's synthetic set as PNG files)
  at 64 px, eighth-width nets, seconds a run: for the tests.
- `cpu`: the image folder given with `--data` at 64 px, quarter-width nets (about the cost of the cifar studies'
  half-width 56-layer nets at the cpu budget), the cpu budget's schedule.
- `paper`: the image folder given with `--data` at 160 px (Imagenette's 160 px release), full width, batches of
  256 at lr 0.1, /10 at a third and two thirds, for a GPU; with ResNet-50 as a deeper arm (bottleneck units).
"""
from __future__ import annotations

from ...run_figures import depth_summary
from ...imagefolder import synthetic_folder
from ...models import IMAGENET_STAGES
from ...reference import cite
from .. import comparisons
from ..findings import Analysis
from ..registry import Arm, Study, register

NETS = {"smoke": (18, 34), "cpu": (18, 34), "paper": (18, 34)}
DEEPER = {"paper": (50,)}   # residual only: the paper's bottleneck nets
DATA = {
    "smoke": dict(image_folder=str(synthetic_folder()), image_size=64, width=0.125),
    "cpu": dict(image_size=64, width=0.25),
    "paper": dict(image_size=160, batch_size=256, iterations=5000, milestones=(1 / 3, 2 / 3), augment=True,
                  eval_every=500, eval_images=4000, checkpoint_every=1000),
}


def net(kind: str, depth: int) -> str:
    return f"{'plain' if kind == 'plain' else 'resnet'}-{depth}"


def arm(budget: str, kind: str, depth: int) -> Arm:
    block = IMAGENET_STAGES[depth][0]
    options = dict(kind=kind, depth=depth, family="imagenet", block=block, shortcut="B", dataset="imagefolder",
                   **DATA[budget])
    return Arm(net(kind, depth), options)


def grid(budget: str) -> list[Arm]:
    arms = [arm(budget, k, d) for k in ("plain", "residual") for d in NETS[budget]]
    return arms + [arm(budget, "residual", d) for d in DEEPER.get(budget, ())]


def analyse(data) -> Analysis:
    low, high = 18, 34
    findings = [
        comparisons.compare_arms(data, "Does the plain net train worse as it gets deeper?", net("plain", high),
                            net("plain", low)),
        comparisons.compare_arms(data, "Does the residual net train better as it gets deeper?", net("residual", high),
                            net("residual", low)),
    ]
    findings += [comparisons.compare_arms(data, f"Does the residual net train better than the plain net at {d} layers?",
                                     net("residual", d), net("plain", d)) for d in (low, high)]
    names = {a.name for a in data.plan.arms}
    findings += [comparisons.compare_arms(data, f"Does ResNet-{d} (bottleneck units) train better than ResNet-34?",
                                     net("residual", d), net("residual", high))
                 for d in (50, 101, 152) if net("residual", d) in names]
    table = comparisons.arm_table(data)
    return Analysis(findings, {"arms": comparisons.table_numbers(table)}, {"arms": table})


def figures(data) -> dict:
    return {
        "curves": ("Training curves (Fig. 4)", comparisons.fig6_figure(
            data, title="Training curves (Fig. 4): training error (thin, dashed), test error (bold)")),
        "depth": ("Final error vs depth", depth_summary(data.frame(("done",)))),
        "finals": ("Final errors per arm", comparisons.finals_figure(data)),
    }


register(Study(
    id="imagenet-degradation",
    title="Degradation on ImageNet nets (Fig. 4)",
    question="On images of your own, does plain-34 train worse than plain-18 while ResNet-34 trains better than "
             "ResNet-18?",
    literature=(
        "He et al. (Fig. 4, Table 2, ImageNet, 10-crop top-1 error): plain-34 "
        f"{cite('imagenet-plain-34')} vs plain-18 {cite('imagenet-plain-18')}; ResNet-34 "
        f"{cite('imagenet-residual-34')} vs ResNet-18 {cite('imagenet-residual-18')}. The plain-34 net has higher "
        "training error throughout training, though its gradients are healthy with BN (section 4.1). Table 3: "
        f"ResNet-50 {cite('table3-resnet-50')}, ResNet-101 {cite('table3-resnet-101')}, ResNet-152 "
        f"{cite('table3-resnet-152')}. This study's runs differ from the paper's protocol beyond the data: smaller "
        "images (64 or 160 px instead of 224), random crops of the image resized to 256/224 of the crop and flips "
        "without the paper's scale and colour augmentation, a fixed schedule instead of dividing the rate on "
        "plateaus, and (at the smoke and cpu budgets) narrower nets."
    ),
    grid={b: grid(b) for b in NETS},
    analyse=analyse,
    figures=figures,
    published=("imagenet-plain-18", "imagenet-plain-34", "imagenet-residual-18", "imagenet-residual-34",
               "table3-resnet-50", "table3-resnet-101", "table3-resnet-152"),
    order=160,
))
