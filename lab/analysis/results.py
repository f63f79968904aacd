"""Where analysis results are kept, behind two calls: `save_result` and `load_results`.

A result is a JSON-able dict saved under a name ('lesion', 'landscape-2d', 'shatter-init', ...) for the run it
analyses. Today each result is a JSON file next to the run's checkpoint, `runs/<id>/analysis/<name>.json`,
written atomically (deleting the run deletes its results). The store's `artifacts` table (schema version 2:
`put_artifact(run_id, name, data)`, `artifact(run_id, name)`, `artifacts(run_id)`) is the other backend here;
moving results into it is the one line `BACKEND = StoreArtifacts()`.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Iterable

from ..runs.store import Store

NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")  # also a safe file name; the artifacts key is String(64)


def _check_name(name: str) -> None:
    if not NAME.match(name or ""):
        raise ValueError(f"result name {name!r}: use 1-64 lower-case letters, digits, '-', '_' or '.'")


def _clean(value):
    """JSON without NaN or infinities (None instead), tuples as lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class RunFolder:
    """Results as JSON files in the run's folder: runs/<id>/analysis/<name>.json."""

    def folder(self, store: Store, run_id: str) -> Path:
        return store.run_dir(run_id) / "analysis"

    def put(self, store: Store, run_id: str, name: str, data: dict) -> None:
        folder = self.folder(store, run_id)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.json"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, allow_nan=False))
        os.replace(tmp, path)  # readers see the old result or the new one, never half of one

    def get(self, store: Store, run_id: str, name: str) -> dict | None:
        path = self.folder(store, run_id) / f"{name}.json"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None  # unreadable: treated as missing, and a new analysis overwrites it

    def names(self, store: Store, run_id: str) -> list[str]:
        folder = self.folder(store, run_id)
        return sorted(p.stem for p in folder.glob("*.json")) if folder.exists() else []


class StoreArtifacts:
    """Results in the store's `artifacts` table (schema version 2)."""

    def put(self, store, run_id: str, name: str, data: dict) -> None:
        store.put_artifact(run_id, name, data)

    def get(self, store, run_id: str, name: str) -> dict | None:
        return store.artifact(run_id, name)

    def names(self, store, run_id: str) -> list[str]:
        return sorted(store.artifacts(run_id))


BACKEND = RunFolder()


def save_result(store: Store, run_id: str, name: str, result: dict) -> None:
    """Keep `result` as run `run_id`'s result `name`, replacing an earlier one of that name."""
    _check_name(name)
    BACKEND.put(store, store.get_run(run_id)["id"], name, _clean(result))


def load_results(store: Store, run_ids: Iterable[str], name: str) -> dict[str, dict]:
    """{run id: result} for those of `run_ids` that have a result `name` (others are left out)."""
    _check_name(name)
    out = {}
    for rid in run_ids:
        found = BACKEND.get(store, rid, name)
        if found is not None:
            out[rid] = found
    return out


def result_names(store: Store, run_id: str) -> list[str]:
    """The names of the results kept for a run."""
    return BACKEND.names(store, run_id)
