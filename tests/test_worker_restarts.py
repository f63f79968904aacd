"""The background runner for real, under control: cancelling a running and a queued run, restarting the worker (a
second one refused), kill -9 of the worker with two runs in flight. (Beside tests/test_worker.py, whose helpers it
uses, so that each of pytest-xdist's two workers takes a share of these long tests.)"""
import signal
import subprocess
import sys
import time

from conftest import ROOT, wait_for
from lab.config import make_config
from lab.runs.store import Store
from test_worker import lab, slow, start_worker


def test_cancel_running_and_queued_runs(tmp_path):
    root = tmp_path / "results"
    store = Store(root)
    options = slow(15)
    n = options["iterations"]
    first, second = store.create_runs([make_config("smoke", **options), make_config("smoke", **options, seed=1)])
    worker = start_worker(root)
    try:
        wait_for(lambda: store.get_run(first)["iteration"] >= 10, 120, "the run to start")
        assert "cancelled" in lab("cancel", second, "--results", str(root)).stdout
        asked = time.time()
        assert "cancelling" in lab("cancel", first, "--results", str(root)).stdout
        wait_for(lambda: store.get_run(first)["status"] == "cancelled", 60, "the running run to stop")
        assert time.time() - asked < 30  # within seconds (a heartbeat, an iteration, a checkpoint), loaded CI too
        assert (store.run_dir(first) / "checkpoint.pt").exists()
        at = store.get_run(first)["iteration"]
        lab("resume", first, "--results", str(root), "--no-worker")
        wait_for(lambda: store.get_run(first)["status"] == "done", 600, "the resumed run")
    finally:
        worker.terminate()
        worker.wait(30)
    assert at < n
    steps = store.scalars(first, ["train_loss"])["step"].tolist()
    assert steps == sorted(set(steps)) and steps[-1] == n
    assert store.get_run(second)["status"] == "cancelled"


def test_worker_restart_leaves_runs_going_and_a_second_worker_is_refused(tmp_path):
    root = tmp_path / "results"
    store = Store(root)
    # the first run must outlast a worker restart; the second only waits its turn
    options = [slow(20), slow(1, least=100)]
    ids = store.create_runs([make_config("smoke", **o, seed=s) for s, o in enumerate(options)])
    worker = start_worker(root)
    try:
        wait_for(lambda: store.get_run(ids[0])["iteration"] >= 10, 120, "the first run")
        second = subprocess.run([sys.executable, "-m", "lab", "worker", "--results", str(root)], cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
        assert "already running" in second.stdout
        worker.send_signal(signal.SIGTERM)  # restart: stop it ...
        worker.wait(30)
        assert store.get_run(ids[0])["status"] == "running"
        assert store.get_run(ids[1])["status"] == "queued"  # one CPU slot: the second waits
        worker = start_worker(root)  # ... and start a new one, which must not double-book the slot
        time.sleep(3)
        assert store.get_run(ids[1])["status"] == "queued"
        wait_for(lambda: all(store.get_run(i)["status"] == "done" for i in ids), 600, "both runs")
    finally:
        worker.terminate()
        worker.wait(30)
    for rid, o in zip(ids, options):
        assert store.scalars(rid, ["train_loss"])["step"].tolist() == list(range(10, o["iterations"] + 1, 10))


def test_kill_9_of_the_worker_with_two_runs_in_flight(tmp_path):
    """The runs go on by themselves, each under the one attempt it was claimed with; a new worker leaves them
    alone; both finish with every step."""
    root = tmp_path / "results"
    store = Store(root)
    options = slow(8)
    n = options["iterations"]
    ids = store.create_runs([make_config("smoke", **options, seed=s) for s in range(2)])
    worker = start_worker(root, "--slots", "2")
    replacement = None
    try:
        runs = wait_for(lambda: (rs := [store.get_run(i) for i in ids]) and all(r["iteration"] >= 10 for r in rs)
                        and rs, 300, "both runs to be training")
        attempts = {r["id"]: r["attempt"] for r in runs}
        worker.kill()
        worker.wait()
        time.sleep(2)
        assert [store.get_run(i)["status"] for i in ids] == ["running", "running"]
        replacement = start_worker(root, "--slots", "2")
        wait_for(lambda: all(store.get_run(i)["status"] == "done" for i in ids), 400, "both runs to finish")
    finally:
        for proc in (worker, replacement):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(30)
    for rid in ids:
        run = store.get_run(rid)
        assert run["attempt"] == attempts[rid]  # never claimed again
        assert store.scalars(rid, ["train_loss"])["step"].tolist() == list(range(10, n + 1, 10))
