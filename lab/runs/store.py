"""The results store: runs, their scalar metrics and per-layer metrics, in SQL through SQLAlchemy Core.

By default an embedded SQLite database `lab.db` in the results folder (WAL journal, a busy timeout, write
transactions that start with BEGIN IMMEDIATE so writers queue instead of failing); `LAB_DB_URL` (or the
`url` argument) points it at another database, e.g. PostgreSQL, with no code changes. Each run also has a
folder `runs/<id>/` for its checkpoint and log. All reads return plain dicts or pandas DataFrames.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import event

SCHEMA_VERSION = 1
STATUSES = ("queued", "running", "done", "failed", "diverged", "cancelled", "interrupted")
FINISHED = ("done", "failed", "diverged")
RESUMABLE = ("cancelled", "interrupted", "failed")

metadata = sa.MetaData()

meta_table = sa.Table("meta", metadata, sa.Column("key", sa.String(64), primary_key=True), sa.Column("value", sa.Text))

runs_table = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("sweep_id", sa.String(64), index=True),
    sa.Column("label", sa.String(200)),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("kind", sa.String(16)),
    sa.Column("depth", sa.Integer),
    sa.Column("dataset", sa.String(32)),
    sa.Column("preset", sa.String(32)),
    sa.Column("seed", sa.Integer),
    sa.Column("tag", sa.String(200)),
    sa.Column("config", sa.Text, nullable=False),       # RunConfig as JSON
    sa.Column("env", sa.Text),                           # torch version, device, host, git revision... as JSON
    sa.Column("layers", sa.Text),                        # {"grad_norm": [names], "response_std": [...], ...}
    sa.Column("params", sa.Integer),
    sa.Column("created_at", sa.Float, nullable=False),  # seconds since the epoch
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("heartbeat_at", sa.Float),
    sa.Column("pid", sa.Integer),
    sa.Column("host", sa.String(255)),
    sa.Column("worker_id", sa.String(64)),
    sa.Column("device", sa.String(64)),
    sa.Column("slot", sa.String(32)),                    # the worker slot it runs in: "cpu" or "cuda:N"
    sa.Column("iteration", sa.Integer, nullable=False, default=0),
    sa.Column("total_iterations", sa.Integer, nullable=False),
    sa.Column("images_per_s", sa.Float),
    sa.Column("elapsed_s", sa.Float),
    sa.Column("final_train_error", sa.Float),
    sa.Column("final_val_error", sa.Float),
    sa.Column("final_test_error", sa.Float),
    sa.Column("cancel_requested", sa.Integer, nullable=False, default=0),
    sa.Column("message", sa.Text),                       # why a run failed, diverged or was interrupted
)

scalars_table = sa.Table(
    "scalars",
    metadata,
    sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("step", sa.Integer, primary_key=True),
    sa.Column("value", sa.Float),
)

layer_table = sa.Table(
    "layer_metrics",
    metadata,
    sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("metric", sa.String(32), primary_key=True),   # grad_norm, response_std, residual_ratio
    sa.Column("step", sa.Integer, primary_key=True),
    sa.Column("vals", sa.Text, nullable=False),             # JSON list, one value per layer in network order
)

workers_table = sa.Table(
    "workers",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("pid", sa.Integer),
    sa.Column("host", sa.String(255)),
    sa.Column("started_at", sa.Float),
    sa.Column("heartbeat_at", sa.Float),
    sa.Column("slots", sa.Integer),
    sa.Column("device", sa.String(64)),
)


class StoreError(RuntimeError):
    """The store cannot do what was asked (unknown run, wrong state, schema mismatch); the message says why."""


def default_results_dir() -> Path:
    return Path(os.environ.get("LAB_RESULTS", "results"))


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


class Store:
    """A results store rooted at `results_dir` (default $LAB_RESULTS or results/)."""

    def __init__(self, results_dir: str | Path | None = None, url: str | None = None, create: bool = True) -> None:
        self.root = Path(results_dir) if results_dir is not None else default_results_dir()
        url = url or os.environ.get("LAB_DB_URL")
        if url is None:
            if create:
                self.root.mkdir(parents=True, exist_ok=True)
            elif not (self.root / "lab.db").exists():
                raise StoreError(f"no results store at {self.root} (no lab.db there)")
            url = f"sqlite:///{(self.root / 'lab.db').resolve()}"
        self.url = url
        self.engine = sa.create_engine(url, **({"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}))
        if self.engine.dialect.name == "sqlite":
            _configure_sqlite(self.engine)
        self._check_schema()

    # --- plumbing -------------------------------------------------------------------------------------
    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """A short write transaction (BEGIN IMMEDIATE on SQLite), committed on exit."""
        with self.engine.connect().execution_options(lab_write=True) as conn:
            with conn.begin():
                yield conn

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn:
            with conn.begin():
                yield conn

    def _check_schema(self) -> None:
        with self.write() as conn:
            metadata.create_all(conn)
            row = conn.execute(sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")).first()
            if row is None:
                conn.execute(meta_table.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
            elif int(row[0]) != SCHEMA_VERSION:
                raise StoreError(
                    f"results store {self.url} has schema version {row[0]}, this lab reads version {SCHEMA_VERSION}; "
                    f"use a lab release of that version or start a new results folder"
                )

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    # --- runs -----------------------------------------------------------------------------------------
    def create_runs(self, configs: Iterable, sweep_id: str | None = None, status: str = "queued") -> list[str]:
        """Insert runs for RunConfigs in one transaction (all or none); returns their ids."""
        now = time.time()
        sweep_id = sweep_id or new_id("sweep")
        rows = []
        for i, cfg in enumerate(configs):
            rows.append(
                dict(
                    id=new_id(f"{cfg.kind[:5]}{cfg.depth}"), sweep_id=sweep_id, label=cfg.label(), status=status,
                    kind=cfg.kind, depth=cfg.depth, dataset=cfg.dataset, preset=cfg.preset, seed=cfg.seed, tag=cfg.tag,
                    config=cfg.to_json(), created_at=now + i * 1e-6,  # the offset keeps submission order
                    iteration=0, total_iterations=cfg.iterations, cancel_requested=0,
                )
            )
        if rows:
            with self.write() as conn:
                conn.execute(runs_table.insert(), rows)
        return [r["id"] for r in rows]

    def get_run(self, run_id: str) -> dict:
        with self.read() as conn:
            row = conn.execute(sa.select(runs_table).where(runs_table.c.id == run_id)).mappings().first()
            if row is None:
                # allow a unique prefix, as git does
                rows = conn.execute(sa.select(runs_table).where(runs_table.c.id.like(f"{run_id}%"))).mappings().all()
                if len(rows) == 1:
                    row = rows[0]
                elif len(rows) > 1:
                    raise StoreError(f"run id {run_id!r} is ambiguous: {', '.join(r['id'] for r in rows[:5])}")
        if row is None:
            raise StoreError(f"no run {run_id!r} in {self.root}")
        return _decode(dict(row))

    def runs(self, status: Iterable[str] | None = None) -> pd.DataFrame:
        """All runs, newest first, with their config fields as columns prefixed by nothing (kind, depth, ...)."""
        q = sa.select(runs_table).order_by(runs_table.c.created_at.desc(), runs_table.c.id)
        if status:
            q = q.where(runs_table.c.status.in_(list(status)))
        with self.read() as conn:
            rows = [_decode(dict(r)) for r in conn.execute(q).mappings()]
        cols = [c.name for c in runs_table.columns]
        df = pd.DataFrame(rows, columns=cols) if rows else pd.DataFrame(columns=cols)
        if rows:
            cfg = pd.DataFrame([r["config"] for r in rows])
            for c in cfg.columns:
                if c not in df.columns:
                    df[c] = cfg[c].values
        return df

    def update_run(self, run_id: str, **values) -> None:
        for k in ("config", "env", "layers"):
            if k in values and not isinstance(values[k], str) and values[k] is not None:
                values[k] = json.dumps(values[k])
        with self.write() as conn:
            conn.execute(runs_table.update().where(runs_table.c.id == run_id).values(**values))

    def set_status(self, run_id: str, status: str, expect: Iterable[str] | None = None, **values) -> bool:
        """Move a run to `status` (only from one of `expect`, if given); True when it moved."""
        assert status in STATUSES, status
        q = runs_table.update().where(runs_table.c.id == run_id)
        if expect is not None:
            q = q.where(runs_table.c.status.in_(list(expect)))
        if status in FINISHED + ("cancelled", "interrupted"):
            values.setdefault("finished_at", time.time())
        with self.write() as conn:
            return conn.execute(q.values(status=status, **values)).rowcount == 1

    def active_here(self) -> list[dict]:
        """Running runs on this host whose process is alive: what occupies this host's worker slots."""
        host = socket.gethostname()
        with self.read() as conn:
            rows = conn.execute(
                sa.select(runs_table.c.id, runs_table.c.pid, runs_table.c.slot)
                .where(runs_table.c.status == "running", runs_table.c.host == host)
            ).mappings().all()
        return [dict(r) for r in rows if pid_alive(r["pid"])]

    def claim_next(self, worker_id: str, exclude: Iterable[str] = ()) -> dict | None:
        """Atomically take the oldest queued run for this worker (status becomes running); None if none."""
        with self.write() as conn:
            q = sa.select(runs_table.c.id).where(runs_table.c.status == "queued")
            if exclude:
                q = q.where(runs_table.c.id.not_in(list(exclude)))
            row = conn.execute(q.order_by(runs_table.c.created_at, runs_table.c.id).limit(1)).first()
            if row is None:
                return None
            now = time.time()
            n = conn.execute(
                runs_table.update()
                .where(runs_table.c.id == row[0], runs_table.c.status == "queued")
                .values(status="running", worker_id=worker_id, host=socket.gethostname(), started_at=now,
                        heartbeat_at=now, message=None, finished_at=None)
            ).rowcount
        return self.get_run(row[0]) if n == 1 else None

    def request_cancel(self, run_id: str) -> str:
        """Cancel a queued run at once, or ask a running one to stop; returns the resulting status."""
        run = self.get_run(run_id)
        if run["status"] == "queued":
            if self.set_status(run["id"], "cancelled", expect=["queued"], message="cancelled before it started"):
                return "cancelled"
            run = self.get_run(run["id"])
        if run["status"] == "running":
            self.update_run(run["id"], cancel_requested=1)
            return "cancelling"
        raise StoreError(f"run {run['id']} is {run['status']}; only queued or running runs can be cancelled")

    def requeue(self, run_id: str) -> None:
        """Queue an interrupted, cancelled or failed run again; its trainer resumes from the last checkpoint."""
        run = self.get_run(run_id)
        if run["status"] not in RESUMABLE:
            raise StoreError(
                f"run {run['id']} is {run['status']}; only {', '.join(RESUMABLE)} runs can be resumed"
            )
        if not self.set_status(run["id"], "queued", expect=RESUMABLE, cancel_requested=0, finished_at=None, pid=None):
            raise StoreError(f"run {run['id']} changed state while being resumed; try again")

    def delete_run(self, run_id: str) -> None:
        run = self.get_run(run_id)
        if run["status"] == "running":
            raise StoreError(f"run {run['id']} is running; cancel it first")
        with self.write() as conn:
            conn.execute(scalars_table.delete().where(scalars_table.c.run_id == run["id"]))
            conn.execute(layer_table.delete().where(layer_table.c.run_id == run["id"]))
            conn.execute(runs_table.delete().where(runs_table.c.id == run["id"]))
        shutil.rmtree(self.run_dir(run["id"]), ignore_errors=True)

    def heartbeat(self, run_id: str) -> bool:
        """Record that a run is alive; returns True when a cancel has been requested."""
        with self.write() as conn:
            conn.execute(runs_table.update().where(runs_table.c.id == run_id).values(heartbeat_at=time.time()))
            row = conn.execute(sa.select(runs_table.c.cancel_requested).where(runs_table.c.id == run_id)).first()
        return bool(row and row[0])

    def reap_stale(self, grace_s: float = 15.0, foreign_grace_s: float = 300.0) -> list[str]:
        """Mark running runs whose heartbeat is older than `grace_s` and whose process is gone as interrupted.

        A run on another host cannot be checked for its process, so it waits `foreign_grace_s`. Returns the ids.
        """
        now, host, reaped = time.time(), socket.gethostname(), []
        with self.read() as conn:
            rows = conn.execute(
                sa.select(runs_table.c.id, runs_table.c.pid, runs_table.c.host, runs_table.c.heartbeat_at).where(
                    runs_table.c.status == "running"
                )
            ).all()
        for rid, pid, rhost, beat in rows:
            age = now - (beat or 0)
            gone = (rhost == host and age > grace_s and not pid_alive(pid)) or age > foreign_grace_s
            if gone and self.set_status(
                rid, "interrupted", expect=["running"],
                message=f"its process stopped without finishing (no heartbeat for {age:.0f} s); resume it to continue",
            ):
                reaped.append(rid)
        return reaped

    # --- metrics --------------------------------------------------------------------------------------
    def log(
        self,
        run_id: str,
        scalars: Iterable[tuple[int, str, float]] = (),
        layers: Iterable[tuple[int, str, list[float]]] = (),
        **run_values,
    ) -> None:
        """Append metrics and update the run row, in one short transaction."""
        srows = [dict(run_id=run_id, step=int(s), name=n, value=_finite_or_none(v)) for s, n, v in scalars]
        lrows = [
            dict(run_id=run_id, step=int(s), metric=m, vals=json.dumps([_finite_or_none(x) for x in v]))
            for s, m, v in layers
        ]
        run_values.setdefault("heartbeat_at", time.time())
        with self.write() as conn:
            if srows:
                conn.execute(scalars_table.insert(), srows)
            if lrows:
                conn.execute(layer_table.insert(), lrows)
            conn.execute(runs_table.update().where(runs_table.c.id == run_id).values(**run_values))

    def truncate_after(self, run_id: str, step: int) -> None:
        """Drop metrics logged after `step` (a resumed run redoes those iterations)."""
        with self.write() as conn:
            conn.execute(scalars_table.delete().where(scalars_table.c.run_id == run_id, scalars_table.c.step > step))
            conn.execute(layer_table.delete().where(layer_table.c.run_id == run_id, layer_table.c.step > step))

    def scalars(self, run_ids: str | Iterable[str], names: Iterable[str] | None = None) -> pd.DataFrame:
        """Scalar metrics as a long DataFrame: run_id, name, step, value (sorted by run, name, step)."""
        ids = [run_ids] if isinstance(run_ids, str) else list(run_ids)
        q = sa.select(scalars_table).where(scalars_table.c.run_id.in_(ids))
        if names is not None:
            q = q.where(scalars_table.c.name.in_(list(names)))
        q = q.order_by(scalars_table.c.run_id, scalars_table.c.name, scalars_table.c.step)
        with self.read() as conn:
            rows = conn.execute(q).all()
        cols = ["run_id", "name", "step", "value"]
        columns = list(zip(*rows)) if rows else [[] for _ in cols]  # columnar: far faster than rows for pandas
        df = pd.DataFrame(dict(zip(cols, columns)), columns=cols)
        df["value"] = pd.to_numeric(df["value"], errors="coerce").astype(float)
        return df

    def layer_series(self, run_id: str, metric: str, steps: Iterable[int] | None = None) -> pd.DataFrame:
        """Per-layer values of one metric as a long DataFrame: step, layer (index), layer_name, value."""
        run = self.get_run(run_id)
        names = (run.get("layers") or {}).get(metric, [])
        q = sa.select(layer_table.c.step, layer_table.c.vals).where(
            layer_table.c.run_id == run["id"], layer_table.c.metric == metric
        )
        if steps is not None:
            q = q.where(layer_table.c.step.in_(list(steps)))
        with self.read() as conn:
            rows = conn.execute(q.order_by(layer_table.c.step)).all()
        out = []
        for step, vals in rows:
            for i, v in enumerate(json.loads(vals)):
                out.append((step, i, names[i] if i < len(names) else f"layer {i}", v))
        df = pd.DataFrame(out, columns=["step", "layer", "layer_name", "value"])
        df["value"] = df["value"].astype(float)
        return df

    def layer_steps(self, run_id: str, metric: str) -> list[int]:
        with self.read() as conn:
            rows = conn.execute(
                sa.select(layer_table.c.step)
                .where(layer_table.c.run_id == run_id, layer_table.c.metric == metric)
                .order_by(layer_table.c.step)
            ).all()
        return [r[0] for r in rows]

    # --- workers --------------------------------------------------------------------------------------
    def register_worker(self, worker_id: str, slots: int, device: str) -> None:
        now = time.time()
        with self.write() as conn:
            conn.execute(
                workers_table.insert().values(
                    id=worker_id, pid=os.getpid(), host=socket.gethostname(), started_at=now, heartbeat_at=now,
                    slots=slots, device=device,
                )
            )

    def worker_heartbeat(self, worker_id: str) -> None:
        with self.write() as conn:
            conn.execute(workers_table.update().where(workers_table.c.id == worker_id).values(heartbeat_at=time.time()))

    def remove_worker(self, worker_id: str) -> None:
        with self.write() as conn:
            conn.execute(workers_table.delete().where(workers_table.c.id == worker_id))

    def live_workers(self, grace_s: float = 20.0) -> list[dict]:
        """Workers whose heartbeat is recent and (on this host) whose process exists."""
        now, host = time.time(), socket.gethostname()
        with self.read() as conn:
            rows = [dict(r) for r in conn.execute(sa.select(workers_table)).mappings()]
        return [
            r for r in rows
            if now - (r["heartbeat_at"] or 0) < grace_s and (r["host"] != host or pid_alive(r["pid"]))
        ]


def _configure_sqlite(engine: sa.Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # let SQLAlchemy's BEGIN below be the only transaction control
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # Writers take the write lock up front, so two writers queue on busy_timeout instead of one failing
        # with "database is locked" when it upgrades a read lock; readers use WAL snapshots.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("lab_write") else "BEGIN")


def _finite_or_none(v) -> float | None:
    v = float(v)
    return v if v == v and v not in (float("inf"), float("-inf")) else None


def _decode(row: dict) -> dict:
    for k in ("config", "env", "layers"):
        if row.get(k):
            row[k] = json.loads(row[k])
    return row


def new_id(prefix: str) -> str:
    return f"{prefix}-{time.strftime('%m%d')}-{uuid.uuid4().hex[:6]}"
