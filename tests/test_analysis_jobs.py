"""Analyses as background jobs: queued as rows of the runs table, claimed and executed like training runs (in
this process, as the worker's children would, and once through `python -m lab _execute`), with progress,
cancel, reuse, failures, the CLI's --background, and the pages that list and queue them."""
import json
import os
import subprocess
import sys
import threading
import time

import pytest
import torch
from streamlit.testing.v1 import AppTest

from conftest import ROOT, wait_for
from lab.__main__ import main
from lab.analysis import AnalysisError, load_results, run_analysis, save_result
from lab.analysis.restored import checkpoint_path
from lab.analysis.options import RESULTS, resolve_options, result_name
from lab.analysis.queue import analysis_jobs, describe, in_flight, queue_analysis, queue_result
from lab.config import make_config
from lab.fill import simulate_run
from lab.runs.execute import execute_run
from lab.runs.monitor import overview
from lab.runs.store import Store, StoreError

# what differs between two computations of the same result: when and how long it took
TIMING = ("elapsed_s", "created_at")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: a second thread on a busy 2-core machine mostly waits
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A residual 8-layer net (width 0.25) trained by the smoke preset, and a run that never trained."""
    store = Store(tmp_path_factory.mktemp("jobs") / "results")
    (rid,) = store.create_runs([make_config("smoke", kind="residual", depth=8, width=0.25)], status="running")
    assert execute_run(store, rid, handle_signals=False, echo=lambda _: None) == "done"
    (untrained,) = store.create_runs([make_config("smoke", kind="plain", depth=8, width=0.25)])
    assert store.request_cancel(untrained) == "cancelled"
    return store, rid, untrained


def execute_next(store, **kwargs) -> tuple[dict, str]:
    """Claim the next queued row and execute it as a worker's child would: (the claimed row, its end status)."""
    row = store.claim_next("test-jobs")
    assert row is not None
    return row, execute_run(store, row["id"], handle_signals=False, echo=lambda _: None, attempt=row["attempt"],
                            **kwargs)


def without_timing(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in TIMING}


def test_a_job_computes_what_the_foreground_computes(trained):
    store, rid, _ = trained
    options = {"images": 200, "draws": 1}
    job_id = queue_analysis(store, rid[:14], "lesion", options)
    row = store.get_run(job_id)
    assert row["job"] == "lesion" and row["parent_id"] == rid and row["status"] == "queued"
    assert row["config"] == resolve_options("lesion", options) and row["total_iterations"] == 0
    seen = []
    claimed, status = execute_next(store, progress=lambda done, total: seen.append((done, total)))
    assert claimed["id"] == job_id and status == "done"
    row = store.get_run(job_id)
    total = seen[-1][1]
    assert total > 1 and seen[0] == (0, total) and seen[-1] == (total, total)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert row["iteration"] == row["total_iterations"] == total and row["device"] == "cpu"
    assert row["message"] == f"saved result 'lesion' of run {rid} ({load_results(store, [rid], 'lesion')[rid]['elapsed_s']:.1f} s)"
    background = load_results(store, [rid], "lesion")[rid]
    _, foreground = run_analysis(store, rid, "lesion", options)
    save_result(store, rid, "lesion-foreground", foreground)  # kept the same way, so compared as kept
    assert without_timing(background) == without_timing(load_results(store, [rid], "lesion-foreground")[rid])


def test_an_identical_job_in_flight_is_reused(trained):
    store, rid, _ = trained
    a = queue_analysis(store, rid, "landscape", {"points": 3, "images": 16})
    assert queue_analysis(store, rid, "landscape", {"points": 3, "images": 16, "span": 1.0, "seed": 0}) == a
    b = queue_analysis(store, rid, "landscape", {"points": 3, "images": 16, "two_d": True})
    assert b != a and queue_result(store, rid, "landscape-2d") != b  # other options, another job
    assert set(in_flight(store, [rid])) == {(rid, "landscape"), (rid, "landscape-2d")}
    for job in (a, b):
        store.request_cancel(job)
    assert store.get_run(a)["status"] == "cancelled" and queue_analysis(store, rid, "landscape",
                                                                         {"points": 3, "images": 16}) != a
    store.delete_runs([j for j in analysis_jobs(store)["id"] if store.get_run(j)["status"] == "queued"], yes=True)
    assert not in_flight(store, [rid])


def test_every_result_the_dashboard_draws_has_its_job():
    for result, (name, options) in RESULTS.items():
        assert result_name(name, resolve_options(name, options)) == result


