"""Named analysis figures over a selection of runs, from their stored results: the dashboard page and exports
build them here (the analysis counterpart of `lab.run_views.FIGURES`), and `command` says how to produce a result
that is missing."""
from __future__ import annotations

import shlex
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from ..runs.store import Store, default_results_dir
from . import result_figures
from .results import load_results

# result name -> the command that produces it (RUN stands for the run id)
COMMANDS = {
    "lesion": "lesion RUN",
    "landscape": "landscape RUN",
    "landscape-2d": "landscape RUN --2d",
    "shatter": "shatter RUN",
    "shatter-init": "shatter RUN --at init",
}


def results(store: Store, runs: pd.DataFrame, *names: str) -> list[dict]:
    """The stored results of these names for these runs, in the runs' order."""
    if runs.empty:
        return []
    ids = runs["id"].tolist()
    out = []
    for name in names:
        found = load_results(store, ids, name)
        out += [found[i] for i in ids if i in found]
    return out


def _view(builder, *names: str):
    return lambda store, runs: builder(results(store, runs, *names))


# figure name -> (builder over (store, runs), title, the result names it draws)
FIGURES = {
    "lesion-units": (_view(result_figures.lesion_units, "lesion"), "Error per deleted unit (Veit Fig. 3)", ("lesion",)),
    "lesion-deleted": (_view(result_figures.lesion_deleted, "lesion"), "Error vs units deleted (Veit Fig. 5a)", ("lesion",)),
    "lesion-reordered": (_view(result_figures.lesion_reordered, "lesion"), "Error vs unit order (Veit Fig. 5b)", ("lesion",)),
    "landscape-1d": (_view(result_figures.landscape_1d, "landscape"), "Loss landscape, 1-D (Li et al.)", ("landscape",)),
    "landscape-2d": (_view(result_figures.landscape_2d, "landscape-2d"), "Loss landscape, 2-D (Li et al.)", ("landscape-2d",)),
    "shatter-distance": (_view(result_figures.shatter_distance, "shatter", "shatter-init"),
                         "Gradient correlation vs distance (Balduzzi et al.)", ("shatter", "shatter-init")),
    "shatter-depth": (_view(result_figures.shatter_depth, "shatter", "shatter-init"),
                      "Gradient correlation vs depth (Balduzzi et al.)", ("shatter", "shatter-init")),
}


def build(name: str, store: Store, runs: pd.DataFrame) -> go.Figure:
    return FIGURES[name][0](store, runs)


def command(result: str, run_id: str, results_dir: str | Path | None = None) -> str:
    """The shell command that produces result `result` for run `run_id` (with --results unless default)."""
    cmd = f"python -m lab {COMMANDS[result].replace('RUN', shlex.quote(run_id))}"
    if results_dir is not None and Path(results_dir).resolve() != default_results_dir().resolve():
        cmd += f" --results {shlex.quote(str(results_dir))}"
    return cmd
