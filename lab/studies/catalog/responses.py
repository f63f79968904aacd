"""Layer responses (the paper's Fig. 7), and why plain-56's early layers respond so strongly.

Metrics (PLAN "Layer metrics"): response_std (eval mode, running BN statistics: the historic measure),
response_std_batch (the fixed batch's own BN statistics), bn_gamma (mean |gamma| of the layer's BN), bn_beta_std
(std of its beta). At step 0 the running statistics are still the initial ones (mean 0, variance 1), so the
running-statistics response there is the raw convolution output; the batch-statistics one is the normalised
response.
"""
from __future__ import annotations

import math

import numpy as np

from ...run_figures import response_profile
from .. import comparisons
from ..arm_figures import layer_lines
from ..findings import Analysis, Metric, compare, unavailable
from ..registry import Arm, Study, register

DEPTHS = {"smoke": (8, 14), "cpu": (20, 56), "paper": (20, 56)}
EXTRA_RESIDUAL = {"paper": (110,)}     # Fig. 7 also shows ResNet-110
EXPLAIN = ("response_std_batch", "bn_gamma", "bn_beta_std")
EARLY = 1 / 3                          # "early layers": the first third of the 3x3 layers (plain-56: 18 of 55)

RESPONSE = Metric("mean layer response std (running BN statistics)", False,
                  "has larger layer responses than", "has smaller layer responses than")
GAMMA = Metric("mean BN |γ| of the first third of the layers (end of training)", False,
               "has larger early BN scales than", "has smaller early BN scales than")


def net(kind: str, depth: int) -> str:
    return f"{'plain' if kind == 'plain' else 'resnet'}-{depth}"


def layer_mean(df, early: bool = False) -> float:
    """Mean over layers of one recorded step (over the first third of the layers with `early`)."""
    if df.empty:
        return math.nan
    values = df.sort_values("layer")["value"].to_numpy(float)
    if early:
        values = values[: max(1, int(round(len(values) * EARLY)))]
    return float(np.nanmean(values))


def per_seed(data, arm, metric, when="last", early=False) -> list[float]:
    return [layer_mean(df, early) for df in comparisons.per_run_layers(data, arm, metric, when)]


def mean_of(values) -> float:
    values = [v for v in values if v == v]
    return float(np.mean(values)) if values else math.nan


def depths_of(data, kind):
    return sorted({int(a.arm.options["depth"]) for a in data.plan.arms if a.arm.options["kind"] == kind})


def analyse(data) -> Analysis:
    plain_depths, res_depths = depths_of(data, "plain"), depths_of(data, "residual")
    findings = []
    for d in plain_depths:
        findings.append(compare(f"Are the residual net's responses smaller than the plain net's at {d} layers?",
                                net("residual", d), net("plain", d), per_seed(data, net("residual", d), "response_std"),
                                per_seed(data, net("plain", d), "response_std"), RESPONSE,
                                data.unfinished(net("residual", d), net("plain", d))))
    deep, shallow = net("residual", res_depths[-1]), net("residual", res_depths[0])
    findings.append(compare("Are a deeper ResNet's responses smaller?", deep, shallow,
                            per_seed(data, deep, "response_std"), per_seed(data, shallow, "response_std"), RESPONSE,
                            data.unfinished(deep, shallow)))
    pdeep, pshallow = net("plain", plain_depths[-1]), net("plain", plain_depths[0])
    question = f"Why are {pdeep}'s early responses large?"
    numbers, notes = {}, []
    if all(data.recorded(arm, m) for arm in (pdeep, pshallow) for m in EXPLAIN):
        findings.append(compare(question, pdeep, pshallow, per_seed(data, pdeep, "bn_gamma", early=True),
                                per_seed(data, pshallow, "bn_gamma", early=True), GAMMA, data.unfinished(pdeep, pshallow)))
        for arm in (pdeep, pshallow):
            numbers[arm] = {
                "early_response_std_end": mean_of(per_seed(data, arm, "response_std", early=True)),
                "early_response_std_batch_end": mean_of(per_seed(data, arm, "response_std_batch", early=True)),
                "early_bn_gamma_end": mean_of(per_seed(data, arm, "bn_gamma", early=True)),
                "early_bn_beta_std_end": mean_of(per_seed(data, arm, "bn_beta_std", early=True)),
                "early_response_std_start": mean_of(per_seed(data, arm, "response_std", "first", early=True)),
                "early_response_std_batch_start": mean_of(per_seed(data, arm, "response_std_batch", "first", early=True)),
            }
        notes.append(explanation(pdeep, pshallow, numbers, findings[-1]))
    else:
        findings.append(unavailable(question, f"Explaining {pdeep}'s early responses needs the probes "
                                    f"{', '.join(EXPLAIN)}, which these runs did not record."))
    table = comparisons.arm_table(data)
    means = {arm: {"response_std_end": mean_of(per_seed(data, arm, "response_std"))} for arm in data.arm_names}
    return Analysis(findings, {"arms": comparisons.table_numbers(table), "responses": means, "explanation": numbers},
                    {"arms": table}, notes)


