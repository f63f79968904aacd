"""What the CLI's `ls`/`show` and the dashboard's Runs page show about runs: progress, ETA, log tails."""
from __future__ import annotations

import json
import math
import re
from typing import Iterable, Mapping

import pandas as pd

from .store import JOBS_DEFAULT, Store, runs_table

# what `ls --json` prints per run (the dashboard gets every column); `job` is 'train' for a training run, the
# analysis for an analysis job, whose `parent_id` is the run it analyses
SUMMARY_COLUMNS = [
    "id", "status", "label", "kind", "depth", "dataset", "preset", "seed", "tag", "iteration", "total_iterations",
    "progress", "images_per_s", "eta_s", "elapsed_s", "device", "final_train_error", "final_test_error",
    "created_at", "message", "sweep_id", "job", "parent_id",
]
# what the dashboard's pages read of each run: every column of the runs table but the long per-layer names and
# log tail (they are read with one run, `Store.get_run`), with the config fields as columns
LIST_COLUMNS = [c.name for c in runs_table.columns if c.name not in ("layers", "log_tail")]
# what time estimates read of past runs (lab.runs.estimate.past_gflops)
RATE_COLUMNS = ("status", "host", "env", "images_per_s", "config", "created_at")
# the run columns a search looks in (a substring, any case)
SEARCHED = ("tag", "label")


def overview(store: Store, reap: bool = True, jobs: Iterable[str] | None = (JOBS_DEFAULT,),
             columns: Iterable[str] | None = None) -> pd.DataFrame:
    """Runs (newest first) with their config fields, plus progress (0..1) and ETA (seconds; NaN when unknown).
    With `reap`, runs whose process died are marked interrupted first, so what is shown is the truth.

    `jobs`: which rows: training runs only (the default: what every figure and page of runs wants), None for
    training runs and analysis jobs (`ls`), or a list of job names ('train', 'lesion', ...). `columns`: the
    runs table's columns to read of the training runs (default all; LIST_COLUMNS: what the pages need)."""
    if reap:
        store.reap_stale()
    wanted = None if jobs is None else set(jobs)
    df = training_runs(store.runs(columns=columns)) if wanted is None or JOBS_DEFAULT in wanted else None
    if wanted is None or wanted - {JOBS_DEFAULT}:
        extra = job_rows(store, None if wanted is None else wanted - {JOBS_DEFAULT})
        parts = [p for p in (df, extra) if p is not None and not p.empty]
        df = (pd.concat(parts, ignore_index=True).sort_values(["created_at", "id"], ascending=[False, True])
              if parts else (df if df is not None else extra))
    if df.empty:
        return df.assign(progress=pd.Series(dtype=float), eta_s=pd.Series(dtype=float))
    it = df["iteration"].fillna(0).astype(float)
    total = df["total_iterations"].fillna(0).astype(float)
    df["progress"] = (it / total.where(total > 0)).fillna(0.0).clip(0, 1)  # a job's total is 0 until it starts
    per_it = df["elapsed_s"].astype(float) / it.where(it > 0)
    eta = (total - it) * per_it
    df["eta_s"] = eta.where(df["status"] == "running")
    return df.reset_index(drop=True)


def selection_mask(runs: pd.DataFrame, fields: Mapping[str, Iterable], search: str = "",
                   studies: Iterable[str] = (), study_prefix: str = "") -> pd.Series:
    """Which runs a selection admits: for each of `fields` ({column: values}) with values, those whose column
    holds one of them (compared as text); whose tag or label contains `search` (any case); and with `studies`,
    those tagged `study_prefix` + one of them. Columns the runs lack are not filtered on."""
    mask = pd.Series(True, index=runs.index)
    for field, values in fields.items():
        values = [str(v) for v in values]
        if values and field in runs.columns:
            mask &= runs[field].astype(str).isin(values)
    search = search.strip()
    if search:
        found = pd.Series(False, index=runs.index)
        for field in SEARCHED:
            if field in runs.columns:
                found |= runs[field].fillna("").astype(str).str.contains(search, case=False, regex=False)
        mask &= found
    studies = [study_prefix + str(s) for s in studies]
    if studies and "tag" in runs.columns:
        mask &= runs["tag"].isin(studies)
    return mask


def tagged_studies(runs: pd.DataFrame, prefix: str) -> list[str]:
    """The study ids the runs' tags name (tag `prefix` + id), sorted."""
    if runs.empty or "tag" not in runs.columns:
        return []
    tags = runs["tag"].dropna().astype(str)
    return sorted({t[len(prefix):] for t in tags.unique() if t.startswith(prefix) and len(t) > len(prefix)})


def sweeps(runs: pd.DataFrame) -> dict[str, int]:
    """{sweep id: its number of runs}, the sweep of the newest run first."""
    if runs.empty or "sweep_id" not in runs.columns:
        return {}
    ids = runs["sweep_id"].dropna().astype(str)
    counts = ids.value_counts()
    return {s: int(counts[s]) for s in ids.unique()}


def page_span(rows: int, page: int, per_page: int) -> tuple[int, int, int]:
    """Rows [start, stop) of page `page` (from 1; clamped to those there are) of `rows` rows shown `per_page` at a
    time, and the number of pages (at least 1)."""
    pages = max(1, math.ceil(rows / max(1, per_page)))
    page = min(max(1, int(page)), pages)
    start = (page - 1) * per_page
    return start, min(rows, start + per_page), pages


def job_rows(store: Store, kinds: Iterable[str] | None = None) -> pd.DataFrame:
    """Job rows (any kind but training, or those `kinds`), newest first, with the runs table's columns and
    `config` decoded (the job's options: a dict)."""
    rows = store.jobs(kinds=None if kinds is None else list(kinds))
    for r in rows:
        try:
            options = json.loads(r["config"]) if isinstance(r["config"], str) else r["config"]
        except ValueError:
            options = None
        r["config"] = options if isinstance(options, dict) else {}
    return pd.DataFrame(rows, columns=[c.name for c in runs_table.columns])


def training_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The training runs of a `Store.runs()` frame: analysis job rows left out, and the config columns built
    from the training runs' configs alone (a job's options, such as a landscape's `span`, are not run options)."""
    if df.empty or "job" not in df.columns:
        return df
    keep = df["job"].fillna(JOBS_DEFAULT) == JOBS_DEFAULT
    if keep.all():
        return df
    base = [c.name for c in runs_table.columns if c.name in df.columns]
    df = df.loc[keep, base].reset_index(drop=True)
    if not df.empty:
        cfg = pd.DataFrame(list(df["config"]))
        for c in cfg.columns:
            if c not in df.columns:
                df[c] = cfg[c].values
    return df


def log_tail(store: Store, run_id: str, lines: int = 30) -> str:
    """The last `lines` lines of a run's log ('' when it has none yet)."""
    path = store.run_dir(run_id) / "log.txt"
    if not path.exists():
        return ""
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - 64 * 1024))
        text = f.read().decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


# control characters (C0, DEL, C1), text-direction overrides and isolates, line and paragraph separators: what
# would move the cursor, recolour, reorder or split a terminal line
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text) -> str:
    """`text` safe to print on one terminal line: control and text-direction characters shown as escapes
    (\\x1b, \\n, \\u202e), everything else (any script) as it is."""
    def escape(m: re.Match) -> str:
        c = m.group()
        return repr(c)[1:-1] if ord(c) < 0x100 else f"\\u{ord(c):04x}"

    return _UNPRINTABLE.sub(escape, str(text))


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
