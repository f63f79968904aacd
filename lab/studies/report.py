"""A study at a budget, evaluated against the store: plan, status, analysis, figures; as JSON and as files.

`evaluate` is what `study show`, `study export` and the Studies page call; `export` writes the figures (SVG, PDF,
PNG), their data (CSV), the numbers (JSON), the runs table and a one-page HTML summary, to a folder or a zip.
"""
from __future__ import annotations

import datetime as dt
import html
import io
import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import plotly.io as pio

from ..export import IMAGE_FORMATS, ExportError, csv_bytes, figure_bytes, runs_table, table_csv, write_atomically
from ..reference import STUDY_NUMBERS, cite
from ..runs.monitor import format_duration, overview
from ..runs.store import Store
from .reader import StudyData
from .findings import Analysis
from .plan import FinishedRunsOnce, Plan, Slot, Status, keyed_runs, make_plan, match, status
from .registry import Study, get


@dataclass
class StudyResult:
    study: Study
    plan: Plan
    slots: list[Slot]
    status: Status
    data: StudyData
    analysis: Analysis
    _figures: dict | None = field(default=None, repr=False)

    def figures(self) -> dict:
        """{name: (title, figure)}, built on first use."""
        if self._figures is None:
            self._figures = self.study.figures(self.data)
        return self._figures

    @property
    def verdict(self) -> str | None:
        return self.analysis.verdict

    def to_json(self) -> dict:
        planned = [dict(arm=s.arm, seed=s.config.seed, job=s.job, state=s.state, run=s.run["id"] if s.run else None)
                   for s in self.slots]
        out = dict(
            id=self.study.id, title=self.study.title, question=self.study.question,
            literature=self.study.literature, published=published(self.study),
            budget=self.plan.budget, seeds=self.plan.seeds, dataset=self.plan.dataset_name(),
            status=self.status.as_dict(), verdict=self.verdict,
            findings=[f.as_dict() for f in self.analysis.findings], numbers=self.analysis.numbers,
            notes=self.analysis.notes, runs=self.data.run_ids(), planned=planned,
            unavailable=self.plan.unavailable(),
        )
        return clean(out)


def published(study: Study) -> list[dict]:
    """The study's published numbers, each with its display text (approximate/unconfirmed marked)."""
    chosen = [n for n in STUDY_NUMBERS if n["key"] in set(study.published)]
    return [dict(what=n["what"], value=n["value"], sd=n["sd"], unit=n["unit"], source=n["source"], note=n["note"],
                 text=cite(n["key"])) for n in chosen]


