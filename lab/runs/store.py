"""The results store: runs, their scalar metrics, per-layer metrics and artifacts, in SQL through SQLAlchemy Core.

By default an embedded SQLite database `lab.db` in the results folder (WAL journal, a busy timeout, write
transactions that start with BEGIN IMMEDIATE so writers queue instead of failing); `LAB_DB_URL` (or the
`url` argument) points it at another database, e.g. PostgreSQL, with no code changes. Each run also has a
folder `runs/<id>/` for its checkpoint and log. All reads return plain dicts or pandas DataFrames.

Ownership: every attempt to execute a run holds a token (`runs.attempt`), set when the run is claimed by a
worker or started in the foreground and handed to the process that executes it. Every write that attempt makes
(heartbeat, metrics, final status) names its token and only lands while the run is still `running` under that
token, so a process that lost its run (marked interrupted, resumed elsewhere) can never overwrite the new
attempt's state: `LostRun` tells it to stop.

Staleness, measured with the database's clock (never a host's): a running run on this host is dead only when
its process is gone (a stopped or sleeping process is alive); a run on another host is dead when its heartbeat
is older than `FOREIGN_GRACE_S`.

A store opened with `readonly=True` (what `ls`, `show` and `export` use) opens SQLite with `mode=ro` and never
takes a write lock or changes the journal mode; database and OS errors become a `StoreError` naming the path
and the cause.

On a database server (PostgreSQL): pooled connections are checked before use, a transaction cut off by a lost
connection is run again on a new one (for up to `RECONNECT_S`; metric rows are upserts, so repeating a write
adds nothing twice), schema creation is serialised by an advisory lock, and `claim_next` skips rows another
claimer has locked (FOR UPDATE SKIP LOCKED).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import socket
import sqlite3
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import event
from ..errors import StoreError, LostRun  # noqa: F401 (re-exported)

SCHEMA_VERSION = 2
STATUSES = ("queued", "running", "done", "failed", "diverged", "cancelled", "interrupted")
FINISHED = ("done", "failed", "diverged")
RESUMABLE = ("cancelled", "interrupted", "failed")
IN_FLIGHT = ("queued", "running")
JOBS_DEFAULT = "train"

# A run on another host whose heartbeat (written every few seconds) is older than this is dead: seconds of
# database time.
FOREIGN_GRACE_S = 30.0
# A running run on this host with no live process is dead once its heartbeat is older than this: the time a
# claimed run has to get its process going (the worker records the pid right after spawning it).
LOCAL_GRACE_S = 15.0
# Ids per IN (...) list: SQLite refuses more than 32,766 bound values in one statement.
IN_CHUNK = 500
# How many runs one prefix lists when it is ambiguous.
AMBIGUOUS_LISTED = 10
# How long a store on a database server (not SQLite) that has worked waits for the server to come back (a
# restart, a failover) before a read or write fails: seconds.
RECONNECT_S = 60.0
# The PostgreSQL advisory lock key that serialises schema creation and upgrades ("labSchma").
SCHEMA_LOCK_KEY = 0x6C61625363686D61

metadata = sa.MetaData()

meta_table = sa.Table("meta", metadata, sa.Column("key", sa.String(64), primary_key=True), sa.Column("value", sa.Text))

runs_table = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("sweep_id", sa.String(64), index=True),
    sa.Column("label", sa.Text),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("kind", sa.String(16)),
    sa.Column("depth", sa.Integer),
    sa.Column("dataset", sa.String(32)),
    sa.Column("preset", sa.String(32)),
    sa.Column("seed", sa.BigInteger),
    sa.Column("tag", sa.Text),
    sa.Column("config", sa.Text, nullable=False),       # RunConfig as JSON
    sa.Column("env", sa.Text),                           # torch version, device, host, git revision... as JSON
    sa.Column("layers", sa.Text),                        # {"grad_norm": [names], "response_std": [...], ...}
    sa.Column("params", sa.BigInteger),
    sa.Column("created_at", sa.Float, nullable=False),  # seconds since the epoch
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("heartbeat_at", sa.Float),                 # seconds since the epoch, the database's clock
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
    # --- schema version 2 ---
    sa.Column("attempt", sa.String(32)),                 # ownership token of the current attempt
    sa.Column("job", sa.String(16), nullable=False, default=JOBS_DEFAULT, server_default=JOBS_DEFAULT),
    sa.Column("parent_id", sa.String(64)),               # the run this one grew from, or the run a job analyses
    sa.Column("log_tail", sa.Text),                      # the last log lines (for runs on other hosts)
    sa.Column("executor", sa.String(16)),                # 'cli' (foreground), 'local' (worker), 'ray', ...
    sa.Column("executor_ref", sa.String(255)),           # the executor's handle, e.g. a Ray job id
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
    sa.Column("heartbeat_at", sa.Float),                 # the database's clock
    sa.Column("slots", sa.Integer),
    sa.Column("device", sa.String(64)),
)

artifacts_table = sa.Table(
    "artifacts",
    metadata,
    sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("data", sa.Text, nullable=False),          # JSON object
    sa.Column("updated_at", sa.Float),
)

# Columns added by schema version 2, in the order the migration adds them.
V2_COLUMNS = ("attempt", "job", "parent_id", "log_tail", "executor", "executor_ref")




def default_results_dir() -> Path:
    return Path(os.environ.get("LAB_RESULTS", "results"))


def pid_alive(pid: int | None) -> bool:
    """True when process `pid` exists on this host and has not exited (a stopped process is alive)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def new_token() -> str:
    """An attempt's ownership token: 32 hex digits."""
    return uuid.uuid4().hex


