"""What a study's analysis reads: its plan, and the stored runs of each arm with their metrics.

Final numbers (errors) come from finished runs only ("done"); diverged runs are counted and named, never averaged
in; curves and layer profiles also draw runs still running. Metric reads go to the store once per name and are
kept for the life of the object.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..runs.store import Store
from .budgets import budget as get_budget
from .plan import Plan, Slot

LIVE = ("done", "diverged", "running", "interrupted", "cancelled")   # runs whose metrics are drawn


class StudyData:
    def __init__(self, plan: Plan, store: Store | None, members: pd.DataFrame, slots: list[Slot] | None = None):
        self.plan = plan
        self.store = store
        self.members = members
        self.slots = slots or []
        self.budget = get_budget(plan.budget)
        self._scalars: dict[str, pd.DataFrame] = {}
        self._layers: dict[tuple[str, str], pd.DataFrame] = {}

    # --- arms and runs ------------------------------------------------------------------------------------------
    @property
    def arm_names(self) -> list[str]:
        """The training arms this build can run, in the study's order."""
        return [a.name for a in self.plan.available() if not a.arm.analysis]

    def has_arm(self, name: str) -> bool:
        return name in self.arm_names

    def runs(self, arm: str, statuses=("done",)) -> pd.DataFrame:
        """The arm's stored runs in these states, one per seed (the preferred one where a seed has several),
        ordered by seed."""
        m = self.members
        if m.empty:
            return m
        rows = m[(m["arm"] == arm) & m["status"].isin(list(statuses))]
        return rows.drop_duplicates("_seed").sort_values("_seed")

    def finals(self, arm: str, column: str = "final_train_error") -> list[float]:
        """The arm's final values of `column` over its finished (done) seeds."""
        runs = self.runs(arm)
        if runs.empty:
            return []
        return [float(v) for v in runs[column] if v is not None and v == v]

    def finals_by_seed(self, arm: str, column: str = "final_train_error") -> dict[int, float]:
        """{seed: final value of `column`} over the arm's finished (done) seeds, so that two arms' values can be
        paired seed by seed (stats.difference)."""
        runs = self.runs(arm)
        if runs.empty:
            return {}
        return {int(s): float(v) for s, v in zip(runs["_seed"], runs[column]) if v is not None and v == v}

    def counts(self, arm: str) -> dict[str, int]:
        m = self.members
        if m.empty:
            return {}
        rows = m[m["arm"] == arm].drop_duplicates("_seed")
        return rows["status"].value_counts().to_dict()

    def unfinished(self, *arms: str) -> dict[str, str]:
        """Remarks on seeds that ended without a result, e.g. {"plain-56 (no BN)": "2 diverged"}."""
        out = {}
        for arm in arms:
            c = self.counts(arm)
            bad = [f"{c[s]} {s}" for s in ("diverged", "failed") if c.get(s)]
            if bad:
                out[arm] = ", ".join(bad)
        return out

    def run_ids(self) -> dict[str, list[str]]:
        """Every stored run of each arm (any state), by arm."""
        m = self.members
        return {arm: (m[m["arm"] == arm]["id"].tolist() if not m.empty else []) for arm in self.arm_names}

    def frame(self, statuses=LIVE) -> pd.DataFrame:
        """The study's runs in these states, one per arm and seed, with `label` set to the arm's name and the
        bookkeeping columns evened out, so lab.run_figures' builders group them by arm."""
        parts = [self.runs(arm, statuses) for arm in self.arm_names]
        parts = [p for p in parts if not p.empty]
        if not parts:
            return self.members.iloc[0:0].assign(label=pd.Series(dtype=str)) if not self.members.empty else pd.DataFrame()
        df = pd.concat(parts, ignore_index=True)
        return df.assign(label=df["arm"], tag="", preset=self.plan.budget)

    # --- metrics ------------------------------------------------------------------------------------------------
    def scalars(self, name: str) -> pd.DataFrame:
        """One scalar metric of every member run: run_id, step, value."""
        if name not in self._scalars:
            ids = self.members["id"].tolist() if not self.members.empty else []
            df = self.store.scalars(ids, [name]) if ids and self.store is not None else pd.DataFrame(
                columns=["run_id", "name", "step", "value"])
            self._scalars[name] = df
        return self._scalars[name]

    def curves(self, arm: str, name: str = "train_error", statuses=LIVE) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """(run id, steps, values) of a scalar for each of the arm's runs that logged it."""
        df = self.scalars(name)
        out = []
        for rid in self.runs(arm, statuses)["id"] if not self.members.empty else []:
            g = df[(df["run_id"] == rid) & df["value"].notna()]
            if len(g):
                out.append((rid, g["step"].to_numpy(float), g["value"].to_numpy(float)))
        return out

    def layer(self, run_id: str, metric: str) -> pd.DataFrame:
        """A run's per-layer metric at every recorded step: step, layer, layer_name, value."""
        key = (run_id, metric)
        if key not in self._layers:
            self._layers[key] = self.store.layer_series(run_id, metric) if self.store is not None else pd.DataFrame(
                columns=["step", "layer", "layer_name", "value"])
        return self._layers[key]

    def layer_at(self, run_id: str, metric: str, when: str = "last") -> pd.DataFrame:
        """The metric's per-layer values at the run's first or last recorded step (empty if never recorded)."""
        df = self.layer(run_id, metric)
        if df.empty:
            return df
        step = df["step"].min() if when == "first" else df["step"].max()
        return df[df["step"] == step].sort_values("layer")

    def recorded(self, arm: str, metric: str, statuses=("done",)) -> bool:
        """Every one of the arm's runs in these states recorded `metric` (and there is at least one)."""
        runs = self.runs(arm, statuses)
        if runs.empty:
            return False
        return all(not self.layer(rid, metric).empty for rid in runs["id"])

    def total_iterations(self, arm: str) -> int:
        pa = next(a for a in self.plan.available() if a.name == arm)
        return pa.configs[0].iterations if pa.configs else 0
