"""Long write transactions are cut into chunks, IN lists stay under the databases' limits, a delete never removes
a running run, files left behind are reported, read-only opens never upgrade the schema, and a run's metric rows
are capped."""
import os
import sqlite3

import pytest
from sqlalchemy import event

from conftest import snapshot
from lab.__main__ import main
from lab.config import make_config
from lab.runs.store import SCHEMA_VERSION, Store, StoreError
from test_store import write_v1_store


def count_commits(store):
    commits = []
    event.listen(store.engine, "commit", lambda conn: commits.append(1))
    return commits


def test_creating_many_runs_commits_in_chunks(db_store, monkeypatch):
    monkeypatch.setattr("lab.runs.store.runs.CREATE_CHUNK", 3)
    commits = count_commits(db_store)
    ids = db_store.create_runs([make_config("smoke", seed=i) for i in range(7)])
    assert len(commits) >= 3 and len(set(ids)) == 7
    assert db_store.runs()["id"].tolist() == ids[::-1]  # submission order kept across chunks (newest first)


def test_a_batch_that_fails_part_way_leaves_no_run(db_store, monkeypatch):
    monkeypatch.setattr("lab.runs.store.runs.CREATE_CHUNK", 2)
    real, calls = db_store.unique_ids, []

    def failing(conn, prefixes):
        calls.append(1)
        if len(calls) == 3:
            raise StoreError("results store: the disk is full")
        return real(conn, prefixes)

    monkeypatch.setattr(db_store, "unique_ids", failing)
    with pytest.raises(StoreError, match="disk is full"):
        db_store.create_runs([make_config("smoke", seed=i) for i in range(6)])
    assert db_store.runs().empty


def test_deleting_many_runs_commits_in_chunks(db_store, monkeypatch):
    monkeypatch.setattr("lab.runs.store.runs.DELETE_CHUNK", 2)
    ids = db_store.create_runs([make_config("smoke", seed=i) for i in range(5)])
    for rid in ids:
        db_store.log(rid, scalars=[(1, "train_loss", 1.0)])
    commits = count_commits(db_store)
    assert sorted(db_store.delete_runs(ids, yes=True)) == sorted(ids)
    assert len(commits) >= 3
    assert db_store.runs().empty and db_store.scalars(ids).empty


def test_metrics_of_more_runs_than_an_in_list_holds(db_store):
    if db_store.engine.dialect.name == "sqlite":  # SQLite's usual build: 32,766 bound values (some allow more)
        db_store.engine.dispose()
        event.listen(db_store.engine, "connect", lambda dbapi_conn, _record: dbapi_conn.setlimit(
            sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 32_766))
    ids = [f"plain20-0101-{i:012x}" for i in range(70_000)]  # over SQLite's 32,766 and PostgreSQL's 65,535
    (rid,) = db_store.create_runs([make_config("smoke")])
    db_store.log(rid, scalars=[(1, "train_loss", 1.0)])
    df = db_store.scalars(ids + [rid])
    assert df["run_id"].tolist() == [rid]
    assert set(db_store.run_summaries(ids + [rid])) == {rid}


def test_a_run_claimed_while_it_is_deleted_is_kept(db_store, monkeypatch):
    (rid,) = db_store.create_runs([make_config("smoke")])
    db_store.log(rid, scalars=[(1, "train_loss", 1.0)])
    db_store.claim_next("w1")  # claimed after the delete's first check: that check is made to miss it
    monkeypatch.setattr(type(db_store), "running_among", lambda self, ids: [])
    with pytest.raises(StoreError, match="started while it was being deleted"):
        db_store.delete_run(rid)
    assert db_store.get_run(rid)["status"] == "running"
    assert len(db_store.scalars(rid)) == 1


def test_files_that_could_not_be_removed_are_reported(db_store, monkeypatch):
    (rid,) = db_store.create_runs([make_config("smoke")], status="failed")
    folder = db_store.run_dir(rid)
    folder.mkdir(parents=True)
    (folder / "stuck.log").write_text("x")
    real = os.unlink

    def refuse(path, *args, **kwargs):
        if str(path).endswith("stuck.log"):
            raise PermissionError(13, "Permission denied")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", refuse)
    with pytest.raises(StoreError, match="stuck.log .*Permission denied.*could not be removed") as exc:
        db_store.delete_run(rid)
    assert "\n" not in str(exc.value)
    with pytest.raises(StoreError, match="no run"):
        db_store.get_run(rid)  # the run itself is deleted


def test_a_read_only_open_never_upgrades_the_schema(tmp_path, capsys):
    root = tmp_path / "results"
    write_v1_store(root)
    before = snapshot(root)
    with pytest.raises(StoreError, match=f"schema version 1, this lab reads version {SCHEMA_VERSION}; a read-only"):
        Store(root, readonly=True)
    assert main(["ls", "--results", str(root)]) != 0
    err = capsys.readouterr().err
    assert "does not upgrade it" in err and len(err.strip().splitlines()) == 1
    assert snapshot(root) == before
    Store(root).close()  # a writing open upgrades it
    assert Store(root, readonly=True).get_run("resid20-0101-abcdef")["status"] == "done"


def test_metric_rows_per_run_are_capped(db_store, monkeypatch):
    monkeypatch.setattr("lab.runs.store.schema.METRIC_ROWS_MIN", 0)
    (rid,) = db_store.create_runs([make_config("smoke", iterations=40, log_every=4)])
    cap = (40 // 4 + 2) * 32 * 2
    db_store.log(rid, scalars=[(s, "train_loss", 1.0) for s in range(cap - 10)])
    with pytest.raises(StoreError, match=f"cap of {cap}"):
        db_store.log(rid, scalars=[(s, "lr", 0.1) for s in range(20)])
    with pytest.raises(StoreError, match=f"cap of {cap}"):  # a fresh store counts what is stored
        Store(db_store.root).log(rid, layers=[(s, "grad_norm", [1.0]) for s in range(20)])
    assert len(db_store.scalars(rid)) == cap - 10
    db_store.log(rid, scalars=[(s, "lr", 0.1) for s in range(10)])  # up to the cap is fine
