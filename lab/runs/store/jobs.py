"""Jobs: rows of the runs table whose `job` is not JOBS_DEFAULT, work on a parent run (e.g. an analysis). The
store knows no job kinds: it creates, lists and requeues their rows."""
from __future__ import annotations

import json
import time
from typing import Iterable

import sqlalchemy as sa

from ...errors import StoreError
from .schema import IN_CHUNK, IN_FLIGHT, JOBS_DEFAULT, _json_object, _show, is_job, runs_table, usable_id


class JobsMixin:
    """The jobs API of `Store`: create (an identical job in flight is reused), list, requeue the same row."""

    def create_job(self, kind: str, parent_id: str, options: dict, label: str | None = None,
                   dataset: str | None = None) -> str:
        """Queue a job of `kind` on run `parent_id` with `options` (a JSON object); returns its id.

        A job of the same kind, parent and options that is queued or running is returned instead of a new one
        (the look and the insert share one write transaction, so two callers cannot both insert)."""
        if not isinstance(kind, str) or not kind or kind == JOBS_DEFAULT or len(kind) > 16:
            raise StoreError(f"job kind {_show(kind)} must be 1 to 16 characters and not {JOBS_DEFAULT!r}")
        try:
            text = json.dumps(options, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"job options are not plain JSON: {exc}") from None
        with self.write() as conn:
            rows = conn.execute(sa.select(runs_table.c.id, runs_table.c.config).where(
                runs_table.c.job == kind, runs_table.c.parent_id == parent_id, runs_table.c.status.in_(IN_FLIGHT),
            ).order_by(runs_table.c.created_at)).all()
            for job_id, config in rows:
                if _json_object(config) == json.loads(text):
                    return job_id
            (job_id,) = self.unique_ids(conn, [kind])
            conn.execute(runs_table.insert().values(
                id=job_id, label=label, status="queued", dataset=dataset, config=text, job=kind,
                parent_id=parent_id, created_at=time.time(), iteration=0, total_iterations=0, cancel_requested=0,
            ))
        return job_id

    def jobs(self, parent_id: str | None = None, kinds: Iterable[str] | None = None) -> list[dict]:
        """Job rows as stored (`config` is the options' JSON text), newest first: all, those of one parent run,
        or those of some kinds. A row whose id is not a valid run id is skipped with a warning."""
        q = sa.select(runs_table).where(runs_table.c.job != JOBS_DEFAULT)
        if parent_id is not None:
            q = q.where(runs_table.c.parent_id == parent_id)
        if kinds is not None:
            q = q.where(runs_table.c.job.in_([kinds] if isinstance(kinds, str) else list(kinds)))
        with self.read() as conn:
            rows = conn.execute(q.order_by(runs_table.c.created_at.desc(), runs_table.c.id)).mappings()
            return [dict(r) for r in rows if usable_id(r["id"])]

    def run_summaries(self, run_ids: Iterable[str]) -> dict[str, dict]:
        """{id: {id, label, seed, status, job}} of the runs among `run_ids` that exist (any number of ids)."""
        ids = sorted({r for r in run_ids if r})
        out: dict[str, dict] = {}
        cols = (runs_table.c.id, runs_table.c.label, runs_table.c.seed, runs_table.c.status, runs_table.c.job)
        with self.read() as conn:
            for i in range(0, len(ids), IN_CHUNK):
                out.update({r["id"]: dict(r) for r in conn.execute(
                    sa.select(*cols).where(runs_table.c.id.in_(ids[i : i + IN_CHUNK]))).mappings()})
        return out

    def requeue_job(self, ref: str) -> str:
        """Resume a job: queue the same row again (a job keeps nothing until it is done, so it runs from the
        start). Refused (StoreError) for a training run or a job that is not cancelled, interrupted or failed.
        Returns the job's id."""
        run = self.get_run(ref)
        if not is_job(run):
            raise StoreError(f"{run['id']} is a training run, not a job; resume it as a run")
        self.requeue_many([run["id"]])
        return run["id"]
