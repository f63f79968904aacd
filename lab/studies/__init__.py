"""Studies: the open questions about degradation, each answered by a set of runs and a verdict computed from them.

- `registry`: the Study and Arm declarations, `register`, `get`, `all_studies` (built-in studies: `catalog/`).
- `budgets`: the `smoke`, `cpu` and `paper` schedules, and per-study tuning: the one place to change them.
- `plan`: a study's runs at a budget, matching stored runs (reuse), status, queueing only what is missing.
- `data`: what an analysis reads (runs per arm, final values, curves, per-layer metrics).
- `stats` and `findings`: the statistics (scipy.stats) and the verdict sentences made from them.
- `figures`: figure builders (pure functions); `common`: what most analyses share.
- `report`: a study evaluated against the store, as JSON, HTML and exported files; `lab.cli.studies`: `lab study`.
"""
from .registry import Arm, Study, StudyError, all_studies, get, register

__all__ = ["Arm", "Study", "StudyError", "all_studies", "get", "register"]
