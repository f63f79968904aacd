"""The runs layer on its own: job kinds, the automatic slot count, the worker's log and lock, deepening from the
stored parent, and what a Ray task is given (no database password) or refused (SQLite on several machines)."""
import os
import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest

from conftest import ROOT
from lab.config import make_config
from lab.runs import worker as worker_mod
from lab.runs.execute import execute_run
from lab.runs.kinds import job_kind, register_kind
from lab.runs.slots import auto_slots
from lab.runs.store import StoreError

TINY = dict(iterations=8, log_every=4, eval_every=8, grad_every=4, checkpoint_every=8, probe_batch=16,
            train_limit=256, eval_images=64, width=0.25)


# --- layers -----------------------------------------------------------------------------------------------

def test_the_runs_layer_loads_no_analysis_and_no_study():
    code = ("import sys, lab.runs.worker, lab.runs.execute, lab.runs.monitor, lab.runs.executors.local; "
            "print(sorted(m for m in sys.modules if m.startswith(('lab.analysis', 'lab.studies'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_registered_kind_is_executed_under_the_attempt_and_an_unknown_one_fails_in_one_line(store):
    seen = []

    def execute(context):
        seen.append((context.row["id"], context.row["parent_id"], context.reporter.attempt))
        return context.reporter.end("done", "counted", iteration=1)

    register_kind("count", execute, check=lambda row: None)
    (rid,) = store.create_runs([make_config("smoke")])
    store.request_cancel(rid)  # a job waits while its run is queued
    job = store.create_job("count", rid, {"n": 1})
    row = store.claim_next("test", jobs=["count"])
    assert execute_run(store, job, attempt=row["attempt"], handle_signals=False, echo=lambda _: None) == "done"
    assert seen == [(job, rid, row["attempt"])] and store.get_run(job)["message"] == "counted"

    other = store.create_job("nosuchkind", rid, {})
    row = store.claim_next("test", jobs=["nosuchkind"])
    assert execute_run(store, other, attempt=row["attempt"], handle_signals=False, echo=lambda _: None) == "failed"
    message = store.get_run(other)["message"]
    assert "no job kind 'nosuchkind' is registered" in message and "\n" not in message
    with pytest.raises(StoreError, match="known: .*count"):
        job_kind("nosuchkind")


def test_a_kinds_check_refuses_a_row_before_it_executes(store):
    ran = []

    def refuse(row):
        raise StoreError(f"job {row['id']} asks for too much")

    register_kind("picky", lambda context: ran.append(1) or "done", check=refuse)
    (rid,) = store.create_runs([make_config("smoke")])
    store.request_cancel(rid)
    job = store.create_job("picky", rid, {})
    row = store.claim_next("test", jobs=["picky"])
    assert execute_run(store, job, attempt=row["attempt"], handle_signals=False, echo=lambda _: None) == "failed"
    assert not ran and store.get_run(job)["message"] == f"job {job} asks for too much"


# --- deepening -------------------------------------------------------------------------------------------

def test_a_deepened_run_starts_from_the_parent_stored_when_it_was_queued(store):
    """Its `deepen_from` prefix was unique when it was queued; a run created since shares it. The run still
    deepens the parent it was queued for (resolving the prefix again would be ambiguous, or another run)."""
    (pid,) = store.create_runs([make_config("smoke", kind="plain", depth=8, **TINY)], status="running")
    assert execute_run(store, pid, handle_signals=False, echo=lambda _: None) == "done"
    prefix = pid[:12]   # "plain8-MMDD-": every plain-8 run of today
    (cid,) = store.create_runs([make_config("smoke", kind="plain", depth=14, deepen_from=prefix, **TINY)])
    assert store.get_run(cid)["parent_id"] == pid
    store.create_runs([make_config("smoke", kind="plain", depth=8, seed=1, **TINY)])  # now the prefix names two
    store.update_run(cid, status="running")
    assert execute_run(store, cid, handle_signals=False, echo=lambda _: None) == "done", store.get_run(cid)["message"]
    assert store.get_run(cid)["env"]["parent"]["iteration"] == 8


def test_a_deepened_run_whose_parent_was_deleted_fails_naming_it(store):
    (pid,) = store.create_runs([make_config("smoke", kind="plain", depth=8, **TINY)])
    (cid,) = store.create_runs([make_config("smoke", kind="plain", depth=14, deepen_from=pid, **TINY)])
    store.request_cancel(pid)
    store.delete_run(pid)
    store.update_run(cid, status="running")
    assert execute_run(store, cid, handle_signals=False, echo=lambda _: None) == "failed"
    assert f"deepens run {pid}, which is not in the store any more" in store.get_run(cid)["message"]


# --- automatic slots -------------------------------------------------------------------------------------

def quick(kind: str, depth: int, **over):
    return make_config("quick", kind=kind, depth=depth, **{"width": 0.5, "batch_size": 32, "iterations": 1000, **over})


def test_two_cores_and_half_width_nets_get_two_slots_of_one_thread():
    demo = [quick(k, d) for k in ("plain", "residual") for d in (56, 20)]
    slots, reason = auto_slots("cpu", demo, cores=2, memory_bytes=2**34)
    assert slots == 2 and reason.startswith("2 runs at once, 1 thread each")
    assert auto_slots("cpu", demo, cores=2, memory_bytes=2**34)[0] == 2
    # never more slots than runs, cores, or what the memory holds
    assert auto_slots("cpu", demo[:1], cores=2, memory_bytes=2**34)[0] == 1
    assert auto_slots("cpu", demo, cores=16, memory_bytes=2**34)[0] <= 4
    assert auto_slots("cpu", demo, cores=2, memory_bytes=2**29)[0] == 1
    assert auto_slots("cpu", [], cores=2) == (1, "nothing queued: one run at a time with 2 threads")


def test_a_long_wide_run_beside_a_short_one_gets_every_thread():
    """Threads pay off for wide nets and big batches: a long full-width run and a short one end sooner one after
    the other with both threads than side by side, the long one alone on one thread."""
    runs = [make_config("paper", kind="plain", depth=110, iterations=1000), make_config("paper", depth=20, iterations=100)]
    slots, reason = auto_slots("cpu", runs, cores=2, memory_bytes=2**34)
    assert slots == 1 and "2 threads" in reason


def test_gpus_get_one_slot_per_gpu_share():
    assert auto_slots("auto", [quick("plain", 20)], gpus=2, per_gpu=3)[0] == 6
    assert auto_slots("cpu", [quick("plain", 20)] * 4, gpus=2, cores=2, memory_bytes=2**34)[0] == 2


def test_auto_slots_reads_a_stores_queued_training_runs(store):
    store.create_runs([quick(k, d) for k in ("plain", "residual") for d in (56, 20)])
    assert auto_slots("cpu", store, cores=2, memory_bytes=2**34)[0] == 2
    for rid in store.runs()["id"]:
        store.request_cancel(rid)
    assert auto_slots("cpu", store, cores=2, memory_bytes=2**34)[0] == 1


class FakePopen:
    pid = 99
    started: list = []

    def __init__(self, cmd, **kwargs):
        FakePopen.started.append((cmd, kwargs))

    def poll(self):
        return 0

    def wait(self):
        return 0


def test_ensure_worker_starts_the_worker_with_the_automatic_slots_unless_given(store, monkeypatch):
    FakePopen.started = []
    monkeypatch.setattr(worker_mod.subprocess, "Popen", FakePopen)
    monkeypatch.setattr(worker_mod, "auto_slots", lambda device, runs, per_gpu=1: (3, "three"))
    assert worker_mod.ensure_worker(store) == 99
    cmd = FakePopen.started[-1][0]
    assert cmd[cmd.index("--slots") + 1] == "3"
    worker_mod.ensure_worker(store, slots=5)
    cmd = FakePopen.started[-1][0]
    assert cmd[cmd.index("--slots") + 1] == "5"


# --- the worker's log and lock ---------------------------------------------------------------------------

def test_the_worker_log_is_rotated_when_the_next_worker_starts(store, monkeypatch):
    FakePopen.started = []
    monkeypatch.setattr(worker_mod.subprocess, "Popen", FakePopen)
    monkeypatch.setattr(worker_mod, "WORKER_LOG_MAX_BYTES", 1000)
    log = store.root / "worker.log"
    for n in range(5):
        log.write_bytes(f"worker {n}\n".encode() * 200)
        worker_mod.ensure_worker(store, slots=1)
    assert log.read_bytes() == b""  # the fake worker wrote nothing
    assert (store.root / "worker.log.1").read_bytes().startswith(b"worker 4")
    assert (store.root / "worker.log.3").read_bytes().startswith(b"worker 2")
    assert not (store.root / "worker.log.4").exists()
    log.write_bytes(b"small\n")
    worker_mod.ensure_worker(store, slots=1)
    assert log.read_bytes() == b"small\n"  # under the limit: appended to, not rotated


def test_the_worker_lock_names_its_host(store):
    w = worker_mod.Worker(store, slots=1)
    assert w.acquire_lock()
    host = socket.gethostname()
    assert (store.root / worker_mod.lock_name("local")).exists() and host[:20] in worker_mod.lock_name("local")
    assert worker_mod.lock_name("local", "node-a") != worker_mod.lock_name("local", "node-b")
    assert worker_mod.lock_name("ray", "a/../b") == "worker-a_.._b-ray.lock"
    # a worker of another host on the same (network) folder takes its own lock
    other = open(store.root / worker_mod.lock_name("local", "elsewhere"), "a+")
    import fcntl

    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    other.close()
    assert not worker_mod.Worker(store, slots=1).acquire_lock()  # the same host: refused


# --- Ray: what a task gets ---------------------------------------------------------------------------------

def test_a_ray_task_gets_the_database_address_without_its_password():
    from lab.runs.executors.ray_cluster import node_db_url, task_db_url

    url = "postgresql+psycopg://lab:s3cret@db.internal:5433/lab"
    assert task_db_url(url) == "postgresql+psycopg://lab@db.internal:5433/lab"
    assert task_db_url("sqlite:////r/lab.db") == "sqlite:////r/lab.db"
    passed = task_db_url(url)
    # the node's own setting for the same server, database and user holds its password
    assert node_db_url(passed, {"LAB_DB_URL": url}) == url
    # no setting, or one for another database: the address as passed (libpq: PGPASSWORD or ~/.pgpass)
    assert node_db_url(passed, {}) == passed
    assert node_db_url(passed, {"LAB_DB_URL": "postgresql+psycopg://lab:x@other:5433/lab"}) == passed


class FakeRay:
    def __init__(self, nodes: int, machines: int | None = None):
        machines = machines or nodes
        self._nodes = [{"Alive": True, "NodeID": f"n{i}", "NodeManagerAddress": f"10.0.0.{i % machines}",
                        "Resources": {"CPU": 2.0}} for i in range(nodes)]
        self.calls, self.shut = [], False

    def init(self, **kwargs):
        pass

    def nodes(self):
        return self._nodes

    def cluster_resources(self):
        return {"CPU": 2.0 * len(self._nodes)}

    def shutdown(self):
        self.shut = True

    def remote(self, **kwargs):
        ray = self

        class Task:
            def options(self, **opts):
                return self

            def remote(self, *args):
                ray.calls.append(args)
                return SimpleNamespace(task_id=lambda: SimpleNamespace(hex=lambda: "ab" * 8))

        return lambda fn: Task()


def test_the_ray_executor_passes_no_password_and_refuses_sqlite_on_several_nodes(tmp_path, monkeypatch):
    from lab.runs.executors import ExecutorError, ray_cluster

    fake = FakeRay(nodes=1)
    monkeypatch.setattr(ray_cluster, "import_ray", lambda: fake)
    updates = []
    store = SimpleNamespace(root=tmp_path, url="postgresql+psycopg://lab:s3cret@db:5432/lab",
                            update_attempt=lambda *a, **k: updates.append(k))
    ex = ray_cluster.RayExecutor(store, address="auto")
    ex.submit({"id": "plain20-1206-abcdefabcdef", "attempt": "t0k"}, ex.free_slots()[0])
    assert fake.calls and not any("s3cret" in str(a) for a in fake.calls[0])
    assert "postgresql+psycopg://lab@db:5432/lab" in fake.calls[0]

    sqlite = SimpleNamespace(root=tmp_path, url=f"sqlite:///{tmp_path}/lab.db", update_attempt=lambda *a, **k: None)
    assert ray_cluster.RayExecutor(sqlite, address="auto").free_slots()  # one node: SQLite is fine
    monkeypatch.setattr(ray_cluster, "import_ray", lambda: FakeRay(nodes=3, machines=1))
    assert ray_cluster.RayExecutor(sqlite, address="auto").free_slots()  # several nodes on one machine: as well
    fake2 = FakeRay(nodes=3)
    monkeypatch.setattr(ray_cluster, "import_ray", lambda: fake2)
    with pytest.raises(ExecutorError, match=r"^the Ray cluster has nodes on 3 machines and this store is SQLite.*"
                                            r"use PostgreSQL"):
        ray_cluster.RayExecutor(sqlite, address="auto")
    assert fake2.shut
    # a cluster that grows past one node later: no more runs start there
    fake3 = FakeRay(nodes=1)
    monkeypatch.setattr(ray_cluster, "import_ray", lambda: fake3)
    ex = ray_cluster.RayExecutor(sqlite, address="auto")
    fake3._nodes.append({"Alive": True, "NodeID": "n9", "NodeManagerAddress": "10.0.0.9", "Resources": {"CPU": 2.0}})
    assert ex.free_slots() == []


def test_the_worker_refuses_sqlite_on_a_cluster_of_several_machines_in_one_line(tmp_path, monkeypatch, capsys):
    from lab.__main__ import main
    from lab.runs.executors import ray_cluster

    monkeypatch.setattr(ray_cluster, "import_ray", lambda: FakeRay(nodes=2))
    monkeypatch.delenv("LAB_DB_URL", raising=False)
    code = main(["worker", "--executor", "ray", "--results", str(tmp_path / "results")])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and "use PostgreSQL" in err, err
    assert os.path.exists(tmp_path / "results")
