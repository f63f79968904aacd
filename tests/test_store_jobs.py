"""The store's public jobs API: create (an identical job in flight is reused), list, and requeue the same row."""
import pytest

from lab.config import make_config
from lab.runs.store import StoreError


def test_a_job_is_created_listed_and_requeued_as_the_same_row(db_store):
    (run,) = db_store.create_runs([make_config("smoke")])
    job = db_store.create_job("lesion", run, {"draws": 2, "a": 1}, label="lesion of smoke")
    assert db_store.create_job("lesion", run, {"a": 1, "draws": 2}) == job  # in flight: the same job
    other = db_store.create_job("lesion", run, {"draws": 3})
    assert other != job
    listed = db_store.jobs(parent_id=run)
    assert [j["id"] for j in listed] == [other, job]  # newest first
    assert [j["id"] for j in db_store.jobs(kinds=["shatter"])] == []
    assert db_store.run_summaries([run, "nope"])[run]["status"] == "queued"
    with pytest.raises(StoreError, match="only cancelled, interrupted, failed"):
        db_store.requeue_job(job)
    db_store.set_status(job, "failed", message="boom", iteration=5)
    assert db_store.requeue_job(job) == job
    again = db_store.get_run(job)
    assert (again["status"], again["iteration"]) == ("queued", 0)
    assert len(db_store.jobs()) == 2  # requeued in place: no new row
    with pytest.raises(StoreError, match="training run"):
        db_store.requeue_job(run)


def test_a_finished_identical_job_does_not_stop_a_new_one(db_store):
    (run,) = db_store.create_runs([make_config("smoke")])
    job = db_store.create_job("lesion", run, {"draws": 2})
    db_store.set_status(job, "done")
    assert db_store.create_job("lesion", run, {"draws": 2}) != job

