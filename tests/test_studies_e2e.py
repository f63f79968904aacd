"""Every study end to end at the smoke budget: queued by `study run`, trained, analysed, a verdict, an export.

The runs are trained in this process (claimed from the store and executed as the worker's children would), once
for the whole module: studies share runs (plain-8 serves five of them), which is the reuse being tested too.
The background worker itself is exercised by tests/test_worker.py and the browser test.
"""
import json
import zipfile

import pytest
import torch

from lab.__main__ import main
from lab.models import NetSpec, spec_problems
from lab.runs.execute import execute_run
from lab.runs.store import Store
from lab.studies import all_studies, get
from lab.studies.plan import make_plan
from lab.studies.report import evaluate

STUDIES = [s.id for s in all_studies() if "smoke" in s.grid]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A store with every study's smoke runs queued through the CLI and trained in-process."""
    root = tmp_path_factory.mktemp("studies") / "results"
    threads = torch.get_num_threads()
    # one thread: these nets are tiny, and on a busy 2-core machine a second thread mostly waits for the first
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("lab.runs.estimate.measured_gflops", lambda *a, **k: 50.0)
        for study in STUDIES:
            assert main(["study", "run", study, "--budget", "smoke", "--no-worker", "--results", str(root)]) == 0
        store = Store(root)
        queued = len(store.runs())
        try:
            while (run := store.claim_next("test-studies")) is not None:
                execute_run(store, run["id"], handle_signals=False, echo=lambda text: None, attempt=run["attempt"])
        finally:
            torch.set_num_threads(threads)
        yield store, queued


@pytest.fixture
def fast_estimates(monkeypatch):
    monkeypatch.setattr("lab.runs.estimate.measured_gflops", lambda *a, **k: 50.0)


def show(store, study, capsys) -> dict:
    capsys.readouterr()
    assert main(["study", "show", study, "--budget", "smoke", "--json", "--results", str(store.root)]) == 0
    return json.loads(capsys.readouterr().out)


def test_studies_share_runs(trained):
    store, queued = trained
    planned = sum(len(make_plan(get(s), "smoke").configs()) for s in STUDIES)
    assert queued < planned   # identical configurations across studies were queued once
    assert set(store.runs()["status"]) <= {"done", "diverged"}   # a diverged run is a result too


@pytest.mark.parametrize("study", STUDIES)
def test_study_end_to_end(study, trained, capsys, tmp_path, fast_estimates):
    store, _ = trained
    data = show(store, study, capsys)
    assert data["id"] == study and data["question"].endswith("?")
    s = data["status"]
    assert s["state"] == "done" and s["done"] + s["diverged"] == s["planned"]
    assert data["verdict"], data["findings"]
    assert all(ids for ids in data["runs"].values())
    assert any(f["outcome"] in ("effect", "no clear difference") for f in data["findings"])
    formats = "svg,pdf,png" if study == "degradation" else ""   # images cost seconds each: one study makes them all
    out = tmp_path / f"{study}.zip"
    assert main(["study", "export", study, "--budget", "smoke", "--out", str(out), "--formats", formats,
                 "--results", str(store.root)]) == 0
    names = set(zipfile.ZipFile(out).namelist())
    assert {"index.html", "study.json", "runs.csv"} <= names and any(n.startswith("data/") for n in names)
    if formats and "WARNINGS.txt" not in names:   # no Chromium: images are left out with a warning
        assert {"figures/curves.svg", "figures/curves.pdf", "figures/curves.png"} <= names


def test_a_second_study_run_queues_nothing(trained, capsys):
    store, _ = trained
    before = len(store.runs())
    for study in STUDIES:
        capsys.readouterr()
        assert main(["study", "run", study, "--budget", "smoke", "--no-worker", "--results", str(store.root)]) == 0
        assert ", 0 resumed, 0 queued now" in capsys.readouterr().out
    assert len(store.runs()) == before


@pytest.mark.skipif(bool(spec_problems(NetSpec(depth=14, span=4))),
                    reason="spans beyond 3 (4, 6, 12) need the models package's general span (3·span·m+2)")
def test_span_runs_every_span(trained, fast_estimates):
    store, _ = trained
    result = evaluate("span", store, "smoke")
    assert not result.plan.unavailable() and result.status.state == "done"
    assert all(f.outcome != "not available" for f in result.analysis.findings)


def _recorded(store, study, metric) -> bool:
    result = evaluate(study, store, "smoke", estimate=False, analyse=False)
    ids = [i for arm_ids in result.data.run_ids().values() for i in arm_ids]
    return all(store.layer_steps(i, metric) for i in ids)


def test_responses_explained_end_to_end(trained, fast_estimates):
    store, _ = trained
    if not _recorded(store, "responses", "bn_gamma"):
        pytest.skip("the trainer does not record response_std_batch, bn_gamma and bn_beta_std yet (models package)")
    result = evaluate("responses", store, "smoke")
    assert result.analysis.findings[-1].outcome in ("effect", "no clear difference") and result.analysis.notes
    assert {"responses-batch", "bn-gamma", "bn-beta"} <= set(result.figures())


def test_gradients_input_and_update_metrics_end_to_end(trained, fast_estimates):
    store, _ = trained
    if not _recorded(store, "gradients", "input_grad_norm") or not _recorded(store, "gradients", "update_ratio"):
        pytest.skip("the trainer does not record input_grad_norm and update_ratio yet (models package)")
    result = evaluate("gradients", store, "smoke")
    assert "with respect to the layers' inputs" in result.analysis.findings[1].text
    assert {"input-start", "update-start", "update-end"} <= set(result.figures())


def test_net2net_child_grew_from_its_parent(trained, fast_estimates):
    store, _ = trained
    result = evaluate("net2net", store, "smoke")
    parents = {s.config.seed: s.run["id"] for s in result.slots if s.arm == "plain-8 (12 it)"}
    children = [s.run for s in result.slots if s.arm == "plain-8 → 14 (12 + 12 it)"]
    assert len(children) == 2
    for child in children:
        run = store.get_run(child["id"])
        assert run["parent_id"] == run["config"]["deepen_from"] == parents[run["config"]["seed"]]
        assert run["env"]["parent"]["iteration"] == 12 and run["status"] in ("done", "diverged")
    joined = result.figures()["curves"][1]
    child_trace = next(t for t in joined.data if t.name.startswith("plain-8 → 14") and t.mode == "lines")
    assert max(child_trace.x) == 24 and min(child_trace.x) <= 4   # x: total iterations, from the parent's start


def test_analysis_studies_ran_their_jobs(trained, fast_estimates):
    from lab.analysis.queue import analysis_jobs

    store, _ = trained
    jobs = analysis_jobs(store)
    assert set(jobs["status"]) == {"done"} and set(jobs["job"]) == {"lesion", "landscape", "shatter"}
    for study in ("ensembles", "landscape", "shattering"):
        result = evaluate(study, store, "smoke")
        slots = [s for s in result.slots if s.analysis]
        assert slots and {s.state for s in slots} == {"done"} and not result.plan.unavailable()