def clean(value):
    """JSON-safe: NaN and infinities as None, numpy scalars as Python numbers, tuples as lists."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def evaluate(study: Study | str, store: Store | None, budget: str = "cpu", seeds: int | None = None,
             dataset: str | None = None, runs: pd.DataFrame | None = None, estimate: bool = True,
             analyse: bool = True, estimates: FinishedRunsOnce | None = None,
             keyed: pd.DataFrame | None = None) -> StudyResult:
    """The study at `budget` against the store's runs (`runs`: an overview already read, to share one read).
    Without `analyse` only the plan and status are computed (for lists of studies); `estimates` shares one read
    of the finished runs between the time estimates of several studies, `keyed` one `keyed_runs(runs)` between
    their matches."""
    study = get(study) if isinstance(study, str) else study
    plan = make_plan(study, budget, seeds, dataset)
    if runs is None:
        runs = overview(store) if store is not None else pd.DataFrame()
    if runs.empty:
        runs = pd.DataFrame(columns=["id", "status", "config", "created_at"])
    slots, members = match(plan, runs, store, keyed)
    st = status(plan, slots, estimates or store, estimate=estimate)
    data = StudyData(plan, store, members, slots)
    return StudyResult(study, plan, slots, st, data, study.analyse(data) if analyse else Analysis())


def overview_rows(store: Store | None, budget: str = "cpu", seeds: int | None = None,
                  runs: pd.DataFrame | None = None) -> list[dict]:
    """One row per registered study: its status at `budget` and the estimated time of what is left to run."""
    from .registry import all_studies

    if runs is None:
        runs = overview(store) if store is not None else None
    rows, estimates = [], FinishedRunsOnce(store) if store is not None else None
    keyed = keyed_runs(runs) if runs is not None and not runs.empty else None
    for study in all_studies():
        s = evaluate(study, store, budget, seeds, runs=runs, analyse=False, estimates=estimates, keyed=keyed).status
        rows.append(dict(id=study.id, title=study.title, question=study.question, state=s.state, planned=s.planned,
                         finished=s.done + s.diverged, running=s.running, queued=s.queued,
                         to_run=s.missing + s.resumable, estimate_s=s.to_queue_s, total_estimate_s=s.total_s,
                         unavailable=s.unavailable))
    return rows


def export_zip(result: StudyResult, formats=("svg", "pdf", "png")) -> bytes:
    """The export as zip bytes (for a download button)."""
    return zip_bytes(export_files(result, formats)[0])


# --- files -------------------------------------------------------------------------------------------------------


def summary_html(result: StudyResult, images: dict[str, list[str]] | None = None) -> str:
    """One page: the question, what the literature says, the verdict with its findings, the arms, the figures
    (interactive, plotly.js inlined once) with links to their files, and the runs."""
    images = images or {}
    esc = html.escape
    s = result.status
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(result.study.title)}</title>",
        "<style>body{font-family:Arial,sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;"
        "font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px}h2{margin-top:1.6em}.o{color:#555;"
        "font-size:12px;text-transform:uppercase}</style></head><body>",
        f"<h1>{esc(result.study.title)}</h1>",
        f"<p><b>Question.</b> {esc(result.study.question)}</p>",
        f"<p><b>What the literature says.</b> {esc(result.study.literature)}</p>",
        f"<p>Budget <b>{esc(result.plan.budget)}</b> ({esc(result.plan.dataset_name())}, {result.plan.seeds} seed(s) "
        f"per arm). Status: {esc(s.state)}: {s.done} done, {s.diverged} diverged, {s.running} running, {s.queued} "
        f"queued, {s.missing + s.resumable} to run, of {s.planned}. Generated {dt.datetime.now():%Y-%m-%d %H:%M} "
        f"by Degradation Lab.</p>",
        "<h2>Verdict</h2>",
        f"<p>{esc(result.verdict) if result.verdict else 'Not enough finished runs yet.'}</p><ul>",
    ]
    for f in result.analysis.findings:
        parts.append(f"<li><span class='o'>{esc(f.outcome)}</span> <i>{esc(f.question)}</i> {esc(f.text)}</li>")
    parts.append("</ul>")
    for note in result.analysis.notes:
        parts.append(f"<p>{esc(note)}</p>")
    if s.unavailable:
        parts.append("<p><b>Not available in this build:</b> " +
                     "; ".join(f"{esc(a)}: {esc(w)}" for a, w in s.unavailable.items()) + "</p>")
    for name, table in result.analysis.tables.items():
        parts.append(f"<h2>Table: {esc(name)}</h2>")
        parts.append(table.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}"))
    first = True
    for name, (title, fig) in result.figures().items():
        parts.append(f"<h2>{esc(title)}</h2>")
        parts.append(pio.to_html(fig, include_plotlyjs="inline" if first else False, full_html=False))
        first = False
        links = [f"<a href='{esc(p)}'>{esc(p.rsplit('.', 1)[-1].upper())}</a>" for p in images.get(name, [])]
        links.append(f"<a href='data/{esc(name)}.csv'>CSV</a>")
        parts.append("<p>Files: " + " · ".join(links) + "</p>")
    runs = result.data.members
    parts.append("<h2>Runs</h2>")
    if not runs.empty:
        parts.append(runs_table(runs.drop(columns=[c for c in ("_key", "_seed") if c in runs.columns]))
                     .to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}"))
    else:
        parts.append("<p>None stored yet.</p>")
    parts.append("</body></html>")
    return "".join(parts)


def export_files(result: StudyResult, formats=("svg", "pdf", "png")) -> tuple[dict[str, bytes], list[str]]:
    """Every file of a study's export as {relative path: bytes}, and warnings (e.g. images left out because
    this machine has no Chromium)."""
    files, notes, images = {}, [], {}
    for name, (_title, fig) in result.figures().items():
        files[f"data/{name}.csv"] = csv_bytes(fig)
        for fmt in formats:
            if fmt not in IMAGE_FORMATS:
                continue
            try:
                files[f"figures/{name}.{fmt}"] = figure_bytes(fig, fmt)
                images.setdefault(name, []).append(f"figures/{name}.{fmt}")
            except ExportError as exc:
                if str(exc) not in notes:
                    notes.append(str(exc))
    runs = result.data.members
    table = runs_table(runs.drop(columns=[c for c in ("_key", "_seed") if c in runs.columns])) if not runs.empty else runs
    files["runs.csv"] = table_csv(table)
    for name, t in result.analysis.tables.items():
        files[f"data/table-{name}.csv"] = table_csv(t)
    files["study.json"] = json.dumps(result.to_json(), indent=2).encode()
    files["index.html"] = summary_html(result, images).encode()
    if notes:
        files["WARNINGS.txt"] = ("\n".join(notes) + "\n").encode()
    return files, notes


def export(result: StudyResult, out: str | Path, formats=("svg", "pdf", "png")) -> tuple[Path, list[str], int]:
    """Write the export to a folder, or to a zip when `out` ends in .zip; returns (path, warnings, files)."""
    files, notes = export_files(result, formats)
    out = Path(out)
    if out.suffix == ".zip":
        write_atomically(out, zip_bytes(files))
    else:
        for path, data in files.items():
            write_atomically(out / path, data)
    return out, notes, len(files)


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for path, data in files.items():
            z.writestr(path, data)
    return buf.getvalue()


def describe_time(seconds: float | None) -> str:
    return format_duration(seconds) if seconds is not None else "-"
