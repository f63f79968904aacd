"""Run ids read back from the store name folders only when they are valid run ids inside <results>/runs: planted
rows (an absolute path, '../', NUL, 65 characters) are skipped by listings and claims, with a warning, and
refused by delete, resume and show with one line; nothing outside the results folder is touched."""
import logging

import pytest
import sqlalchemy as sa

from lab.__main__ import main
from lab.config import make_config
from lab.runs.store import StoreError, new_id, runs_table, valid_run_id


def bad_ids(outside):
    return {"absolute": str(outside), "dotdot": "../../" + outside.name, "nul": "plain20-0101-\x00abc",
            "long": "a" * 65, "dot": ".", "dotdot-alone": ".."}


def plant(store, run_id, status="queued"):
    """A row copied from a real run under `run_id`; False where the database refuses such an id (PostgreSQL
    refuses NUL in text and 65 characters in VARCHAR(64)), so no such row can exist there."""
    (good,) = store.create_runs([make_config("smoke")], status=status)
    with store.write() as conn:
        row = dict(conn.execute(sa.select(runs_table).where(runs_table.c.id == good)).mappings().first())
        conn.execute(runs_table.delete().where(runs_table.c.id == good))
    try:
        with store.write() as conn:
            conn.execute(runs_table.insert().values(**{**row, "id": run_id}))
    except StoreError:
        assert store.engine.dialect.name == "postgresql"
        return False
    return True


@pytest.fixture
def outside(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    return victim


def test_new_ids_are_valid_and_paths_are_not():
    assert valid_run_id(new_id("resid110")) and valid_run_id(new_id("landscape"))
    for bad in ("", ".", "..", "a/b", "/abs", "a\x00b", "a" * 65, "a.b", "-lead", None, 5):
        assert not valid_run_id(bad)


def test_planted_ids_are_refused_by_delete_resume_and_show(db_store, outside, capsys):
    for name, bad in bad_ids(outside).items():
        if not plant(db_store, bad, status="failed"):
            continue
        with pytest.raises(StoreError, match="not a valid run id") as exc:
            db_store.delete_run(bad)
        assert "\n" not in str(exc.value)
        for act in (lambda: db_store.delete_runs([bad], yes=True), lambda: db_store.requeue(bad),
                    lambda: db_store.requeue(bad, from_scratch=True), lambda: db_store.get_run(bad),
                    lambda: db_store.run_dir(bad)):
            with pytest.raises(StoreError, match="not a valid run id"):
                act()
        assert main(["show", bad, "--results", str(db_store.root)]) != 0
        assert "not a valid run id" in capsys.readouterr().err, name
        assert (outside / "precious.txt").read_text() == "keep me", name
    assert outside.exists() and db_store.root.exists()


def test_planted_ids_are_skipped_by_listings_and_claims(db_store, outside, caplog, monkeypatch):
    monkeypatch.setattr("lab.runs.store.schema._warned", set())  # warned once per process: the other database's run
    planted = [bad for bad in bad_ids(outside).values() if plant(db_store, bad)]
    assert planted
    (good,) = db_store.create_runs([make_config("smoke")])
    caplog.set_level(logging.WARNING, logger="lab.runs.store")
    assert db_store.runs()["id"].tolist() == [good]
    assert "not a valid run id" in caplog.text
    claimed = db_store.claim_next("w1")
    assert claimed["id"] == good
    assert db_store.claim_next("w1") is None  # the planted rows are never claimed
    with db_store.read() as conn:  # and are left as they were
        assert conn.execute(sa.select(sa.func.count()).select_from(runs_table)
                            .where(runs_table.c.status == "queued")).scalar() == len(planted)


def test_a_prefix_matching_only_a_planted_row_names_no_run(db_store, outside):
    if not plant(db_store, "plain20-0101-../../" + outside.name):
        return
    with pytest.raises(StoreError, match="no run"):
        db_store.delete_run("plain20-0101")
    assert (outside / "precious.txt").exists()


def test_a_run_folder_linked_out_of_the_results_folder_is_refused(db_store, outside):
    (rid,) = db_store.create_runs([make_config("smoke")], status="failed")
    runs = db_store.root / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    (runs / rid).symlink_to(outside, target_is_directory=True)
    with pytest.raises(StoreError, match="outside"):
        db_store.delete_run(rid)
    assert (outside / "precious.txt").read_text() == "keep me"
    assert db_store.get_run(rid)["status"] == "failed"  # refused before anything was deleted
