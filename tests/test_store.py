import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from conftest import ROOT
from lab.config import make_config
from lab.runs.store import SCHEMA_VERSION, Store, StoreError, meta_table

WRITERS, BATCHES, ROWS = 8, 25, 20

# each writer is a fresh interpreter with its own Store, as the worker's children are
WRITER = """
import sys, time
from pathlib import Path
from lab.runs.store import Store
root, run_id, go, batches, rows = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
store = Store(root)
while not go.exists():
    time.sleep(0.01)
for b in range(batches):
    store.log(run_id, scalars=[(b * rows + i, "train_loss", 0.5) for i in range(rows)],
              layers=[(b, "grad_norm", [1.0, 2.0])], iteration=b)
    store.heartbeat(run_id)
"""


def test_eight_writers_and_a_polling_reader_lose_nothing(tmp_path):
    root = tmp_path / "results"
    store = Store(root)
    ids = store.create_runs([make_config("smoke", seed=i) for i in range(WRITERS)], status="running")
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(root), rid, str(go), str(BATCHES), str(ROWS)],
                              cwd=ROOT, stderr=subprocess.PIPE, text=True) for rid in ids]
    time.sleep(1.0)
    go.touch()  # all start writing at once
    polls = 0
    while any(p.poll() is None for p in procs):
        store.runs()
        store.scalars(ids)
        polls += 1
        time.sleep(0.01)
    for p in procs:
        err = p.stderr.read()
        assert p.returncode == 0, err  # a "database is locked" error would have killed the writer
        assert "locked" not in err
    counts = store.scalars(ids).groupby("run_id").size()
    assert counts.to_dict() == {rid: BATCHES * ROWS for rid in ids}
    for rid in ids:
        assert store.layer_steps(rid, "grad_norm") == list(range(BATCHES))
    assert polls > 0


def test_schema_version_mismatch_is_a_clear_error(tmp_path):
    store = Store(tmp_path)
    with store.write() as conn:
        conn.execute(meta_table.update().values(value=str(SCHEMA_VERSION + 1)))
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}"):
        Store(tmp_path)


def test_runs_dataframe_and_lifecycle(store):
    ids = store.create_runs([make_config("smoke", kind=k, depth=d) for k in ("plain", "residual") for d in (20, 32)])
    df = store.runs()
    assert len(df) == 4 and set(df["status"]) == {"queued"}
    assert {"kind", "depth", "shortcut", "lr"} <= set(df.columns)
    claimed = store.claim_next("w1")
    assert claimed["id"] == ids[0] and claimed["status"] == "running"
    assert store.request_cancel(ids[1]) == "cancelled"
    assert store.request_cancel(ids[0]) == "cancelling"
    assert store.heartbeat(ids[0]) is True
    with pytest.raises(StoreError, match="only queued or running"):
        store.request_cancel(ids[1])
    with pytest.raises(StoreError, match="no run 'nope'"):
        store.get_run("nope")
    with pytest.raises(StoreError, match="running; cancel it first"):
        store.delete_run(ids[0])
    store.delete_run(ids[2])
    assert len(store.runs()) == 3


def test_claims_are_exclusive(store):
    ids = store.create_runs([make_config("smoke", seed=i) for i in range(5)])
    got = [store.claim_next(f"w{i}") for i in range(7)]
    claimed = [g["id"] for g in got if g]
    assert sorted(claimed) == sorted(ids) and got[5] is None and got[6] is None


def test_resume_rules(store):
    (rid,) = store.create_runs([make_config("smoke")])
    store.set_status(rid, "done")
    with pytest.raises(StoreError, match="is done; only cancelled, interrupted, failed runs can be resumed"):
        store.requeue(rid)


def test_reaper_marks_dead_runs_interrupted(store):
    (rid,) = store.create_runs([make_config("smoke")], status="running")
    store.update_run(rid, pid=999_999_999 % 4_000_000 + 3_000_000, heartbeat_at=time.time() - 60,
                     host=__import__("socket").gethostname())
    assert store.reap_stale(grace_s=15) == [rid]
    run = store.get_run(rid)
    assert run["status"] == "interrupted" and "resume" in run["message"]


def test_store_url_setting(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'other.db'}"
    monkeypatch.setenv("LAB_DB_URL", url)
    store = Store(tmp_path / "results")
    assert store.url == url
    store.create_runs([make_config("smoke")])
    eng = sa.create_engine(url)
    with eng.connect() as conn:
        assert conn.execute(sa.text("select count(*) from runs")).scalar() == 1
