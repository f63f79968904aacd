import os
import sqlite3
import subprocess
import sys
import time
import uuid

from pathlib import Path

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


def test_eight_writers_and_a_polling_reader_lose_nothing(tmp_path, db_url):
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


def test_runs_dataframe_and_lifecycle(db_store):
    ids = db_store.create_runs([make_config("smoke", kind=k, depth=d) for k in ("plain", "residual") for d in (20, 32)])
    df = db_store.runs()
    assert len(df) == 4 and set(df["status"]) == {"queued"}
    assert {"kind", "depth", "shortcut", "lr"} <= set(df.columns)
    claimed = db_store.claim_next("w1")
    assert claimed["id"] == ids[0] and claimed["status"] == "running"
    assert db_store.request_cancel(ids[1]) == "cancelled"
    assert db_store.request_cancel(ids[0]) == "cancelling"
    assert db_store.heartbeat(ids[0]) is True
    with pytest.raises(StoreError, match="only queued or running"):
        db_store.request_cancel(ids[1])
    with pytest.raises(StoreError, match="no run 'nope'"):
        db_store.get_run("nope")
    with pytest.raises(StoreError, match="running; cancel it first"):
        db_store.delete_run(ids[0])
    db_store.delete_run(ids[2])
    assert len(db_store.runs()) == 3


def test_claims_are_exclusive(db_store):
    ids = db_store.create_runs([make_config("smoke", seed=i) for i in range(5)])
    got = [db_store.claim_next(f"w{i}") for i in range(7)]
    claimed = [g["id"] for g in got if g]
    assert sorted(claimed) == sorted(ids) and got[5] is None and got[6] is None


def test_resume_rules(store):
    (rid,) = store.create_runs([make_config("smoke")])
    store.set_status(rid, "done")
    with pytest.raises(StoreError, match="is done; only cancelled, interrupted, failed runs can be resumed"):
        store.requeue(rid)


def test_reaper_marks_dead_runs_interrupted(db_store):
    (rid,) = db_store.create_runs([make_config("smoke")], status="running")
    db_store.update_run(rid, pid=999_999_999 % 4_000_000 + 3_000_000, heartbeat_at=db_store.db_time() - 60,
                        host=__import__("socket").gethostname())
    assert db_store.reap_stale(grace_s=15) == [rid]
    run = db_store.get_run(rid)
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
    with pytest.raises(StoreError, match=f"disk I/O error .*could not be upgraded from schema version 1 to {SCHEMA_VERSION}"):
        Store(root)
    assert snapshot(root) == before  # the columns added before the failure were rolled back with it
    columns = {r[1] for r in sqlite3.connect(root / "lab.db").execute("PRAGMA table_info(runs)")}
    assert not columns & set(V2_COLUMNS)


def test_artifacts_are_kept_replaced_and_deleted_with_their_run(db_store):
    (rid,) = db_store.create_runs([make_config("smoke")])
    assert db_store.artifact(rid, "lesion") is None and db_store.artifacts(rid) == {}
    db_store.put_artifact(rid, "lesion", {"a": 1})
    db_store.put_artifact(rid, "landscape", {"grid": [[1.0, 2.0]]})
    db_store.put_artifact(rid, "lesion", {"a": 2})
    assert db_store.artifacts(rid) == {"landscape": {"grid": [[1.0, 2.0]]}, "lesion": {"a": 2}}
    db_store.delete_run(rid)
    assert db_store.artifacts(rid) == {}


def test_ids_and_prefixes(db_store):
    ids = db_store.create_runs([make_config("smoke", kind=k, seed=s) for k in ("plain", "residual") for s in (0, 1)])
    assert db_store.get_run(ids[0][:-3])["id"] == ids[0]  # a unique prefix
    with pytest.raises(StoreError, match="ambiguous: it matches 2 runs"):
        db_store.get_run("plain20-")
    with pytest.raises(StoreError, match="case-sensitive"):
        db_store.get_run(ids[0][:-3].upper())
    assert db_store.delete_runs([ids[0][:-2]]) == [ids[0]]
    assert db_store.delete_runs(ids[2:], yes=True) == ids[2:]
    assert db_store.runs()["id"].tolist() == [ids[1]]


