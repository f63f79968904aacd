"""Downsampled series: what the pages draw of a finished run instead of every row it logged.

A run that logs every 100 iterations for 64k iterations stores 640 rows per scalar and 641 per-layer vectors per
metric; a page over 1,000 runs would read them all. When a run finishes (any of `ENDED`), its scalar series are
summarised in buckets (`lab.buckets.bucket_summary`: mean step, mean, min, max and count per bucket of a whole
number of logging intervals, at most `SUMMARY_POINTS` buckets) and its per-layer series kept at
`LAYER_SUMMARY_STEPS` evenly spread steps (the first and the last among them), one row per (run, series). A
summary is valid while the run's attempt and iteration are those it was made from: a resumed run's old
summaries are never used. A finished run without a valid summary (a store made before summaries existed, a run
reaped as interrupted) gets one when it is first read (kept, unless the store is read-only).
"""
from __future__ import annotations

import json
from typing import Iterable

import numpy as np
import pandas as pd
import sqlalchemy as sa

from ...buckets import bucket_summary, bucket_width, decimate
from .schema import IN_CHUNK, _json_object, layer_table, runs_table, scalars_table, summaries_table

ENDED = ("done", "failed", "diverged", "cancelled", "interrupted")  # statuses whose series no longer grow
SCALAR_FIELDS = ("x", "mean", "min", "max", "n")


def encode_scalar(summary: dict[str, np.ndarray]) -> bytes:
    return np.stack([summary[f] for f in SCALAR_FIELDS]).astype("<f8").tobytes()


def decode_scalar(data: bytes) -> dict[str, np.ndarray]:
    table = np.frombuffer(data, dtype="<f8").reshape(len(SCALAR_FIELDS), -1).astype(float)
    return dict(zip(SCALAR_FIELDS, table))


def encode_layers(steps: np.ndarray, values: np.ndarray) -> bytes:
    """Steps (k) and a k x layers matrix (NaN for a missing value), as float64: k, layers, steps, values."""
    k, width = values.shape
    return np.concatenate([[k, width], steps, values.ravel()]).astype("<f8").tobytes()


