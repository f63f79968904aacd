"""Residual nets behave like ensembles (Veit et al. 2016): lesions of a trained ResNet against its plain twin.

Each trained run of the two training arms gets a lesion job (lab.analysis.lesion: every unit deleted alone, then
k random units at once). A residual unit loses its branch and keeps its shortcut; a plain unit becomes the
identity where it keeps the shape (the first unit of a later stage, a downsampling unit, cannot be deleted).
The two nets are compared on their shape-keeping units only, the units both can delete: per seed, the mean error
increase when one is deleted, the worst such increase, and the error with a quarter of them deleted at once (the
k-sets drawn from the shape-keeping units of each net, so k is the same fraction of the same candidates). The
ResNet's downsampling units (Veit et al.'s exception: deleting them hurts) are reported apart, against its own
shape-keeping units.
"""
from __future__ import annotations

import statistics

import pandas as pd

from ...analysis.result_figures import lesion_deleted, lesion_units
from ...analysis.lesion import DOWNSAMPLING, SHAPE_KEEPING, unit_kind
from .. import comparisons
from ..findings import Analysis, Metric, compare
from ..registry import Arm, Study, register

DEPTH = {"smoke": 14, "cpu": 56, "paper": 56}
# lesion options per budget: the cpu budget's 500 test images and 2 draws keep a ResNet-56 job to minutes
LESION = {"smoke": dict(images=128, draws=1), "cpu": dict(images=500, draws=2), "paper": dict(draws=5)}

SINGLE = Metric("mean test-error increase with one shape-keeping unit deleted", True,
                "suffers more from deleting one unit than", "suffers less from deleting one unit than")
DOWN = Metric("mean test-error increase with one unit deleted", True, "hurt more when deleted than",
              "hurt less when deleted than")
WORST = Metric("largest test-error increase with one shape-keeping unit deleted", True,
               "has a worse single deletion than", "has a milder worst single deletion than")


def net(kind: str, depth: int) -> str:
    return f"{'plain' if kind == 'plain' else 'resnet'}-{depth}"


def lesions(kind: str, depth: int) -> str:
    return f"lesions of {net(kind, depth)}"


def grid(budget: str) -> list[Arm]:
    d = DEPTH[budget]
    return [Arm(net(k, d), dict(kind=k, depth=d)) for k in ("residual", "plain")] + \
        [Arm(lesions(k, d), dict(LESION[budget]), job="lesion", of=net(k, d)) for k in ("residual", "plain")]


def single_increases(result: dict, kind: str = SHAPE_KEEPING) -> list[float]:
    """Error with each deletable unit of this kind ('shape-keeping' or 'downsampling') deleted alone minus the
    intact net's."""
    base = result["baseline"]["error"]
    return [e - base for row, e in zip(result["unit_table"], result["single"]["error"])
            if e is not None and base is not None and unit_kind(row) == kind]


def mean_increase(result: dict, kind: str = SHAPE_KEEPING) -> float | None:
    values = single_increases(result, kind)
    return statistics.fmean(values) if values else None


def downsampling_increase(result: dict) -> float | None:
    return mean_increase(result, DOWNSAMPLING)


def worst_increase(result: dict) -> float | None:
    values = single_increases(result, SHAPE_KEEPING)
    return max(values) if values else None


def deleted_error(k: int):
    def value(result: dict) -> float | None:
        d = result["deleted"]
        return d["error_mean"][d["k"].index(k)] if k in d["k"] else None
    return value


