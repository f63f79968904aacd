"""Runs: ids and prefixes, creation, reading, status changes, cancelling, resuming (with archiving) and deleting."""
from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Iterable

import pandas as pd
import sqlalchemy as sa

from ...errors import StoreError
from .process import process_identity
from .summaries import ENDED
from .schema import (
    AMBIGUOUS_LISTED, CREATE_CHUNK, DELETE_CHUNK, FINISHED, IN_CHUNK, JOBS_DEFAULT, RESUMABLE, STATUSES, _decode,
    _encode, _like_escape, _show, artifacts_table, bad_id_message, is_job, layer_table, new_id, new_token,
    runs_table, scalars_table, summaries_table, usable_id, valid_run_id,
)


class RunsMixin:
    """The life cycle of runs."""

    def run_dir(self, run_id: str) -> Path:
        """The folder of run `run_id`: <results>/runs/<id>. Every path made from a run id comes from here, so
        an id read from a shared database cannot name a folder elsewhere: StoreError (one line) for an id that
        is not a valid run id (`valid_run_id`) or a folder that resolves outside <results>/runs (a symlink)."""
        if not valid_run_id(run_id):
            raise StoreError(f"{bad_id_message(run_id)}; no folder is made from it")
        runs = self.root / "runs"
        path = runs / run_id
        try:
            resolved, inside = path.resolve(), runs.resolve()
        except (OSError, RuntimeError) as exc:
            raise StoreError(f"run folder {path} cannot be resolved: {exc}") from None
        if resolved.parent != inside:
            raise StoreError(f"run folder {path} resolves to {resolved}, outside {inside}; it is refused")
        return path

    def resolve(self, ref: str) -> str:
        """The id of the run `ref` names: an exact id, or a non-empty prefix matching exactly one run.

        Prefixes are case-sensitive on every database (as run ids are); LIKE wildcards in `ref` match only
        themselves."""
        return self.resolve_many([ref])[0]

    def resolve_many(self, refs: Iterable[str]) -> list[str]:
        """Ids for several references (each as `resolve`); all are checked before any is returned."""
        refs = list(refs)
        if not refs:
            raise StoreError("give at least one run id")
        out = []
        with self.read() as conn:
            for ref in refs:
                ref = str(ref)
                if not ref.strip():
                    raise StoreError("an empty run id names no run; give an id or a non-empty prefix (python -m lab ls)")
                hit = conn.execute(sa.select(runs_table.c.id).where(runs_table.c.id == ref)).first()
                if hit is not None:
                    if not valid_run_id(hit[0]):
                        raise StoreError(f"{bad_id_message(hit[0])}; it is refused")
                    out.append(hit[0])
                    continue
                rows = conn.execute(
                    sa.select(runs_table.c.id).where(runs_table.c.id.like(_like_escape(ref) + "%", escape="\\"))
                    .order_by(runs_table.c.id)
                ).all()
                ids = [r[0] for r in rows if r[0].startswith(ref)]  # SQLite's LIKE ignores case; the rule does not
                ids = [rid for rid in ids if usable_id(rid)]
                if not ids:
                    raise StoreError(f"no run {_show(ref)} in {self.root} (ids and prefixes are case-sensitive; "
                                     f"python -m lab ls lists the runs)")
                if len(ids) > 1:
                    listed = ", ".join(ids[:AMBIGUOUS_LISTED]) + (f" and {len(ids) - AMBIGUOUS_LISTED} more"
                                                                  if len(ids) > AMBIGUOUS_LISTED else "")
                    raise StoreError(f"run id prefix {_show(ref)} is ambiguous: it matches {len(ids)} runs ({listed}); "
                                     f"give more of the id")
                out.append(ids[0])
        return list(dict.fromkeys(out))

    def unique_ids(self, conn: sa.Connection, prefixes: list[str]) -> list[str]:
        """Fresh ids for new rows: none repeats another in the batch or one already stored."""
        ids = [new_id(p) for p in prefixes]
        for _ in range(100):
            taken = set()
            for i in range(0, len(ids), IN_CHUNK):
                chunk = ids[i : i + IN_CHUNK]
                taken |= {r[0] for r in conn.execute(sa.select(runs_table.c.id).where(runs_table.c.id.in_(chunk)))}
            seen, clash = set(), []
            for i, rid in enumerate(ids):
                if rid in taken or rid in seen:
                    clash.append(i)
                seen.add(rid)
            if not clash:
                return ids
            for i in clash:
                ids[i] = new_id(prefixes[i])
        raise StoreError("could not draw unused run ids (is the random source broken?)")

    def create_runs(self, configs: Iterable, sweep_id: str | None = None, status: str = "queued",
                    job: str = JOBS_DEFAULT, parent_id: str | None = None) -> list[str]:
        """Insert runs for RunConfigs, all or none; returns their ids.

        Up to CREATE_CHUNK runs go in one transaction; more are committed in transactions of that size (a
        long one would hold the write lock past other writers' busy timeout), and when one fails the runs
        already committed are withdrawn (those still queued: a worker may have taken one meanwhile).

        Each config is validated first (ConfigError listing every problem). A run created `running` gets this
        host, this process and a heartbeat at once, so no reader ever takes it for dead; the process that then
        executes it takes ownership with `begin_attempt` (or use `start_run`, which does both).

        Without `parent_id`, a run whose config has `deepen_from` gets that run's id as its parent, so a
        deepened run queued behind its parent waits for it (`claim_next`); a `deepen_from` that names no run
        leaves it without one (executing it then fails, naming the missing parent)."""
        from ...config import validate  # the store's API refuses what the CLI refuses

        configs = [validate(c) for c in configs]
        if status not in STATUSES:
            raise StoreError(f"unknown status {status!r}; statuses: {', '.join(STATUSES)}")
        now = time.time()
        sweep_id = sweep_id or new_id("sweep")
        if not configs:
            return []
        parents: dict[str, str | None] = {}
        if parent_id is None:
            for ref in {cfg.deepen_from for cfg in configs if cfg.deepen_from}:
                try:
                    parents[ref] = self.resolve(ref)
                except StoreError:
                    parents[ref] = None
        common = dict(sweep_id=sweep_id, status=status, job=job, now=now, parent_id=parent_id, parents=parents)
        ids: list[str] = []
        try:
            for start in range(0, len(configs), CREATE_CHUNK):
                ids += self._insert_runs(configs[start : start + CREATE_CHUNK], start, **common)
        except BaseException:
            if ids:
                self._withdraw(ids)
            raise
        return ids

    def _insert_runs(self, configs: list, start: int, sweep_id: str, status: str, job: str, now: float,
                     parent_id: str | None, parents: dict) -> list[str]:
        """Insert one transaction's runs (`create_runs`); `start` is the first one's place in the whole batch."""
        with self.write() as conn:
            ids = self.unique_ids(conn, [f"{cfg.kind[:5]}{cfg.depth}" for cfg in configs])
            owner = {}
            if status == "running":
                owner = dict(host=socket.gethostname(), pid=os.getpid(), heartbeat_at=self.db_time(conn),
                             started_at=now, **process_identity(os.getpid()))
            rows = []
            for i, (rid, cfg) in enumerate(zip(ids, configs), start):
                rows.append(dict(
                    id=rid, sweep_id=sweep_id, label=cfg.label(), status=status, kind=cfg.kind, depth=cfg.depth,
                    dataset=cfg.dataset, preset=cfg.preset, seed=cfg.seed, tag=cfg.tag, config=cfg.to_json(),
                    created_at=now + i * 1e-6,  # the offset keeps submission order
                    iteration=0, total_iterations=cfg.iterations, cancel_requested=0, job=job,
                    parent_id=parent_id if parent_id is not None else parents.get(cfg.deepen_from), attempt=None,
                    **owner,
                ))
            conn.execute(runs_table.insert(), rows)
        return ids

    def _withdraw(self, ids: list[str]) -> None:
        """Delete the runs among `ids` that are still queued and no attempt owns (a batch that failed part way)."""
        for i in range(0, len(ids), IN_CHUNK):
            chunk = ids[i : i + IN_CHUNK]
            try:
                self._transact(lambda conn, chunk=chunk: conn.execute(runs_table.delete().where(
                    runs_table.c.id.in_(chunk), runs_table.c.status == "queued", runs_table.c.attempt.is_(None))))
            except StoreError:
                pass  # the error that stopped the batch is the one to report

    def start_run(self, cfg, sweep_id: str | None = None, executor: str = "cli") -> tuple[str, str]:
        """Create one run already running in this process (a foreground run): (run id, attempt token)."""
        (run_id,) = self.create_runs([cfg], sweep_id=sweep_id, status="running")
        token = new_token()
        with self.write() as conn:
            conn.execute(runs_table.update().where(runs_table.c.id == run_id).values(
                attempt=token, executor=executor, worker_id=executor, executor_ref=str(os.getpid())))
        return run_id, token

    def get_run(self, ref: str) -> dict:
        """One run as a dict (config, env and layers decoded); `ref` is an id or a unique prefix."""
        run_id = self.resolve(ref)
        with self.read() as conn:
            row = conn.execute(sa.select(runs_table).where(runs_table.c.id == run_id)).mappings().first()
        if row is None:
            raise StoreError(f"no run {_show(ref)} in {self.root}")
        return _decode(dict(row))

    def runs(self, status: Iterable[str] | None = None, jobs: Iterable[str] | None = (JOBS_DEFAULT,),
             columns: Iterable[str] | None = None) -> pd.DataFrame:
        """Runs, newest first, with their config fields as columns prefixed by nothing (kind, depth, ...).

        `jobs`: by default only training runs; None gives every row (training runs and analysis jobs), a list
        of job names the rows of those jobs. `columns`: the runs table's columns to read (default all; `id`
        always), e.g. a listing without the long `layers` and `log_tail`; the config fields are columns when
        `config` is read. A row whose id is not a valid run id is skipped with a warning."""
        names = [c.name for c in runs_table.columns]
        if columns is not None:
            wanted = set(columns) | {"id"}
            unknown = sorted(wanted - set(names))
            if unknown:
                raise StoreError(f"unknown runs column {', '.join(map(repr, unknown))}; columns: {', '.join(names)}")
            names = [n for n in names if n in wanted]
        q = sa.select(*(runs_table.c[n] for n in names)).order_by(runs_table.c.created_at.desc(), runs_table.c.id)
        if jobs is not None:
            q = q.where(runs_table.c.job.in_([jobs] if isinstance(jobs, str) else list(jobs)))
        if status:
            status = list(status)
            unknown = [s for s in status if s not in STATUSES]
            if unknown:
                raise StoreError(f"unknown status {', '.join(map(repr, unknown))}; statuses: {', '.join(STATUSES)}")
            q = q.where(runs_table.c.status.in_(status))
        with self.read() as conn:
            rows = [r for r in conn.execute(q) if usable_id(r[0])]  # id is the first column
        if not rows:
            return pd.DataFrame(columns=names)
        data = dict(zip(names, map(list, zip(*rows))))  # columnar: far faster than rows for pandas
        for k in ("config", "env", "layers"):  # JSON columns decoded (as `_decode` does a row's)
            if k in data:
                data[k] = [_decode({k: v})[k] for v in data[k]]
        df = pd.DataFrame(data, columns=names)
        if "config" in data:
            cfg = pd.DataFrame(data["config"])
            df = pd.concat([df, cfg[[c for c in cfg.columns if c not in df.columns]]], axis=1)
        return df

    def update_run(self, run_id: str, **values) -> None:
        """Set columns of a run with no ownership check (tools and tests; attempts use `update_attempt`)."""
        values = _encode(values)
        self._transact(lambda conn: conn.execute(runs_table.update().where(runs_table.c.id == run_id).values(**values)))

    def set_status(self, run_id: str, status: str, expect: Iterable[str] | None = None,
                   attempt: str | None = None, **values) -> bool:
        """Move a run to `status` (only from one of `expect`, and only while `attempt` owns it, if given); True
        when it moved."""
        if status not in STATUSES:
            raise StoreError(f"unknown status {status!r}; statuses: {', '.join(STATUSES)}")
        q = runs_table.update().where(runs_table.c.id == run_id)
        if expect is not None:
            q = q.where(runs_table.c.status.in_(list(expect)))
        if attempt is not None:
            q = q.where(runs_table.c.attempt == attempt)
        if status in FINISHED + ("cancelled", "interrupted"):
            values.setdefault("finished_at", time.time())
        q = q.values(status=status, **_encode(values))
        moved = self._transact(lambda conn: conn.execute(q).rowcount) == 1
        if moved and status in ENDED:
            try:  # the pages' downsampled copy; a read makes it later if this fails
                self.summarize_series(run_id)
            except StoreError as exc:
                logging.getLogger("lab.runs.store").warning(
                    "run %s: its series were not summarised (%s); the pages summarise them when they first read them",
                    run_id, exc)
        return moved

    def request_cancel(self, ref: str) -> str:
        """Cancel a queued run at once, or ask a running one to stop; returns the resulting status."""
        run = self.get_run(ref)
        if run["status"] == "queued":
            if self.set_status(run["id"], "cancelled", expect=["queued"], message="cancelled before it started"):
                return "cancelled"
            run = self.get_run(run["id"])
        if run["status"] == "running":
            self._transact(lambda conn: conn.execute(
                runs_table.update().where(runs_table.c.id == run["id"], runs_table.c.status == "running")
                .values(cancel_requested=1)))
            return "cancelling"
        raise StoreError(f"run {run['id']} is {run['status']}; only queued or running runs can be cancelled")

    def resume_problem(self, run: dict, from_scratch: bool = False, checkpoint_problem=None) -> str | None:
        """Why `run` cannot be resumed as asked (None when it can). `checkpoint_problem(path)` checks a
        checkpoint file's contents (the trainer's loader: the store does not read checkpoints itself)."""
        if run["status"] not in RESUMABLE:
            return f"run {run['id']} is {run['status']}; only {', '.join(RESUMABLE)} runs can be resumed"
        if from_scratch or is_job(run):  # an analysis job keeps nothing until it is done: it simply runs again
            return None
        from ...checkpoint import CHECKPOINT  # loads torch: only where a resume is checked

        ckpt = self.run_dir(run["id"]) / CHECKPOINT
        metrics = self.metric_count(run["id"])
        if not ckpt.exists():
            if (run["iteration"] or 0) > 0 or metrics:
                return (f"run {run['id']} has progress (iteration {run['iteration'] or 0}, {metrics} metric values) but "
                        f"its checkpoint {ckpt} is missing; resume it with --from-scratch to train it again from "
                        f"iteration 0 (its metrics so far move to a new archived run)")
            return None
        problem = checkpoint_problem(ckpt) if checkpoint_problem else None
        if problem:
            return f"run {run['id']}: {problem}; resume it with --from-scratch to train it again from iteration 0"
        return None

    def requeue(self, ref: str, from_scratch: bool = False, checkpoint_problem=None) -> str | None:
        """Queue an interrupted, cancelled or failed run again; its trainer resumes from the last checkpoint.

        Refused (StoreError, nothing changed) when the run has progress but no usable checkpoint, unless
        `from_scratch`: then its metrics, log and checkpoint move to a new archived run (returned) and it
        starts again from iteration 0."""
        return self.requeue_many([ref], from_scratch, checkpoint_problem)[0]

    def requeue_many(self, refs: Iterable[str], from_scratch: bool = False, checkpoint_problem=None) -> list[str | None]:
        """`requeue` for several runs: every run is checked before any is queued."""
        runs = [self.get_run(rid) for rid in self.resolve_many(refs)]
        for run in runs:
            problem = self.resume_problem(run, from_scratch, checkpoint_problem)
            if problem:
                raise StoreError(problem)
        out = []
        for run in runs:
            job = is_job(run)
            archive = self._archive(run) if from_scratch and not job and self._has_progress(run) else None
            values = dict(cancel_requested=0, finished_at=None, pid=None, attempt=None)
            if job:
                values.update(iteration=0, elapsed_s=None, message="queued again")
            if archive:
                values.update(iteration=0, images_per_s=None, elapsed_s=None, final_train_error=None,
                              final_val_error=None, final_test_error=None, log_tail=None,
                              message=f"restarted from scratch; its earlier metrics are in run {archive}")
            if not self.set_status(run["id"], "queued", expect=RESUMABLE, **values):
                raise StoreError(f"run {run['id']} changed state while being resumed; try again")
            out.append(archive)
        return out

    def _has_progress(self, run: dict) -> bool:
        return (run["iteration"] or 0) > 0 or self.metric_count(run["id"]) > 0 or self.run_dir(run["id"]).exists()

    def _archive(self, run: dict) -> str:
        """Move a run's metrics and files to a new run (same config, status and tag; a message saying whose
        they were); returns its id. The folder moves first and moves back if the database refuses."""
        src = self.run_dir(run["id"])
        with self.write() as conn:
            (aid,) = self.unique_ids(conn, [run["id"].split("-", 1)[0]])
        dst = self.run_dir(aid)
        moved = False
        if src.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(src, dst)
            except OSError as exc:
                raise StoreError(f"cannot move {src} to {dst}: {exc.strerror or exc}") from None
            moved = True
        try:
            with self.write() as conn:
                row = dict(conn.execute(sa.select(runs_table).where(runs_table.c.id == run["id"])).mappings().first())
                row.update(id=aid, attempt=None, pid=None, pid_started=None, boot_id=None, cancel_requested=0, created_at=row["created_at"] - 1e-6,
                           message=f"archive: the metrics of run {run['id']} before it was restarted from scratch")
                conn.execute(runs_table.insert().values(**row))
                conn.execute(summaries_table.delete().where(summaries_table.c.run_id == run["id"]))
                for table in (scalars_table, layer_table, artifacts_table):
                    conn.execute(table.update().where(table.c.run_id == run["id"]).values(run_id=aid))
        except Exception:
            if moved:
                os.replace(dst, src)
            raise
        return aid

    def delete_run(self, ref: str) -> str:
        """Delete one run (not a running one), its metrics and its folder; returns its id."""
        return self.delete_runs([ref], yes=True)[0]

    def delete_runs(self, refs: Iterable[str], yes: bool = False) -> list[str]:
        """Delete runs given by exact ids or unique prefixes, with their metrics and folders; returns their ids.

        Every reference (and the folder it names) is checked first; deleting more than one run needs `yes`;
        running runs are refused (cancel them first), also one that a worker claims while it is deleted (the
        DELETE itself skips running rows, and a transaction that deleted fewer rows than it locked is rolled
        back). Runs are deleted DELETE_CHUNK per transaction. Files that could not be removed are reported
        (StoreError, after the runs are deleted)."""
        ids = self.resolve_many(refs)
        if len(ids) > 1 and not yes:
            raise StoreError(f"deleting {len(ids)} runs ({', '.join(ids[:AMBIGUOUS_LISTED])}) needs --yes")
        folders = {rid: self.run_dir(rid) for rid in ids}
        running = self.running_among(ids)
        if running:
            raise StoreError(f"run {', '.join(running[:AMBIGUOUS_LISTED])} is running; cancel it first")
        deleted: list[str] = []
        left: list[str] = []
        for i in range(0, len(ids), DELETE_CHUNK):
            chunk = ids[i : i + DELETE_CHUNK]
            self._transact(lambda conn, chunk=chunk: self._delete_rows(conn, chunk))
            deleted += chunk
            for rid in chunk:
                left += _remove_tree(folders[rid])
        if left:
            more = f" and {len(left) - 1} more" if len(left) > 1 else ""
            raise StoreError(f"deleted {len(deleted)} run(s), but {left[0]}{more} could not be removed; "
                             f"remove what is left by hand")
        return deleted

    def running_among(self, ids: list[str]) -> list[str]:
        """The ids among `ids` whose run is running."""
        out: list[str] = []
        with self.read() as conn:
            for i in range(0, len(ids), IN_CHUNK):
                out += [r[0] for r in conn.execute(sa.select(runs_table.c.id).where(
                    runs_table.c.id.in_(ids[i : i + IN_CHUNK]), runs_table.c.status == "running"))]
        return out

    def _delete_rows(self, conn: sa.Connection, ids: list[str]) -> None:
        """Delete runs `ids` (not running ones) and their metrics, inside the caller's transaction."""
        locked = sa.select(runs_table.c.id).where(runs_table.c.id.in_(ids))
        if conn.dialect.name == "postgresql":  # a claimer skips locked rows (FOR UPDATE SKIP LOCKED)
            locked = locked.with_for_update()
        present = [r[0] for r in conn.execute(locked)]
        for table in (scalars_table, layer_table, artifacts_table, summaries_table):
            conn.execute(table.delete().where(table.c.run_id.in_(present)))
        n = conn.execute(runs_table.delete().where(runs_table.c.id.in_(present),
                                                   runs_table.c.status != "running")).rowcount
        if n != len(present):
            raise StoreError(f"one of runs {', '.join(present[:AMBIGUOUS_LISTED])} started while it was being "
                             f"deleted; nothing of them was deleted (cancel it first)")


def _remove_tree(path: Path) -> list[str]:
    """Remove folder `path` (gone already is fine); the paths that could not be removed, with why."""
    left: list[str] = []

    def failed(_fn, where, exc):
        left.append(f"{where} ({getattr(exc, 'strerror', None) or exc})")

    if path.is_symlink() or path.is_file():
        try:
            path.unlink()
        except OSError as exc:
            failed(None, path, exc)
    elif path.exists():
        handler = ({"onexc": failed} if sys.version_info >= (3, 12)
                   else {"onerror": lambda fn, where, info: failed(fn, where, info[1])})
        shutil.rmtree(path, **handler)
    return left
