"""Studies: statistics, verdict sentences, run reuse, the registry, each study's analysis on stored results built
to give each verdict (effect, no clear difference, too few seeds), the CLI and the Studies page."""
import json
import math
import re
import zipfile
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats
from streamlit.testing.v1 import AppTest

from conftest import ROOT
from lab.__main__ import main
from lab.config import experiment_config, make_config
from lab.studies import Arm, Study, StudyError, all_studies, get, register
from lab.studies import budgets, registry
from lab.studies.catalog import gradients as gradients_study
from lab.studies.findings import TRAIN_ERROR, Analysis, Finding, compare, compare_speed
from lab.studies.plan import make_plan, queue_missing
from lab.studies.report import evaluate
from lab.studies.stats import difference, iterations_to_target, summarise
from study_fakes import fill, noise, save_results

STUDIES = ["degradation", "depth", "responses", "span", "identity-init", "gradients", "shortcuts", "bottleneck",
           "net2net", "inception", "preactivation", "without-bn", "ensembles", "landscape", "shattering"]


@pytest.fixture
def fast_estimates(monkeypatch):
    """Time estimates without the one-second throughput measurement (not what these tests are about)."""
    monkeypatch.setattr("lab.runs.estimate.measured_gflops", lambda *a, **k: 50.0)


# --- statistics ------------------------------------------------------------------------------------------------


def test_welch_interval_is_scipys():
    d = difference([1.0, 2.0, 3.0], [4.0, 5.0, 6.5])
    ci = stats.ttest_ind([1.0, 2.0, 3.0], [4.0, 5.0, 6.5], equal_var=False).confidence_interval(0.95)
    assert d.method == "welch" and d.diff == pytest.approx(-3.1666, abs=1e-3)
    assert (d.low, d.high) == (pytest.approx(ci.low), pytest.approx(ci.high)) and d.clear


def test_bootstrap_with_many_seeds_and_not_enough_with_one():
    a = [1.0 + 0.1 * i for i in range(8)]
    b = [0.1 * i for i in range(8)]
    d = difference(a, b)
    assert d.method == "bootstrap" and d.low < 1.0 < d.high and d.clear
    one = difference([0.3], [0.1, 0.2])
    assert not one.enough and not one.clear and math.isnan(one.low)


def test_no_spread_and_summaries():
    d = difference([0.5, 0.5], [0.2, 0.2])
    # no seed-to-seed variation: nothing to judge the difference by, so it is never clear
    assert d.method == "no spread" and d.diff == pytest.approx(0.3) and math.isnan(d.low) and not d.clear
    s = summarise([1.0, 2.0, 3.0, None, float("nan")])
    half = stats.t.ppf(0.975, 2) / math.sqrt(3)
    assert (s.n, s.mean, s.sd) == (3, 2.0, 1.0) and s.low == pytest.approx(2 - half) and s.high == pytest.approx(2 + half)


def test_matched_seeds_give_a_paired_interval():
    a, b = {0: 0.30, 1: 0.40, 2: 0.35}, {0: 0.28, 1: 0.375, 2: 0.328}
    d = difference(a, b)
    ci = stats.ttest_rel(list(a.values()), list(b.values())).confidence_interval(0.95)
    assert d.method == "paired t" and d.pairs == 3 and d.interval == "paired t over matched seeds"
    assert (d.low, d.high) == (pytest.approx(ci.low), pytest.approx(ci.high)) and d.clear
    # the same numbers unpaired: Welch's interval covers zero (the seeds' spread hides the consistent gap)
    w = difference(list(a.values()), list(b.values()))
    assert w.method == "welch" and w.pairs == 0 and not w.clear
    # seeds that differ between the arms (one diverged): no pairing
    assert difference(a, {0: 0.28, 1: 0.37}).method == "welch"
    assert difference(a, b, paired=False).method == "welch"
    many = difference({i: 1.0 + 0.1 * i for i in range(8)}, {i: 0.1 * i + 0.01 * (i % 3) for i in range(8)})
    assert many.method == "paired bootstrap" and 0.98 < many.low < many.diff < many.high < 1.0 and many.clear


def test_paired_verdicts_say_which_interval():
    f = compare("q", "a", "b", {0: 0.30, 1: 0.40, 2: 0.35}, {0: 0.28, 1: 0.375, 2: 0.328}, TRAIN_ERROR)
    assert f.outcome == "effect" and ", paired t over matched seeds; 3 seeds each" in f.text, f.text
    assert f.numbers["method"] == "paired t" and f.numbers["seeds_a"] == [0, 1, 2]
    assert f.numbers["values_a"] == pytest.approx([30.0, 40.0, 35.0])


def test_no_spread_is_never_an_effect():
    f = compare("q", "plain-56", "plain-20", [0.5, 0.5, 0.5], [0.2, 0.2, 0.2], TRAIN_ERROR)
    assert f.outcome == "no clear difference" and f.text.startswith("No spread to judge by between plain-56 and "
                                                                    "plain-20: every seed of each gave the same"), f.text
    assert "+30.0 points" in f.text and "interval" not in f.text
    f = compare_speed("q", "a", "b", [100, 100], [300, 300], 0.2, 800)
    assert f.outcome == "no clear difference" and f.text.startswith("No spread to judge by"), f.text


def test_iterations_to_target_uses_the_smoothed_error():
    steps = [10, 20, 30, 40, 50, 60]
    # one lucky window at 20 does not count; the smoothed error crosses 0.5 later
    assert iterations_to_target(steps, [0.9, 0.4, 0.9, 0.5, 0.4, 0.3], 0.5) == 60
    assert iterations_to_target(steps, [0.9, 0.4, 0.9, 0.5, 0.4, 0.3], 0.5, smoothing=0) == 20
    assert iterations_to_target(steps, [0.9] * 6, 0.5) is None


# --- verdict sentences -----------------------------------------------------------------------------------------


def test_a_clear_difference_reads_like_the_issue_example():
    f = compare("q", "plain-56", "plain-20", [0.30, 0.29, 0.30], [0.15, 0.14, 0.16], TRAIN_ERROR)
    assert f.outcome == "effect"
    assert re.fullmatch(r"plain-56 trains worse than plain-20: final training error 29\.7% vs 15\.0% \(\+14\.7 points, "
                        r"95% interval \+1\d\.\d to \+1\d\.\d, Welch's t; 3 seeds each\)\.", f.text), f.text
    assert f.numbers["difference"] == pytest.approx(14.667, abs=1e-3) and f.numbers["n_a"] == 3


def test_no_clear_difference_and_not_enough_seeds():
    f = compare("q", "a", "b", [0.20, 0.25], [0.22, 0.23], TRAIN_ERROR)
    assert f.outcome == "no clear difference" and f.text.startswith("No clear difference between a and b:")
    f = compare("q", "a", "b", [0.20], [0.22, 0.23], TRAIN_ERROR, unfinished={"a": "1 diverged"})
    assert f.outcome == "not enough seeds" and "1 and 2 finished" in f.text and "a: 1 diverged" in f.text
    assert Analysis([f]).verdict is None
    assert Analysis([f, compare("q", "a", "b", [0.2, 0.25], [0.2, 0.25], TRAIN_ERROR)]).verdict.startswith("Not enough")