def quarter(data, *arms: str) -> int:
    """A quarter of the shape-keeping units both nets can delete (at least 1): the k of the many-deletions
    question, the same for both nets."""
    counts = [len(r["deleted"].get("candidates") or r["deleted"]["k"]) for arm in arms
              for r in comparisons.analysis_results(data, arm)[:1]]
    return max(1, min(counts) // 4) if counts else 1


def analyse(data) -> Analysis:
    d = DEPTH[data.plan.budget]
    res, plain = lesions("residual", d), lesions("plain", d)
    k = quarter(data, res, plain)
    many = Metric(f"test error with {k} shape-keeping unit{'s' if k != 1 else ''} deleted at once", True,
                  "has a higher test error with units deleted than", "has a lower test error with units deleted than")
    findings = [
        comparisons.compare_results(data, f"Does deleting a single shape-keeping unit hurt {net('residual', d)} less "
                               f"than {net('plain', d)}?", res, plain, mean_increase, SINGLE),
        comparisons.compare_results(data, "Among the shape-keeping units, is the worst single deletion milder in the "
                               "residual net?", res, plain, worst_increase, WORST),
        comparisons.compare_results(data, f"With {k} shape-keeping unit{'s' if k != 1 else ''} deleted at once, is the "
                               "residual net's error lower?", res, plain, deleted_error(k), many),
        downsampling_finding(data, res, d),
    ]
    rows = []
    for arm in (res, plain):
        found = comparisons.analysis_results(data, arm)
        means = [v for v in map(mean_increase, found) if v is not None]
        worst = [v for v in map(worst_increase, found) if v is not None]
        down = [v for v in map(downsampling_increase, found) if v is not None]
        rows.append(dict(arm=arm, results=len(found),
                         intact_error=statistics.fmean(100 * r["baseline"]["error"] for r in found) if found else None,
                         mean_single_increase=100 * statistics.fmean(means) if means else None,
                         worst_single_increase=100 * statistics.fmean(worst) if worst else None,
                         downsampling_single_increase=100 * statistics.fmean(down) if down else None))
    table = pd.DataFrame(rows)
    images = LESION[data.plan.budget].get("images")
    notes = [f"Errors on {f'the first {images}' if images else 'all'} test images; an increase is in points of test "
             "error over the intact net's. Plain and residual nets are compared on their shape-keeping units, the "
             "units both can delete (a plain net's downsampling units cannot become the identity); the ResNet's "
             "downsampling units are reported apart (downsampling_single_increase)."]
    return Analysis(findings, {"lesions": comparisons.table_numbers(table), "k": k}, {"lesions": table}, notes)


def downsampling_finding(data, arm: str, depth: int):
    """Veit et al.'s exception within the ResNet: its downsampling units against its shape-keeping units, per
    seed (paired)."""
    question = f"In {net('residual', depth)}, does deleting a downsampling unit hurt more than a shape-keeping one?"
    gone = comparisons.missing_results(data, question, arm)
    if gone:
        return gone
    found = comparisons.analysis_results(data, arm)
    return compare(question, "its downsampling units", "its shape-keeping units",
                   comparisons.by_seed(found, downsampling_increase), comparisons.by_seed(found, mean_increase), DOWN,
                   unfinished=data.unfinished(net("residual", depth)))


def figures(data) -> dict:
    d = DEPTH[data.plan.budget]
    found = comparisons.analysis_results(data, lesions("residual", d)) + comparisons.analysis_results(data, lesions("plain", d))
    return {
        "lesion-units": ("Test error with one unit deleted (Veit Fig. 3)", lesion_units(found)),
        "lesion-deleted": ("Test error with k units deleted (Veit Fig. 5a)", lesion_deleted(found)),
        "finals": ("Final errors of the trained nets", comparisons.finals_figure(data)),
    }


register(Study(
    id="ensembles",
    title="Residual nets as ensembles (lesions)",
    question="Does deleting units at test time barely hurt a trained ResNet, while it breaks its plain twin?",
    literature=(
        "Veit, Wilber, Belongie (2016), a trained CIFAR-10 ResNet-110 (54 units): deleting any single unit, shortcut "
        "kept, barely changes the test error, except the downsampling units; deleting a layer of a VGG-style plain "
        "net drops the accuracy to near chance; deleting several units or reordering them raises the error "
        "smoothly. They read this as the ResNet behaving like an ensemble of many paths of different lengths "
        "(lengths follow Binomial(54, 1/2); most of the gradient comes from paths of 5 to 17 units). No per-unit "
        "numbers are quoted here."
    ),
    grid={b: grid(b) for b in DEPTH},
    analyse=analyse,
    figures=figures,
    order=130,
))
