"""The Ray executor for real: a Ray cluster on this machine (a head without GPUs, then a node declaring two GPUs
it does not have), the dispatcher (`lab worker --executor ray`) as a process, runs packed by GPU share, cancel
(obeyed, and enforced on a run that ignores it), and kill -9 of the node holding a run, which resumes on another
node with every metric step once. Skipped without Ray (failed under LAB_REQUIRE_SYSTEM=1)."""
import collections
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, require_system, wait_for
from lab.config import make_config
from lab.runs.store import FOREIGN_GRACE_S, Store

HAVE_RAY = importlib.util.find_spec("ray") is not None

RAY = str(Path(sys.executable).with_name("ray"))
SMALL = ["--object-store-memory", "80000000", "--disable-usage-stats"]
# long enough to be caught mid-run (checkpoints every 20 iterations), short enough for a busy 2-core machine
LONG = dict(depth=8, iterations=120, checkpoint_every=20, log_every=10, eval_every=60, batch_size=32)
SHORT = dict(depth=8, iterations=48, checkpoint_every=24, log_every=8, eval_every=24, batch_size=32)


def needs_ray():
    if not HAVE_RAY:
        if require_system():
            pytest.fail("Ray is not installed (pip install -r requirements-cluster.txt)")
        pytest.skip("Ray is not installed")