def test_an_exact_id_wins_over_a_longer_one_it_prefixes(db_store):
    (a,) = db_store.create_runs([make_config("smoke")])
    db_store.update_run(a, tag="x")
    with db_store.write() as conn:  # a second run whose id extends the first one's
        row = dict(conn.execute(sa.select(runs_table)).mappings().first())
        conn.execute(runs_table.insert().values(**{**row, "id": a + "0"}))
    assert db_store.get_run(a)["id"] == a


def test_run_ids_never_collide(store, monkeypatch):
    """Defect 8: ids had a 24-bit random suffix, so 3000 seeds collided. A drawn id already taken is drawn again."""
    fixed, real = uuid.UUID(int=42), uuid.uuid4
    draws = [fixed] * 4  # two runs in a row get the same random part
    monkeypatch.setattr("uuid.uuid4", lambda: draws.pop(0) if draws else real())
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
time.sleep(0.5)  # a run another claimer had locked at that moment is its by now
print("left", len(store.runs(status=["queued"])), flush=True)  # claim_next came back empty only with none queued
"""


def test_two_processes_claiming_200_queued_runs_get_each_exactly_once(tmp_path, db_url):
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
        *lines, left = out.splitlines()
        assert left == "left 0", f"{name} found nothing to claim while runs were queued ({left})"
        claimed[name] = [line.split() for line in lines]
    got = [rid for lines in claimed.values() for rid, _ in lines]
    assert sorted(got) == sorted(ids)  # every run, none twice
    runs = store.runs().set_index("id")
    for name, lines in claimed.items():
        for rid, attempt in lines:
            assert runs.loc[rid, "worker_id"] == name and runs.loc[rid, "attempt"] == attempt
    assert set(runs["status"]) == {"running"}


# --- every database: SQLite and PostgreSQL ---------------------------------------------------------------------

def test_a_new_results_folder_is_made_with_any_database(tmp_path, db_url):
    """With a database URL the folder was not made, so a worker there crashed on its lock file."""
    from lab.runs.worker import Worker

    root = tmp_path / "fresh" / "results"
    store = Store(root)
    assert root.is_dir()
    worker = Worker(store)
    assert worker.acquire_lock()
    assert not Worker(Store(root)).acquire_lock()  # and the lock still keeps a second worker out


OPENER = """
import sys, time
from pathlib import Path
from lab.config import make_config
from lab.runs.store import Store
root, go = sys.argv[1], Path(sys.argv[2])
Path(root + ".ready").touch()
while not go.exists():
    time.sleep(0.005)