def decode_layers(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    flat = np.frombuffer(data, dtype="<f8")
    k, width = int(flat[0]), int(flat[1])
    return flat[2 : 2 + k].astype(np.int64), flat[2 + k :].reshape(k, width).astype(float)


def scalar_grid(run: dict) -> int:
    """Bucket width of a run's scalar summaries: whole logging intervals, at most SUMMARY_POINTS buckets over
    its planned iterations (or the iterations it reached, if more)."""
    cfg = run.get("config") if isinstance(run.get("config"), dict) else {}
    every = run.get("log_every") or cfg.get("log_every") or 1
    span = max(int(run.get("total_iterations") or 0), int(run.get("iteration") or 0))
    return bucket_width(span, int(every))


def layer_matrix(vals: Iterable[str]) -> np.ndarray:
    """Stored per-layer JSON lists as one steps x layers matrix (NaN for None; short rows padded)."""
    rows = [json.loads(v) for v in vals]
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        out[i, : len(r)] = [np.nan if x is None else x for x in r]
    return out


class SummariesMixin:
    """Downsampled series of finished runs (see the module's docstring)."""

    def summarize_series(self, run_id: str, sources: Iterable[str] = ("scalar", "layer")) -> dict:
        """Make (and keep, unless the store is read-only) run `run_id`'s summaries of `sources` from its stored
        rows; returns {(source, name): decoded summary}. A run that is not there gives {}."""
        with self.read() as conn:
            row = conn.execute(sa.select(runs_table.c.attempt, runs_table.c.iteration, runs_table.c.total_iterations,
                                         runs_table.c.config).where(runs_table.c.id == run_id)).mappings().first()
            if row is None:
                return {}
            run = {**row, "config": _json_object(row["config"]) or {}}
            made: dict[tuple[str, str], bytes] = {}
            if "scalar" in sources:
                width = scalar_grid(run)
                rows = conn.execute(sa.select(scalars_table.c.name, scalars_table.c.step, scalars_table.c.value)
                                    .where(scalars_table.c.run_id == run_id)
                                    .order_by(scalars_table.c.name, scalars_table.c.step)).all()
                frame = pd.DataFrame(rows, columns=["name", "step", "value"])
                for name, g in frame.groupby("name", sort=False):
                    made[("scalar", name)] = encode_scalar(bucket_summary(
                        g["step"].to_numpy(np.int64), g["value"].to_numpy(float), width))
            if "layer" in sources:
                for metric in [r[0] for r in conn.execute(sa.select(layer_table.c.metric).distinct()
                                                          .where(layer_table.c.run_id == run_id))]:
                    steps = np.array([r[0] for r in conn.execute(
                        sa.select(layer_table.c.step).where(layer_table.c.run_id == run_id,
                                                             layer_table.c.metric == metric)
                        .order_by(layer_table.c.step))], dtype=np.int64)
                    keep = steps[decimate(len(steps))].tolist()
                    vals = [v for _, v in sorted(conn.execute(
                        sa.select(layer_table.c.step, layer_table.c.vals).where(
                            layer_table.c.run_id == run_id, layer_table.c.metric == metric,
                            layer_table.c.step.in_(keep))).all())]
                    made[("layer", metric)] = encode_layers(np.array(keep, dtype=float), layer_matrix(vals))
        if not self.readonly:
            self._keep_summaries(run_id, run, list(sources), made)
        return {key: (decode_scalar(d) if key[0] == "scalar" else decode_layers(d)) for key, d in made.items()}

    def _keep_summaries(self, run_id: str, run: dict, sources: list[str], made: dict) -> None:
        # a row named '' per source marks it summarised, also where the run logged nothing of it
        made = {**{(s, ""): b"" for s in sources}, **made}
        rows = [dict(run_id=run_id, source=s, name=n, attempt=run["attempt"], iteration=run["iteration"], data=d)
                for (s, n), d in made.items()]

        def put(conn):
            conn.execute(summaries_table.delete().where(summaries_table.c.run_id == run_id,
                                                        summaries_table.c.source.in_(sources)))
            if rows:
                conn.execute(summaries_table.insert(), rows)

        self._transact(put)

    def series_summaries(self, runs: pd.DataFrame | list[dict], names: Iterable[str], source: str = "scalar") -> dict:
        """{(run id, name): decoded summary} of the finished runs among `runs` (rows with id, status, attempt,
        iteration) for the series `names` of `source` ('scalar': dicts of arrays x, mean, min, max, n; 'layer':
        (steps, steps x layers matrix)). A finished run without a valid summary gets one made from its rows; a
        series the run never logged is absent. Runs that may still change (queued, running) are left out."""
        records = runs.to_dict("records") if isinstance(runs, pd.DataFrame) else list(runs)
        ended = {r["id"]: r for r in records if r.get("status") in ENDED}
        names = list(dict.fromkeys(names))
        out: dict = {}
        valid: set[str] = set()
        ids = list(ended)
        decode = decode_scalar if source == "scalar" else decode_layers
        with self.read() as conn:
            for i in range(0, len(ids), IN_CHUNK):
                q = sa.select(summaries_table.c.run_id, summaries_table.c.name, summaries_table.c.attempt,
                              summaries_table.c.iteration, summaries_table.c.data).where(
                    summaries_table.c.run_id.in_(ids[i : i + IN_CHUNK]), summaries_table.c.source == source,
                    summaries_table.c.name.in_(["", *names]))  # '' marks a run summarised
                for rid, name, attempt, iteration, data in conn.execute(q):
                    run = ended[rid]
                    if _same(attempt, run.get("attempt")) and _same(iteration, run.get("iteration")):
                        valid.add(rid)
                        if name and name in names:
                            out[(rid, name)] = decode(data)
        for rid in ids:
            if rid not in valid:
                made = self.summarize_series(rid, [source])
                out.update({(rid, n): s for (_, n), s in made.items() if n in names})
        return out


def _same(stored, current) -> bool:
    """A stored attempt or iteration against the run's (NULL and NaN both mean none)."""
    def norm(v):
        return None if v is None or (isinstance(v, float) and v != v) else v
    a, b = norm(stored), norm(current)
    return a == b or (a is not None and b is not None and str(a) == str(int(b) if isinstance(b, float) else b))