def new_id(prefix: str) -> str:
    """A run, sweep or worker id: prefix, month-day and 12 random hex digits (48 bits; `create_runs` also checks
    the store, so ids never collide)."""
    return f"{prefix}-{time.strftime('%m%d')}-{uuid.uuid4().hex[:12]}"


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class Store:
    """A results store rooted at `results_dir` (default $LAB_RESULTS or results/).

    `create`: make the folder and database when missing (else a missing store is an error). `readonly`: never
    write (SQLite opened with mode=ro); a reader that finds a dead run still marks it interrupted, through a
    separate write connection opened only then, and only where the store is writable.
    """

    def __init__(self, results_dir: str | Path | None = None, url: str | None = None, create: bool = True,
                 readonly: bool = False) -> None:
        self.root = Path(results_dir) if results_dir is not None else default_results_dir()
        self.readonly = readonly
        url = url or os.environ.get("LAB_DB_URL")
        self._db_path: Path | None = None
        self._ready = False  # the database answered once: from then on a lost server is waited for
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"results folder {self.root} is a file, not a folder; give --results a folder")
        if create and not readonly:  # with any database: run folders, logs and the worker lock live here
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"results folder {self.root} cannot be created: {exc.strerror or exc}") from None
        if url is None:
            self._db_path = (self.root / "lab.db").resolve()
            if (not create or readonly) and not self._db_path.exists():
                raise StoreError(f"no results store at {self.root} (no lab.db there)")
            url = f"sqlite:///{self._db_path}"
        self.url = url
        self.where = str(self._db_path) if self._db_path else _safe_url(url)
        self._writer: sa.Engine | None = None
        if readonly and self._db_path is not None:
            self.engine = _sqlite_readonly_engine(self._db_path)
        else:
            self.engine = self._make_engine(url)
        self._check_schema()
        self._ready = True

    @staticmethod
    def _make_engine(url: str) -> sa.Engine:
        if url.startswith("sqlite"):
            engine = sa.create_engine(url, connect_args={"timeout": 60})
            _configure_sqlite(engine)
            return engine
        # a server may have restarted since a pooled connection was last used: check it before handing it out
        return sa.create_engine(url, pool_pre_ping=True)

    def close(self) -> None:
        self.engine.dispose()
        if self._writer is not None:
            self._writer.dispose()

    # --- plumbing -------------------------------------------------------------------------------------
    def _error(self, exc: BaseException) -> StoreError:
        cause = getattr(exc, "orig", None) or exc
        text = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        return StoreError(f"results store {self.where}: {text}")

    def _write_engine(self) -> sa.Engine:
        if not self.readonly:
            return self.engine
        if self._writer is None:
            self._writer = self._make_engine(self.url)
        return self._writer

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """A short write transaction (BEGIN IMMEDIATE on SQLite), committed on exit. (Writes that must survive a
        database restart mid-transaction go through `_transact`, which can run them again.)"""
        if self.readonly:
            raise StoreError(f"results store {self.where} was opened read-only")
        with self._guard():
            with self._connect(self.engine, write=True) as conn:
                with conn.begin():
                    yield conn

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        with self._guard():
            with self._connect(self.engine) as conn:
                with conn.begin():
                    yield conn

    def _waits_for_server(self) -> bool:
        """True where a lost connection is waited for: a database server (not SQLite) that has answered before
        (a wrong URL or a server that never ran fails at once)."""
        return self._ready and self.engine.dialect.name != "sqlite"

    def _connect(self, engine: sa.Engine, write: bool = False) -> sa.Connection:
        """A connection from `engine` (marked for BEGIN IMMEDIATE when `write`). A server that has gone away
        (refusing connections while it restarts) is retried, with backoff, for up to RECONNECT_S."""
        deadline, delay = time.monotonic() + RECONNECT_S, 0.05
        while True:
            try:
                conn = engine.connect()
                break
            except sa.exc.DBAPIError:
                if not self._waits_for_server() or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(2 * delay, 2.0)
        return conn.execution_options(lab_write=True) if write else conn

    def _transact(self, fn, engine: sa.Engine | None = None):
        """`fn(conn)` in one write transaction, committed on return; returns what `fn` returns.

        On a database server, a transaction cut off by a lost connection (the server restarted: the driver
        marks the connection invalidated) is run again from the start on a new connection, for up to
        RECONNECT_S, so `fn` must be safe to repeat (the store's are: metric rows are upserts, updates name
        their rows). Errors of any other kind are not retried."""
        if engine is None and self.readonly:
            raise StoreError(f"results store {self.where} was opened read-only")
        engine = engine or self.engine
        deadline, delay = time.monotonic() + RECONNECT_S, 0.05
        with self._guard():
            while True:
                try:
                    with self._connect(engine, write=True) as conn:
                        with conn.begin():
                            return fn(conn)
                except sa.exc.DBAPIError as exc:
                    if not (exc.connection_invalidated and self._waits_for_server()
                            and time.monotonic() + delay < deadline):
                        raise
                time.sleep(delay)
                delay = min(2 * delay, 2.0)

    def _upsert(self, table: sa.Table, column: str):
        """An INSERT of `table` rows that replaces `column` of a row already stored under the same key (a write
        repeated after a lost connection, a step logged again), on SQLite and PostgreSQL; a plain INSERT
        elsewhere."""
        name = self.engine.dialect.name
        if name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            return table.insert()
        stmt = insert(table)
        return stmt.on_conflict_do_update(index_elements=[c.name for c in table.primary_key.columns],
                                          set_={column: stmt.excluded[column]})

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Database and OS errors as one clear line naming the database and the cause."""
        try:
            yield
        except (sa.exc.DBAPIError, sqlite3.Error, sa.exc.ArgumentError) as exc:
            raise self._error(exc) from None
        except OSError as exc:
            raise StoreError(f"results store {self.where}: {exc.strerror or exc}") from None

    def _db_now(self):
        """The database's clock, in seconds since the epoch, as a SQL expression."""
        name = self.engine.dialect.name
        if name == "sqlite":
            return sa.literal_column("((julianday('now') - 2440587.5) * 86400.0)", sa.Float)
        if name == "postgresql":
            return sa.extract("epoch", sa.func.clock_timestamp())
        return sa.literal(time.time(), sa.Float)  # other databases: this host's clock

    def db_time(self, conn: sa.Connection | None = None) -> float:
        """The database's clock now (seconds since the epoch)."""
        if conn is not None:
            return float(conn.execute(sa.select(self._db_now())).scalar())
        with self.read() as c:
            return float(c.execute(sa.select(self._db_now())).scalar())

    def _check_schema(self) -> None:
        """Create the tables in a new store, upgrade an older store in place (one transaction), refuse a newer one."""
        with self.read() as conn:
            version = _schema_version(conn)
        if version == SCHEMA_VERSION:
            return
        if version is not None and version > SCHEMA_VERSION:
            raise StoreError(
                f"results store {self.where} has schema version {version}, this lab reads version {SCHEMA_VERSION}; "
                f"use a newer lab release or start a new results folder"
            )
        try:
            with self._guard(), self._connect(self._write_engine(), write=True) as conn:
                with conn.begin():
                    if conn.dialect.name == "postgresql":
                        # processes opening an empty database at once: one creates the tables, the others wait
                        # here until it commits and then find them made
                        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(SCHEMA_LOCK_KEY)))
                    version = _schema_version(conn)  # another process may have done it meanwhile
                    if version is None:
                        metadata.create_all(conn)
                        conn.execute(meta_table.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
                    elif version < SCHEMA_VERSION:
                        _migrate(conn, version)
        except StoreError as exc:
            what = "created" if version is None else f"upgraded from schema version {version} to {SCHEMA_VERSION}"
            raise StoreError(f"{exc} (the store could not be {what})") from None

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    # --- ids ------------------------------------------------------------------------------------------
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
                    out.append(hit[0])
                    continue
                rows = conn.execute(
                    sa.select(runs_table.c.id).where(runs_table.c.id.like(_like_escape(ref) + "%", escape="\\"))
                    .order_by(runs_table.c.id)
                ).all()
                ids = [r[0] for r in rows if r[0].startswith(ref)]  # SQLite's LIKE ignores case; the rule does not
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
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
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

    _unique_ids = unique_ids  # the private name some callers still use

    # --- jobs (rows whose `job` is not JOBS_DEFAULT: work on a parent run, e.g. an analysis) ---------------
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
        or those of some kinds."""
        q = sa.select(runs_table).where(runs_table.c.job != JOBS_DEFAULT)
        if parent_id is not None:
            q = q.where(runs_table.c.parent_id == parent_id)
        if kinds is not None:
            q = q.where(runs_table.c.job.in_([kinds] if isinstance(kinds, str) else list(kinds)))
        with self.read() as conn:
            return [dict(r) for r in conn.execute(q.order_by(runs_table.c.created_at.desc(), runs_table.c.id)).mappings()]

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

    # --- runs -----------------------------------------------------------------------------------------
    def create_runs(self, configs: Iterable, sweep_id: str | None = None, status: str = "queued",
                    job: str = JOBS_DEFAULT, parent_id: str | None = None) -> list[str]:
        """Insert runs for RunConfigs in one transaction (all or none); returns their ids.

        Each config is validated first (ConfigError listing every problem). A run created `running` gets this
        host, this process and a heartbeat at once, so no reader ever takes it for dead; the process that then
        executes it takes ownership with `begin_attempt` (or use `start_run`, which does both).

        Without `parent_id`, a run whose config has `deepen_from` gets that run's id as its parent, so a
        deepened run queued behind its parent waits for it (`claim_next`); a `deepen_from` that names no run
        leaves it without one (executing it then fails, naming the missing parent)."""
        from ..config import validate  # the store's API refuses what the CLI refuses

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
        with self.write() as conn:
            ids = self.unique_ids(conn, [f"{cfg.kind[:5]}{cfg.depth}" for cfg in configs])
            owner = {}
            if status == "running":
                owner = dict(host=socket.gethostname(), pid=os.getpid(), heartbeat_at=self.db_time(conn),
                             started_at=now)
            rows = []
            for i, (rid, cfg) in enumerate(zip(ids, configs)):
                rows.append(dict(
                    id=rid, sweep_id=sweep_id, label=cfg.label(), status=status, kind=cfg.kind, depth=cfg.depth,
                    dataset=cfg.dataset, preset=cfg.preset, seed=cfg.seed, tag=cfg.tag, config=cfg.to_json(),
                    created_at=now + i * 1e-6,  # the offset keeps submission order
                    iteration=0, total_iterations=cfg.iterations, cancel_requested=0, job=job,
                    parent_id=parent_id if parent_id is not None else parents.get(cfg.deepen_from), attempt=None,
                    **owner,
                ))
            for i in range(0, len(rows), 2000):
                conn.execute(runs_table.insert(), rows[i : i + 2000])
        return ids

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

    def runs(self, status: Iterable[str] | None = None, jobs: Iterable[str] | None = (JOBS_DEFAULT,)) -> pd.DataFrame:
        """Runs, newest first, with their config fields as columns prefixed by nothing (kind, depth, ...).

        `jobs`: by default only training runs; None gives every row (training runs and analysis jobs), a list
        of job names the rows of those jobs."""
        q = sa.select(runs_table).order_by(runs_table.c.created_at.desc(), runs_table.c.id)
        if jobs is not None:
            q = q.where(runs_table.c.job.in_([jobs] if isinstance(jobs, str) else list(jobs)))
        if status:
            status = list(status)
            unknown = [s for s in status if s not in STATUSES]
            if unknown:
                raise StoreError(f"unknown status {', '.join(map(repr, unknown))}; statuses: {', '.join(STATUSES)}")
            q = q.where(runs_table.c.status.in_(status))
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
        """Set columns of a run with no ownership check (tools and tests; attempts use `update_attempt`)."""
        values = _encode(values)
        self._transact(lambda conn: conn.execute(runs_table.update().where(runs_table.c.id == run_id).values(**values)))

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

    _lost = lost_run  # the private name some callers still use

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
        return self._transact(lambda conn: conn.execute(q).rowcount) == 1

    def active_here(self) -> list[dict]:
        """Running runs on this host whose process is alive: what occupies this host's worker slots."""
        host = socket.gethostname()
        with self.read() as conn:
            rows = conn.execute(
                sa.select(runs_table.c.id, runs_table.c.pid, runs_table.c.slot, runs_table.c.attempt)
                .where(runs_table.c.status == "running", runs_table.c.host == host)
            ).mappings().all()
        return [dict(r) for r in rows if pid_alive(r["pid"])]

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
        q = q.order_by(runs_table.c.created_at, runs_table.c.id).limit(1)
        if self.engine.dialect.name == "postgresql":
            q = q.with_for_update(skip_locked=True, of=runs_table)

        def claim(conn):
            row = conn.execute(q).first()
            if row is None:
                return None
            n = conn.execute(
                runs_table.update()
                .where(runs_table.c.id == row[0], runs_table.c.status == "queued")
                .values(status="running", worker_id=worker_id, host=socket.gethostname(), started_at=time.time(),
                        heartbeat_at=self._db_now(), message=None, finished_at=None, attempt=token, pid=None,
                        executor=executor, executor_ref=None, cancel_requested=0)
            ).rowcount
            return row[0] if n == 1 else None

        run_id = self._transact(claim)
        return self.get_run(run_id) if run_id is not None else None

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

    def metric_count(self, run_id: str) -> int:
        """How many scalar metric values a run has stored."""
        with self.read() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(scalars_table)
                                    .where(scalars_table.c.run_id == run_id)).scalar())

    def resume_problem(self, run: dict, from_scratch: bool = False, checkpoint_problem=None) -> str | None:
        """Why `run` cannot be resumed as asked (None when it can). `checkpoint_problem(path)` checks a
        checkpoint file's contents (the trainer's loader: the store does not read checkpoints itself)."""
        if run["status"] not in RESUMABLE:
            return f"run {run['id']} is {run['status']}; only {', '.join(RESUMABLE)} runs can be resumed"
        if from_scratch or is_job(run):  # an analysis job keeps nothing until it is done: it simply runs again
            return None
        ckpt = self.run_dir(run["id"]) / "checkpoint.pt"
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
                row.update(id=aid, attempt=None, pid=None, cancel_requested=0, created_at=row["created_at"] - 1e-6,
                           message=f"archive: the metrics of run {run['id']} before it was restarted from scratch")
                conn.execute(runs_table.insert().values(**row))
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
        """Delete runs given by exact ids or unique prefixes. Every reference is checked first; deleting more
        than one run needs `yes`; running runs are refused (cancel them first)."""
        ids = self.resolve_many(refs)
        if len(ids) > 1 and not yes:
            raise StoreError(f"deleting {len(ids)} runs ({', '.join(ids[:AMBIGUOUS_LISTED])}) needs --yes")
        with self.write() as conn:  # checked inside the transaction: a run cannot start between check and delete
            running = [r[0] for r in conn.execute(sa.select(runs_table.c.id).where(
                runs_table.c.id.in_(ids), runs_table.c.status == "running"))]
            if running:
                raise StoreError(f"run {', '.join(running)} is running; cancel it first")
            for table in (scalars_table, layer_table, artifacts_table):
                conn.execute(table.delete().where(table.c.run_id.in_(ids)))
            conn.execute(runs_table.delete().where(runs_table.c.id.in_(ids)))
        for rid in ids:
            shutil.rmtree(self.run_dir(rid), ignore_errors=True)
        return ids

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
                          runs_table.c.attempt, self._db_now().label("now"))
                .where(runs_table.c.status == "running")
            ).all()
        dead = []
        for rid, pid, rhost, beat, attempt, now in rows:
            age = float(now) - beat if beat is not None else math.inf
            if rhost == host:
                if age > grace_s and not pid_alive(pid):
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

    # --- metrics --------------------------------------------------------------------------------------
    def log(
        self,
        run_id: str,
        scalars: Iterable[tuple[int, str, float]] = (),
        layers: Iterable[tuple[int, str, list[float]]] = (),
        attempt: str | None = None,
        **run_values,
    ) -> None:
        """Append metrics and update the run row (heartbeat in database time), in one short transaction.
        With `attempt`, nothing is written unless that attempt owns the run (LostRun). A (run, name, step)
        already stored gets the new value: logging is idempotent, so a write repeated after a lost connection
        neither fails nor duplicates."""
        srows = [dict(run_id=run_id, step=int(s), name=n, value=_finite_or_none(v)) for s, n, v in scalars]
        lrows = [
            dict(run_id=run_id, step=int(s), metric=m, vals=json.dumps([_finite_or_none(x) for x in v]))
            for s, m, v in layers
        ]
        run_values = _encode(run_values)
        run_values.setdefault("heartbeat_at", self._db_now())
        q = runs_table.update()
        q = self._owned(q, run_id, attempt) if attempt is not None else q.where(runs_table.c.id == run_id)
        q = q.values(**run_values)

        def write(conn):  # safe to repeat: a step logged again replaces its value
            n = conn.execute(q).rowcount
            if attempt is not None and n != 1:
                raise _Rollback()
            if srows:
                conn.execute(self._upsert(scalars_table, "value"), srows)
            if lrows:
                conn.execute(self._upsert(layer_table, "vals"), lrows)

        try:
            self._transact(write)
        except _Rollback:
            raise self.lost_run(run_id, attempt) from None

    def truncate_after(self, run_id: str, step: int, attempt: str | None = None) -> None:
        """Drop metrics logged after `step` (a resumed run redoes those iterations)."""
        def drop(conn):
            if attempt is not None and conn.execute(self._owned(sa.select(runs_table.c.id), run_id, attempt)).first() is None:
                raise _Rollback()
            conn.execute(scalars_table.delete().where(scalars_table.c.run_id == run_id, scalars_table.c.step > step))
            conn.execute(layer_table.delete().where(layer_table.c.run_id == run_id, layer_table.c.step > step))

        try:
            self._transact(drop)
        except _Rollback:
            raise self.lost_run(run_id, attempt) from None

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

    # --- artifacts ------------------------------------------------------------------------------------
    def put_artifact(self, run_id: str, name: str, data: dict, attempt: str | None = None) -> None:
        """Store (or replace) a run's named JSON result. With `attempt`, only while that attempt owns the run."""
        if not isinstance(name, str) or not name.strip() or len(name) > 64:
            raise StoreError(f"artifact name {_show(name)} must be 1 to 64 characters")
        if not isinstance(data, dict):
            raise StoreError(f"artifact {name!r} must be a dict (a JSON object), got {type(data).__name__}")
        try:
            text = json.dumps(data, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"artifact {name!r} is not plain JSON (numbers must be finite): {exc}") from None
        def put(conn):
            if attempt is not None:
                if conn.execute(self._owned(sa.select(runs_table.c.id), run_id, attempt)).first() is None:
                    raise _Rollback()
            elif conn.execute(sa.select(runs_table.c.id).where(runs_table.c.id == run_id)).first() is None:
                raise StoreError(f"no run {_show(run_id)} in {self.root}")
            conn.execute(artifacts_table.delete().where(artifacts_table.c.run_id == run_id,
                                                        artifacts_table.c.name == name))
            conn.execute(artifacts_table.insert().values(run_id=run_id, name=name, data=text, updated_at=time.time()))

        try:
            self._transact(put)
        except _Rollback:
            raise self.lost_run(run_id, attempt) from None

    def artifact(self, run_id: str, name: str) -> dict | None:
        """A run's named result, or None when it has none by that name."""
        with self.read() as conn:
            row = conn.execute(sa.select(artifacts_table.c.data).where(
                artifacts_table.c.run_id == run_id, artifacts_table.c.name == name)).first()
        return json.loads(row[0]) if row else None

    def artifacts(self, run_id: str) -> dict[str, dict]:
        """All of a run's named results: {name: data}."""
        with self.read() as conn:
            rows = conn.execute(sa.select(artifacts_table.c.name, artifacts_table.c.data)
                                .where(artifacts_table.c.run_id == run_id).order_by(artifacts_table.c.name)).all()
        return {name: json.loads(data) for name, data in rows}

    # --- workers --------------------------------------------------------------------------------------
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


