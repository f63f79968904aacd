"""Who owns a run: foreground runs are never taken for dead, a live process is never reaped on heartbeat age
alone, an attempt that lost its run stops without writing, a stopped foreground run reports what the store says."""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT, wait_for
from lab.__main__ import main
from lab.checkpoint import load_checkpoint
from lab.config import make_config
from lab.runs.execute import execute_run
from lab.runs.monitor import overview
from lab.runs.store import FOREIGN_GRACE_S, LostRun, Store


def test_a_foreground_run_read_by_others_ends_done_with_its_final_errors(tmp_path):
    """Defect 1: readers (the Runs page, ls, a worker) reap stale runs while `lab run` trains."""
    root = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-m", "lab", "run", "--preset", "smoke", "--width", "0.25", "--threads", "1",
                             "--quiet", "--results", str(root)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reaped, store = [], None
    try:
        while proc.poll() is None:
            if store is None and (root / "lab.db").exists():
                store = Store(root, create=False)
            if store is not None:
                reaped += store.reap_stale()
                overview(store)
            time.sleep(0.05)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert reaped == []
    run = Store(root).runs().iloc[0]
    assert run["status"] == "done" and run["final_test_error"] == run["final_test_error"]  # not NaN
    assert run["executor"] == "cli" and run["host"] == socket.gethostname() and run["heartbeat_at"] > 0
    assert "done: final training error" in out


def _running(store, **values):
    (rid,) = store.create_runs([make_config("smoke")], status="running")
    store.update_run(rid, **values)
    return rid


def test_a_live_process_on_this_host_is_never_reaped_on_heartbeat_age(store):
    """Defect 2: a laptop that slept, a SIGSTOP'd process: alive, however old its heartbeat."""
    old = store.db_time() - 3600
    here = socket.gethostname()
    alive = _running(store, pid=os.getpid(), host=here, heartbeat_at=old)
    sleeper = subprocess.Popen(["sleep", "120"])
    try:
        sleeper.send_signal(signal.SIGSTOP)
        stopped = _running(store, pid=sleeper.pid, host=here, heartbeat_at=old)
        assert store.reap_stale() == []
        sleeper.kill()
        sleeper.wait()
        assert store.reap_stale() == [stopped]  # gone now: dead at once (its heartbeat is old)
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
    assert store.get_run(alive)["status"] == "running"
    assert "its process is gone" in store.get_run(stopped)["message"]


def test_a_run_on_another_host_is_judged_by_heartbeat_age_in_database_time(store, monkeypatch):
    now = store.db_time()
    fresh = _running(store, pid=1, host="elsewhere", heartbeat_at=now - FOREIGN_GRACE_S / 2)
    stale = _running(store, pid=1, host="elsewhere", heartbeat_at=now - FOREIGN_GRACE_S - 5)
    never = _running(store, pid=1, host="elsewhere", heartbeat_at=None)
    # a host whose clock is a day behind writes its heartbeat: in database time, so it is fresh
    skewed = _running(store, pid=1, host="elsewhere", heartbeat_at=now - 3600)
    real = time.time
    monkeypatch.setattr("lab.runs.store.claims.time.time", lambda: real() - 86400)
    store.heartbeat(skewed)
    monkeypatch.setattr("lab.runs.store.claims.time.time", real)
    assert sorted(store.reap_stale()) == sorted([stale, never])
    assert store.get_run(fresh)["status"] == "running" and store.get_run(skewed)["status"] == "running"
    assert "no heartbeat on elsewhere" in store.get_run(stale)["message"]


class Usurp:
    """At step `at`, do what happens when a run is taken for dead and resumed elsewhere: it is marked
    interrupted, queued again, and claimed by another worker under a new attempt."""

    def __init__(self, store, run_id, at):
        self.store, self.run_id, self.at, self.new = store, run_id, at, None

    def __call__(self, step, total):
        if step == self.at:
            assert self.store.set_status(self.run_id, "interrupted", expect=["running"])
            self.store.requeue(self.run_id)
            self.new = self.store.claim_next("another-worker")


def test_an_attempt_that_lost_its_run_stops_and_writes_nothing(store):
    """Defect 2: the old process must not write metrics, a checkpoint or a final status over the new attempt."""
    (rid,) = store.create_runs([make_config("smoke", width=0.25, precision="fp32")])
    first = store.claim_next("w1")
    usurp = Usurp(store, rid, at=16)  # after the checkpoint at 12
    lines = []
    status = execute_run(store, rid, attempt=first["attempt"], progress=usurp, handle_signals=False, echo=lines.append)
    assert status == "lost"
    run = store.get_run(rid)
    assert run["status"] == "running" and run["attempt"] == usurp.new["attempt"] != first["attempt"]
    assert run["final_test_error"] is None and run["worker_id"] == "another-worker"
    assert store.scalars(rid)["step"].max() == 16  # nothing after the loss
    assert load_checkpoint(store.run_dir(rid) / "checkpoint.pt")["step"] == 12  # the step-24 one was never written
    assert any("no longer owns the run" in line for line in lines)
    # the new attempt can finish the run
    assert execute_run(store, rid, attempt=usurp.new["attempt"], handle_signals=False, echo=lines.append) == "done"
    assert store.get_run(rid)["status"] == "done"


def test_every_write_of_a_stale_attempt_is_refused(store):
    (rid,) = store.create_runs([make_config("smoke")])
    old = store.claim_next("w1")["attempt"]
    store.set_status(rid, "interrupted")
    store.requeue(rid)
    new = store.claim_next("w2")["attempt"]
    for write in (lambda: store.heartbeat(rid, old), lambda: store.log(rid, [(4, "train_loss", 1.0)], attempt=old),
                  lambda: store.update_attempt(rid, old, iteration=4), lambda: store.truncate_after(rid, 0, old),
                  lambda: store.put_artifact(rid, "x", {}, attempt=old)):
        with pytest.raises(LostRun, match="no longer owns the run"):
            write()
    assert not store.set_status(rid, "done", expect=["running"], attempt=old)
    assert store.owns(rid, new) and not store.owns(rid, old)
    assert store.scalars(rid).empty and store.get_run(rid)["status"] == "running"
    store.heartbeat(rid, new)
    store.log(rid, [(4, "train_loss", 1.0)], attempt=new)
    assert len(store.scalars(rid)) == 1


def test_execute_with_a_token_that_does_not_own_the_run_exits_non_zero(store, capsys):
    (rid,) = store.create_runs([make_config("smoke")])
    store.claim_next("w1")
    assert main(["_execute", rid, "--attempt", "0" * 32, "--results", str(store.root)]) != 0
    assert "no longer owns the run" in capsys.readouterr().err
    assert store.get_run(rid)["status"] == "running"


def test_sigterm_to_a_foreground_run_prints_the_stored_status_and_exits_non_zero(tmp_path):
    """Defect 10: it printed 'cancelled' while the store said interrupted, and exited 0."""
    root = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-m", "lab", "run", "--preset", "smoke", "--width", "0.25", "--threads", "1",
                             "--quiet", "--iterations", "4000", "--results", str(root)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (root / "lab.db").exists(), 300, "the store")
        store = Store(root, create=False)
        wait_for(lambda: not (df := store.runs()).empty and df.iloc[0]["iteration"] >= 4, 300, "the run to log")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    run = store.runs().iloc[0]
    assert run["status"] == "interrupted" and "stopped by a signal" in run["message"]
    assert proc.returncode == 3
    assert "interrupted: stopped by a signal" in err and "cancelled" not in err