def test_a_cancel_mid_job_ends_it_cancelled_with_no_result(trained):
    store, rid, _ = trained
    job_id = queue_analysis(store, rid, "landscape", {"points": 6, "images": 32, "two_d": True})

    def cancel_at_two(done, total):
        if done == 2:
            assert store.request_cancel(job_id) == "cancelling"

    _, status = execute_next(store, progress=cancel_at_two)
    row = store.get_run(job_id)
    assert status == "cancelled" and row["status"] == "cancelled" and row["iteration"] == 2
    assert row["message"] == "stopped after 2 of 36 steps; no result saved" and row["cancel_requested"] == 0
    assert load_results(store, [rid], "landscape-2d") == {}

    # resumed (it needs no checkpoint: a job keeps nothing until it is done), it runs again from its first step
    assert main(["resume", job_id, "--no-worker", "--results", str(store.root)]) == 0
    row = store.get_run(job_id)
    assert row["status"] == "queued" and row["iteration"] == 0
    _, status = execute_next(store)
    assert status == "done" and store.get_run(job_id)["iteration"] == 36
    assert set(load_results(store, [rid], "landscape-2d")) == {rid}
    (store.run_dir(rid) / "analysis" / "landscape-2d.json").unlink()  # the module's later tests expect none
    assert load_results(store, [rid], "landscape-2d") == {}


def test_a_job_of_a_run_without_a_checkpoint_fails_saying_so(trained):
    store, _, untrained = trained
    job_id = queue_analysis(store, untrained, "shatter")
    _, status = execute_next(store)
    row = store.get_run(job_id)
    assert status == "failed" and row["status"] == "failed"
    assert row["message"].startswith(f"run {untrained} (cancelled, iteration 0) has no checkpoint yet")
    assert "\n" not in row["message"] and load_results(store, [untrained], "shatter") == {}


def run_while_its_run_trains(store, rid, job_id, meanwhile) -> str:
    """Execute claimed job `job_id` while its run `rid` is (again) running; `meanwhile()` once the job says it
    waits. Returns the job's end status."""
    row = store.claim_next("test-jobs")
    assert row["id"] == job_id
    store.update_run(rid, status="running")  # resumed while its job was starting
    out = []
    try:
        worker = threading.Thread(target=lambda: out.append(execute_run(
            store, job_id, handle_signals=False, echo=lambda _: None, attempt=row["attempt"])))
        worker.start()
        deadline = time.time() + 60
        while not (store.get_run(job_id)["message"] or "").startswith("waiting for run") and time.time() < deadline:
            time.sleep(0.05)
        assert worker.is_alive() and store.get_run(job_id)["iteration"] == 0
        meanwhile()
        worker.join(120)
    finally:
        store.update_run(rid, status="done")
    return out[0]


def test_a_job_waits_while_its_run_trains(trained, monkeypatch):
    store, rid, _ = trained
    monkeypatch.setattr("lab.analysis.background.PARENT_POLL_S", 0.05)
    job_id = queue_analysis(store, rid, "lesion", {"images": 50})
    assert run_while_its_run_trains(store, rid, job_id, lambda: store.request_cancel(job_id)) == "cancelled"
    assert store.get_run(job_id)["message"] == f"stopped while waiting for run {rid} to finish training; no result saved"
    job_id = queue_analysis(store, rid, "lesion", {"images": 40})
    assert run_while_its_run_trains(store, rid, job_id, lambda: store.update_run(rid, status="done")) == "done"
    row = store.get_run(job_id)
    assert f"run {rid} finished training (done); analysing it" in row["log_tail"]
    assert load_results(store, [rid], "lesion")[rid]["images"] == 40


def test_bad_jobs_are_refused_before_anything_is_stored(trained):
    store, rid, _ = trained
    job = queue_analysis(store, rid, "shatter", {"points": 8})
    store.request_cancel(job)
    before = len(analysis_jobs(store))
    with pytest.raises(StoreError, match="no run 'nope'"):
        queue_analysis(store, "nope", "lesion")
    with pytest.raises(AnalysisError, match="unknown analysis 'dissect'"):
        queue_analysis(store, rid, "dissect")
    with pytest.raises(AnalysisError, match="points must be an integer from 2"):
        queue_analysis(store, rid, "landscape", {"points": 1})
    with pytest.raises(AnalysisError, match="unknown result"):
        queue_result(store, rid, "lesion-3d")
    with pytest.raises(AnalysisError, match="is a shatter job, not a training run"):
        queue_analysis(store, job, "lesion")
    assert len(analysis_jobs(store)) == before


