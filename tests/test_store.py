import os
import sqlite3
import subprocess
import sys
import time
import uuid

import pytest
import sqlalchemy as sa

from conftest import ROOT, snapshot
from lab.__main__ import main
from lab.config import make_config
from lab.fill import simulate_run
from lab.runs.monitor import overview
from lab.runs.store import SCHEMA_VERSION, V2_COLUMNS, Store, StoreError, meta_table, runs_table

WRITERS, BATCHES, ROWS = 8, 25, 20

# each writer is a fresh interpreter with its own Store, as the worker's children are
WRITER = """
import sys, time
from pathlib import Path
from lab.runs.store import Store
root, run_id, go, batches, rows = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
store = Store(root)
attempt = store.begin_attempt(run_id)
while not go.exists():
    time.sleep(0.01)
for b in range(batches):
    store.log(run_id, scalars=[(b * rows + i, "train_loss", 0.5) for i in range(rows)],
              layers=[(b, "grad_norm", [1.0, 2.0])], attempt=attempt, iteration=b)
    store.heartbeat(run_id, attempt)
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
    while any(p.poll() is None for p in procs):  # as the dashboard does: reap dead runs, read everything
        assert set(overview(store)["status"]) == {"running"}
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
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}, this lab reads version {SCHEMA_VERSION}"):
        Store(tmp_path)
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}"):
        Store(tmp_path, readonly=True)


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
    store.update_run(rid, pid=999_999_999 % 4_000_000 + 3_000_000, heartbeat_at=store.db_time() - 60,
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


# --- schema version 2 and its migration ------------------------------------------------------------------

V1_SCHEMA = """
CREATE TABLE meta (key VARCHAR(64) NOT NULL, value TEXT, PRIMARY KEY (key));
CREATE TABLE runs (id VARCHAR(64) NOT NULL, sweep_id VARCHAR(64), label VARCHAR(200), status VARCHAR(16) NOT NULL,
  kind VARCHAR(16), depth INTEGER, dataset VARCHAR(32), preset VARCHAR(32), seed INTEGER, tag VARCHAR(200),
  config TEXT NOT NULL, env TEXT, layers TEXT, params INTEGER, created_at FLOAT NOT NULL, started_at FLOAT,
  finished_at FLOAT, heartbeat_at FLOAT, pid INTEGER, host VARCHAR(255), worker_id VARCHAR(64), device VARCHAR(64),
  slot VARCHAR(32), iteration INTEGER NOT NULL, total_iterations INTEGER NOT NULL, images_per_s FLOAT,
  elapsed_s FLOAT, final_train_error FLOAT, final_val_error FLOAT, final_test_error FLOAT,
  cancel_requested INTEGER NOT NULL, message TEXT, PRIMARY KEY (id));
CREATE INDEX ix_runs_sweep_id ON runs (sweep_id);
CREATE INDEX ix_runs_status ON runs (status);
CREATE TABLE scalars (run_id VARCHAR(64) NOT NULL, name VARCHAR(32) NOT NULL, step INTEGER NOT NULL, value FLOAT,
  PRIMARY KEY (run_id, name, step), FOREIGN KEY(run_id) REFERENCES runs (id) ON DELETE CASCADE);
CREATE TABLE layer_metrics (run_id VARCHAR(64) NOT NULL, metric VARCHAR(32) NOT NULL, step INTEGER NOT NULL,
  vals TEXT NOT NULL, PRIMARY KEY (run_id, metric, step), FOREIGN KEY(run_id) REFERENCES runs (id) ON DELETE CASCADE);
CREATE TABLE workers (id VARCHAR(64) NOT NULL, pid INTEGER, host VARCHAR(255), started_at FLOAT, heartbeat_at FLOAT,
  slots INTEGER, device VARCHAR(64), PRIMARY KEY (id));