def test_speed_sentences():
    f = compare_speed("q", "a", "b", [100, 120], [300, 320], 0.2, 800)
    assert f.outcome == "effect" and f.text.startswith("a reaches 20% training error sooner than b: iteration 110 vs 310")
    f = compare_speed("q", "a", "b", [300, 320], [100, 120], 0.2, 800)   # the names stay in the numbers' order
    assert f.outcome == "effect" and f.text.startswith("a reaches 20% training error later than b: iteration 310 vs 110 (+200")
    f = compare_speed("q", "a", "b", [100, 120], [None, None], 0.2, 800)
    assert f.outcome == "effect" and "b never reached it within 800 iterations (0 of 2 seeds)" in f.text
    f = compare_speed("q", "a", "b", [100, 120], [200, None], 0.2, 800)
    assert f.outcome == "no clear difference" and "1 of 2 seeds reached it" in f.text


# --- experiment identity and run reuse -------------------------------------------------------------------------


def test_bookkeeping_fields_do_not_make_another_experiment():
    a = make_config("smoke", depth=8, tag="one", device="auto", threads=0, compile=False)
    b = make_config("smoke", depth=8, tag="two", device="cpu", threads=2, compile=True, span=2)
    assert experiment_config(a) == experiment_config(b)
    assert experiment_config(a) != experiment_config(make_config("smoke", depth=8, lr=0.05))
    assert experiment_config(a) != experiment_config(make_config("smoke", depth=8, seed=1))


def test_study_run_reuses_stored_runs_and_resumes_stopped_ones(store):
    plan = make_plan(get("depth"), "smoke")   # resnet-8 and resnet-14, seeds 0 and 1
    r8s0, r8s1, r14s0, _ = plan.configs()
    # the same experiment filed by a sweep (other tag, preset name, threads): reused
    (swept,) = store.create_runs([replace(r8s0, tag="a sweep", preset="quick", threads=1, device="cpu")])
    store.set_status(swept, "done", final_train_error=0.5, final_test_error=0.5)
    (stopped,) = store.create_runs([r8s1])
    store.set_status(stopped, "cancelled")
    (other,) = store.create_runs([replace(r14s0, lr=0.05)])  # another experiment: not reused
    first = queue_missing(store, plan)
    assert first.reused == [swept] and first.resumed == [stopped] and len(first.created) == 2
    assert store.get_run(stopped)["status"] == "queued"
    assert {store.get_run(r)["tag"] for r in first.created} == {"study:depth"}
    again = queue_missing(store, plan)
    assert not again.created and not again.resumed and len(again.reused) == 4
    assert len(store.runs()) == 5 and other not in again.reused


def test_a_study_queues_its_costliest_runs_first(store):
    plan = make_plan(get("degradation"), "smoke")
    created = queue_missing(store, plan).created
    runs = store.runs().set_index("id").loc[created]
    depths = runs["depth"].tolist()
    assert depths == sorted(depths, reverse=True) and depths[0] > depths[-1]
    claimed = store.claim_next("worker")   # the worker claims in the order they were queued
    assert claimed is not None and claimed["id"] == created[0]


def test_study_eta_counts_runs_in_parallel_and_learns_from_running_ones(store, monkeypatch):
    """With runs training and none finished, the estimate rests on the running runs' throughput (a quick
    measurement would see a busy machine), and the ETA counts as many runs at a time as are running."""
    import os
    import socket

    from lab.runs import estimate
    from lab.runs.monitor import overview
    from lab.studies.plan import match, status

    monkeypatch.setattr(estimate, "measured_gflops", lambda *a, **k: 0.001)   # a busy machine: far too slow
    plan = make_plan(get("depth"), "smoke")
    created = queue_missing(store, plan).created
    running = [r for r in created if store.get_run(r)["depth"] == 14]
    assert len(running) == 2
    for rid in running:
        store.update_run(rid, status="running", host=socket.gethostname(), pid=os.getpid(),
                         heartbeat_at=store.db_time(), images_per_s=1000.0, iteration=12, elapsed_s=20.0,
                         env=json.dumps({"forward_macs": 1_000_000}))
    slots, _ = match(plan, overview(store), store)
    one = status(plan, slots, store)
    assert "2 running run(s)" in one.basis
    queued = estimate.estimate_sweep(store, [s.config for s in slots if s.state == "queued"]).seconds
    left = sum(s.run["eta_s"] for s in slots if s.state == "running")
    assert queued < 60 and left > 0
    assert one.eta_s == pytest.approx((queued + left) / 2)     # two running at once
    assert status(plan, slots, store, parallel=4).eta_s == pytest.approx((queued + left) / 4)


def test_a_finished_studys_estimates_name_the_finished_runs_they_rest_on(store, monkeypatch):
    """With every run done and none queued, the basis shown beside the study's estimates names the finished runs
    whose rate they use, not a quick measurement that was never taken."""
    import socket

    from lab.runs import estimate
    from lab.runs.monitor import overview
    from lab.studies.plan import match, status

    monkeypatch.setattr(estimate, "measured_gflops", lambda *a, **k: 50.0)
    ids = fill(store, "degradation", budget="cpu", seeds=2)   # smoke runs are too short to time (left out)
    for rid in (r for runs in ids.values() for r in runs):
        store.update_run(rid, host=socket.gethostname(), images_per_s=1000.0,
                         env=json.dumps({"forward_macs": 1_000_000}))
    plan = make_plan(get("degradation"), "cpu", 2)
    st = status(plan, match(plan, overview(store), store)[0], store)
    assert st.done == st.planned == 8 and st.eta_s is None and st.to_queue_s == 0.0 and st.total_s > 0
    assert "8 finished run(s) on this machine" in st.basis and "quick" not in st.basis


