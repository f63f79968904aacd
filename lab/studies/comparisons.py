"""Pieces most studies' analyses share: comparisons of two arms, the per-arm table, the standard figures."""
from __future__ import annotations

import math

import pandas as pd

from ..run_figures import training_curves
from ..series import mean_sd
from . import arm_figures as sfig
from .reader import StudyData
from .findings import NOT_AVAILABLE, TEST_ERROR, TRAIN_ERROR, Finding, Metric, compare, compare_speed
from .stats import iterations_to_target

COLUMNS = {"final_train_error": TRAIN_ERROR, "final_test_error": TEST_ERROR}


def missing_arm(data: StudyData, question: str, *arms: str) -> Finding | None:
    """A 'not available' finding when this build cannot run one of `arms` (None when it can run them all)."""
    gone = data.plan.unavailable()
    for arm in arms:
        if arm in gone:
            return Finding(question, NOT_AVAILABLE, f"{arm} cannot run in this build yet: {gone[arm]}.", {})
        if not data.has_arm(arm):
            return Finding(question, NOT_AVAILABLE, f"{arm} is not part of this study at the "
                           f"{data.plan.budget} budget.", {})
    return None


def compare_arms(data: StudyData, question: str, a: str, b: str, column: str = "final_train_error",
                 metric: Metric | None = None) -> Finding:
    """Arm a against arm b on a final value of their finished runs, paired by seed where both arms finished the
    same seeds (see findings.compare)."""
    gone = missing_arm(data, question, a, b)
    if gone:
        return gone
    return compare(question, a, b, data.finals_by_seed(a, column), data.finals_by_seed(b, column),
                   metric or COLUMNS[column], unfinished=data.unfinished(a, b))


def speeds(data: StudyData, arm: str) -> list[int | None]:
    """Per finished seed: the iteration at which the smoothed training error first reached the budget's target."""
    out = []
    done = set(data.runs(arm)["id"]) if not data.members.empty else set()
    for rid, steps, values in data.curves(arm, "train_error", statuses=("done",)):
        if rid in done:
            out.append(iterations_to_target(steps, values, data.budget.target_error))
    return out


def compare_speed_arms(data: StudyData, question: str, a: str, b: str) -> Finding:
    gone = missing_arm(data, question, a, b)
    if gone:
        return gone
    return compare_speed(question, a, b, speeds(data, a), speeds(data, b), data.budget.target_error,
                         data.total_iterations(a))


def beside_published(data: StudyData, entries, source: str, schedule_arm: str,
                     detail: str = "") -> tuple[list[dict], bool, list[str]]:
    """Each arm's final test error (mean, sd and seeds) beside its published number: (rows for the study's
    numbers, whether the runs are comparable with the publication, the note to show).

    `entries` are (row fields, label, arm, published text or None); the runs are comparable when they are CIFAR-10
    at the paper's 64k iterations (as `schedule_arm` ran), else the note says they show scale, not agreement;
    `detail` qualifies the published numbers (" (median of 5)")."""
    comparable = data.plan.dataset_name() == "cifar10" and data.total_iterations(schedule_arm) >= 64000
    rows, beside = [], []
    for fields, label, arm, published in entries:
        mean, sd, n = mean_sd([100 * v for v in data.finals(arm, "final_test_error")]) if data.has_arm(arm) \
            else (None, None, 0)
        rows.append(dict(fields, test_error_mean=mean, test_error_sd=sd, seeds=n, published=published))
        if n and published:
            beside.append(f"{label}: {mean:.2f} ± {sd:.2f}% here ({n} seed(s)) vs {published} published")
    notes = []
    if beside:
        where = ("same data set and schedule as the paper" if comparable else
                 f"the published numbers are CIFAR-10 at 64k iterations{detail}, these runs "
                 f"{data.plan.dataset_name()} at {data.total_iterations(schedule_arm)} iterations, so they show "
                 "scale, not agreement")
        notes.append(f"Test error beside {source} (" + where + "): " + "; ".join(beside) + ".")
    notes.append(deviations(data, schedule_arm))
    return rows, comparable, notes


