"""Attempts and claims: ownership tokens, claiming queued runs, heartbeats, finding and reaping dead runs, and
the workers table."""
from __future__ import annotations

import math
import os
import socket
import time
from typing import Iterable

import sqlalchemy as sa

from ...errors import LostRun, StoreError
from .process import pid_alive, process_alive
from .schema import (
    FOREIGN_GRACE_S, LOCAL_GRACE_S, _encode, new_token, runs_table, usable_id, workers_table,
)


class ClaimsMixin:
    """Who executes which run, and whether it is still alive."""

    def update_attempt(self, run_id: str, attempt: str, **values) -> None:
        """Set columns of a run that attempt `attempt` owns; LostRun when it no longer does."""
        values = _encode(values)
        n = self._transact(lambda conn: conn.execute(
            self._owned(runs_table.update(), run_id, attempt).values(**values)).rowcount)
        if n != 1:
            raise self.lost_run(run_id, attempt)

    def _owned(self, q, run_id: str, attempt: str):
        return q.where(runs_table.c.id == run_id, runs_table.c.attempt == attempt, runs_table.c.status == "running")

    def lost_run(self, run_id: str, attempt: str) -> LostRun:
        """The LostRun an attempt that no longer owns `run_id` raises: its message says what became of the run."""
        try:
            with self.read() as conn:
                row = conn.execute(sa.select(runs_table.c.status, runs_table.c.attempt)
                                   .where(runs_table.c.id == run_id)).first()
        except StoreError:
            row = None
        if row is None:
            why = "it was deleted"
        elif row[1] != attempt and row[1] is not None:
            why = f"it is {row[0]} under another attempt"
        else:
            why = f"it is {row[0]}"
        return LostRun(f"run {run_id}: this process no longer owns the run ({why})")

    def owns(self, run_id: str, attempt: str) -> bool:
        """True while attempt `attempt` owns `run_id` (the run is running under that token)."""
        with self.read() as conn:
            row = conn.execute(self._owned(sa.select(runs_table.c.id), run_id, attempt)).first()
        return row is not None

    def begin_attempt(self, run_id: str, attempt: str | None = None, **values) -> str:
        """Take ownership of a running run that no attempt owns yet (one created `running`, e.g. by a test or a
        tool); returns the token. With `attempt`, check that this token owns it instead."""
        if attempt is not None:
            self.update_attempt(run_id, attempt, **values)
            return attempt
        token = new_token()
        n = self._transact(lambda conn: conn.execute(
            runs_table.update().where(runs_table.c.id == run_id, runs_table.c.status == "running",
                                      runs_table.c.attempt.is_(None))
            .values(attempt=token, **_encode(values))
        ).rowcount)
        if n != 1:
            run = self.get_run(run_id)
            raise StoreError(f"run {run_id} is {run['status']}" + (" and owned by another attempt" if run["attempt"] else "")
                             + "; it cannot be executed here now")
        return token

    def active_here(self) -> list[dict]:
        """Running runs on this host whose process is alive: what occupies this host's worker slots."""
        host = socket.gethostname()
        with self.read() as conn:
            rows = conn.execute(
                sa.select(runs_table.c.id, runs_table.c.pid, runs_table.c.slot, runs_table.c.attempt,
                          runs_table.c.pid_started, runs_table.c.boot_id)
                .where(runs_table.c.status == "running", runs_table.c.host == host)
            ).mappings().all()
        return [dict(id=r["id"], pid=r["pid"], slot=r["slot"], attempt=r["attempt"]) for r in rows
                if process_alive(r["pid"], r["pid_started"], r["boot_id"])]

    def claim_next(self, worker_id: str, exclude: Iterable[str] = (), executor: str = "local",
                   jobs: Iterable[str] | None = None) -> dict | None:
        """Atomically take the oldest claimable queued run for this worker: it becomes running under a new
        attempt token (in the returned dict's `attempt`), with a heartbeat. None when nothing is claimable.

        A queued run whose parent (`parent_id`: the run it deepens, the run a job analyses) is still queued or
        running waits. SQLite takes the write lock first (BEGIN IMMEDIATE), so claimers queue; PostgreSQL
        locks the chosen row and skips rows other claimers hold (FOR UPDATE SKIP LOCKED), so concurrent
        claimers each get a different run and none comes back empty while runs are waiting."""
        token = new_token()
        parent = runs_table.alias("parent")
        waiting = sa.exists().where(parent.c.id == runs_table.c.parent_id, parent.c.id != runs_table.c.id,
                                    parent.c.status.in_(("queued", "running")))
        q = sa.select(runs_table.c.id).where(runs_table.c.status == "queued", ~waiting)
        if exclude:
            q = q.where(runs_table.c.id.not_in(list(exclude)))
        if jobs is not None:
            q = q.where(runs_table.c.job.in_(list(jobs)))
        locking = self.engine.dialect.name == "postgresql"

        def claim(conn):
            bad: list[str] = []  # rows whose id names no folder: skipped (with a warning), never claimed
            while True:
                first = (q.where(runs_table.c.id.not_in(bad)) if bad else q)
                first = first.order_by(runs_table.c.created_at, runs_table.c.id).limit(1)
                row = conn.execute(first.with_for_update(skip_locked=True, of=runs_table) if locking else first).first()
                if row is None:
                    return None
                if usable_id(row[0]):
                    break
                bad.append(row[0])
            n = conn.execute(
                runs_table.update()
                .where(runs_table.c.id == row[0], runs_table.c.status == "queued")
                .values(status="running", worker_id=worker_id, host=socket.gethostname(), started_at=time.time(),
                        heartbeat_at=self._db_now(), message=None, finished_at=None, attempt=token, pid=None,
                        pid_started=None, boot_id=None,
                        executor=executor, executor_ref=None, cancel_requested=0)
            ).rowcount
            return row[0] if n == 1 else None

        run_id = self._transact(claim)
        return self.get_run(run_id) if run_id is not None else None

    def heartbeat(self, run_id: str, attempt: str | None = None) -> bool:
        """Record (in database time) that a run is alive; returns True when a cancel has been requested.
        With `attempt`, LostRun when that attempt no longer owns the run."""
        q = runs_table.update()
        q = self._owned(q, run_id, attempt) if attempt is not None else q.where(runs_table.c.id == run_id)

        def beat(conn):
            n = conn.execute(q.values(heartbeat_at=self._db_now())).rowcount
            return n, conn.execute(sa.select(runs_table.c.cancel_requested).where(runs_table.c.id == run_id)).first()

        n, row = self._transact(beat)
        if attempt is not None and n != 1:
            raise self.lost_run(run_id, attempt)
        return bool(row and row[0])

    def stale_runs(self, grace_s: float = LOCAL_GRACE_S, foreign_grace_s: float = FOREIGN_GRACE_S) -> list[dict]:
        """Running runs that are dead: on this host, no live process (and no heartbeat for `grace_s`); on
        another host, no heartbeat for `foreign_grace_s`. Ages are in database time. Each dict has id,
        attempt, age_s and why."""
        host = socket.gethostname()
        with self.read() as conn:
            rows = conn.execute(
                sa.select(runs_table.c.id, runs_table.c.pid, runs_table.c.host, runs_table.c.heartbeat_at,
                          runs_table.c.attempt, runs_table.c.pid_started, runs_table.c.boot_id,
                          self._db_now().label("now"))
                .where(runs_table.c.status == "running")
            ).all()
        dead = []
        for rid, pid, rhost, beat, attempt, started, boot, now in rows:
            age = float(now) - beat if beat is not None else math.inf
            if rhost == host:
                if age > grace_s and not process_alive(pid, started, boot):
                    dead.append(dict(id=rid, attempt=attempt, age_s=age, why="its process is gone"))
            elif age > foreign_grace_s:
                where = f"on {rhost}" if rhost else "on an unknown host"
                since = f"{age:.0f} s" if math.isfinite(age) else "ever"
                dead.append(dict(id=rid, attempt=attempt, age_s=age, why=f"no heartbeat {where} for {since}"))
        return dead

    def reap_stale(self, grace_s: float = LOCAL_GRACE_S, foreign_grace_s: float = FOREIGN_GRACE_S) -> list[str]:
        """Mark dead running runs (`stale_runs`) interrupted; returns their ids. Only the attempt that was seen
        dead is marked: a run resumed meanwhile is left alone. A read-only store writes through a separate
        connection, opened only when something is dead, and skips it where the store cannot be written."""
        dead = self.stale_runs(grace_s, foreign_grace_s)
        if not dead:
            return []
        reaped = []
        try:
            for d in dead:
                q = runs_table.update().where(runs_table.c.id == d["id"], runs_table.c.status == "running")
                q = q.where(runs_table.c.attempt == d["attempt"]) if d["attempt"] else q.where(runs_table.c.attempt.is_(None))
                q = q.values(status="interrupted", finished_at=time.time(),
                             message=f"its process stopped without finishing ({d['why']}); resume it to continue")
                if self._transact(lambda conn: conn.execute(q).rowcount, engine=self._write_engine()) == 1:
                    reaped.append(d["id"])
        except StoreError:
            if not self.readonly:
                raise
        return reaped

    def register_worker(self, worker_id: str, slots: int, device: str) -> None:
        now = time.time()
        with self.write() as conn:
            conn.execute(
                workers_table.insert().values(
                    id=worker_id, pid=os.getpid(), host=socket.gethostname(), started_at=now,
                    heartbeat_at=self._db_now(), slots=slots, device=device,
                )
            )

    def worker_heartbeat(self, worker_id: str) -> None:
        self._transact(lambda conn: conn.execute(
            workers_table.update().where(workers_table.c.id == worker_id).values(heartbeat_at=self._db_now())))

    def remove_worker(self, worker_id: str) -> None:
        self._transact(lambda conn: conn.execute(workers_table.delete().where(workers_table.c.id == worker_id)))

    def live_workers(self, grace_s: float = 20.0) -> list[dict]:
        """Workers whose heartbeat is recent (database time) and (on this host) whose process exists; each
        dict has `age_s`, the seconds since its last heartbeat."""
        host = socket.gethostname()
        with self.read() as conn:
            rows = [dict(r) for r in conn.execute(sa.select(workers_table, self._db_now().label("now"))).mappings()]
        out = []
        for r in rows:
            r["age_s"] = float(r.pop("now")) - (r["heartbeat_at"] or 0)
            if r["age_s"] < grace_s and (r["host"] != host or pid_alive(r["pid"])):
                out.append(r)
        return out