def test_background_cli_queues_and_the_child_entry_point_runs_it(trained, capsys, monkeypatch):
    store, rid, _ = trained
    root = str(store.root)
    started = []
    monkeypatch.setattr("lab.runs.worker.ensure_worker", lambda *a, **k: started.append(k) or 4242)
    assert main(["shatter", rid, "--background", "--points", "16", "--results", root]) == 0
    out = capsys.readouterr().out
    job_id = next(j for j in analysis_jobs(store)["id"] if out.startswith(f"queued job {j}: shatter of resnet-8"))
    assert "started a background worker (pid 4242)" in out and f"python -m lab cancel {job_id} --results {root}" in out
    assert main(["shatter", rid, "--background", "--points", "16", "--results", root, "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["job"] == job_id and again["reused"] and again["options"]["points"] == 16 and len(started) == 2
    assert main(["shatter", rid, "--background", "--device", "cuda", "--results", root]) == 2
    assert "--device applies to an analysis run here" in capsys.readouterr().err
    assert main(["lesion", rid, "--no-worker", "--results", root]) == 2
    assert main(["ls", "--results", root]) == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if line.startswith(job_id)]
    assert len(listed) == 1 and "queued" in listed[0] and "shatter of resnet-8" in listed[0]
    assert main(["ls", "--json", "--results", root]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[job_id]["job"] == "shatter" and rows[job_id]["parent_id"] == rid and rows[rid]["job"] == "train"

    # the worker's child: `python -m lab _execute JOB --attempt TOKEN` with the slot's --threads and --device
    row = store.claim_next("test-jobs")
    assert row["id"] == job_id
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-m", "lab", "_execute", job_id, "--attempt", row["attempt"],
                           "--results", root, "--threads", "1"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert store.get_run(job_id)["status"] == "done"
    result = load_results(store, [rid], "shatter")[rid]
    assert result["points"] == 16 and result["run"]["run_id"] == rid
    assert main(["show", job_id, "--results", root]) == 0
    assert "[done]" in capsys.readouterr().out


def test_the_background_worker_runs_a_job_that_a_cancel_stops(trained, capsys):
    store, rid, _ = trained
    root = str(store.root)
    for leftover in analysis_jobs(store).query("status == 'queued'")["id"]:
        store.request_cancel(leftover)
    job = queue_analysis(store, rid, "landscape", {"points": 20, "two_d": True, "seed": 1, "images": 500})
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    worker = subprocess.Popen([sys.executable, "-m", "lab", "worker", "--results", root, "--exit-when-idle", "1"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: store.get_run(job)["iteration"] >= 1, 180, "the job to make progress", every=0.1)
        assert main(["cancel", job, "--results", root]) == 0
        assert capsys.readouterr().out == f"{job}: cancelling\n"
        wait_for(lambda: store.get_run(job)["status"] != "running", 180, "the job to end", every=0.1)
        assert worker.wait(120) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    row = store.get_run(job)
    assert row["status"] == "cancelled" and 1 <= row["iteration"] < 400 and row["total_iterations"] == 400
    assert row["message"].startswith("stopped after") and row["slot"] == "cpu"
    assert load_results(store, [rid], "landscape-2d") == {}
    assert f"job {job}: cancelled (stopped after" in (store.run_dir(job) / "log.txt").read_text()


def test_training_views_never_see_job_rows(trained):
    store, rid, _ = trained
    queue_analysis(store, rid, "landscape", {"points": 5, "span": 0.5})   # its `span` is no run option
    runs = overview(store)
    assert set(runs["job"]) == {"train"} and rid in set(runs["id"])
    assert runs["span"].dtype.kind == "i" and runs.set_index("id").loc[rid, "span"] == store.get_run(rid)["config"]["span"]
    everything = overview(store, jobs=None)
    assert set(everything["job"]) > {"train"} and len(everything) == len(runs) + len(analysis_jobs(store))
    assert set(overview(store, jobs=["landscape"])["job"]) == {"landscape"}


# --- the pages ------------------------------------------------------------------------------------------


def page(name: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60)
    at.switch_page(f"pages/{name}.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.fixture
def with_jobs(store):
    """Simulated runs with (empty) checkpoint files, a queued lesion job of one and a finished shatter job."""
    ids = [simulate_run(store, kind, 14, 0, iterations=200, log_every=50, eval_every=100)
           for kind in ("plain", "residual")]
    for rid in ids:
        checkpoint_path(store, rid).parent.mkdir(parents=True, exist_ok=True)
        checkpoint_path(store, rid).write_bytes(b"")  # the pages only ask whether there is one
    queued = queue_analysis(store, ids[0], "lesion", {"draws": 2})
    done = queue_analysis(store, ids[1], "shatter", {"points": 64})
    store.update_run(done, status="done", iteration=1, total_iterations=1, message="saved result 'shatter'")
    failed = queue_result(store, ids[1], "landscape")
    store.update_run(failed, status="failed", message="the data went missing")
    return store, ids, queued, done


@pytest.mark.parametrize("name", ["launch", "runs", "curves", "depth", "responses", "gradients", "report", "studies",
                                  "inside"])
def test_pages_work_with_job_rows_in_the_store(name, with_jobs):
    store, ids, queued, done = with_jobs
    at = page(name)
    assert not at.error, [e.value for e in at.error]
    shown = " ".join(str(d.value) for d in at.dataframe if "id" in d.value.columns and name != "runs")
    assert queued not in shown and done not in shown
    selected = " ".join(c.value for c in at.sidebar.caption)
    assert "runs selected" not in selected or "2 of 2 runs selected" in selected


def test_runs_page_lists_jobs_with_what_they_analyse_and_cancels_one(with_jobs, monkeypatch):
    store, ids, queued, done = with_jobs
    monkeypatch.setattr("lab.runs.worker.ensure_worker", lambda *a, **k: None)
    at = page("runs")
    runs_table, jobs_table = at.dataframe[0].value, at.dataframe[1].value
    assert sorted(runs_table["id"]) == sorted(ids)
    assert list(jobs_table["id"])[1:] == [done, queued]
    what = dict(zip(jobs_table["id"], jobs_table["what"]))
    assert what[queued] == f"lesion of plain-14 seed 0 ({ids[0]}): draws 2"
    assert what[done] == f"shatter of resnet-14 seed 0 ({ids[1]}): points 64"
    assert list(jobs_table["progress"])[1:] == [1.0, 0.0] and list(jobs_table["it"])[1:] == ["1 / 1", "0 / 0"]
    assert "Analysis jobs are queued but no worker is running." in [w.value for w in at.warning]
    at.selectbox(key="runs_pick").set_value(queued).run()
    next(b for b in at.button if b.label == "Cancel").click().run()
    assert not at.exception and store.get_run(queued)["status"] == "cancelled"
    jobs_before = len(analysis_jobs(store))
    next(b for b in at.button if b.label == "Queue again").click().run()
    # resuming a job queues the same row again (as `lab resume JOB` does), no new job
    assert not at.exception and store.get_run(queued)["status"] == "queued"
    assert len(analysis_jobs(store)) == jobs_before and f"{queued}: queued again" in at.success[0].value


def test_inside_page_queues_a_missing_result_and_follows_its_job(with_jobs, monkeypatch):
    store, ids, queued, done = with_jobs
    started = []
    monkeypatch.setattr("lab.runs.worker.ensure_worker", lambda *a, **k: started.append(1) or 4242)
    at = page("inside")
    at.multiselect(key="inside_runs").set_value(ids).run()
    labels = [b.label for b in at.button if b.label.startswith("Compute")]
    # the queued lesion job shows as progress, not as a button (its options differ from the button's, though:
    # the button's result is the default lesion, which that job also produces)
    assert f"Compute lesion of resnet-14 seed 0 ({ids[1]})" in labels
    assert f"Compute lesion of plain-14 seed 0 ({ids[0]})" not in labels
    assert f"Compute shatter-init of plain-14 seed 0 ({ids[0]})" in labels
    assert f"The last job for landscape of resnet-14 seed 0 ({ids[1]}), " in " ".join(c.value for c in at.caption)
    assert f"Compute landscape of resnet-14 seed 0 ({ids[1]})" in labels  # a failed job can be queued again
    progress = [p.proto.text for p in at.get("progress")]
    assert f"lesion of plain-14 seed 0 ({ids[0]}): job {queued} queued" in progress
    next(b for b in at.button if b.label == f"Compute landscape-2d of resnet-14 seed 0 ({ids[1]})").click().run()
    assert not at.exception and started
    job = in_flight(store, [ids[1]])[(ids[1], "landscape-2d")]
    assert job["options"]["two_d"] is True and job["status"] == "queued"
    assert f"as job {job['id']}; started a background worker (pid 4242)" in at.success[0].value
    assert f"Compute landscape-2d of resnet-14 seed 0 ({ids[1]})" not in [b.label for b in at.button]
    assert describe(job).startswith(f"landscape-2d of resnet-14 seed 0 ({ids[1]})")