def deviations(data: StudyData, arm: str) -> str:
    """How the arm's runs differ from the paper's protocol beyond data set and schedule: input normalisation,
    width, augmentation, and the classifier's init (the paper does not say it)."""
    pa = data.plan.arm(arm)
    cfg = pa.configs[0] if pa is not None and pa.configs else None
    found = []
    if cfg is not None and cfg.normalize != "pixel-mean":
        found.append("per-channel mean and std normalisation (the paper subtracts the per-pixel mean)")
    if cfg is not None and cfg.width != 1:
        found.append(f"nets at {cfg.width:g} of the paper's width")
    if cfg is not None and not cfg.augment:
        found.append("no augmentation (the paper pads, crops and flips)")
    found.append("He-normal init of the classifier too (the paper does not say how it initialises it)")
    return "These runs differ from the paper's protocol in: " + "; ".join(found) + "."


def diverged_at(runs: pd.DataFrame) -> list[int]:
    """The iterations at which these runs (StudyData.runs rows, seed order) diverged: the diverged ones' last
    iteration (a diverged run is a result)."""
    if runs.empty:
        return []
    return [int(i) for i in runs.loc[runs["status"] == "diverged", "iteration"].fillna(0)]


def iterations_phrase(at: list[int]) -> str:
    """'iteration 20' or 'iterations 20, 140' (the order given)."""
    return "iteration" + ("s " if len(at) > 1 else " ") + ", ".join(map(str, at))


def arm_table(data: StudyData, speed: bool = False) -> pd.DataFrame:
    """One row per arm: seeds by state, final training and test error (% mean and sd over finished seeds),
    parameters, and (with `speed`) the mean iteration at which the target training error was first reached."""
    rows = []
    for arm in data.arm_names:
        counts = data.counts(arm)
        tr, tr_sd, n = mean_sd([100 * v for v in data.finals(arm, "final_train_error")])
        te, te_sd, _ = mean_sd([100 * v for v in data.finals(arm, "final_test_error")])
        runs = data.runs(arm, ("done", "diverged", "running"))
        params = runs["params"].dropna() if not runs.empty else []
        row = dict(arm=arm, done=counts.get("done", 0), diverged=counts.get("diverged", 0),
                   running=counts.get("running", 0), queued=counts.get("queued", 0),
                   train_error_mean=tr, train_error_sd=tr_sd, test_error_mean=te, test_error_sd=te_sd,
                   params=int(params.iloc[0]) if len(params) else None)
        if speed:
            its = speeds(data, arm)
            reached = [i for i in its if i is not None]
            row["iterations_to_target"] = sum(reached) / len(reached) if reached else math.nan
            row["reached_target"] = f"{len(reached)} of {len(its)}"
        rows.append(row)
    return pd.DataFrame(rows)


def table_numbers(table: pd.DataFrame) -> list[dict]:
    """A table as JSON-able records (NaN as None)."""
    return [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
            for r in table.to_dict("records")]


# --- figures ---------------------------------------------------------------------------------------------------


def curves_figure(data: StudyData, arms: list[str] | None = None, name: str = "train_error",
                  title: str = "Training error (smoothed), mean over seeds", target: bool = False):
    arms = arms or data.arm_names
    curves = {arm: [(x, y) for _, x, y in data.curves(arm, name)] for arm in arms if data.has_arm(arm)}
    return sfig.arm_curves(curves, title, target=data.budget.target_error if target else None,
                           ytitle={"train_error": "training error (%)", "test_error": "test error (%)"}.get(name, name))


def finals_figure(data: StudyData, arms: list[str] | None = None,
                  title: str = "Final errors: mean with 95% interval, and each seed"):
    arms = [a for a in (arms or data.arm_names) if data.has_arm(a)]
    values = {col: {arm: data.finals(arm, col) for arm in arms} for col in COLUMNS}
    return sfig.arm_finals(values, title, metrics={"final_train_error": "final training error",
                                                   "final_test_error": "final test error"})


def fig6_figure(data: StudyData, title: str = "Training curves (Fig. 6): training error (thin, dashed), test error (bold)"):
    """lab.run_figures' Fig. 6 view of the study's runs (plain left, residual right, a colour per depth)."""
    runs = data.frame()
    scalars = pd.DataFrame(columns=["run_id", "name", "step", "value"])
    if not runs.empty:
        scalars = pd.concat([data.scalars("train_error"), data.scalars("test_error")], ignore_index=True)
        scalars = scalars[scalars["run_id"].isin(runs["id"])]
    return training_curves(runs, scalars, smoothing=0.6, title=title)


def speed_figure(data: StudyData, arms: list[str] | None = None, title: str = "Iterations to the target"):
    arms = [a for a in (arms or data.arm_names) if data.has_arm(a)]
    return sfig.speed({a: speeds(data, a) for a in arms}, {a: data.total_iterations(a) for a in arms},
                      data.budget.target_error, title)


