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

A store opened with `readonly=True` (what `ls`, `show` and `export` use) opens SQLite with `mode=ro`, never
takes a write lock or changes the journal mode, and never upgrades the schema (an older store is refused with
one line saying what upgrades it); database and OS errors become a `StoreError` naming the path
and the cause.

On a database server (PostgreSQL): pooled connections are checked before use, a transaction cut off by a lost
connection is run again on a new one (for up to `RECONNECT_S`; metric rows are upserts, so repeating a write
adds nothing twice), schema creation is serialised by an advisory lock, and `claim_next` skips rows another
claimer has locked (FOR UPDATE SKIP LOCKED).

Run ids read back from the database are not trusted as path parts: `run_dir` makes a folder only from a valid
run id (`valid_run_id`) that resolves inside <results>/runs; listings and claims skip other rows with a warning,
and delete, resume and show refuse them with one line. A running run's process is its pid with its start time
and boot (a recycled pid is not it). Long writes (creating or deleting many runs) commit in chunks.

The package: schema (tables, constants, ids), engine (connections, transactions, retries, upserts, clock),
migrations, runs (life cycle, archiving, deleting), jobs, claims (attempts, heartbeats, reaping, workers),
metrics (scalars, layer metrics, artifacts), summaries (the downsampled series the pages draw), process
(liveness); `Store` joins them into one facade.
"""
from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa

from ...errors import LostRun, StoreError
from .claims import ClaimsMixin
from .engine import EngineMixin, _safe_url, _sqlite_readonly_engine
from .jobs import JobsMixin
from .metrics import MetricsMixin
from .migrations import SchemaMixin
from .process import pid_alive, process_alive
from .runs import RunsMixin
from .summaries import SummariesMixin
from .schema import (
    AMBIGUOUS_LISTED, CREATE_CHUNK, DELETE_CHUNK, FINISHED, FOREIGN_GRACE_S, IN_CHUNK, IN_FLIGHT, JOBS_DEFAULT,
    LOCAL_GRACE_S, RECONNECT_S, RESUMABLE, RUN_ID_PATTERN, SCHEMA_LOCK_KEY, SCHEMA_VERSION, STATUSES, V2_COLUMNS,
    V3_COLUMNS, artifacts_table, default_results_dir, is_job, layer_table, meta_table, metadata, metric_cap, new_id,
    new_token, runs_table, scalars_table, summaries_table, valid_run_id, workers_table,
)

__all__ = [
    "AMBIGUOUS_LISTED", "CREATE_CHUNK", "DELETE_CHUNK", "FINISHED", "FOREIGN_GRACE_S", "IN_CHUNK", "IN_FLIGHT",
    "JOBS_DEFAULT", "LOCAL_GRACE_S", "RECONNECT_S", "RESUMABLE", "RUN_ID_PATTERN", "SCHEMA_LOCK_KEY",
    "SCHEMA_VERSION", "STATUSES", "V2_COLUMNS", "V3_COLUMNS", "LostRun", "Store", "StoreError", "artifacts_table",
    "default_results_dir", "is_job", "layer_table", "meta_table", "metadata", "metric_cap", "new_id", "new_token",
    "pid_alive", "process_alive", "runs_table", "scalars_table", "summaries_table", "valid_run_id",
    "workers_table",
]


class Store(EngineMixin, SchemaMixin, RunsMixin, JobsMixin, ClaimsMixin, MetricsMixin, SummariesMixin):
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