INSERT INTO meta VALUES ('schema_version', '1');
"""


def write_v1_store(root):
    """A results store as version 1 of the lab wrote it, with one finished run and its metrics."""
    root.mkdir(parents=True)
    con = sqlite3.connect(root / "lab.db")
    con.executescript(V1_SCHEMA)
    cfg = make_config("smoke", tag="old")
    con.execute("INSERT INTO runs (id, label, status, kind, depth, dataset, preset, seed, tag, config, created_at, "
                "iteration, total_iterations, cancel_requested, final_test_error) VALUES "
                "('resid20-0101-abcdef', 'resnet-20', 'done', 'residual', 20, 'synthetic', 'smoke', 0, 'old', ?, 1.0, "
                "24, 24, 0, 0.25)", (cfg.to_json(),))
    con.executemany("INSERT INTO scalars VALUES ('resid20-0101-abcdef', 'train_loss', ?, ?)", [(4, 2.0), (8, 1.5)])
    con.commit()
    con.close()


def test_a_version_1_store_is_upgraded_in_place(tmp_path):
    root = tmp_path / "results"
    write_v1_store(root)
    store = Store(root)
    with store.read() as conn:
        assert conn.execute(sa.select(meta_table.c.value)).scalar() == str(SCHEMA_VERSION)
    run = store.get_run("resid20-0101-abcdef")
    assert run["status"] == "done" and run["final_test_error"] == 0.25 and run["tag"] == "old"
    assert run["job"] == "train" and run["attempt"] is None and run["log_tail"] is None
    assert store.scalars(run["id"])["value"].tolist() == [2.0, 1.5]
    store.put_artifact(run["id"], "lesion", {"errors": [0.1, 0.2]})
    assert store.artifact(run["id"], "lesion") == {"errors": [0.1, 0.2]}
    (new,) = store.create_runs([make_config("smoke", tag="t" * 200)])
    assert store.get_run(new)["tag"] == "t" * 200
    assert main(["ls", "--results", str(root)]) == 0  # and the CLI reads it


def test_a_failed_upgrade_changes_nothing(tmp_path, monkeypatch):
    root = tmp_path / "results"
    write_v1_store(root)
    before = snapshot(root)

    def broken(*args, **kwargs):
        raise sa.exc.OperationalError("CREATE TABLE artifacts", {}, sqlite3.OperationalError("disk I/O error"))

    monkeypatch.setattr("lab.runs.store.artifacts_table.create", broken)
    with pytest.raises(StoreError, match="disk I/O error .*could not be upgraded from schema version 1 to 2"):
        Store(root)
    assert snapshot(root) == before  # the columns added before the failure were rolled back with it
    columns = {r[1] for r in sqlite3.connect(root / "lab.db").execute("PRAGMA table_info(runs)")}
    assert not columns & set(V2_COLUMNS)


def test_artifacts_are_kept_replaced_and_deleted_with_their_run(store):
    (rid,) = store.create_runs([make_config("smoke")])
    assert store.artifact(rid, "lesion") is None and store.artifacts(rid) == {}
    store.put_artifact(rid, "lesion", {"a": 1})
    store.put_artifact(rid, "landscape", {"grid": [[1.0, 2.0]]})
    store.put_artifact(rid, "lesion", {"a": 2})
    assert store.artifacts(rid) == {"landscape": {"grid": [[1.0, 2.0]]}, "lesion": {"a": 2}}
    store.delete_run(rid)
    assert store.artifacts(rid) == {}


def test_ids_and_prefixes(store):
    ids = store.create_runs([make_config("smoke", kind=k, seed=s) for k in ("plain", "residual") for s in (0, 1)])
    assert store.get_run(ids[0][:-3])["id"] == ids[0]  # a unique prefix
    with pytest.raises(StoreError, match="ambiguous: it matches 2 runs"):
        store.get_run("plain20-")
    with pytest.raises(StoreError, match="case-sensitive"):
        store.get_run(ids[0][:-3].upper())
    assert store.delete_runs([ids[0][:-2]]) == [ids[0]]
    assert store.delete_runs(ids[2:], yes=True) == ids[2:]
    assert store.runs()["id"].tolist() == [ids[1]]


def test_an_exact_id_wins_over_a_longer_one_it_prefixes(store):
    (a,) = store.create_runs([make_config("smoke")])
    store.update_run(a, tag="x")
    with store.write() as conn:  # a second run whose id extends the first one's
        row = dict(conn.execute(sa.select(runs_table)).mappings().first())
        conn.execute(runs_table.insert().values(**{**row, "id": a + "0"}))
    assert store.get_run(a)["id"] == a


def test_run_ids_never_collide(store, monkeypatch):
    """Defect 8: ids had a 24-bit random suffix, so 3000 seeds collided. A drawn id already taken is drawn again."""
    fixed, real = uuid.UUID(int=42), uuid.uuid4
    draws = [fixed] * 4  # two runs in a row get the same random part
    monkeypatch.setattr("lab.runs.store.uuid.uuid4", lambda: draws.pop(0) if draws else real())
    (a,) = store.create_runs([make_config("smoke")])
    (b,) = store.create_runs([make_config("smoke", seed=1)])
    assert a != b and len(store.runs()) == 2


def test_a_sweep_of_3000_seeds_queues_3000_runs(tmp_path, capsys):
    root = tmp_path / "results"
    assert main(["sweep", "--kinds", "plain", "--depths", "20", "--seeds", "3000", "--preset", "smoke", "--no-worker",
                 "--results", str(root)]) == 0
    assert "queued 3000 run(s)" in capsys.readouterr().out
    runs = Store(root).runs()
    assert len(runs) == 3000 and runs["id"].is_unique and sorted(runs["seed"]) == list(range(3000))


# --- reads: read-only, never waiting for a writer ------------------------------------------------------------

def test_reading_never_takes_the_write_lock(store, capsys):
    simulate_run(store, "plain", 20, 0, iterations=400, log_every=100, eval_every=200)
    holder = sqlite3.connect(store.root / "lab.db", timeout=0)
    holder.execute("BEGIN IMMEDIATE")  # a writer in the middle of a long transaction
    try:
        started = time.time()
        assert main(["ls", "--results", str(store.root)]) == 0
        assert main(["show", "plain20", "--results", str(store.root)]) == 0
        assert time.time() - started < 30  # a write lock would have waited for the 60 s busy timeout
    finally:
        holder.rollback()
        holder.close()
    assert "plain-20" in capsys.readouterr().out


READ_ONLY_MOUNT = """
set -e
mount --bind "$1" "$1"
mount -o remount,bind,ro "$1"
if touch "$1/probe" 2>/dev/null; then echo "the mount is writable" >&2; exit 9; fi
shift
exec "$@"
"""


def run_read_only(root, argv):
    """Run `argv` with `root` read-only: a read-only bind mount in a private mount namespace when running as root
    (root ignores file modes), else file modes."""
    if os.geteuid() == 0:
        proc = subprocess.run(["unshare", "-m", "sh", "-c", READ_ONLY_MOUNT, "sh", str(root), *argv], cwd=ROOT,
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0 and "Traceback" not in proc.stderr and "error:" not in proc.stderr:
            pytest.skip(f"no private read-only mount here: {proc.stderr.strip()[:200]}")
        return proc
    paths = [root, *root.rglob("*")]
    for p in paths:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    finally:
        for p in paths:
            p.chmod(0o755 if p.is_dir() else 0o644)


def test_ls_show_and_export_work_in_a_read_only_results_folder(tmp_path):
    root = tmp_path / "results"
    store = Store(root)
    rid = simulate_run(store, "plain", 20, 0, iterations=400, log_every=100, eval_every=200)
    store.close()
    before = snapshot(root)
    for name in ("lab.db-wal", "lab.db-shm"):  # as a cleanly closed store leaves it: no WAL index to reuse
        if (root / name).exists():
            assert name != "lab.db-wal" or (root / name).stat().st_size == 0
            (root / name).unlink()
    out = tmp_path / "export"
    lab = [sys.executable, "-m", "lab"]
    for argv in ([*lab, "ls", "--results", str(root)], [*lab, "show", rid, "--results", str(root)],
                 [*lab, "export", "--formats", "csv", "--figures", "depth", "--out", str(out), "--results", str(root)]):
        proc = run_read_only(root, argv)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr and (rid in proc.stdout or "wrote" in proc.stdout)
    assert (out / "depth.csv").exists()
    assert snapshot(root) == before


# --- two workers, one queue --------------------------------------------------------------------------------

CLAIMER = """
import sys, time
from pathlib import Path
from lab.runs.store import Store
store, go, name = Store(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
while not go.exists():
    time.sleep(0.01)
while (run := store.claim_next(name)) is not None:
    print(run["id"], run["attempt"], flush=True)
"""


def test_two_processes_claiming_200_queued_runs_get_each_exactly_once(tmp_path):
    root = tmp_path / "results"
    store = Store(root)
    ids = store.create_runs([make_config("smoke", seed=s) for s in range(200)])
    go = tmp_path / "go"
    procs = {name: subprocess.Popen([sys.executable, "-c", CLAIMER, str(root), str(go), name], cwd=ROOT,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ("worker-a", "worker-b")}
    time.sleep(1.0)
    go.touch()
    claimed = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0 and "locked" not in err, err
        claimed[name] = [line.split() for line in out.splitlines()]
    got = [rid for lines in claimed.values() for rid, _ in lines]
    assert sorted(got) == sorted(ids)  # every run, none twice
    runs = store.runs().set_index("id")
    for name, lines in claimed.items():
        for rid, attempt in lines:
            assert runs.loc[rid, "worker_id"] == name and runs.loc[rid, "attempt"] == attempt
    assert set(runs["status"]) == {"running"}