# --- per-layer metrics -------------------------------------------------------------------------------------------


def per_run_layers(data: StudyData, arm: str, metric: str, when: str = "last", statuses=("done",)) -> list[pd.DataFrame]:
    """The arm's per-layer `metric` at each run's first or last recorded step, one DataFrame per run."""
    runs = data.runs(arm, statuses) if not data.members.empty else pd.DataFrame(columns=["id"])
    out = [data.layer_at(rid, metric, when) for rid in runs["id"]]
    return [df for df in out if not df.empty]


def mean_profile(data: StudyData, arm: str, metric: str, when: str = "last",
                 statuses=("done", "diverged", "running")) -> pd.DataFrame:
    """The metric per layer averaged over the arm's runs (at each run's first or last recorded step)."""
    frames = per_run_layers(data, arm, metric, when, statuses)
    if not frames:
        return pd.DataFrame(columns=["layer", "layer_name", "value"])
    df = pd.concat(frames)
    return df.groupby("layer", as_index=False).agg(layer_name=("layer_name", "first"), value=("value", "mean"))


def profile_label(data: StudyData, arm: str, metric: str, statuses=("done", "diverged", "running")) -> str:
    n = len(per_run_layers(data, arm, metric, "last", statuses))
    return arm + (f" (mean of {n})" if n > 1 else "")


# --- analysis arms (lesions, landscapes, shattering of another arm's runs) -----------------------------------------


def analysis_options(data: StudyData, arm: str) -> dict:
    """An analysis arm's resolved options (also where this build cannot queue the jobs)."""
    from ..analysis.options import resolve_options

    pa = data.plan.arm(arm)
    return pa.options or resolve_options(pa.arm.job, dict(pa.arm.options))


def analysis_results(data: StudyData, arm: str) -> list[dict]:
    """The stored results of an analysis arm, one per analysed run of its `of` arm (the preferred run of each
    seed, in seed order; trained runs that are done, or any stored run for a result at initialisation), however
    they were made (a background job or the CLI), made with the BN statistics the arm's options ask for."""
    from ..analysis.options import result_matches, result_name
    from ..analysis.results import load_results

    pa = data.plan.arm(arm)
    if pa is None or data.store is None or data.members.empty:
        return []
    options = analysis_options(data, arm)
    statuses = ("done", "diverged", "running", "queued", "interrupted", "cancelled", "failed") \
        if options.get("at") == "init" else ("done",)
    ids = data.runs(pa.arm.of, statuses)["id"].tolist()
    found = load_results(data.store, ids, result_name(pa.arm.job, options))
    # a result made with other BN statistics (at init: a fresh net's (0, 1) ones) does not answer the arm
    return [found[i] for i in ids if i in found and result_matches(found[i], options)]


def missing_results(data: StudyData, question: str, *arms: str) -> Finding | None:
    """A 'not available' finding when an analysis arm has no results and this build cannot queue its jobs."""
    gone = data.plan.unavailable()
    for arm in arms:
        if arm in gone and not analysis_results(data, arm):
            return Finding(question, NOT_AVAILABLE, f"{arm}: {gone[arm]}; none is stored yet.", {})
    return None


def by_seed(results: list[dict], value) -> dict[int, float] | list[float]:
    """`value(result)` per analysed seed ({seed: value}, so two arms pair seed by seed; None values left out); a
    list where the results do not name distinct seeds."""
    pairs = [(r.get("run", {}).get("seed"), value(r)) for r in results]
    pairs = [(s, v) for s, v in pairs if v is not None]
    seeds = [s for s, _ in pairs]
    if None in seeds or len(set(seeds)) != len(seeds):
        return [v for _, v in pairs]
    return {int(s): v for s, v in pairs}


def compare_results(data: StudyData, question: str, a: str, b: str, value, metric: Metric,
                    names: tuple[str, str] | None = None) -> Finding:
    """Analysis arm a against analysis arm b on `value(result)` per analysed seed (None values left out); the
    sentence calls them by the nets they analyse, or by `names`."""
    gone = missing_results(data, question, a, b)
    if gone:
        return gone
    values = {arm: by_seed(analysis_results(data, arm), value) for arm in (a, b)}
    of = {arm: data.plan.arm(arm).arm.of for arm in (a, b)}
    name_a, name_b = names or (of[a], of[b])
    return compare(question, name_a, name_b, values[a], values[b], metric, unfinished=data.unfinished(of[a], of[b]))