store = Store(root)
store.create_runs([make_config("smoke")])
"""


def test_eight_processes_opening_an_empty_postgresql_database_at_once_all_succeed(tmp_path, pg_url, monkeypatch):
    """2-7 of 8 failed creating the schema (UniqueViolation) before it took an advisory lock."""
    monkeypatch.setenv("LAB_DB_URL", pg_url)
    go, roots = tmp_path / "go", [tmp_path / f"r{i}" for i in range(8)]
    procs = [subprocess.Popen([sys.executable, "-c", OPENER, str(root), str(go)], cwd=ROOT, stderr=subprocess.PIPE,
                              text=True) for root in roots]
    deadline = time.time() + 300
    while not all(Path(f"{root}.ready").exists() for root in roots) and time.time() < deadline:
        time.sleep(0.05)  # every one imported and waiting
    go.touch()
    errors = [err for p in procs if (err := p.communicate(timeout=300)[1]) and p.returncode != 0]
    assert not errors, errors[0]
    assert len(Store(roots[0]).runs()) == 8  # one database, one schema, every row


def test_a_queued_run_waits_for_its_parent(db_store):
    parent, other = db_store.create_runs([make_config("smoke", seed=s) for s in range(2)])
    (child,) = db_store.create_runs([make_config("smoke", seed=2)], parent_id=parent)
    (deepened,) = db_store.create_runs([make_config("smoke", depth=20, deepen_from=parent[:-2])])
    (orphan,) = db_store.create_runs([make_config("smoke", depth=20, deepen_from="nosuchrun")])
    assert db_store.get_run(deepened)["parent_id"] == parent  # from deepen_from, resolved
    assert db_store.get_run(orphan)["parent_id"] is None
    assert db_store.claim_next("w")["id"] == parent
    assert db_store.claim_next("w")["id"] == other  # the children wait: their parent is running
    assert db_store.claim_next("w")["id"] == orphan
    assert db_store.claim_next("w") is None
    db_store.set_status(parent, "failed")  # any status but queued or running releases them
    assert [db_store.claim_next("w")["id"] for _ in range(2)] == [child, deepened]


def test_runs_lists_training_runs_unless_asked_for_jobs(db_store):
    (run,) = db_store.create_runs([make_config("smoke")])
    (job,) = db_store.create_runs([make_config("smoke")], job="lesion", parent_id=run)
    assert db_store.runs()["id"].tolist() == [run]
    assert set(db_store.runs(jobs=None)["id"]) == {run, job}
    assert db_store.runs(jobs=["lesion"])["id"].tolist() == [job]
    assert db_store.runs(status=["queued"], jobs=["train", "lesion"])["id"].tolist() == [job, run]


def test_logging_a_step_again_replaces_it(db_store):
    """A write repeated after a lost connection must not fail on the primary key (it ended live runs)."""
    (rid,) = db_store.create_runs([make_config("smoke")], status="running")
    attempt = db_store.begin_attempt(rid)
    for value in (1.0, 2.0):
        db_store.log(rid, scalars=[(10, "train_loss", value)], layers=[(10, "grad_norm", [value])], attempt=attempt)
    assert db_store.scalars(rid)["value"].tolist() == [2.0]
    assert db_store.layer_series(rid, "grad_norm")["value"].tolist() == [2.0]


def test_long_text_fields_fit(db_store):
    (rid,) = db_store.create_runs([make_config("smoke", tag="t" * 200)])
    long = dict(label="l" * 5000, message="m" * 20_000, log_tail="\n".join(["x" * 300] * 40))
    db_store.update_run(rid, **long)
    run = db_store.get_run(rid)
    assert run["tag"] == "t" * 200 and all(run[k] == v for k, v in long.items())
    types = {c.name: type(c.type) for c in runs_table.columns}
    assert all(types[k] is sa.Text for k in ("label", "tag", "message", "log_tail"))


# --- PostgreSQL ---------------------------------------------------------------------------------------------

def test_claim_skips_a_run_another_claimer_holds(tmp_path, pg_url):
    """Two claimers chose the same oldest row; the one that waited for the other's lock came back with nothing
    although runs were queued. With SKIP LOCKED it takes the next row at once."""
    import threading

    store = Store(tmp_path / "results", url=pg_url)
    first, second = store.create_runs([make_config("smoke", seed=s) for s in range(2)])
    holder = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    got = []
    with holder.connect() as conn:
        with conn.begin():  # another claimer, mid-claim: it holds the first row's lock until it commits
            conn.execute(runs_table.update().where(runs_table.c.id == first).values(status="running"))
            thread = threading.Thread(target=lambda: got.append(store.claim_next("w")))
            thread.start()
            thread.join(10)
    thread.join(30)
    holder.dispose()
    assert got and got[0] is not None and got[0]["id"] == second


def test_a_store_whose_server_never_answered_fails_at_once(tmp_path):
    from pg import free_port

    started = time.time()
    with pytest.raises(StoreError, match="127.0.0.1"):
        Store(tmp_path, url=f"postgresql+psycopg://lab@127.0.0.1:{free_port()}/lab")
    assert time.time() - started < 10  # no waiting for a server that was never there


RESTART_WRITER = """
import sys, time
from lab.runs.store import Store
root, run_id, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = Store(root)
attempt = store.begin_attempt(run_id)
for step in range(steps):
    store.log(run_id, scalars=[(step, "train_loss", 0.5), (step, "train_error", 0.25)],
              layers=[(step, "grad_norm", [1.0, 2.0])], attempt=attempt, iteration=step)
    if step % 10 == 0:
        store.heartbeat(run_id, attempt)
    time.sleep(0.01)
