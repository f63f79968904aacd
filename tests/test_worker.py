"""The background runner for real: a worker process, child processes, kill -9, cancel, resume, restart."""
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, wait_for
from lab.config import make_config
from lab.models import ConfigError
from lab.runs.store import Store
from lab.runs.sweep import SweepSpec, expand


def lab(*args, check=True, timeout=120):
    proc = subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def start_worker(root, *extra):
    return subprocess.Popen([sys.executable, "-m", "lab", "worker", "--results", str(root), *extra],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# long enough to be caught mid-run: about 20-30 s on a 2-core CPU
SLOW = dict(depth=44, iterations=300, checkpoint_every=40, log_every=10, eval_every=100, threads=1)


def test_kill_9_marks_interrupted_then_resume_finishes_without_gaps(tmp_path, db_url):
    root = tmp_path / "results"
    store = Store(root)
    (rid,) = store.create_runs([make_config("smoke", **SLOW)])
    worker = start_worker(root)
    try:
        run = wait_for(lambda: (r := store.get_run(rid))["iteration"] >= 60 and r, 120, "the run to pass a checkpoint")
        os.kill(run["pid"], signal.SIGKILL)
        killed_at = time.time()
        wait_for(lambda: store.get_run(rid)["status"] == "interrupted", 30, "interrupted status")
        assert time.time() - killed_at < 30
        assert "killed by signal 9" in store.get_run(rid)["message"]
        lab("resume", rid, "--results", str(root), "--no-worker")
        wait_for(lambda: store.get_run(rid)["status"] == "done", 600, "the resumed run to finish")
    finally:
        worker.terminate()
        worker.wait(30)
    steps = store.scalars(rid, ["train_loss"])["step"].tolist()
    assert steps == list(range(10, 301, 10))
    assert store.layer_steps(rid, "response_std") == [0, 100, 200, 300]


def test_kill_9_without_a_worker_is_reaped_within_30_s(tmp_path):
    root = tmp_path / "results"
    store = Store(root)
    (rid,) = store.create_runs([make_config("smoke", **SLOW)])
    worker = start_worker(root)
    run = wait_for(lambda: (r := store.get_run(rid))["iteration"] >= 10 and r, 120, "the run to start")
    worker.kill()  # the worker dies: the run goes on by itself
    worker.wait()
    time.sleep(2)
    assert store.get_run(rid)["status"] == "running"
    it = store.get_run(rid)["iteration"]
    wait_for(lambda: store.get_run(rid)["iteration"] > it, 60, "the run to go on without its worker")
    os.kill(run["pid"], signal.SIGKILL)
    killed_at = time.time()
    # nobody watches the process now: `ls` (like the dashboard) reaps runs with a stale heartbeat and no process
    wait_for(lambda: '"interrupted"' in lab("ls", "--json", "--results", str(root)).stdout, 40, "the reaper")
    assert time.time() - killed_at < 30


def test_cancel_running_and_queued_runs(tmp_path):
    root = tmp_path / "results"
    store = Store(root)
    first, second = store.create_runs([make_config("smoke", **SLOW), make_config("smoke", **SLOW, seed=1)])
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
    assert at < 300
    steps = store.scalars(first, ["train_loss"])["step"].tolist()
    assert steps == sorted(set(steps)) and steps[-1] == 300
    assert store.get_run(second)["status"] == "cancelled"


def test_worker_restart_leaves_runs_going_and_a_second_worker_is_refused(tmp_path):
    root = tmp_path / "results"
    store = Store(root)
    ids = store.create_runs([make_config("smoke", **SLOW, seed=s) for s in range(2)])
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
    for rid in ids:
        assert store.scalars(rid, ["train_loss"])["step"].tolist() == list(range(10, 301, 10))


def test_sweep_command_queues_everything(tmp_path, db_url):
    out = lab("sweep", "--kinds", "plain,residual", "--depths", "20,32", "--seeds", "2", "--preset", "smoke",
              "--grid", "shortcut=A,B", "--results", str(tmp_path), "--no-worker").stdout
    assert "queued 16 run(s)" in out
    df = Store(tmp_path).runs()
    assert len(df) == 16 and set(df["seed"]) == {0, 1} and set(df["shortcut"]) == {"A", "B"}
    listing = lab("ls", "--json", "--results", str(tmp_path)).stdout
    import json

    rows = json.loads(listing)
    assert {"id", "status", "kind", "depth", "iteration", "total_iterations"} <= set(rows[0])


def test_bad_sweep_is_refused_whole_with_every_problem(tmp_path):
    proc = lab("sweep", "--kinds", "plain,resnet", "--depths", "20,21", "--preset", "smoke", "--lr", "-1",
               "--results", str(tmp_path), "--no-worker", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    for part in ("kind 'resnet'", "depth 21", "lr must be a positive number"):
        assert part in proc.stderr
    assert Store(tmp_path).runs().empty  # nothing queued half-way


def test_expand_validates():
    with pytest.raises(ConfigError, match="unknown option 'shortcutz'"):
        expand(SweepSpec(grid={"shortcutz": ["A"]}))
    with pytest.raises(ConfigError, match="depths: give at least one"):
        expand(SweepSpec(depths=[]))
    configs = expand(SweepSpec(kinds=["plain"], depths=[20, 56], seeds=[0, 1, 2], preset="smoke"))
    assert len(configs) == 6 and {c.seed for c in configs} == {0, 1, 2}


@pytest.mark.parametrize("args,message", [
    (["resume", "nope"], "no run 'nope'"),
    (["cancel", "nope"], "no run 'nope'"),
    (["delete", "nope"], "no run 'nope'"),
])
def test_impossible_requests_are_clear_errors(tmp_path, args, message):
    Store(tmp_path)
    proc = lab(*args, "--results", str(tmp_path), check=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_resuming_a_finished_run_is_refused(tmp_path):
    store = Store(tmp_path)
    (rid,) = store.create_runs([make_config("smoke")])
    store.set_status(rid, "done")
    proc = lab("resume", rid, "--results", str(tmp_path), check=False)
    assert proc.returncode == 2 and "is done" in proc.stderr


# --- slots: GPUs packed, each child on the one GPU it sees -------------------------------------------------

def test_plan_slots_packs_gpus_and_maps_each_child_to_cuda_0():
    from lab.runs.worker import plan_slots

    plan = plan_slots(per_gpu=2, gpus=2)
    assert [s.name for s in plan] == ["cuda:0", "cuda:0", "cuda:1", "cuda:1"]
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in plan] == ["0", "0", "1", "1"]
    assert {s.device for s in plan} == {"cuda:0"}  # a child restricted to GPU g calls it cuda:0
    threads = max(1, (os.cpu_count() or 1) // 4)
    assert all(s.threads == threads and s.env["OMP_NUM_THREADS"] == s.env["MKL_NUM_THREADS"] == str(threads)
               for s in plan)
    assert [s.name for s in plan_slots(slots=3, per_gpu=2, gpus=2)] == ["cuda:0", "cuda:0", "cuda:1"]
    cpu = plan_slots(slots=2, device="cpu", gpus=2)
    assert [s.name for s in cpu] == ["cpu", "cpu"] and all(s.device is None for s in cpu)
    assert cpu[0].env["CUDA_VISIBLE_DEVICES"] == ""


def test_the_worker_gives_each_child_its_token_and_its_slot_s_device(db_store, monkeypatch):
    from lab.runs import worker as worker_mod

    started = []

    class FakePopen:
        pid = 4242

        def __init__(self, cmd, env=None, **kwargs):
            started.append((cmd, env))

        def poll(self):
            return None

    monkeypatch.setattr(worker_mod.subprocess, "Popen", FakePopen)
    w = worker_mod.Worker(db_store)
    w.plan = worker_mod.plan_slots(per_gpu=1, gpus=2)
    (rid,) = db_store.create_runs([make_config("smoke", device="cuda:1")])
    run = db_store.claim_next(w.id)
    w.spawn(run, w.plan[1])
    cmd, env = started[0]
    assert cmd[cmd.index("--attempt") + 1] == run["attempt"] and cmd[cmd.index("--device") + 1] == "cuda:0"
    assert env["CUDA_VISIBLE_DEVICES"] == "1"
    assert db_store.get_run(rid)["pid"] == 4242 and db_store.get_run(rid)["slot"] == "cuda:1"


def test_a_slot_s_device_wins_unless_the_run_wants_the_cpu():
    from lab.runs.execute import placed_device

    assert placed_device("cuda:1", "cuda:0") == "cuda:0" and placed_device("auto", "cuda:0") == "cuda:0"
    assert placed_device("cpu", "cuda:0") == "cpu" and placed_device("cuda", None) == "cuda"


def test_sweep_and_resume_pass_per_gpu_to_the_worker_they_start(tmp_path, monkeypatch, capsys):
    from lab.__main__ import main
    from lab.runs import worker as worker_mod

    calls = []
    monkeypatch.setattr(worker_mod, "ensure_worker", lambda store, **kw: calls.append(kw) or 1234)
    root = str(tmp_path / "results")
    assert main(["sweep", "--kinds", "plain", "--depths", "20", "--preset", "smoke", "--per-gpu", "3",
                 "--slots", "2", "--results", root]) == 0
    assert calls[-1]["per_gpu"] == 3 and calls[-1]["slots"] == 2
    store = Store(root)
    rid = store.runs()["id"][0]
    store.request_cancel(rid)
    assert main(["resume", rid, "--per-gpu", "2", "--results", root]) == 0
    assert calls[-1]["per_gpu"] == 2


def test_ensure_worker_starts_the_worker_with_per_gpu(store, monkeypatch):
    from lab.runs import worker as worker_mod

    started = []

    class FakePopen:
        pid = 99

        def __init__(self, cmd, **kwargs):
            started.append(cmd)

        def poll(self):
            return 0

        def wait(self):
            return 0

    monkeypatch.setattr(worker_mod.subprocess, "Popen", FakePopen)
    assert worker_mod.ensure_worker(store, slots=0, per_gpu=4) == 99
    cmd = started[0]
    # slots 0: the automatic count for that share (`auto_slots`), which the worker gets spelled out
    auto, _ = worker_mod.auto_slots("auto", store, per_gpu=4)
    assert cmd[cmd.index("--per-gpu") + 1] == "4" and cmd[cmd.index("--slots") + 1] == str(auto)


# --- faults ---------------------------------------------------------------------------------------------

def test_kill_9_of_the_worker_with_two_runs_in_flight(tmp_path):
    """The runs go on by themselves, each under the one attempt it was claimed with; a new worker leaves them
    alone; both finish with every step."""
    root = tmp_path / "results"
    store = Store(root)
    slow = {**SLOW, "iterations": 200}
    ids = store.create_runs([make_config("smoke", **slow, seed=s) for s in range(2)])
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
        assert store.scalars(rid, ["train_loss"])["step"].tolist() == list(range(10, 201, 10))
