"""Metrics and artifacts: scalar series, per-layer series and named JSON results of runs."""
from __future__ import annotations

import json
import time
from typing import Iterable

import pandas as pd
import sqlalchemy as sa

from ...errors import StoreError
from .schema import (
    IN_CHUNK, _encode, _finite_or_none, _json_object, _Rollback, _show, artifacts_table, layer_table, metric_cap,
    runs_table, scalars_table,
)


class MetricsMixin:
    """What runs record while they execute."""

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
        neither fails nor duplicates. Rows past the run's cap (`metric_cap`) are refused: StoreError."""
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

        adding = len(srows) + len(lrows)
        budget = None

        def write(conn):  # safe to repeat: a step logged again replaces its value
            nonlocal budget
            n = conn.execute(q).rowcount
            if attempt is not None and n != 1:
                raise _Rollback()
            if adding:
                budget = self._metric_room(conn, run_id, adding)
            if srows:
                conn.execute(self._upsert(scalars_table, "value"), srows)
            if lrows:
                conn.execute(self._upsert(layer_table, "vals"), lrows)

        try:
            self._transact(write)
        except _Rollback:
            raise self.lost_run(run_id, attempt) from None
        if budget is not None:
            budget[0] += adding  # an upsert may replace a row: the count errs high, which the cap's slack allows

    def _metric_room(self, conn: sa.Connection, run_id: str, adding: int) -> list[int] | None:
        """[metric rows stored, cap] of `run_id` (read once per store), or None for no such run; StoreError
        when `adding` more rows would pass the cap."""
        budgets = self.__dict__.setdefault("_metric_budgets", {})
        entry = budgets.get(run_id)
        if entry is None:
            row = conn.execute(sa.select(runs_table.c.total_iterations, runs_table.c.config)
                               .where(runs_table.c.id == run_id)).first()
            if row is None:
                return None
            stored = sum(int(conn.execute(sa.select(sa.func.count()).select_from(t).where(t.c.run_id == run_id))
                             .scalar()) for t in (scalars_table, layer_table))
            entry = budgets[run_id] = [stored, metric_cap(row[0], (_json_object(row[1]) or {}).get("log_every"))]
        if entry[0] + adding > entry[1]:
            raise StoreError(f"run {run_id}: {entry[0] + adding} metric rows would pass its cap of {entry[1]} "
                             f"(iterations / log_every, with slack); the rows were not stored")
        return entry

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
        self.__dict__.get("_metric_budgets", {}).pop(run_id, None)  # counted again at the next write

    def metric_count(self, run_id: str) -> int:
        """How many scalar metric values a run has stored."""
        with self.read() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(scalars_table)
                                    .where(scalars_table.c.run_id == run_id)).scalar())

    def scalars(self, run_ids: str | Iterable[str], names: Iterable[str] | None = None,
                steps: tuple[int, int] | None = None) -> pd.DataFrame:
        """Scalar metrics as a long DataFrame: run_id, name, step, value (sorted by run, name, step); `steps`
        (first, last): only the rows in that range (a range of the primary key). Any number of runs: their ids
        are asked for IN_CHUNK at a time."""
        ids = list(dict.fromkeys([run_ids] if isinstance(run_ids, str) else run_ids))
        names = None if names is None else list(names)
        rows = []
        with self.read() as conn:
            for i in range(0, max(len(ids), 1), IN_CHUNK):
                q = sa.select(scalars_table).where(scalars_table.c.run_id.in_(ids[i : i + IN_CHUNK]))
                if names is not None:
                    q = q.where(scalars_table.c.name.in_(names))
                if steps is not None:
                    q = q.where(scalars_table.c.step.between(int(steps[0]), int(steps[1])))
                rows += conn.execute(q.order_by(scalars_table.c.run_id, scalars_table.c.name, scalars_table.c.step)).all()
        cols = ["run_id", "name", "step", "value"]
        columns = list(zip(*rows)) if rows else [[] for _ in cols]  # columnar: far faster than rows for pandas
        df = pd.DataFrame(dict(zip(cols, columns)), columns=cols)
        df["value"] = pd.to_numeric(df["value"], errors="coerce").astype(float)
        if len(ids) > IN_CHUNK:  # each chunk came sorted: sort the whole
            df = df.sort_values(cols[:3], kind="stable", ignore_index=True)
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