store.set_status(run_id, "done", expect=["running"], attempt=attempt)
print("finished", flush=True)
"""


def test_a_postgresql_restart_while_a_run_writes_loses_nothing_and_fails_nothing(tmp_path):
    """A real `pg_ctl restart` (every connection cut) twice while a process logs metrics: it goes on (pooled
    connections are checked, a cut transaction is run again), every step lands once, the run ends done."""
    from conftest import start_pg_server

    server = start_pg_server()  # its own server: a restart must not cut other tests' connections
    try:
        root, steps = tmp_path / "results", 600
        store = Store(root, url=server.url())
        (rid,) = store.create_runs([make_config("smoke")], status="running")
        env = {**os.environ, "LAB_DB_URL": server.url()}
        proc = subprocess.Popen([sys.executable, "-c", RESTART_WRITER, str(root), rid, str(steps)], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        restarts = 0
        deadline = time.time() + 300
        while proc.poll() is None and restarts < 2 and time.time() < deadline:
            if store.get_run(rid)["iteration"] >= (restarts + 1) * steps // 3:
                server.restart()
                restarts += 1
            time.sleep(0.05)
        out, err = proc.communicate(timeout=300)
        assert restarts == 2, "the writer finished before both restarts"
        assert proc.returncode == 0 and "finished" in out, err
        run = store.get_run(rid)
        assert run["status"] == "done" and run["iteration"] == steps - 1
        scalars = store.scalars(rid)
        assert scalars.groupby("name")["step"].apply(list).to_dict() == {n: list(range(steps))
                                                                          for n in ("train_error", "train_loss")}
        assert store.layer_steps(rid, "grad_norm") == list(range(steps))
        store.close()
    finally:
        server.stop()


def test_a_version_1_store_on_postgresql_is_upgraded_and_its_text_columns_widened(tmp_path, pg_url):
    """Version 1 made label and tag VARCHAR(200) on PostgreSQL (SQLite ignores lengths): the upgrade makes them
    TEXT, with the run and its metrics kept."""
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    cfg = make_config("smoke", tag="old")
    with engine.begin() as conn:
        for statement in filter(str.strip, V1_SCHEMA.split(";")):
            conn.exec_driver_sql(statement.replace("FLOAT", "DOUBLE PRECISION"))
        conn.execute(sa.text("INSERT INTO runs (id, label, status, kind, depth, dataset, preset, seed, tag, config, "
                             "created_at, iteration, total_iterations, cancel_requested) VALUES ('resid20-0101-abcdef', "
                             "'resnet-20', 'done', 'residual', 20, 'synthetic', 'smoke', 0, 'old', :cfg, 1.0, 24, 24, 0)"),
                     dict(cfg=cfg.to_json()))
        conn.exec_driver_sql("INSERT INTO scalars VALUES ('resid20-0101-abcdef', 'train_loss', 4, 2.0)")
    engine.dispose()
    store = Store(tmp_path / "results", url=pg_url)
    run = store.get_run("resid20")
    assert run["tag"] == "old" and run["job"] == "train" and store.scalars(run["id"])["value"].tolist() == [2.0]
    store.update_run(run["id"], label="l" * 1000, tag="t" * 1000)
    assert store.get_run(run["id"])["label"] == "l" * 1000
    with store.read() as conn:
        types = dict(conn.exec_driver_sql("SELECT column_name, data_type FROM information_schema.columns "
                                          "WHERE table_name = 'runs'").all())
    assert {types[c] for c in ("label", "tag", "message", "log_tail")} == {"text"}
