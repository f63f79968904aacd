"""Shattered gradients (Balduzzi et al. 2017): how correlated the input gradients of nearby inputs are, in plain
and residual nets of growing depth, at initialisation and after training.

Each run of the training arms gets two shatter jobs (lab.analysis.shatter: 256 inputs on a line between two
validation images, the input gradient of the loss at each): one of the net at initialisation (the run's seed,
exactly the trainer's step-0 net, with its BN running statistics recalibrated on 20 training batches first; it
needs no training) and one of the trained net. Balduzzi et al.'s laws concern nets with batch normalisation: a
fresh net's (0, 1) running statistics make every BN the identity in eval mode, and its gradients then answer
another question (residual nets decay exponentially too), so results made that way are not used
(lab.analysis.options.result_matches).

The number compared is the summary correlation: that of neighbouring inputs on the line (lag 1 of 255, distance
1/255 of the line). Why that lag: it is Balduzzi et al.'s quantity (the correlation of the gradients at nearby
inputs), and it is the lag that separates the nets best where depth matters. Measured at init at the cpu
budget (Fashion-MNIST, half width, BN recalibrated, 2 seeds, mean correlation at lags 1 / 8 / 32): plain-20 0.74 /
0.17 / 0.007, ResNet-20 0.95 / 0.70 / 0.33; plain-56 0.001 / 0.000 / 0.002, ResNet-56 0.86 / 0.37 / 0.07;
plain-110 0.002 / -0.001 / -0.001, ResNet-110 0.74 / 0.18 / 0.04. Lag 1 gives the largest gap at 56 and 110
layers (0.86, 0.73); at 20 layers a longer lag separates more (0.53 at lag 8 against 0.21), but at longer lags
the deep residual nets fall towards the white-noise level as well, so no longer lag serves every depth. With
the (0, 1) statistics the same nets give plain-56 0.63 and ResNet-56 0.97 at lag 1: the gap the study tests is
a property of the normalised nets.

The decay with depth is fitted at initialisation for each kind (mean over seeds per depth, in log space): an
exponential exp(-L / lambda) and a power law L^-beta. Balduzzi et al.: exponential for plain nets (their
gradients come to look like white noise), about 1/sqrt(L) (beta 0.5) for residual nets with BN. A mean within
three white-noise standard deviations of zero (lab.analysis.shatter.white_noise_level) is at the white-noise
level and bounds the fit instead of entering it.

At the cpu budget the 110-layer nets are measured at initialisation only: trained at that budget they cost two
thirds of the study (468 s plain, 518 s residual a run, 2 cores), and the init measurement, Balduzzi et al.'s main
one, needs no training. Their runs train one logging window (`INIT_ONLY_ITERATIONS`), just so that the stored run
the init jobs analyse exists; the trained comparison is made at the deepest trained depth.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ...analysis.result_figures import shatter_depth, shatter_distance
from ...analysis.shatter import white_noise_level
from .. import comparisons
from ..findings import Analysis, Finding, Metric
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
    return comparisons.compare_results(data, question, shattering(*a, when), shattering(*b, when), correlation, CORRELATION,
                                  names=(f"{net(*a)} {label}", f"{net(*b)} {label}"))


def analyse(data) -> Analysis:
    depths = DEPTHS[data.plan.budget]
    low, deep = depths[0], depths[-1]
    trained = measured(data.plan.budget, "trained")[-1]
    fits = {k: depth_fit(data, k) for k in ("plain", "residual")}
    findings = [
        compare(data, f"At initialisation, are resnet-{deep}'s gradients more correlated than plain-{deep}'s?",
                ("residual", deep), ("plain", deep), "init"),
        with_fit(compare(data, f"At initialisation, do the plain net's gradients shatter with depth ({low} to {deep} "
                         "layers)?", ("plain", deep), ("plain", low), "init"), fits["plain"]),
        with_fit(compare(data, f"At initialisation, do the residual net's gradients shatter with depth ({low} to "
                         f"{deep} layers)?", ("residual", deep), ("residual", low), "init"), fits["residual"]),
        compare(data, f"After training, are resnet-{trained}'s gradients more correlated than plain-{trained}'s?",
                ("residual", trained), ("plain", trained), "trained"),
    ]
    rows = []
    for w in WHEN:
        for k in ("plain", "residual"):
            for d in measured(data.plan.budget, w):
                values = [v for v in map(correlation, comparisons.analysis_results(data, shattering(k, d, w)))
                          if v is not None]
                rows.append(dict(arm=shattering(k, d, w), kind=k, depth=d, when=w, results=len(values),
                                 correlation_mean=float(np.mean(values)) if values else None,
                                 correlation_sd=float(np.std(values, ddof=1)) if len(values) > 1 else None))
    table = pd.DataFrame(rows)
    notes = ["At initialisation the BN running statistics are recalibrated on training batches before the "
             "gradients are taken (a fresh net's (0, 1) statistics would make every BN the identity); the "
             "correlation compared is that of neighbouring inputs on the line (see the study's docstring for why "
             "that distance)."]
    return Analysis(findings, {"correlations": comparisons.table_numbers(table), "depth_fit": fits},
                    {"correlations": table}, notes)


# --- the decay of the correlation with depth, at initialisation ---------------------------------------------------

PUBLISHED_LAW = {"plain": "exponential decay, the gradients coming to look like white noise",
                 "residual": "about 1/sqrt(L), exponent 0.5, with batch normalisation"}


def depth_fit(data, kind: str) -> dict:
    """The mean summary correlation at init per depth (over seeds) and its fits against depth L in log space:
    exp(-L / decay_length) and L^-exponent, each with its RMS error in log units. Means within three white-noise
    standard deviations of zero ('floor') are at the white-noise level: they stay out of the fits and bound the
    decay length instead."""
    depths, means, floors = [], [], []
    for d in measured(data.plan.budget, "init"):
        found = comparisons.analysis_results(data, shattering(kind, d, "init"))
        values = [v for v in map(correlation, found) if v is not None]
        if not values:
            continue
        depths.append(d)
        means.append(float(np.mean(values)))
        floors += [3 * white_noise_level(r["dimensions"], r["points"] - round(r["summary"]["distance_t"]
                                                                             * (r["points"] - 1)))
                   for r in found if r.get("dimensions")]
    return fit_decay(kind, depths, means, max(floors) if floors else 0.0)


def fit_decay(kind: str, depths: list[int], means: list[float], floor: float) -> dict:
    """`depth_fit` on given means per depth and white-noise floor."""
    usable = [(d, c) for d, c in zip(depths, means) if c > floor]
    out = {"kind": kind, "depths": depths, "means": means, "floor": floor,
           "white_noise": [d for d, c in zip(depths, means) if c <= floor], "fitted": [d for d, _ in usable]}
    if len(usable) >= 2:
        x = np.array([d for d, _ in usable], float)
        y = np.log([c for _, c in usable])
        for name, xs in (("exponential", x), ("power", np.log(x))):
            slope, intercept = np.polyfit(xs, y, 1)
            rmse = float(np.sqrt(np.mean((slope * xs + intercept - y) ** 2)))
            out[name] = {"slope": float(slope), "rmse": rmse}
        out["decay_length"] = -1 / out["exponential"]["slope"] if out["exponential"]["slope"] < 0 else math.inf
        out["exponent"] = -out["power"]["slope"]
    elif len(usable) == 1 and floor > 0:
        d0, c0 = usable[0]
        deeper = [d for d in out["white_noise"] if d > d0]
        if deeper:  # from c0 at d0 to below the floor by the next depth: exp(-L/lambda) with lambda at most this
            out["decay_length_at_most"] = (min(deeper) - d0) / math.log(c0 / floor)
    return out


def fit_sentence(fit: dict) -> str:
    """The fit in words, beside what Balduzzi et al. predict for this kind of net."""
    kind, net_name = fit["kind"], "plain" if fit["kind"] == "plain" else "resnet"
    if not fit["depths"]:
        return ""
    at = ", ".join(map(str, fit["depths"]))
    noise = [f"{net_name}-{d}" for d in fit["white_noise"]]
    noise_text = (f"{' and '.join(noise)} {'is' if len(noise) == 1 else 'are'} at the white-noise level (within "
                  f"{fit['floor']:.2g} of zero)") if noise else ""
    law = f"Balduzzi et al.: {PUBLISHED_LAW[kind]}"
    if "exponent" in fit:
        e, p = fit["exponential"], fit["power"]
        length = "no decay" if math.isinf(fit["decay_length"]) else f"exp(-L/{fit['decay_length']:.3g})"
        two = len(fit["fitted"]) == 2
        better = ("both fit two depths exactly" if two else
                  f"the {'exponential' if e['rmse'] < p['rmse'] else 'power law'} fits better")
        fits = (f"{length} (log-RMSE {e['rmse']:.2g}) or L^-{fit['exponent']:.2g} (log-RMSE {p['rmse']:.2g}): "
                f"{better}" if not two else f"{length} or L^-{fit['exponent']:.2g}: {better}")
        extra = f"; {noise_text}" if noise_text else ""
        return f"Decay with depth at init ({at} layers, mean over seeds): {fits}{extra} ({law})."
    if "decay_length_at_most" in fit:
        return (f"Decay with depth at init ({at} layers, mean over seeds): {noise_text}, so the correlation falls "
                f"at least as fast as exp(-L/{fit['decay_length_at_most']:.2g}) from {fit['fitted'][0]} layers "
                f"({law}).")
    if noise_text:
        return f"Decay with depth at init ({at} layers): {noise_text}; nothing to fit ({law})."
    return ""


def with_fit(finding: Finding, fit: dict) -> Finding:
    """The finding with the depth fit added to its sentence and numbers (the verdict carries it)."""
    sentence = fit_sentence(fit)
    if sentence and finding.decided:
        finding.text = f"{finding.text} {sentence}"
    finding.numbers = {**finding.numbers, "depth_fit": fit}
    return finding


def _all(data) -> list[dict]:
    return [r for w in WHEN for k in ("plain", "residual") for d in measured(data.plan.budget, w)
            for r in comparisons.analysis_results(data, shattering(k, d, w))]


def figures(data) -> dict:
    found = _all(data)
    return {
        "shatter-depth": ("Gradient correlation vs depth, at initialisation and trained", shatter_depth(found)),
        "shatter-distance": ("Gradient correlation vs input distance", shatter_distance(found)),
        "finals": ("Final errors of the trained nets", comparisons.finals_figure(
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
        "residual nets (about 1/sqrt(L) with batch normalisation; without it residual nets decay exponentially "
        "too, more slowly); batch norm does not prevent it in plain nets. For reference they compare the "
        "gradients with white noise (deep plain nets) and with Brownian motion, brown noise (shallow nets). They "
        "measure it on 256 inputs on a line, the gradient of one output with respect to each input (here the "
        "loss, on a line between two validation images; at initialisation with the BN running statistics "
        "recalibrated on training batches, since a fresh net's make every BN the identity). Their exact decay "
        "rates and toy setup are not quoted here (unconfirmed)."
    ),
    grid={b: grid(b) for b in DEPTHS},
    analyse=analyse,
    figures=figures,
    order=150,
))