def explanation(deep: str, shallow: str, n: dict, gamma_finding) -> str:
    d, s = n[deep], n[shallow]
    text = (f"In the first third of {deep}'s 3x3 layers at the end of training the response std is "
            f"{d['early_response_std_end']:#.3g} with running BN statistics and {d['early_response_std_batch_end']:#.3g} "
            f"with the batch's own; their BN |γ| averages {d['early_bn_gamma_end']:#.3g} and std(β) "
            f"{d['early_bn_beta_std_end']:#.3g} ({shallow}: {s['early_response_std_end']:#.3g}, "
            f"{s['early_response_std_batch_end']:#.3g}, {s['early_bn_gamma_end']:#.3g}, {s['early_bn_beta_std_end']:#.3g}). "
            f"At step 0 (initial running statistics: the raw convolution output) the running-statistics std is "
            f"{d['early_response_std_start']:#.3g} and the batch-statistics std {d['early_response_std_batch_start']:#.3g}.")
    if gamma_finding.outcome == "effect" and gamma_finding.numbers.get("difference", 0) > 0:
        text += f" The large early responses of {deep} go with BN scales that grew larger than {shallow}'s."
    return text


def figures(data) -> dict:
    arms = data.arm_names

    def profiles(metric, when="last"):
        out = {}
        for a in arms:
            df = comparisons.mean_profile(data, a, metric, when)
            if not df.empty:
                out[comparisons.profile_label(data, a, metric)] = df
        return out

    out = {"responses": ("Layer responses at the end (Fig. 7), running BN statistics",
                         response_profile(profiles("response_std"), "Layer responses (Fig. 7): std, running BN statistics, end of training"))}
    if any(data.recorded(a, "response_std_batch", ("done", "running")) for a in arms):
        out["responses-batch"] = ("Layer responses at the end, batch statistics", response_profile(
            profiles("response_std_batch"), "Layer responses: std with the batch's own BN statistics, end of training"))
        out["start"] = ("Layer responses at step 0, batch statistics", response_profile(
            profiles("response_std_batch", "first"), "Layer responses at step 0 (batch statistics)"))
    else:
        out["start"] = ("Layer responses at step 0", response_profile(
            profiles("response_std", "first"),
            "Layer responses at step 0 (running statistics still initial: the raw convolution output)"))
    if any(data.recorded(a, "bn_gamma", ("done", "running")) for a in arms):
        out["bn-gamma"] = ("BN scale |γ| per layer", layer_lines(profiles("bn_gamma"), "BN |γ| per layer, end of training",
                                                                   "mean |γ|", log_y=True))
        out["bn-beta"] = ("BN shift spread std(β) per layer", layer_lines(
            profiles("bn_beta_std"), "std(β) per layer, end of training", "std(β)", log_y=True))
    out["finals"] = ("Final errors per arm", comparisons.finals_figure(data))
    return out


register(Study(
    id="responses",
    title="Layer responses (Fig. 7)",
    question="Are residual nets' layer responses smaller than plain nets', and smaller the deeper the ResNet?",
    literature=(
        "He et al. (Fig. 7, CIFAR-10): the std of each 3x3 layer's response (after BN, before the ReLU or the "
        "addition) is smaller in ResNets than in their plain twins, and smaller in ResNet-110 than in ResNet-56 and "
        "ResNet-20: residual functions are closer to zero than non-residual ones. The paper gives no numbers and does "
        "not say over which data the std is taken; the lab measures it on a fixed held-out batch, over all elements "
        "of a layer's output, with the running BN statistics (eval mode) and with the batch's own statistics."
    ),
    grid={b: [Arm(net(k, d), dict(kind=k, depth=d)) for k in ("plain", "residual") for d in ds]
          + [Arm(net("residual", d), dict(kind="residual", depth=d)) for d in EXTRA_RESIDUAL.get(b, ())]
          for b, ds in DEPTHS.items()},
    analyse=analyse,
    figures=figures,
    order=30,
))