def test_estimates_take_the_rate_of_runs_of_the_same_width(store, monkeypatch):
    """A narrow net runs at a fraction of a wide one's rate: an estimate takes past runs of the run's width, else
    other widths' scaled by the measured ratio, else a measurement at its width on the threads a slot gets."""
    import os
    import socket

    from lab.runs import estimate

    asked = []
    monkeypatch.setattr(estimate, "measured_gflops",
                        lambda device="auto", width=1.0, threads=0, precision="auto": asked.append((width, threads))
                        or 100.0 * width)
    half = make_config("smoke", width=0.5, iterations=1000)
    cost = 2 * (estimate.training_macs(half) + estimate.evaluation_macs(half)) / 1e9   # seconds at 1 GFLOP/s
    fresh = estimate.estimate_sweep(store, [half, half], slots=2)
    assert asked == [(0.5, max(1, (os.cpu_count() or 1) // 2))]
    assert fresh.seconds == pytest.approx(estimate.STARTUP_S + cost / 50.0) and "quick" in fresh.basis

    def finished(width, gflops):
        (rid,) = store.create_runs([make_config("smoke", width=width)])
        macs = 1_000_000
        store.update_run(rid, status="done", host=socket.gethostname(), images_per_s=gflops * 1e9 / (6 * macs),
                         env=json.dumps({"forward_macs": macs}))

    finished(1.0, 40.0)
    finished(1.0, 60.0)
    wide_only = estimate.estimate_sweep(store, [half])
    assert wide_only.seconds == pytest.approx(estimate.STARTUP_S + cost / (50.0 * 50.0 / 100.0))
    assert "2 finished run(s) on this machine of width 1, scaled to 0.5" in wide_only.basis
    finished(0.5, 10.0)
    same = estimate.estimate_sweep(store, [half])
    assert same.seconds == pytest.approx(estimate.STARTUP_S + cost / 10.0) and "scaled" not in same.basis


@pytest.mark.parametrize("options", [dict(iterations=10, eval_every=4, eval_images=300, probes=True),
                                     dict(iterations=8, eval_every=4, eval_images=0, probes=False)])
def test_estimates_count_the_images_a_run_evaluates(options, tmp_path, monkeypatch):
    """An estimate times a run's evaluations (periodic ones on eval_images, the final one on every validation and
    test image, the response probe's batch) from the images the trainer actually passes forward."""
    import lab.train
    from lab.datasets import dataset_info
    from lab.runs import estimate

    cfg = make_config("smoke", width=0.5, depth=8, log_every=2, grad_every=2, **options)
    seen = []

    def counting(name, f, images=lambda *a, **k: 0):
        def wrapped(*args, **kwargs):
            seen.append(images(*args, **kwargs))
            return f(*args, **kwargs)
        monkeypatch.setattr(lab.train.trainer, name, wrapped)

    counting("evaluate", lab.train.trainer.evaluate, lambda net, loader, autocast, limit=0: min(limit or len(loader), len(loader)))
    counting("responses", lab.train.trainer.responses, lambda net, images, *a: len(images))
    counting("initial_gradients", lab.train.trainer.initial_gradients, lambda net, images, *a: 3 * len(images))
    assert lab.train.train(cfg, tmp_path / "run", lab.train.MemoryReporter(), resume=False) == "done"
    info = dataset_info(cfg.dataset)
    per_image = estimate.run_macs(cfg.depth, cfg.block, cfg.width, cfg.span, info.channels, info.size)
    assert sum(seen) > 0 and estimate.evaluation_macs(cfg) == sum(seen) * per_image


def test_a_deepened_arm_is_queued_after_its_parent_and_grows_from_it(store, fast_estimates):
    plan = make_plan(get("net2net"), "smoke")
    parent, child = "plain-8 (12 it)", "plain-8 → 14 (12 + 12 it)"
    assert plan.arm(child).arm.deepen == parent and {c.deepen_from for c in plan.arm(child).configs} == {""}
    # a stored run of the parent arm (filed by a sweep) is reused, and its child grows from it
    (old,) = store.create_runs([replace(plan.arm(parent).configs[0], tag="a sweep")])
    store.set_status(old, "done", final_train_error=0.5, final_test_error=0.5)
    # the arms trained 2N (24 iterations at smoke) are the degradation study's smoke runs
    (shared,) = store.create_runs([make_plan(get("degradation"), "smoke").configs()[0]])
    # a plain-14 deepened from a run outside the parent arm (another learning rate) does not answer the child arm
    (stranger,) = store.create_runs([replace(plan.arm(parent).configs[0], lr=0.05)])
    store.set_status(stranger, "done", final_train_error=0.5, final_test_error=0.5)
    (other,) = store.create_runs([replace(plan.arm(child).configs[0], deepen_from=stranger)])
    first = queue_missing(store, plan)
    assert sorted(first.reused) == sorted([old, shared]) and len(first.created) == 14
    runs = store.runs().set_index("id")
    children = [rid for rid in first.created if runs.loc[rid, "config"]["deepen_from"]]
    assert len(children) == 8   # four child arms: deepened and its control, each restarted and continued
    for rid in children:
        cfg = runs.loc[rid, "config"]
        parent_run = runs.loc[cfg["deepen_from"]]
        assert runs.loc[rid, "parent_id"] == cfg["deepen_from"] and parent_run["config"]["seed"] == cfg["seed"]
        assert parent_run["created_at"] < runs.loc[rid, "created_at"] and parent_run["depth"] == 8
    claimed = []   # claimed in creation order, each child after its parent (a worker finishes each one)
    while (run := store.claim_next("w", exclude=[other])) is not None:
        claimed.append(run["id"])
        store.set_status(run["id"], "done", final_train_error=0.5, final_test_error=0.5)
    for rid in children:
        grew_from = runs.loc[rid, "config"]["deepen_from"]
        assert grew_from == old or claimed.index(grew_from) < claimed.index(rid)
    again = queue_missing(store, plan)
    assert not again.created and len(again.reused) == 16 and other not in again.reused
    result = evaluate("net2net", store, "smoke")
    assert sorted(result.data.run_ids()[child]) == sorted(
        c for c in children if (runs.loc[c, "config"]["depth"], runs.loc[c, "config"]["deepen_schedule"]) == (14, "restart"))


def test_simulated_runs_are_never_taken_for_measurements(store):
    from lab.config import RunConfig
    from lab.fill import simulate_run

    rid = simulate_run(store, "plain", 20, 0)   # the paper's schedule, tagged "simulated"
    plan = make_plan(get("degradation"), "paper")
    stored = RunConfig.from_dict(store.get_run(rid)["config"])
    assert experiment_config(stored) == experiment_config(plan.configs()[0])   # the same experiment on paper...
    assert rid not in queue_missing(store, plan).reused                        # ...but not a measurement


def test_a_study_uses_every_stored_seed_of_its_arms(store, fast_estimates):
    fill(store, "depth", seeds=3)   # three seeds stored; the study plans two
    result = evaluate("depth", store, "smoke")
    assert result.status.state == "done" and result.analysis.findings[0].numbers["n_a"] == 3


# --- the registry ----------------------------------------------------------------------------------------------


def test_the_built_in_studies_are_registered_with_every_budget():
    assert [s.id for s in all_studies()][: len(STUDIES)] == STUDIES
    for s in all_studies():
        assert s.question.endswith("?") and s.literature and set(s.grid) == set(budgets.BUDGETS)
        for b in budgets.BUDGETS:
            plan = make_plan(s, b)
            assert plan.available(), (s.id, b)
            for arm, why in plan.unavailable().items():  # only options or jobs this build lacks, named
                assert "span" in why or "lab.analysis.queue" in why, (s.id, arm, why)


def test_unknown_names_are_refused_with_the_known_ones():
    with pytest.raises(StudyError, match="unknown study 'nope'; known: degradation, depth"):
        get("nope")
    with pytest.raises(StudyError, match="unknown budget 'huge'; known: smoke, cpu, paper"):
        make_plan(get("depth"), "huge")
    with pytest.raises(StudyError, match="seeds must be a positive integer"):
        make_plan(get("depth"), "smoke", seeds=0)


def test_another_package_registers_a_study_with_an_analysis_arm(store, fast_estimates):
    def analyse(data):
        return Analysis([Finding("q", "not enough seeds", "nothing yet")])

    study = Study(id="test-extra", title="Extra", question="Does it register?", literature="None.",
                  grid={"smoke": [Arm("plain-8", dict(kind="plain", depth=8)),
                                  Arm("lesions of plain-8", job="lesion", of="plain-8")]},
                  analyse=analyse, figures=lambda data: {}, order=999)
    try:
        register(study)
        assert all_studies()[-1] is study
        with pytest.raises(StudyError, match="already registered"):
            register(Study(**{**study.__dict__}))
        with pytest.raises(StudyError, match="must come after the training arm 'plain-8'"):
            register(Study(**{**study.__dict__, "id": "test-bad", "grid": {"smoke": list(study.grid["smoke"])[::-1]}}))
        with pytest.raises(StudyError, match="must deepen an earlier training arm"):
            register(Study(**{**study.__dict__, "id": "test-bad", "grid": {"smoke": [
                Arm("deep", dict(kind="plain", depth=14), deepen="shallow"), Arm("shallow", dict(kind="plain", depth=8))]}}))
        with pytest.raises(StudyError, match="analyses unknown arm"):
            register(Study(**{**study.__dict__, "id": "test-bad", "grid": {"smoke": [Arm("x", job="lesion", of="y")]}}))
        result = evaluate("test-extra", store, "smoke")
        jobs = [s for s in result.slots if s.analysis]
        assert result.status.planned == 4 and [s.job for s in jobs] == ["lesion"] * 2
        assert {s.state for s in jobs} == {"missing"} and not result.plan.unavailable()
        with pytest.MonkeyPatch.context() as mp:   # a build without background analysis jobs
            mp.setattr("lab.studies.plan.analysis_queue", lambda: None)
            result = evaluate("test-extra", store, "smoke")
            assert result.status.planned == 2
            assert "lab.analysis.queue" in result.plan.unavailable()["lesions of plain-8"]
        with pytest.raises(StudyError, match="has no 'cpu' budget"):
            make_plan(study, "cpu")
    finally:
        registry._STUDIES.pop("test-extra", None)


def test_the_cpu_schedule_lives_in_one_place(monkeypatch):
    cfg = make_plan(get("responses"), "cpu").configs()[0]
    assert cfg.dataset == "fashion-mnist" and cfg.iterations == budgets.BUDGETS["cpu"].overrides["iterations"]
    monkeypatch.setitem(budgets.TUNING["cpu"], "gradients", dict(iterations=400, seeds=3))
    preset, overrides, seeds = budgets.schedule("cpu", "gradients")
    assert preset == "quick" and overrides["dataset"] == "fashion-mnist" and overrides["iterations"] == 400
    plan = make_plan(get("gradients"), "cpu")
    assert plan.seeds == 3 and {c.iterations for c in plan.configs()} == {400}


def key(cfg) -> str:
    return json.dumps(experiment_config(cfg), sort_keys=True)


@pytest.mark.parametrize("budget", ["smoke", "cpu"])
def test_net2net_trains_as_long_as_the_budgets_runs_of_the_same_nets(budget):
    """At the smoke and cpu budgets net2net's 2N arms are the budget's runs of plain-20, plain-56 and ResNet-56
    (the responses study's; at smoke the degradation study's too), reused, never trained twice, so the study
    costs only its parent and deepened arms."""
    twice = [c for c in make_plan(get("net2net"), budget).configs()
             if c.iterations == 2 * budgets.iterations(budget, "net2net")]
    assert len(twice) == 3 * budgets.BUDGETS[budget].seeds
    shared = {key(c) for c in make_plan(get("responses"), budget).configs()}
    assert all(key(c) in shared for c in twice)
    if budget == "smoke":
        degradation = {key(c) for c in make_plan(get("degradation"), budget).configs()}
        assert all(key(c) in degradation for c in twice)


def test_degradation_at_the_cpu_budget_trains_a_shorter_schedule_of_its_own():
    """Tuned to at most 15 minutes on 2 cores: batches of 32 for fewer iterations, periodic evaluations on fewer
    images, so its runs are its own while the studies that compare the same nets share the budget's schedule."""
    mine = make_plan(get("degradation"), "cpu").configs()
    assert {(c.batch_size, c.iterations) for c in mine} == {(32, budgets.DEGRADATION_CPU_ITERATIONS)}
    assert {c.eval_images for c in mine} == {1000} and {c.eval_every for c in mine} == {200}
    assert {c.dataset for c in mine} == {"fashion-mnist"} and len(mine) == 12
    shared = {key(c) for c in make_plan(get("responses"), "cpu").configs()}
    assert len(shared) == 12 and not shared & {key(c) for c in mine}
    assert {c.batch_size for c in make_plan(get("responses"), "cpu").configs()} == {64}
    # the smoke budget is not tuned: there the two studies share their runs
    assert {key(c) for c in make_plan(get("responses"), "smoke").configs()} == {
        key(c) for c in make_plan(get("degradation"), "smoke").configs()}


def test_shattering_at_the_cpu_budget_trains_the_110_layer_nets_only_to_have_their_init():
    """The 110-layer nets are measured at initialisation only at the cpu budget: their runs train one logging
    window, and only the nets trained in full (the budget's runs, the responses study's) get a shatter job of the
    trained net."""
    from lab.studies.catalog import shattering

    plan = make_plan(get("shattering"), "cpu")
    shared = {key(c) for c in make_plan(get("responses"), "cpu").configs()}
    for arm in plan.arms:
        if arm.arm.analysis:
            continue
        assert ("110" in arm.arm.name) == arm.arm.name.endswith("(init only)")
        if "110" in arm.arm.name:
            assert {c.iterations for c in arm.configs} == {shattering.INIT_ONLY_ITERATIONS}
        else:   # the rest are the budget's runs of those nets
            assert all(key(c) in shared for c in arm.configs)
    jobs = {a.arm.name: a.arm.of for a in plan.arms if a.arm.analysis}
    assert jobs["shattering of plain-110 (at init)"] == "plain-110 (init only)"
    assert "shattering of plain-110 (trained)" not in jobs and "shattering of resnet-56 (trained)" in jobs
    assert "shattering of plain-110 (trained)" in {a.arm.name for a in make_plan(get("shattering"), "paper").arms}


def test_shortcuts_at_the_cpu_budget_compares_the_options_at_56_layers_reusing_the_budgets_option_a():
    plan = make_plan(get("shortcuts"), "cpu")
    assert [a.arm.name for a in plan.arms] == ["resnet-56 (A)", "resnet-56 (B)", "resnet-56 (C)"]
    shared = {key(c) for c in make_plan(get("responses"), "cpu").configs()}
    assert all(key(c) in shared for c in plan.arm("resnet-56 (A)").configs)
    assert [a.arm.name for a in make_plan(get("shortcuts"), "paper").arms][:4] == [
        "plain-20", "resnet-20 (A)", "resnet-20 (B)", "resnet-20 (C)"]


def test_bottleneck_pairs_have_the_same_units_per_stage():
    from lab.studies.catalog.bottleneck import PAIRS

    for budget, pairs in PAIRS.items():
        for basic, bottleneck in pairs:
            assert (basic - 2) % 6 == 0 and (bottleneck - 2) % 9 == 0
            assert (basic - 2) // 6 == (bottleneck - 2) // 9, (budget, basic, bottleneck)


# --- each study's analysis on stored results -------------------------------------------------------------------

# (study, finding index, arm a, arm b, which final error the finding compares)
COMPARISONS = [
    ("degradation", 0, "plain-14", "plain-8", "train"),
    ("depth", 0, "resnet-14", "resnet-8", "test"),
    ("span", 0, "resnet-14 span 1", "resnet-14 span 2", "train"),
    ("identity-init", 0, "plain-14 identity", "plain-14", "train"),
    ("gradients", 0, "plain-14", "plain-8", "train"),
    ("shortcuts", 0, "resnet-8 (B)", "resnet-8 (A)", "test"),
    ("bottleneck", 0, "resnet-20 (bottleneck)", "resnet-14 (basic)", "test"),
    ("net2net", 0, "plain-8 → 14 (12 + 12 it)", "plain-8 → 8 (12 + 12 it)", "train"),
    ("inception", 1, "residual inception-14 ×1", "plain inception-14", "train"),
    ("preactivation", 0, "resnet-8 (pre-activation)", "resnet-8", "test"),
    ("without-bn", 5, "plain-14 (no BN)", "plain-14", "train"),
]


def _errors(column, value):
    return dict(train=value) if column == "train" else dict(test=value)


@pytest.mark.parametrize("study,index,a,b,column", COMPARISONS, ids=[c[0] for c in COMPARISONS])
def test_analysis_finds_an_effect(study, index, a, b, column, store, fast_estimates):
    value = lambda arm, seed: (0.35 if arm == a else 0.15 if arm == b else 0.25) + noise(arm, seed, 0.005)  # noqa: E731
    fill(store, study, **_errors(column, value))
    result = evaluate(study, store, "smoke")
    f = result.analysis.findings[index]
    assert f.outcome == "effect" and f.text.startswith(f"{a} ") and "95% interval +" in f.text, f.text
    assert f.numbers["a"] == a and f.numbers["b"] == b and 19 < f.numbers["difference"] < 21
    assert result.verdict and f.text in result.to_json()["verdict"]
    assert result.figures()  # every figure builds on stored results


@pytest.mark.parametrize("study,index,a,b,column", COMPARISONS, ids=[c[0] for c in COMPARISONS])
def test_analysis_finds_no_clear_difference(study, index, a, b, column, store, fast_estimates):
    # every arm has the same mean over its two seeds, with different spreads
    value = lambda arm, seed: 0.25 + (0.02 if seed == 0 else -0.02) * (1.0 if arm == a else 0.5)  # noqa: E731
    fill(store, study, **_errors(column, value))
    f = evaluate(study, store, "smoke").analysis.findings[index]
    assert f.outcome == "no clear difference" and f.text.startswith(f"No clear difference between {a} and {b}"), f.text


@pytest.mark.parametrize("study", STUDIES)
def test_analysis_with_one_seed_has_no_verdict(study, store, fast_estimates):
    fill(store, study, seeds=1)
    result = evaluate(study, store, "smoke", seeds=1)
    assert result.verdict is None and result.to_json()["verdict"] is None
    assert any(f.outcome == "not enough seeds" for f in result.analysis.findings)
    assert json.dumps(result.to_json())  # JSON-safe


def test_diverged_runs_are_named_not_averaged(store, fast_estimates):
    fill(store, "identity-init", status=lambda arm, seed: "diverged" if arm == "plain-14 no BN" else "done")
    result = evaluate("identity-init", store, "smoke")
    f = result.analysis.findings[1]   # identity vs He, without BN
    assert f.outcome == "not enough seeds" and "plain-14 no BN: 2 diverged" in f.text
    assert result.status.diverged == 2 and result.status.state == "done"


def response_layers(scale, gamma=None):
    """Per-layer response metrics: response std `scale(arm)` at the end; with `gamma`, BN numbers too."""
    def layers(arm, seed, names):
        n = len(names["response_std"])
        s = scale(arm) * (1 + noise(arm, seed, 0.02))
        out = {"response_std": {0: [1.0] * n, 24: [s] * n}}
        if gamma:
            g = gamma(arm) * (1 + noise(arm, seed, 0.02))
            k = max(1, round(n / 3))
            out["response_std_batch"] = {0: [1.0] * n, 24: [0.9 * s] * n}
            out["bn_gamma"] = {0: [1.0] * n, 24: [g] * k + [1.0] * (n - k)}
            out["bn_beta_std"] = {0: [0.0] * n, 24: [g / 2] * k + [0.1] * (n - k)}
        return out
    return layers


def test_responses_residual_smaller_and_explained_by_bn_numbers(store, fast_estimates):
    scale = lambda arm: {"plain-8": 1.0, "plain-14": 3.0, "resnet-8": 0.6, "resnet-14": 0.4}[arm]  # noqa: E731
    gamma = lambda arm: 12.0 if arm == "plain-14" else 1.5  # noqa: E731
    fill(store, "responses", layers=response_layers(scale, gamma))
    result = evaluate("responses", store, "smoke")
    f = result.analysis.findings
    assert f[0].outcome == "effect" and f[0].text.startswith("resnet-8 has smaller layer responses than plain-8")
    assert f[2].outcome == "effect" and f[2].text.startswith("resnet-14 has smaller layer responses than resnet-8")
    assert f[3].outcome == "effect" and f[3].text.startswith("plain-14 has larger early BN scales than plain-8")
    note = result.analysis.notes[0]
    assert "BN |γ| averages 12" in note and "go with BN scales that grew larger than plain-8's" in note
    assert {"responses", "responses-batch", "start", "bn-gamma", "bn-beta"} <= set(result.figures())


def test_responses_without_the_new_probes_say_what_is_missing(store, fast_estimates):
    fill(store, "responses", layers=response_layers(lambda arm: 1.0 + noise(arm, 0, 0.1)))
    f = evaluate("responses", store, "smoke").analysis.findings[-1]
    assert f.outcome == "not available" and "bn_gamma" in f.text and "response_std_batch" in f.text


def gradient_layers(ratio):
    """grad_norm per layer: 1 everywhere except the first layer, `ratio(arm)` times the last convolution's."""
    def layers(arm, seed, names):
        n = len(names["grad_norm"])
        values = [1.0] * n
        values[0] = ratio(arm) * (1 + noise(arm, seed, 0.05))
        return {"grad_norm": {4: values, 24: values}}
    return layers


def test_gradients_verdict_from_the_first_to_last_ratio(store, fast_estimates):
    ratio = lambda arm: {"plain-14": 3.0, "plain-14 (no BN)": 0.01}.get(arm, 1.0 + 0.0)  # noqa: E731
    train = lambda arm, seed: (0.35 if arm == "plain-14" else 0.15) + noise(arm, seed, 0.005)  # noqa: E731
    fill(store, "gradients", train=train, layers=gradient_layers(ratio))
    result = evaluate("gradients", store, "smoke")
    by_q = {f.question: f for f in result.analysis.findings}
    plain = by_q["Do plain-14's gradients vanish toward the input?"]
    assert plain.outcome == "effect" and "at the start, the first layer's gradients are larger than the last convolution's" in plain.text
    assert plain.numbers["start"]["ratio"] == pytest.approx(3.0, rel=0.1)
    nobn = by_q["Do plain-14 (no BN)'s gradients vanish toward the input?"]
    assert nobn.outcome == "effect" and "smaller than the last convolution's" in nobn.text
    last = result.analysis.findings[-1]
    assert last.text.endswith("these runs show degradation without vanishing gradients.") and "+20.0 points" in last.text
    assert {"ratio", "start", "end", "curves"} <= set(result.figures())


def test_gradients_names_the_seeds_that_diverged(store, fast_estimates):
    """An arm whose every seed diverged has no gradients to judge: the finding says so and where they diverged."""
    status = lambda arm, seed: "diverged" if arm == "resnet-14 (no BN)" else "done"  # noqa: E731
    fill(store, "gradients", layers=gradient_layers(lambda arm: 1.0), status=status)
    by_q = {f.question: f for f in evaluate("gradients", store, "smoke").analysis.findings}
    f = by_q["Do resnet-14 (no BN)'s gradients vanish toward the input?"]
    assert f.outcome == "not enough seeds" and "0 finished (at least 2 needed); 2 diverged, at iterations" in f.text
    assert len(f.numbers["diverged_at"]) == 2


def test_gradients_no_clear_ratio(store, fast_estimates):
    def layers(arm, seed, names):  # ratio 1.2 and 0.8: geometric mean about 1, interval covers 1
        n = len(names["grad_norm"])
        values = [1.0] * n
        values[0] = 1.2 if seed == 0 else 0.8
        return {"grad_norm": {4: values, 24: values}}
    fill(store, "gradients", layers=layers)
    f = evaluate("gradients", store, "smoke").analysis.findings[1]
    assert f.outcome == "no clear difference" and "at the start, no clear difference between the first layer's" in f.text


def test_gradient_chain_ends_skip_the_classifier_and_projections():
    names = ["stem.conv", "units.0.layers.0.conv", "units.1.layers.0.conv", "units.1.shortcut.conv", "head"]
    assert gradients_study.ends(names, 5) == (0, 2)


def test_speed_finding_from_stored_curves(store, fast_estimates):
    train = lambda arm, seed: 0.3 if "bottleneck" in arm else 0.88  # noqa: E731  (target at smoke: 85%)
    fill(store, "bottleneck", train=train)
    f = evaluate("bottleneck", store, "smoke").analysis.findings[2]
    assert f.outcome == "effect" and f.text.startswith("resnet-20 (bottleneck) reaches 85% training error and "
                                                       "resnet-14 (basic) does not"), f.text


def test_inception_speed_from_stored_curves(store, fast_estimates):
    train = lambda arm, seed: 0.88 if arm.startswith("plain") else 0.3  # noqa: E731  (target at smoke: 85%)
    fill(store, "inception", train=train)
    f = evaluate("inception", store, "smoke").analysis.findings[0]
    assert f.outcome == "effect" and f.text.startswith("residual inception-14 ×1 reaches 85% training error and "
                                                       "plain inception-14 does not"), f.text


def test_without_bn_names_what_diverges(store, fast_estimates):
    def status(arm, seed):
        return "diverged" if arm == "resnet-14 (no BN)" or (arm == "plain-14 (no BN)" and seed == 0) else "done"
    fill(store, "without-bn", status=status)
    result = evaluate("without-bn", store, "smoke")
    by_q = {f.question: f for f in result.analysis.findings}
    f = by_q["Does resnet-14 (no BN) train or diverge?"]
    assert f.outcome == "effect" and f.text.startswith("resnet-14 (no BN) diverges: all 2 seeds diverged (at iterations")
    f = by_q["Does plain-14 (no BN) train or diverge?"]
    assert f.outcome == "no clear difference" and "1 of 2 seeds diverged" in f.text
    f = by_q["Does resnet-14 (no BN, Fixup) train or diverge?"]
    assert f.outcome == "effect" and f.text.startswith("resnet-14 (no BN, Fixup) trains: 2 of 2 seeds finished")
    f = by_q["Without BN, does resnet-14 (no BN) train worse than with BN?"]
    assert f.outcome == "not enough seeds" and "resnet-14 (no BN): 2 diverged" in f.text
    assert result.status.state == "done" and result.status.diverged == 3 and result.verdict


def test_without_bn_tells_seeds_at_chance_from_seeds_that_train(store, fast_estimates):
    """A finished seed at chance (90% training error on 10 classes) did not train: it is named, not averaged."""
    def train(arm, seed):
        if arm == "resnet-14 (no BN)":
            return 0.9
        return 0.91 if arm == "resnet-14 (no BN, Fixup)" and seed == 1 else 0.2 + noise(arm, seed)
    fill(store, "without-bn", train=train)
    by_q = {f.question: f for f in evaluate("without-bn", store, "smoke").analysis.findings}
    f = by_q["Does resnet-14 (no BN, Fixup) train or diverge?"]
    assert f.outcome == "no clear difference" and f.numbers["at_chance"] == 1
    assert f.text.startswith("resnet-14 (no BN, Fixup) trains in 1 of 2 seeds, final training error 1")
    assert "1 of 2 ended at chance (91.0% training error)" in f.text
    f = by_q["Does resnet-14 (no BN) train or diverge?"]
    assert f.outcome == "effect" and f.text == ("resnet-14 (no BN) does not train: 2 of 2 ended at chance (90.0%, "
                                                 "90.0% training error).")


def test_preactivation_shows_the_published_numbers_beside(store, fast_estimates):
    fill(store, "preactivation", budget="paper", arms=["resnet-110", "resnet-110 (pre-activation)"])
    result = evaluate("preactivation", store, "paper")
    note = result.analysis.notes[0]
    assert "same data set and schedule as the paper" in note and "vs 6.61% published" in note
    assert "resnet-110 (pre-activation): " in note and "vs 6.37% published" in note
    assert [r["published"] for r in result.analysis.numbers["published"] if r["seeds"]] == ["6.61%", "6.37%"]
    # the paper budget runs the paper's per-pixel mean subtraction, full width, with augmentation
    assert result.analysis.notes[1] == ("These runs differ from the paper's protocol in: He-normal init of the "
                                        "classifier too (the paper does not say how it initialises it).")
    assert {p["what"] for p in result.to_json()["published"]} >= {"ResNet-110 (basic), full pre-activation"}


# (study, finding index, analysis arm a, analysis arm b, the nets the sentence names)
ANALYSIS_COMPARISONS = [
    ("ensembles", 0, "lesions of resnet-14", "lesions of plain-14", "resnet-14", "plain-14"),
    ("landscape", 0, "landscape of resnet-8", "landscape of plain-8", "resnet-8", "plain-8"),
    ("shattering", 0, "shattering of resnet-14 (at init)", "shattering of plain-14 (at init)", "resnet-14 at init",
     "plain-14 at init"),
]


@pytest.mark.parametrize("study,index,a,b,net_a,net_b", ANALYSIS_COMPARISONS, ids=[c[0] for c in ANALYSIS_COMPARISONS])
def test_analysis_results_give_an_effect(study, index, a, b, net_a, net_b, store, fast_estimates):
    ids = fill(store, study)
    save_results(store, study, ids, lambda arm, seed: (0.15 if arm == a else 0.35 if arm == b else 0.25)
                 + noise(arm, seed, 0.005))
    result = evaluate(study, store, "smoke")
    f = result.analysis.findings[index]
    assert f.outcome == "effect" and f.text.startswith(f"{net_a} ") and f" than {net_b}: " in f.text, f.text
    assert f.numbers["a"] == net_a and f.numbers["n_a"] == f.numbers["n_b"] == 2 and f.numbers["high"] < 0
    assert result.verdict and result.status.state == "done"
    assert all(len(fig.data) for _title, fig in result.figures().values())   # the analyses' figures are drawn


@pytest.mark.parametrize("study,index,a,b,net_a,net_b", ANALYSIS_COMPARISONS, ids=[c[0] for c in ANALYSIS_COMPARISONS])
def test_analysis_results_give_no_clear_difference(study, index, a, b, net_a, net_b, store, fast_estimates):
    ids = fill(store, study)
    save_results(store, study, ids, lambda arm, seed: 0.25 + (0.02 if seed == 0 else -0.02) * (1 if arm == a else 0.5))
    f = evaluate(study, store, "smoke").analysis.findings[index]
    assert f.outcome == "no clear difference" and f.text.startswith(f"No clear difference between {net_a} and "
                                                                    f"{net_b}"), f.text


def test_ensembles_compares_shape_keeping_units_and_reports_downsampling_apart(store, fast_estimates):
    """The ResNet's downsampling units (Veit's exception) hurt a lot when deleted; the plain net cannot delete
    them. The nets are compared on the shape-keeping units only, so those deletions do not count against the
    ResNet, and the exception is a finding of its own."""
    ids = fill(store, "ensembles")
    save_results(store, "ensembles", ids, lambda arm, seed: (0.01 if "resnet" in arm else 0.05) + noise(arm, seed, 0.002),
                 downsampling=lambda arm, seed: 0.6 + noise(arm, seed, 0.01))
    result = evaluate("ensembles", store, "smoke")
    single, worst, many, down = result.analysis.findings
    assert single.outcome == "effect" and single.text.startswith("resnet-14 suffers less from deleting one unit than "
                                                                 "plain-14: mean test-error increase with one "
                                                                 "shape-keeping unit deleted"), single.text
    assert single.numbers["mean_a"] == pytest.approx(1.0, abs=0.3)   # points: the downsampling +60 left out
    assert many.question.startswith("With 1 shape-keeping unit deleted at once") and result.analysis.numbers["k"] == 1
    assert down.outcome == "effect" and down.text.startswith("its downsampling units hurt more when deleted than its "
                                                             "shape-keeping units"), down.text
    assert "paired t over matched seeds" in down.text
    row = result.analysis.tables["lesions"].set_index("arm")
    assert row.loc["lesions of resnet-14", "downsampling_single_increase"] == pytest.approx(60, abs=2)
    assert math.isnan(row.loc["lesions of plain-14", "downsampling_single_increase"])


def test_old_lesion_results_do_not_count(store, fast_estimates):
    """Lesion results of format 1 drew their k-sets from every deletable unit (a ResNet's downsampling ones too):
    a study does not use them, and queues the analysis again."""
    from lab.analysis.results import load_results, save_result
    from lab.studies.comparisons import analysis_results

    ids = fill(store, "ensembles")
    save_results(store, "ensembles", ids, lambda arm, seed: 0.05 + noise(arm, seed))
    for rid in ids["resnet-14"]:
        old = load_results(store, [rid], "lesion")[rid]
        del old["format"]
        save_result(store, rid, "lesion", old)
    result = evaluate("ensembles", store, "smoke")
    assert analysis_results(result.data, "lesions of resnet-14") == []
    assert len(analysis_results(result.data, "lesions of plain-14")) == 2
    assert [s.state for s in result.slots if s.arm == "lesions of resnet-14"] == ["missing", "missing"]


def test_published_numbers_come_with_the_deviations_from_the_paper(store, fast_estimates):
    fill(store, "depth")
    notes = evaluate("depth", store, "smoke").analysis.notes
    assert notes[-1].startswith("These runs differ from the paper's protocol in: per-channel mean and std "
                               "normalisation (the paper subtracts the per-pixel mean); nets at 0.5 of the paper's "
                               "width; ") and "He-normal init of the classifier" in notes[-1]


def test_shattering_fits_the_decay_with_depth():
    """The fit on the correlations measured at the cpu budget (the study's docstring): plain nets reach the white-noise level
    by 56 layers, residual nets decay slowly; each beside Balduzzi et al.'s law."""
    from lab.studies.catalog.shattering import fit_decay, fit_sentence

    plain = fit_decay("plain", [20, 56, 110], [0.742, 0.001, 0.002], 0.0067)
    assert plain["white_noise"] == [56, 110] and plain["decay_length_at_most"] == pytest.approx(36 / math.log(0.742 / 0.0067))
    text = fit_sentence(plain)
    assert "plain-56 and plain-110 are at the white-noise level" in text and "at least as fast as exp(-L/7.6)" in text
    assert "Balduzzi et al.: exponential decay" in text
    res = fit_decay("residual", [20, 56, 110], [0.954, 0.856, 0.737], 0.0067)
    slope = np.polyfit(np.log([20, 56, 110]), np.log([0.954, 0.856, 0.737]), 1)[0]
    assert res["exponent"] == pytest.approx(-slope) and 0.1 < res["exponent"] < 0.2 and res["decay_length"] > 200
    text = fit_sentence(res)
    assert f"L^-{res['exponent']:.2g}" in text and "fits better" in text and "about 1/sqrt(L)" in text
    law = fit_decay("residual", [8, 32, 128], [0.8 * (d / 8) ** -0.5 for d in (8, 32, 128)], 0.0)
    assert law["exponent"] == pytest.approx(0.5) and law["power"]["rmse"] < law["exponential"]["rmse"]
    assert "the power law fits better" in fit_sentence(law)


def test_shattering_verdict_carries_the_fit(store, fast_estimates):
    ids = fill(store, "shattering")
    save_results(store, "shattering", ids, lambda arm, seed: (0.001 if "plain-14" in arm else 0.7 if "plain" in arm
                                                              else 0.9 if "resnet-8" in arm else 0.8) + noise(arm, seed, 0.0005))
    result = evaluate("shattering", store, "smoke")
    plain, res = result.analysis.findings[1], result.analysis.findings[2]
    assert "plain-14 is at the white-noise level" in plain.text and "at least as fast as exp(-L/" in plain.text
    assert "L^-0.21" in res.text and "both fit two depths exactly" in res.text, res.text
    assert plain.text in result.verdict and res.numbers["depth_fit"]["exponent"] == pytest.approx(0.21, abs=0.01)


def test_results_at_init_without_recalibrated_bn_statistics_do_not_count(store, fast_estimates):
    """A shattering result at init made with a fresh net's (0, 1) BN statistics (or by a lab that did not record
    them) answers another question: the study neither uses it nor counts its job as done."""
    from lab.analysis.results import load_results, save_result
    from lab.studies.comparisons import analysis_results

    ids = fill(store, "shattering")
    save_results(store, "shattering", ids, lambda arm, seed: 0.5 + noise(arm, seed))
    arm = "shattering of plain-14 (at init)"
    before = evaluate("shattering", store, "smoke")
    assert len(analysis_results(before.data, arm)) == 2
    for rid in ids["plain-14"]:
        old = load_results(store, [rid], "shatter-init")[rid]
        del old["bn_statistics"], old["run"]["bn_statistics"]
        save_result(store, rid, "shatter-init", old)
    after = evaluate("shattering", store, "smoke")
    assert analysis_results(after.data, arm) == []
    assert [s.state for s in after.slots if s.arm == arm] == ["missing", "missing"]
    assert after.analysis.findings[1].outcome == "not enough seeds"


def test_analysis_arms_queue_jobs_after_their_runs(store, fast_estimates):
    from lab.analysis.queue import analysis_jobs

    plan = make_plan(get("ensembles"), "smoke")
    first = queue_missing(store, plan)
    runs = store.runs()
    jobs = analysis_jobs(store)
    assert len(runs) == 4 and len(jobs) == 4 and len(first.created) == 8
    assert set(jobs["parent_id"]) == set(runs["id"]) and set(jobs["job"]) == {"lesion"}
    assert all(o["images"] == 128 and o["draws"] == 1 for o in jobs["options"])
    assert jobs["created_at"].min() > runs["created_at"].max()   # a job is claimed after (and waits for) its run
    again = queue_missing(store, plan)
    assert not again.created and sorted(again.reused) == sorted(first.created)
    result = evaluate("ensembles", store, "smoke")
    assert result.status.planned == 8 and result.status.queued == 8


def test_analysis_arms_without_background_jobs(store, fast_estimates, monkeypatch):
    monkeypatch.setattr("lab.studies.plan.analysis_queue", lambda: None)
    ids = fill(store, "ensembles")
    result = evaluate("ensembles", store, "smoke")
    why = result.plan.unavailable()["lesions of resnet-14"]
    assert "lab.analysis.queue" in why and "python -m lab lesion RUN" in why
    assert result.analysis.findings[0].outcome == "not available" and result.status.planned == 4
    assert not queue_missing(store, result.plan).created
    # results made with the CLI are used all the same
    save_results(store, "ensembles", ids, lambda arm, seed: (0.05 if "resnet" in arm else 0.3) + noise(arm, seed))
    f = evaluate("ensembles", store, "smoke").analysis.findings[0]
    assert f.outcome == "effect" and f.text.startswith("resnet-14 suffers less from deleting one unit than plain-14")


# --- the CLI -----------------------------------------------------------------------------------------------------


def cli(capsys, *args):
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("args,message", [
    (["study", "show", "nope"], "error: unknown study 'nope'; known: degradation, depth, responses"),
    (["study", "run", "depth", "--budget", "huge"], "error: unknown budget 'huge'; known: smoke, cpu, paper"),
    (["study", "run", "depth", "--dataset", "imagenet"], "error: unknown data set 'imagenet'; known: cifar10"),
    (["study", "run", "depth", "--seeds", "0"], "error: seeds must be a positive integer, got 0"),
    (["study", "export", "nope", "--out", "x"], "error: unknown study 'nope'"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, capsys, tmp_path):
    rc, out, err = cli(capsys, *args, "--results", str(tmp_path / "r"))
    assert rc == 2 and err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err


def test_study_run_starts_a_worker_for_runs_queued_earlier(capsys, store, monkeypatch, fast_estimates):
    started = []
    monkeypatch.setattr("lab.runs.worker.ensure_worker", lambda *a, **k: started.append(1) or 4242)
    root = str(store.root)
    rc, out, _ = cli(capsys, "study", "run", "depth", "--budget", "smoke", "--no-worker", "--results", root)
    assert rc == 0 and "0 already stored or queued, 0 resumed, 4 queued now" in out and not started
    rc, out, _ = cli(capsys, "study", "run", "depth", "--budget", "smoke", "--results", root)
    assert "4 already stored or queued, 0 resumed, 0 queued now" in out and "started a background worker (pid 4242)" in out
    assert started == [1] and len(store.runs()) == 4


def test_show_json_on_a_fresh_folder(capsys, tmp_path, fast_estimates):
    rc, out, _ = cli(capsys, "study", "show", "degradation", "--json", "--results", str(tmp_path / "none"))
    data = json.loads(out)
    assert rc == 0 and data["id"] == "degradation" and data["verdict"] is None and data["status"]["state"] == "not started"
    assert data["question"].endswith("?") and data["runs"] == {a: [] for a in ("plain-20", "plain-56", "resnet-20", "resnet-56")}
    assert data["status"]["planned"] == 4 * budgets.BUDGETS["cpu"].seeds and not (tmp_path / "none").exists()


def test_list_show_and_export_from_stored_results(capsys, store, tmp_path, fast_estimates):
    value = lambda arm, seed: (0.35 if arm == "plain-14" else 0.15) + noise(arm, seed, 0.005)  # noqa: E731
    ids = fill(store, "degradation", train=value)
    root = str(store.root)
    rc, out, _ = cli(capsys, "study", "list", "--budget", "smoke", "--results", root)
    assert rc == 0 and all(s in out for s in STUDIES) and re.search(r"degradation\s+done\s+8/8\s+0", out)
    rc, out, _ = cli(capsys, "study", "show", "degradation", "--budget", "smoke", "--json", "--results", root)
    data = json.loads(out)
    assert data["verdict"].startswith("plain-14 trains worse than plain-8: final training error 35.")
    assert data["findings"][0]["numbers"]["n_a"] == 2 and sorted(data["runs"]["plain-14"]) == sorted(ids["plain-14"])
    rc, out, _ = cli(capsys, "study", "show", "degradation", "--budget", "smoke", "--results", root)
    assert "[effect] plain-14 trains worse than plain-8" in out
    rc, out, _ = cli(capsys, "study", "export", "degradation", "--budget", "smoke", "--out", str(tmp_path / "d.zip"),
                     "--formats", "", "--results", root)
    z = zipfile.ZipFile(tmp_path / "d.zip")
    names = set(z.namelist())
    assert rc == 0 and {"index.html", "study.json", "runs.csv", "data/curves.csv", "data/finals.csv"} <= names
    assert "plain-14 trains worse than plain-8" in z.read("index.html").decode()
    finals = z.read("data/finals.csv").decode()
    assert "plain-14: seeds" in finals and "35." in finals


# --- the Studies page --------------------------------------------------------------------------------------------


def studies_page(query: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=120)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.switch_page("pages/studies.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def page_text(at) -> str:
    return " ".join(str(e.value) for kind in ("markdown", "caption", "info", "warning", "error", "success", "header")
                    for e in getattr(at, kind))


def test_studies_page_on_an_empty_store(store, fast_estimates):
    at = studies_page()
    text = page_text(at)
    assert at.title[0].value == "Studies" and "Not enough finished runs yet" in text
    assert get("degradation").question in text
    queue = next(b for b in at.button if b.key == "studies_queue")
    assert queue.label == f"Queue {4 * budgets.BUDGETS['cpu'].seeds} missing run(s)" and not queue.disabled
    assert len(at.dataframe[0].value) == len(all_studies())


def test_studies_page_shows_the_verdict(store, fast_estimates):
    value = lambda arm, seed: (0.35 if arm == "plain-14" else 0.15) + noise(arm, seed, 0.005)  # noqa: E731
    fill(store, "degradation", train=value)
    at = studies_page({"study": "degradation", "budget": "smoke"})
    text = page_text(at)
    assert "plain-14 trains worse than plain-8: final training error 35." in text
    assert next(b for b in at.button if b.key == "studies_queue").disabled


def test_studies_page_queues_what_is_missing(store, fast_estimates, monkeypatch):
    started = []
    monkeypatch.setattr("lab.runs.worker.ensure_worker", lambda *a, **k: started.append(1) or 4242)
    fill(store, "depth", arms=["resnet-8"])   # half the study is stored already
    at = studies_page({"study": "depth", "budget": "smoke"})
    queue = next(b for b in at.button if b.key == "studies_queue")
    assert queue.label == "Queue 2 missing run(s)"
    queue.click().run()
    assert not at.exception and started
    assert "Queued 2 run(s), resumed 0; reused 2 stored" in at.success[0].value
    assert set(store.runs()["status"]) == {"done", "queued"} and len(store.runs()) == 4
    assert next(b for b in at.button if b.key == "studies_queue").disabled
    # the stand-in above started no worker: the page says so and offers to start one
    assert "queued but no worker is running" in " ".join(w.value for w in at.warning)
    next(b for b in at.button if b.key == "studies_worker").click().run()
    assert not at.exception and len(started) == 2


def test_studies_page_names_what_this_build_cannot_run(store, fast_estimates):
    at = studies_page({"study": "span", "budget": "cpu"})
    warnings = " ".join(w.value for w in at.warning)
    unavailable = make_plan(get("span"), "cpu").unavailable()
    for arm, why in unavailable.items():   # spans beyond 3 until the models package generalises the span
        assert f"{arm} cannot run in this build yet: {why}" in warnings
    assert bool(unavailable) == ("cannot run in this build yet" in warnings)


def test_runs_page_queues_a_deepened_run(store, monkeypatch):
    """The net2net study's instrument on the Runs page: a finished run, a depth, one button."""
    monkeypatch.setattr("lab.runs.worker.ensure_worker", lambda *a, **k: 4242)
    (parent,) = store.create_runs([make_config("smoke", kind="plain", depth=8, width=0.5)])
    store.set_status(parent, "done", final_train_error=0.5, final_test_error=0.5)
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=120)
    at.switch_page("pages/runs.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    depth = next(s for s in at.selectbox if s.key == "runs_deepen_depth")
    assert depth.options[:3] == ["14", "20", "26"]
    depth.select(20).run()
    next(b for b in at.button if b.key == "runs_deepen").click().run()
    assert not at.exception and f"{parent}: queued" in at.success[0].value
    child = store.runs().set_index("id").drop(index=parent).iloc[0]
    assert child["depth"] == 20 and child["config"]["deepen_from"] == parent and child["parent_id"] == parent
    assert child["status"] == "queued" and child["config"]["width"] == 0.5


def test_studies_page_says_what_each_arm_runs(store, fast_estimates):
    at = studies_page({"study": "net2net", "budget": "smoke"})
    arms = next(d.value for d in at.dataframe if "runs" in d.value.columns).set_index("arm")["runs"]
    assert arms["plain-8 → 14 (12 + 12 it)"] == "training, each run deepened from plain-8 (12 it)'s run of the same seed"
    assert arms["plain-8 (24 it)"] == "training"
    at = studies_page({"study": "ensembles", "budget": "smoke"})
    arms = next(d.value for d in at.dataframe if "runs" in d.value.columns).set_index("arm")["runs"]
    assert arms["lesions of plain-14"] == "a lesion job of each run of plain-14"
