"""`lab demo`'s engine: the demo's runs, the verdict sentences, and a whole demo through the real worker at
tiny sizes."""
import os
import signal
from dataclasses import replace

import pytest

from lab import demo
from lab.runs.sweep import expand


def test_the_demo_is_plain_and_residual_at_20_and_56_on_the_quick_preset_longest_first():
    configs = demo.demo_configs()
    assert [(c.kind, c.depth) for c in configs[:2]] in ([("plain", 56), ("residual", 56)],
                                                        [("residual", 56), ("plain", 56)])
    assert {(c.kind, c.depth) for c in configs} == {("plain", 20), ("plain", 56), ("residual", 20), ("residual", 56)}
    assert {(c.preset, c.dataset, c.seed, c.tag) for c in configs} == {("quick", "fashion-mnist", 0, "quick demo")}
    assert {c.precision for c in demo.demo_configs(precision="fp32")} == {"fp32"}


def test_verdict_says_what_the_numbers_show():
    lines = demo.verdict({("plain", 20): 0.20, ("plain", 56): 0.45, ("residual", 20): 0.17, ("residual", 56): 0.18})
    assert lines[0] == ("The deeper plain net trains worse (the degradation problem): plain-56 ends at 45.0% "
                        "training error, plain-20 at 20.0% (+25.0 points).")
    assert lines[1].startswith("With shortcuts the 56-layer net trains better: ResNet-56 ends at 18.0%")
    assert lines[1].endswith("(-27.0 points).")
    assert lines[2].startswith("The deeper residual net trains about as well as the shallower one")
    assert "One seed each" in lines[3]


def test_verdict_without_degradation_and_with_runs_missing():
    lines = demo.verdict({("plain", 20): 0.30, ("plain", 56): 0.20, ("residual", 56): 0.25})
    assert lines[0].startswith("The deeper plain net trains better (no degradation this time)")
    assert lines[1].startswith("The shortcuts do not help at 56 layers")
    assert len(lines) == 3   # ResNet-20 missing: its comparison is left out
    assert demo.verdict({}) == []


def tiny_demo():
    """The demo's four runs on seconds of synthetic data."""
    spec = replace(demo.DEMO_SWEEP, preset="smoke", dataset="synthetic",
                   overrides=dict(width=0.25, iterations=8, log_every=4, eval_every=8, grad_every=4,
                                  checkpoint_every=8, train_limit=256, eval_images=64, device="cpu"))
    return expand(spec)


def test_run_demo_queues_starts_a_worker_waits_and_prints_the_verdict(store):
    lines = []
    try:
        code = demo.run_demo(store, slots=2, out=lines.append, progress=False, configs=tiny_demo(), poll_s=0.2)
    finally:
        for w in store.live_workers():   # the worker would wait for more runs
            os.kill(w["pid"], signal.SIGTERM)
    assert code == 0, lines
    runs = store.runs()
    assert set(runs["status"]) == {"done"} and set(runs["tag"]) == {"quick demo"} and len(runs) == 4
    assert lines[0].startswith("Queued 4 runs") and "estimated time here" in lines[0]
    assert any(line.startswith("Started a background worker") for line in lines)
    assert any("plain-56 ends at" in line and "plain-20 at" in line for line in lines)
    assert any("ResNet-56 ends at" in line and "ResNet-20 at" in line for line in lines)


@pytest.fixture
def no_estimate(monkeypatch):
    """The estimate's quick speed measurement left out (it takes seconds on a busy machine)."""
    from lab.runs.estimate import Estimate

    monkeypatch.setattr(demo, "estimate_sweep", lambda *a, **k: Estimate(60.0, "1 min", "a test"))


def test_run_demo_without_a_worker_says_how_to_start_one(store, monkeypatch, no_estimate):
    monkeypatch.setattr("lab.runs.worker.ensure_worker", lambda *a, **k: None)
    monkeypatch.setattr(demo, "NO_WORKER_S", 0.0)
    lines = []
    code = demo.run_demo(store, out=lines.append, progress=False, configs=tiny_demo()[:1], poll_s=0.05)
    assert code == 1 and lines[-1] == f"No worker is taking the runs; start one with: lab worker --results {store.root}"
    assert set(store.runs()["status"]) == {"queued"}   # left for a worker, nothing lost


@pytest.mark.parametrize("status", ["failed", "diverged"])
def test_run_demo_names_a_run_that_did_not_finish(store, monkeypatch, status, no_estimate):
    monkeypatch.setattr("lab.runs.worker.ensure_worker", lambda *a, **k: 4242)
    configs = tiny_demo()[:2]
    real_create = store.create_runs

    def create_and_end(cfgs):
        ids = real_create(cfgs)
        store.update_run(ids[0], status=status, message="loss became NaN")
        store.update_run(ids[1], status="done", final_train_error=0.3)
        return ids

    monkeypatch.setattr(store, "create_runs", create_and_end)
    lines = []
    assert demo.run_demo(store, out=lines.append, progress=False, configs=configs, poll_s=0.05) == 1
    assert any(f"{status}: loss became NaN" in line for line in lines)


def test_the_estimate_measures_in_the_runs_precision(monkeypatch):
    """A CPU with native bf16 trains bf16 about twice as fast as fp32: runs set to fp32 are timed in fp32."""
    from lab.runs import estimate

    asked = []
    monkeypatch.setattr(estimate, "measured_gflops", lambda device="auto", width=1.0, threads=0, precision="auto":
                        asked.append(precision) or (100.0 if precision == "bf16" else 50.0))
    configs = tiny_demo()
    fp32 = estimate.estimate_sweep(None, [replace(c, precision="fp32") for c in configs], slots=2)
    bf16 = estimate.estimate_sweep(None, [replace(c, precision="bf16") for c in configs], slots=2)
    assert asked == ["fp32", "bf16"]
    startup = estimate.STARTUP_S * len(configs) / 2
    assert fp32.seconds - startup == pytest.approx(2 * (bf16.seconds - startup))


def test_the_demo_costs_a_fifth_less_than_the_degradation_studys_cpu_runs_and_logs_within_seconds():
    """Sized against a measured schedule: the degradation study's cpu runs took 182-205 s (56 layers) and 70-83 s
    (20 layers) two at a time on 2 AVX2 cores; the demo's four runs, counted in multiply-adds, cost about 80% of
    those (with its lighter gradient probes, which this count leaves out, about 75%: 3.5 minutes there). Its first
    training window is logged after 20 iterations (seconds)."""
    from lab.config import make_config
    from lab.runs.estimate import evaluation_macs, training_macs
    from lab.studies.budgets import schedule

    preset, overrides, _ = schedule("cpu", "degradation")
    study = [make_config(preset, kind=k, depth=d, **overrides) for k in ("plain", "residual") for d in (20, 56)]
    configs = demo.demo_configs()

    def cost(cfgs):
        return sum(training_macs(c) + evaluation_macs(c) for c in cfgs)

    assert cost(configs) <= 0.82 * cost(study)
    assert all(c.log_every <= 20 and c.eval_every <= 200 and c.width == 0.5 for c in configs)
