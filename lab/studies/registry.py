"""The studies registry: a study is a declaration, registered once, looked up by id.

A study names a question about degradation, what the paper or the literature says about it (numbers from
`lab.reference`), the runs that answer it per budget (`smoke`, `cpu`, `paper`; see `lab.studies.budgets`), and an
analysis that turns the stored runs into findings (verdict sentences with their numbers), tables and figures.

Registering a study (any package can; the built-in ones live in `lab/studies/catalog/`, one small module each):

    from lab.studies.registry import Arm, Study, register

    register(Study(
        id="my-study", title="...", question="... ?", literature="...",
        grid={"smoke": [Arm("plain-8", dict(kind="plain", depth=8)), ...], "cpu": [...], "paper": [...]},
        analyse=my_analysis,            # StudyData -> Analysis (lab.studies.reader, lab.studies.findings)
        figures=my_figures,             # StudyData -> {name: (title, plotly figure)}
    ))

Modules in `lab/studies/catalog/` are imported on first use, so a new study there needs no other edit; a study
declared elsewhere adds its module's name to `STUDY_MODULES`.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Mapping

from ..errors import StudyError  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from .reader import StudyData
    from .findings import Analysis

BUDGET_NAMES = ("smoke", "cpu", "paper")

# Modules outside lab/studies/catalog/ that register studies when imported (e.g. "lab.analysis.studies").
STUDY_MODULES: list[str] = []




@dataclass(frozen=True, eq=False)
class Arm:
    """One condition of a study: RunConfig options on top of the budget's schedule, run for each seed.

    `name` is unique within the study and is what tables, legends and verdicts call it ("plain-56").
    `job` "train" is a training run; "lesion", "landscape" or "shatter" an analysis job (lab.analysis) of each
    run of the arm named by `of`, with `options` the analysis's options (lab.analysis.options), queued where this
    build has background analysis jobs (lab.analysis.queue) and reported as unavailable where it has not.
    `deepen` names an earlier training arm: each run of this arm starts from that arm's run of the same seed,
    deepened (Net2DeeperNet) to this arm's depth; its `deepen_from` is that run's id, so it is queued after it and
    waits for it.
    `seeds` overrides the budget's number of seeds for this arm (None: the budget's).
    """

    name: str
    options: Mapping = field(default_factory=dict)
    job: str = "train"
    of: str | None = None
    seeds: int | None = None
    deepen: str | None = None

    @property
    def analysis(self) -> bool:
        return self.job != "train"

    def describe(self) -> str:
        """What the arm's runs are, in words (for tables)."""
        if self.analysis:
            return f"a {self.job} job of each run of {self.of}"
        if self.deepen is not None:
            return f"training, each run deepened from {self.deepen}'s run of the same seed"
        return "training"


@dataclass(eq=False)
class Study:
    """A question, the runs that answer it per budget, and the analysis of those runs."""

    id: str                                          # short, for the CLI and URLs: "degradation"
    title: str                                       # "Degradation (Fig. 6)"
    question: str                                    # one sentence
    literature: str                                  # what the paper or literature says, numbers included
    grid: Mapping[str, list[Arm]]                    # budget -> arms
    analyse: Callable[["StudyData"], "Analysis"]     # stored runs -> findings, numbers, tables
    figures: Callable[["StudyData"], dict[str, tuple[str, "go.Figure"]]]  # stored runs -> {name: (title, fig)}
    published: tuple[str, ...] = ()                  # keys of lab.reference.STUDY_NUMBERS shown as a table
    order: float = 100.0                             # position in lists (the built-in studies use 10, 20, ...)

    def arms(self, budget: str) -> list[Arm]:
        if budget not in self.grid:
            raise StudyError(f"study {self.id!r} has no {budget!r} budget; it has: {', '.join(self.grid)}")
        return list(self.grid[budget])


_STUDIES: dict[str, Study] = {}
_loaded = False


def register(study: Study) -> Study:
    """Add a study to the registry (returns it, so it can be used as `STUDY = register(Study(...))`)."""
    problems = []
    if not study.id or study.id != study.id.strip() or " " in study.id:
        problems.append(f"study id {study.id!r} must be one word")
    if study.id in _STUDIES and _STUDIES[study.id] is not study:
        problems.append(f"a study {study.id!r} is already registered")
    for budget, arms in study.grid.items():
        if budget not in BUDGET_NAMES:
            problems.append(f"budget {budget!r} is not one of {', '.join(BUDGET_NAMES)}")
        names = [a.name for a in arms]
        if len(set(names)) != len(names):
            problems.append(f"budget {budget!r}: arm names must be unique, got {', '.join(names)}")
        for i, a in enumerate(arms):
            if a.of is not None and a.of not in names:
                problems.append(f"budget {budget!r}: arm {a.name!r} analyses unknown arm {a.of!r}")
            if a.analysis and a.of is None:
                problems.append(f"budget {budget!r}: analysis arm {a.name!r} must name the arm it analyses (of=...)")
            earlier = {b.name: b for b in arms[:i]}
            if a.analysis and a.of in names and (a.of not in earlier or earlier[a.of].analysis):
                problems.append(f"budget {budget!r}: analysis arm {a.name!r} must come after the training arm "
                                f"{a.of!r} it analyses")
            if a.deepen is not None and (a.deepen not in earlier or earlier[a.deepen].analysis or a.analysis):
                problems.append(f"budget {budget!r}: arm {a.name!r} must deepen an earlier training arm, "
                                f"not {a.deepen!r}")
    if problems:
        raise StudyError(f"cannot register study {study.id!r}: " + "; ".join(problems))
    _STUDIES[study.id] = study
    return study


def _load() -> None:
    """Import the catalog's modules and STUDY_MODULES once, so their studies are registered."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    from . import catalog

    for info in sorted(pkgutil.iter_modules(catalog.__path__), key=lambda m: m.name):
        importlib.import_module(f"{catalog.__name__}.{info.name}")
    for name in STUDY_MODULES:
        importlib.import_module(name)


def all_studies() -> list[Study]:
    """Every registered study, in display order."""
    _load()
    return sorted(_STUDIES.values(), key=lambda s: (s.order, s.id))


def get(study_id: str) -> Study:
    """The study with this id; StudyError naming the known ones if there is none."""
    _load()
    if study_id not in _STUDIES:
        raise StudyError(f"unknown study {study_id!r}; known: {', '.join(s.id for s in all_studies())}")
    return _STUDIES[study_id]
