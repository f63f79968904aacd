"""The store's tables, constants, ids and the small codecs its modules share (no database access here)."""
from __future__ import annotations

import json
import logging
import math
import os
import re
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from ...errors import LostRun
from .process import process_identity

SCHEMA_VERSION = 4
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
# Rows one write transaction inserts when runs are created, and runs one transaction deletes: long write
# transactions would hold SQLite's write lock past other writers' busy timeout (60 s) and fail live runs' writes.
CREATE_CHUNK = 2000
DELETE_CHUNK = 100
# The most metric rows (scalar and per-layer) a run may store (`metric_cap`): METRIC_ROWS_PER_STEP rows for each
# of its iterations / log_every logging steps (and two more), times METRIC_SLACK, and at least METRIC_ROWS_MIN.
# Far above what the trainer writes; it stops a misbehaving writer from filling the database.
METRIC_ROWS_PER_STEP = 32
METRIC_SLACK = 2
METRIC_ROWS_MIN = 10_000  # the cap of a short run
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
    # --- schema version 3 ---
    sa.Column("pid_started", sa.BigInteger),             # when process `pid` started (clock ticks since boot)
    sa.Column("boot_id", sa.String(64)),                 # the boot of `host` that process ran in
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

# A downsampled copy of each finished run's series (`lab.buckets`: scalar series in buckets, per-layer series at
# evenly spread steps), made when the run finishes (or when first read), for the pages: valid while the run's
# attempt and iteration are those it was made from. `data`: little-endian float64 arrays (`summaries.py`).
summaries_table = sa.Table(
    "series_summaries",
    metadata,
    sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("source", sa.String(8), primary_key=True),    # 'scalar' or 'layer'
    sa.Column("name", sa.String(32), primary_key=True),     # train_error, ... or grad_norm, ...
    sa.Column("attempt", sa.String(64)),
    sa.Column("iteration", sa.Integer),
    sa.Column("data", sa.LargeBinary, nullable=False),
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

# Columns added by schema versions 2 and 3, in the order the migrations add them.
V2_COLUMNS = ("attempt", "job", "parent_id", "log_tail", "executor", "executor_ref")
V3_COLUMNS = ("pid_started", "boot_id")

# What `new_id` makes (a prefix of letters, digits, '_' or '-', the month-day, 12 hex digits) and ids of its
# shape: a letter or digit first, then letters, digits, '_' and '-', at most 64 in all. An id becomes a folder
# name under <results>/runs, so no '/', '.', NUL or other character that could leave that folder passes.
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def default_results_dir() -> Path:
    return Path(os.environ.get("LAB_RESULTS", "results"))


def new_token() -> str:
    """An attempt's ownership token: 32 hex digits."""
    return uuid.uuid4().hex


def new_id(prefix: str) -> str:
    """A run, sweep or worker id: prefix, month-day and 12 random hex digits (48 bits; `create_runs` also checks
    the store, so ids never collide)."""
    return f"{prefix}-{time.strftime('%m%d')}-{uuid.uuid4().hex[:12]}"


def metric_cap(iterations, log_every) -> int:
    """The most metric rows a run of `iterations` that logs every `log_every` iterations may store."""
    try:
        steps = max(int(iterations or 0), 0) // max(int(log_every or 1), 1) + 2
    except (TypeError, ValueError):
        steps = 2
    return max(METRIC_ROWS_MIN, steps * METRIC_ROWS_PER_STEP * METRIC_SLACK)


def valid_run_id(run_id) -> bool:
    """True when `run_id` may name a run folder (RUN_ID_PATTERN)."""
    return isinstance(run_id, str) and RUN_ID_PATTERN.fullmatch(run_id) is not None


def bad_id_message(run_id) -> str:
    """One line saying why a stored id is refused."""
    return (f"run id {_show(run_id)} in the results store is not a valid run id (a letter or digit, then "
            f"letters, digits, '_' and '-', at most 64 characters)")


_warned: set = set()


def warn_bad_id(run_id) -> None:
    """Log (once per process and id) that a stored row is skipped because its id is not a valid run id."""
    if run_id not in _warned:
        _warned.add(run_id)
        logging.getLogger("lab.runs.store").warning("%s; the row is skipped", bad_id_message(run_id))


def usable_id(run_id) -> bool:
    """`valid_run_id`, logging a warning (`warn_bad_id`) when not: for listings and claims, which skip such rows."""
    if valid_run_id(run_id):
        return True
    warn_bad_id(run_id)
    return False


def is_job(run: dict) -> bool:
    """True for an analysis job's row (its `job` names the analysis), False for a training run."""
    return (run.get("job") or JOBS_DEFAULT) != JOBS_DEFAULT


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


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
    """Column values for a runs-table write: JSON columns encoded, and a `pid` joined by the identity of that
    process of this host (its start time and boot: `process_identity`)."""
    out = dict(values)
    if "pid" in out and "pid_started" not in out:
        out.update(process_identity(out["pid"]))
    for k in ("config", "env", "layers"):
        if k in out and not isinstance(out[k], str) and out[k] is not None:
            out[k] = json.dumps(out[k])
    return out


def _decode(row: dict) -> dict:
    for k in ("config", "env", "layers"):
        if row.get(k):
            row[k] = json.loads(row[k])
    return row


class _Rollback(LostRun):
    """Raised inside a write transaction when the attempt lost its run: rolls it back. Re-raised as LostRun."""

    def __init__(self) -> None:
        super().__init__("this process no longer owns the run")
