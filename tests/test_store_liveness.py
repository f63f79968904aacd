"""A run's process is its pid, its start time and its boot: a recycled pid (another process under the same id,
or the same id after a reboot) does not keep a dead run running. Rows without a start time or boot are judged by
the pid alone."""
import os
import socket

import sqlalchemy as sa

from lab.config import make_config
from lab.runs.store import runs_table
from lab.runs.store.process import boot_id, process_alive, process_started


def running_here(store, **values):
    """A running run of this host whose process is this test's process, heartbeat long ago."""
    (rid,) = store.create_runs([make_config("smoke")], status="running")
    store.update_run(rid, host=socket.gethostname(), heartbeat_at=0.0, **values)
    return rid


def test_writing_a_pid_records_its_start_time_and_boot(db_store):
    (rid,) = db_store.create_runs([make_config("smoke")], status="running")
    attempt = db_store.begin_attempt(rid)
    db_store.update_attempt(rid, attempt, pid=os.getpid())
    run = db_store.get_run(rid)
    assert run["pid_started"] == process_started(os.getpid()) is not None
    assert run["boot_id"] == boot_id()
    db_store.update_run(rid, pid=None)
    assert db_store.get_run(rid)["pid_started"] is None


def test_a_recycled_pid_does_not_keep_a_dead_run_running(db_store):
    me, started = os.getpid(), process_started(os.getpid())
    alive = running_here(db_store, pid=me)
    recycled = running_here(db_store, pid=me, pid_started=started - 1, boot_id=boot_id())
    rebooted = running_here(db_store, pid=me, pid_started=started, boot_id="another-boot")
    old_row = running_here(db_store, pid=me, pid_started=None, boot_id=None)
    dead = {d["id"] for d in db_store.stale_runs()}
    assert dead == {recycled, rebooted}
    assert {r["id"] for r in db_store.active_here()} == {alive, old_row}
    assert sorted(db_store.reap_stale()) == sorted([recycled, rebooted])
    assert db_store.get_run(recycled)["status"] == "interrupted"
    assert db_store.get_run(alive)["status"] == "running"


def test_process_alive_reads_this_process():
    me = os.getpid()
    assert process_alive(me) and process_alive(me, process_started(me), boot_id())
    assert not process_alive(me, process_started(me) + 1)


def test_a_claim_clears_the_previous_process(db_store):
    (rid,) = db_store.create_runs([make_config("smoke")])
    db_store.update_run(rid, pid=os.getpid())
    assert db_store.claim_next("w1")["id"] == rid
    with db_store.read() as conn:
        row = conn.execute(sa.select(runs_table.c.pid, runs_table.c.pid_started, runs_table.c.boot_id)
                           .where(runs_table.c.id == rid)).first()
    assert tuple(row) == (None, None, None)
