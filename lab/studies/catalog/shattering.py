"""Shattered gradients (Balduzzi et al. 2017): how correlated the input gradients of nearby inputs are, in plain
and residual nets of growing depth, at initialisation and after training.

Each run of the training arms gets two shatter jobs (lab.analysis.shatter: 256 inputs on a line between two
validation images, the input gradient of the loss at each): one of the net at initialisation (the run's seed,
exactly the trainer's step-0 net; it needs no training) and one of the trained net. The number compared is the
summary correlation: that of neighbouring inputs on the line.

At the cpu budget the 110-layer nets are measured at initialisation only: trained at that budget they cost two
thirds of the study (468 s plain, 518 s residual a run, 2 cores), and the init measurement, Balduzzi et al.'s main
one, needs no training. Their runs train one logging window (`INIT_ONLY_ITERATIONS`), just so that the stored run
the init jobs analyse exists; the trained comparison is made at the deepest trained depth.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ...analysis.figures import shatter_depth, shatter_distance
from .. import common
from ..findings import Analysis, Metric
from ..registry import Arm, Study, register

DEPTHS = {"smoke": (8, 14), "cpu": (20, 56, 110), "paper": (20, 56, 110)}
INIT_ONLY = {"smoke": (), "cpu": (110,), "paper": ()}   # depths measured at initialisation only
INIT_ONLY_ITERATIONS = 20                                 # what their runs train: one logging window
WHEN = {"init": dict(at="init"), "trained": dict()}

CORRELATION = Metric("gradient correlation of neighbouring inputs", False, "has more correlated gradients than",
                     "has less correlated gradients than")


def net(kind: str, depth: int) -> str:
    return f"{'plain' if kind == 'plain' else 'resnet'}-{depth}"


def net_arm(budget: str, kind: str, depth: int) -> str:
    """The training arm of a net: 'plain-56', or 'plain-110 (init only)' where only its initialisation is used."""
    return net(kind, depth) + (" (init only)" if depth in INIT_ONLY[budget] else "")


def shattering(kind: str, depth: int, when: str) -> str:
    return f"shattering of {net(kind, depth)} ({'at init' if when == 'init' else 'trained'})"


def measured(budget: str, when: str) -> tuple[int, ...]:
    """The depths shattering is measured at: all at init; trained, those not measured at init only (smoke: the
    deepest only, to keep the tests short)."""
    if when == "init":
        return DEPTHS[budget]
    trained = tuple(d for d in DEPTHS[budget] if d not in INIT_ONLY[budget])
    return trained[-1:] if budget == "smoke" else trained


def grid(budget: str) -> list[Arm]:
    nets = [(k, d) for k in ("plain", "residual") for d in DEPTHS[budget]]
    short = dict(iterations=INIT_ONLY_ITERATIONS)
    return [Arm(net_arm(budget, k, d), dict(kind=k, depth=d, **(short if d in INIT_ONLY[budget] else {})))
            for k, d in nets] + \
        [Arm(shattering(k, d, w), dict(o), job="shatter", of=net_arm(budget, k, d)) for w, o in WHEN.items()
         for k, d in nets if d in measured(budget, w)]


def correlation(result: dict) -> float | None:
    return result["summary"]["correlation"]


def compare(data, question: str, a: tuple[str, int], b: tuple[str, int], when: str):
    """Nets a and b ((kind, depth)) on their summary correlation, at initialisation or trained."""
    label = "at init" if when == "init" else "trained"
    return common.compare_results(data, question, shattering(*a, when), shattering(*b, when), correlation, CORRELATION,
                                  names=(f"{net(*a)} {label}", f"{net(*b)} {label}"))


def analyse(data) -> Analysis:
    depths = DEPTHS[data.plan.budget]
    low, deep = depths[0], depths[-1]
    trained = measured(data.plan.budget, "trained")[-1]
    findings = [
        compare(data, f"At initialisation, are resnet-{deep}'s gradients more correlated than plain-{deep}'s?",
                ("residual", deep), ("plain", deep), "init"),
        compare(data, f"At initialisation, do the plain net's gradients shatter with depth ({low} to {deep} layers)?",
                ("plain", deep), ("plain", low), "init"),
        compare(data, f"At initialisation, do the residual net's gradients shatter with depth ({low} to {deep} "
                "layers)?", ("residual", deep), ("residual", low), "init"),
        compare(data, f"After training, are resnet-{trained}'s gradients more correlated than plain-{trained}'s?",
                ("residual", trained), ("plain", trained), "trained"),
    ]
    rows = []
    for w in WHEN:
        for k in ("plain", "residual"):
            for d in measured(data.plan.budget, w):
                values = [v for v in map(correlation, common.analysis_results(data, shattering(k, d, w)))
                          if v is not None]
                rows.append(dict(arm=shattering(k, d, w), kind=k, depth=d, when=w, results=len(values),
                                 correlation_mean=float(np.mean(values)) if values else None,
                                 correlation_sd=float(np.std(values, ddof=1)) if len(values) > 1 else None))
    table = pd.DataFrame(rows)
    return Analysis(findings, {"correlations": common.table_numbers(table)}, {"correlations": table})


def _all(data) -> list[dict]:
    return [r for w in WHEN for k in ("plain", "residual") for d in measured(data.plan.budget, w)
            for r in common.analysis_results(data, shattering(k, d, w))]


def figures(data) -> dict:
    found = _all(data)
    return {
        "shatter-depth": ("Gradient correlation vs depth, at initialisation and trained", shatter_depth(found)),
        "shatter-distance": ("Gradient correlation vs input distance", shatter_distance(found)),
        "finals": ("Final errors of the trained nets", common.finals_figure(
            data, [net(k, d) for k in ("plain", "residual") for d in DEPTHS[data.plan.budget]
                   if d not in INIT_ONLY[data.plan.budget]])),
    }


register(Study(
    id="shattering",
    title="Shattered gradients (Balduzzi et al.)",
    question="Do the gradients of nearby inputs decorrelate (shatter) with depth in plain nets but much less in "
             "residual nets, at initialisation and after training?",
    literature=(
        "Balduzzi et al. (2017): the correlation between the gradients at nearby inputs decays exponentially with "
        "depth in plain feed-forward nets, whose gradients come to look like white noise, and sublinearly in "
        "residual nets; batch norm does not prevent it in plain nets. They measure it on 256 inputs on a line, "
        "the gradient of one output with respect to each input (here the loss, on a line between two validation "
        "images). Their exact decay rates and toy setup are not quoted here (unconfirmed)."
    ),
    grid={b: grid(b) for b in DEPTHS},
    analyse=analyse,
    figures=figures,
    order=150,
))