class _Rollback(LostRun):
    """Raised inside a write transaction when the attempt lost its run: rolls it back. Re-raised as LostRun."""

    def __init__(self) -> None:
        super().__init__("this process no longer owns the run")


def is_job(run: dict) -> bool:
    """True for an analysis job's row (its `job` names the analysis), False for a training run."""
    return (run.get("job") or JOBS_DEFAULT) != JOBS_DEFAULT


def _schema_version(conn: sa.Connection) -> int | None:
    """The stored schema version, or None for an empty database."""
    if not sa.inspect(conn).has_table("meta"):
        if sa.inspect(conn).has_table("runs"):
            raise StoreError("the database has a runs table but no schema version: not a Degradation Lab store")
        return None
    row = conn.execute(sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")).first()
    if row is None:
        return None
    try:
        return int(row[0])
    except (TypeError, ValueError):
        raise StoreError(f"the database's schema version {row[0]!r} is not a number: not a Degradation Lab store") from None


def _migrate(conn: sa.Connection, version: int) -> None:
    """Upgrade the schema in place from `version` to SCHEMA_VERSION, inside the caller's transaction."""
    dialect = conn.dialect
    if version == 1:
        present = {c["name"] for c in sa.inspect(conn).get_columns("runs")}
        for name in V2_COLUMNS:
            if name in present:
                continue
            ddl = sa.schema.CreateColumn(runs_table.c[name]).compile(dialect=dialect)
            conn.exec_driver_sql(f"ALTER TABLE runs ADD COLUMN {ddl}")
        if dialect.name == "postgresql":  # SQLite stores text of any length in a VARCHAR column already
            conn.exec_driver_sql("ALTER TABLE runs ALTER COLUMN label TYPE TEXT, ALTER COLUMN tag TYPE TEXT, "
                                 "ALTER COLUMN seed TYPE BIGINT, ALTER COLUMN params TYPE BIGINT")
        artifacts_table.create(conn, checkfirst=True)
        version = 2
    if version != SCHEMA_VERSION:
        raise StoreError(f"no upgrade from schema version {version} to {SCHEMA_VERSION}")
    conn.execute(meta_table.update().where(meta_table.c.key == "schema_version").values(value=str(SCHEMA_VERSION)))


def _configure_sqlite(engine: sa.Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # let SQLAlchemy's BEGIN below be the only transaction control
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=60000")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # Writers take the write lock up front, so two writers queue on busy_timeout instead of one failing
        # with "database is locked" when it upgrades a read lock; readers use WAL snapshots.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("lab_write") else "BEGIN")


def _sqlite_readonly_engine(path: Path) -> sa.Engine:
    """An engine that opens `path` with SQLite's mode=ro: no write lock, no journal-mode change. Where the
    folder cannot be written either (so SQLite cannot make the WAL index it needs), it falls back to
    `immutable=1`, which reads the file as it is."""
    from urllib.parse import quote

    uri = f"file:{quote(str(path))}?mode=ro"
    frozen = f"file:{quote(str(path))}?immutable=1"

    def connect():
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=60, check_same_thread=False)
            conn.execute("PRAGMA schema_version").fetchone()  # opens the file now, so a failure shows here
        except sqlite3.OperationalError:
            if os.access(path.parent, os.W_OK):
                raise
            conn = sqlite3.connect(frozen, uri=True, timeout=60, check_same_thread=False)
        conn.isolation_level = None
        conn.execute("PRAGMA busy_timeout=60000")
        conn.execute("PRAGMA query_only=1")
        return conn

    # a pool of file connections (the "sqlite://" URL would otherwise get the in-memory database's per-thread pool)
    engine = sa.create_engine("sqlite://", creator=connect, poolclass=sa.pool.QueuePool)

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN")

    return engine


def _safe_url(url: str) -> str:
    """A database URL without its password, for messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "the database in LAB_DB_URL"


def _show(text) -> str:
    """User text quoted for a one-line message (control characters escaped)."""
    return repr(str(text))


def _json_object(text) -> dict | None:
    """`text` decoded when it is a JSON object, else None."""
    try:
        value = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _finite_or_none(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _encode(values: dict) -> dict:
    out = dict(values)
    for k in ("config", "env", "layers"):
        if k in out and not isinstance(out[k], str) and out[k] is not None:
            out[k] = json.dumps(out[k])
    return out


def _decode(row: dict) -> dict:
    for k in ("config", "env", "layers"):
        if row.get(k):
            row[k] = json.loads(row[k])
    return row