def descendants(pid: int) -> list[int]:
    """pid and every process below it (by parent pid, so children in other sessions count too)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    out, frontier = [pid], [pid]
    while frontier:
        frontier = [c for p in frontier for c in parents.get(p, [])]
        out += frontier
    return out


class Node:
    """One Ray node on this machine (`ray start --block`, so its processes are ours to stop or kill)."""

    def __init__(self, folder: Path, name: str, *args: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.log = folder / f"{name}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([RAY, "start", "--block", *args, *SMALL], stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: "Ray runtime started" in self.log.read_text() or self.proc.poll() is not None, 90,
                 f"Ray node {name}")
        assert self.proc.poll() is None, self.log.read_text()[-2000:]

    def kill(self) -> None:
        """kill -9 of the whole node, as when its machine dies: Ray's processes and the runs they started."""
        for pid in descendants(self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            pids = descendants(self.proc.pid)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                pass
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A Ray head with one CPU and no GPUs: on its own, a CPU-only cluster."""
    needs_ray()
    folder = tmp_path_factory.mktemp("ray")
    port = free_port()
    node = Node(folder, "head", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                "--num-cpus", "1", "--num-gpus", "0", "--include-dashboard", "false")
    node.address, node.folder = f"127.0.0.1:{port}", folder
    yield node
    node.stop()


@pytest.fixture(scope="module")
def gpu_node(head):
    """A second node declaring 2 GPUs (it has none: its runs train on the CPU) and 2 CPUs."""
    node = Node(head.folder, "gpu", "--address", head.address, "--node-ip-address", "127.0.0.1",
                "--num-cpus", "2", "--num-gpus", "2")
    node.address = head.address
    yield node
    node.stop()


class Dispatcher:
    """`python -m lab worker --executor ray` against the test cluster, logging to a file."""

    def __init__(self, root: Path, address: str, *extra: str) -> None:
        self.log = root / "dispatcher.log"
        root.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "lab", "worker", "--executor", "ray", "--ray-address", address,
                 "--results", str(root), "--exit-when-idle", "120", *extra],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def text(self) -> str:
        return self.log.read_text()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def steps_by_name(store: Store, run_id: str) -> dict[str, list[int]]:
    df = store.scalars(run_id)
    return {name: group["step"].tolist() for name, group in df.groupby("name")}


@pytest.fixture(scope="module")
def cpu_run(head, tmp_path_factory):
    """One uninterrupted LONG run through the dispatcher on the head alone (no GPUs in the cluster): the
    reference the resumed run is compared with."""
    root = tmp_path_factory.mktemp("cpu") / "results"
    store = Store(root)
    (rid,) = store.create_runs([make_config("smoke", **LONG)])
    with Dispatcher(root, head.address) as d:
        wait_for(lambda: store.get_run(rid)["status"] not in ("queued", "running"), 240, "the CPU run")
        log = d.text()
    return store, rid, log


# --- refusals (no cluster needed) ------------------------------------------------------------------------

def run_main(argv, capsys):
    from lab.__main__ import main

    code = main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("argv,expect", [
    (["--executor", "slurm"], "invalid choice: 'slurm'"),
    (["--executor", "ray", "--retries", "-1"], "--retries must be from 0"),
    (["--executor", "ray", "--cpus-per-run", "0"], "--cpus-per-run must be more than 0"),
    (["--ray-address", "127.0.0.1:6379"], "--ray-address and --cpus-per-run are for --executor ray"),
])
def test_bad_worker_options_are_one_line(argv, expect, capsys, tmp_path):
    code, err = run_main(["worker", "--results", str(tmp_path), *argv], capsys)
    assert code == 2 and expect in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_an_unreachable_ray_address_is_one_line(capsys, tmp_path):
    needs_ray()
    started = time.time()
    code, err = run_main(["worker", "--executor", "ray", "--ray-address", f"127.0.0.1:{free_port()}",
                          "--results", str(tmp_path)], capsys)
    assert code == 2 and "cannot reach a Ray cluster at 127.0.0.1:" in err and len(err.strip().splitlines()) == 1
    assert time.time() - started < 30
    code, err = run_main(["worker", "--executor", "ray", "--ray-address", "nonsense", "--results", str(tmp_path)],
                         capsys)
    assert code == 2 and "--ray-address must be HOST:PORT" in err


def test_without_ray_installed_the_ray_executor_says_how_to_get_it(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    code, err = run_main(["worker", "--executor", "ray", "--results", str(tmp_path)], capsys)
    assert code == 2 and "needs Ray, which is not installed" in err and "requirements-cluster.txt" in err


def test_shares_and_node_capacity():
    from lab.runs.executors.ray_cluster import Share, node_capacity, share_for

    assert share_for(2, per_gpu=2, cpus_per_run=1) == Share(gpus=0.5, cpus=0.5)
    assert share_for(0, per_gpu=2, cpus_per_run=3) == Share(gpus=0.0, cpus=3.0)      # no GPUs in the cluster
    assert share_for(8, per_gpu=1, cpus_per_run=1, device="cpu") == Share(gpus=0.0, cpus=1.0)
    third = share_for(1, per_gpu=3, cpus_per_run=1)
    assert node_capacity({"GPU": 2.0, "CPU": 16.0}, third) == 6
    assert node_capacity({"GPU": 2.0, "CPU": 1.0}, third) == 3                       # CPUs can be the limit
    assert node_capacity({"CPU": 16.0}, third) == 0                                  # a node without GPUs
    assert node_capacity({"CPU": 5.0}, Share(gpus=0.0, cpus=2.0)) == 2


# --- a real cluster ---------------------------------------------------------------------------------------

def test_a_cpu_only_cluster_runs_a_run_on_one_cpu(cpu_run):
    store, rid, log = cpu_run
    run = store.get_run(rid)
    assert run["status"] == "done", (run["message"], log[-2000:])
    assert "1 CPU per run, no GPUs" in log
    assert run["executor"] == "ray" and run["executor_ref"].startswith("ray:")
    assert run["slot"].startswith("ray:") and run["slot"].endswith(":cpu") and run["env"]["device"] == "cpu"


def test_a_sweep_is_packed_two_runs_per_gpu_share(gpu_node, tmp_path):
    root = tmp_path / "results"
    store = Store(root)
    ids = store.create_runs([make_config("smoke", **SHORT, seed=s) for s in range(4)])
    most = 0
    with Dispatcher(root, gpu_node.address, "--per-gpu", "2") as d:
        def all_ended():
            nonlocal most
            runs = [store.get_run(i) for i in ids]
            most = max(most, sum(r["status"] == "running" and r["pid"] is not None for r in runs))
            return all(r["status"] not in ("queued", "running") for r in runs)
        wait_for(all_ended, 240, "the sweep", every=0.5)
        log = d.text()
    runs = [store.get_run(i) for i in ids]
    assert [r["status"] for r in runs] == ["done"] * 4, ([r["message"] for r in runs], log[-3000:])
    assert "0.5 GPU and 0.5 CPU per run" in log and "4 run(s) at once" in log
    # Ray gave two runs each of the two GPUs (CUDA_VISIBLE_DEVICES 0 and 1), all on the GPU node, at once
    gpus = collections.Counter(r["slot"].rsplit(":", 1)[1] for r in runs)
    assert gpus == {"gpu0": 2, "gpu1": 2}
    assert len({r["slot"].split(":")[1] for r in runs}) == 1
    assert most >= 3  # 2 CPUs on the node: a whole CPU per run would allow only 2
    assert {r["env"]["device"] for r in runs} == {"cpu"}  # fake GPUs: the child fell back to the CPU
    assert all(store.scalars(r["id"], ["train_loss"])["step"].tolist() == list(range(8, 49, 8)) for r in runs)


def test_cancel_is_obeyed_and_enforced_on_a_run_that_ignores_it(gpu_node, tmp_path):
    root = tmp_path / "results"
    store = Store(root)
    slow = {**LONG, "iterations": 400}
    obeys, ignores = store.create_runs([make_config("smoke", **slow, seed=s) for s in range(2)])
    with Dispatcher(root, gpu_node.address, "--per-gpu", "2", "--cancel-grace", "5") as d:
        wait_for(lambda: all(store.get_run(i)["iteration"] >= 10 for i in (obeys, ignores)), 180, "both runs")
        store.request_cancel(obeys)
        asked = time.time()
        wait_for(lambda: store.get_run(obeys)["status"] == "cancelled", 60, "the run to obey its cancel")
        assert time.time() - asked < 30
        assert (store.run_dir(obeys) / "checkpoint.pt").exists()
        stuck = store.get_run(ignores)
        os.kill(stuck["pid"], signal.SIGSTOP)  # a run that cannot obey: no heartbeat, no iteration
        store.request_cancel(ignores)
        asked = time.time()
        wait_for(lambda: store.get_run(ignores)["status"] == "cancelled", 60, "the worker to enforce the cancel")
        assert 5 <= time.time() - asked < 30
        wait_for(lambda: not Path(f"/proc/{stuck['pid']}").exists() or "Z" in
                 Path(f"/proc/{stuck['pid']}/stat").read_text().rsplit(")", 1)[1].split()[:1], 60,
                 "the ignoring run's process to be stopped")
        log = d.text()
    assert "did not stop within 5 s" in store.get_run(ignores)["message"], log[-2000:]
    # the Ray task was cancelled and stopped its process (SIGTERM, SIGCONT: it resumed, found its run lost, exited)
    assert "ray: the task was stopped (KeyboardInterrupt)" in (store.run_dir(ignores) / "log.txt").read_text()
    assert store.get_run(ignores)["iteration"] < 400 and store.get_run(obeys)["iteration"] < 400


def test_kill_9_of_the_node_holding_a_run_resumes_it_on_another_node(cpu_run, gpu_node, tmp_path):
    ref_store, ref_id, _ = cpu_run
    root = tmp_path / "results"
    store = Store(root)
    (rid,) = store.create_runs([make_config("smoke", **LONG)])
    spare = None
    with Dispatcher(root, gpu_node.address, "--per-gpu", "2", "--retries", "1") as d:
        try:
            first = wait_for(lambda: (r := store.get_run(rid))["pid"] is not None and r, 180, "the run to start")
            # another node with a GPU, for the run to resume on (started now, so the run is on the GPU node)
            spare = Node(gpu_node.log.parent, "spare", "--address", gpu_node.address,
                         "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--num-gpus", "1")
            wait_for(lambda: store.get_run(rid)["iteration"] >= 40, 180, "the run to pass a checkpoint")
            assert store.get_run(rid)["status"] == "running"
            gpu_node.kill()
            killed = time.time()
            wait_for(lambda: (store.artifact(rid, "executor") or {}).get("retries") == 1, FOREIGN_GRACE_S + 30,
                     "the run to be interrupted and queued again")
            assert time.time() - killed < FOREIGN_GRACE_S
            wait_for(lambda: store.get_run(rid)["status"] not in ("queued", "running"), 240, "the resumed run")
            log = d.text()
        finally:
            if spare is not None:
                spare.stop()
    run = store.get_run(rid)
    assert run["status"] == "done", (run["message"], log[-3000:])
    (retried,) = store.artifact(rid, "executor")["history"]
    assert retried["attempt"] == first["attempt"] != run["attempt"]
    assert retried["why"] in ("its Ray node died", "its Ray worker process died"), retried
    assert 40 <= retried["iteration"] < LONG["iterations"]
    # resumed on the other node, from the checkpoint: every metric step once, as in an uninterrupted run
    assert retried["slot"].split(":")[1] != run["slot"].split(":")[1]
    starts = [int(n) for n in re.findall(r"starting at iteration (\d+)", (store.run_dir(rid) / "log.txt").read_text())]
    assert len(starts) == 2 and starts[0] == 0 and 0 < starts[1] <= retried["iteration"]
    assert starts[1] % LONG["checkpoint_every"] == 0
    assert steps_by_name(store, rid) == steps_by_name(ref_store, ref_id)
    assert store.layer_steps(rid, "response_std") == ref_store.layer_steps(ref_id, "response_std")
