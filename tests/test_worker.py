"""The background runner for real: a worker process, child processes, kill -9 of a run, resume, reaping; the sweep
and run commands; slots. Cancels, and the worker's own restart and kill: tests/test_worker_restarts.py."""
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, iterations_lasting, wait_for
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


# runs to be caught mid-run: a small net on one CPU thread, for as many iterations (a multiple of 100, at least
# 200) as its training steps take the given seconds on this machine now (`iterations_lasting`): the runs last as
# long on a slow CPU as on a fast one, long enough to be caught, no longer
NET = dict(depth=20, width=0.5, checkpoint_every=40, log_every=10, eval_every=100, threads=1, device="cpu")


def slow(seconds: float, least: int = 200) -> dict:
    return dict(NET, iterations=iterations_lasting(seconds, least=least, **NET))


def test_kill_9_marks_interrupted_then_resume_finishes_without_gaps(tmp_path, db_url):
    root = tmp_path / "results"
    store = Store(root)
    options = slow(8)
    n = options["iterations"]
    (rid,) = store.create_runs([make_config("smoke", **options)])
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
    assert steps == list(range(10, n + 1, 10))
    assert store.layer_steps(rid, "response_std") == list(range(0, n + 1, 100))


def test_kill_9_without_a_worker_is_reaped_within_30_s(tmp_path):
    root = tmp_path / "results"
    store = Store(root)
    (rid,) = store.create_runs([make_config("smoke", **slow(60))])  # killed after seconds: never trained to the end
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
    # nobody watches the process now: `ls` (like the dashboard) reaps runs with a stale heartbeat and no process,
    # asked once the store counts the run dead (each `ls` is a process that imports torch: seconds of CPU)
    wait_for(lambda: store.stale_runs(), 40, "the run's heartbeat to go stale", every=0.5)
    assert '"interrupted"' in lab("ls", "--json", "--results", str(root)).stdout
    assert time.time() - killed_at < 30


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

