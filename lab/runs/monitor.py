"""What the CLI's `ls`/`show` and the dashboard's Runs page show about runs: progress, ETA, log tails."""
from __future__ import annotations

import re

import pandas as pd

from .store import Store

# what `ls --json` prints per run (the dashboard gets every column)
SUMMARY_COLUMNS = [
    "id", "status", "label", "kind", "depth", "dataset", "preset", "seed", "tag", "iteration", "total_iterations",
    "progress", "images_per_s", "eta_s", "elapsed_s", "device", "final_train_error", "final_test_error",
    "created_at", "message", "sweep_id",
]


def overview(store: Store, reap: bool = True) -> pd.DataFrame:
    """Every run (newest first) with its config fields, plus progress (0..1) and ETA (seconds; NaN when
    unknown). With `reap`, runs whose process died are marked interrupted first, so what is shown is the truth.
    """
    if reap:
        store.reap_stale()
    df = store.runs()
    if df.empty:
        return df.assign(progress=pd.Series(dtype=float), eta_s=pd.Series(dtype=float))
    it = df["iteration"].fillna(0).astype(float)
    total = df["total_iterations"].astype(float)
    df["progress"] = (it / total).clip(0, 1)
    per_it = df["elapsed_s"].astype(float) / it.where(it > 0)
    eta = (total - it) * per_it
    df["eta_s"] = eta.where(df["status"] == "running")
    return df.reset_index(drop=True)


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
