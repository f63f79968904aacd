"""What every dashboard page shares: the store, the run selection (sidebar, session and URL), downloads.

UI only: everything computed comes from `lab`.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd
import streamlit as st

from lab.export import INSTALL_HINT, MIME, ExportError, csv_bytes, figure_bytes, find_chromium
from lab.runs.monitor import overview
from lab.runs.store import Store, StoreError, default_results_dir

# (run column, label) in the order the sidebar shows them
FILTERS = [("kind", "Kind"), ("depth", "Depth"), ("dataset", "Data set"), ("status", "Status"), ("tag", "Tag"),
           ("preset", "Preset"), ("shortcut", "Shortcut"), ("block", "Block"), ("span", "Span"), ("norm", "Norm"),
           ("init", "Init"), ("width", "Width"), ("seed", "Seed")]


def results_dir() -> str | None:
    """`streamlit run dashboard.py -- --results DIR`, else $LAB_RESULTS or results/ (the Store's default)."""
    from lab.cli.shared import add_results  # the one definition of --results

    parser = argparse.ArgumentParser(add_help=False)
    add_results(parser)
    args, _ = parser.parse_known_args(sys.argv[1:])
    return args.results


@st.cache_resource(show_spinner=False)
def _open_store(root: str, url: str | None) -> Store:
    return Store(root, url=url)


VIA_DASHBOARD = "_via_dashboard"  # set by dashboard.py before it runs the chosen page


def through_dashboard() -> None:
    """Run this page through dashboard.py. Because a pages/ folder sits beside dashboard.py, Streamlit starts a
    server in its file-based multipage mode (the files of pages/ listed in the sidebar), which dashboard.py's
    st.navigation turns off only once dashboard.py has run; a server's first visitor who opens a page's own
    address (/studies) would get that page alone, without the titled navigation, page settings and address
    check of dashboard.py. Turn the mode off and run again, through dashboard.py."""
    from streamlit.runtime.pages_manager import PagesManager

    if st.session_state.get(VIA_DASHBOARD):  # dashboard.py ran this page: nothing to do (and no rerun that
        return                               # would drop the click that started this run)
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


def get_store() -> Store:
    through_dashboard()
    root = Path(results_dir() or default_results_dir()).resolve()
    try:
        return _open_store(str(root), os.environ.get("LAB_DB_URL"))
    except StoreError as exc:
        st.error(f"The results store cannot be opened: {exc}")
        st.stop()


def load_runs(store: Store) -> pd.DataFrame:
    """All runs with their config fields, progress and ETA, newest first (dead runs reaped first)."""
    return overview(store)


def _encode(values) -> str:
    return ",".join(str(v) for v in values)


def _selection_state() -> dict:
    """The selection, kept in the session (survives page changes) and seeded from the URL on first load."""
    if "_selection" not in st.session_state:
        st.session_state["_selection"] = {f: st.query_params.get(f, "").split(",") for f, _ in FILTERS
                                          if st.query_params.get(f)}
    return st.session_state["_selection"]


def _clear_selection() -> None:
    st.session_state["_selection"] = {}
    for field, _ in FILTERS:
        st.session_state[f"sel_{field}"] = []


def select_runs(runs: pd.DataFrame, title: str = "Run selection") -> pd.DataFrame:
    """Sidebar filters over the runs; the choice persists across pages and in the URL (bookmark it to share)."""
    chosen = _selection_state()
    with st.sidebar:
        st.subheader(title)
        if runs.empty:
            st.caption("No runs stored yet.")
            return runs
        mask = pd.Series(True, index=runs.index)
        for field, label in FILTERS:
            if field not in runs.columns:
                continue
            values = runs[field].dropna()
            options = sorted(values.unique().tolist(), key=lambda v: (str(type(v)), v))
            wanted = [o for o in options if str(o) in set(chosen.get(field, []))]
            if len(options) < 2 and not wanted:
                continue
            key = f"sel_{field}"
            if key not in st.session_state:  # first time on this page: restore the session's (or URL's) choice
                st.session_state[key] = wanted
            else:  # the widget's own state is the truth; drop values whose runs are gone
                st.session_state[key] = [o for o in options if str(o) in set(map(str, st.session_state[key]))]
            picked = st.multiselect(label, options, key=key, placeholder="all", format_func=str)
            chosen[field] = [str(p) for p in picked]
            if picked:
                mask &= runs[field].astype(str).isin([str(p) for p in picked])
        active = {f: v for f, v in chosen.items() if v}
        if active:
            st.button("Clear selection", key="sel_clear", icon=":material/filter_alt_off:", on_click=_clear_selection)
        st.caption(f"{int(mask.sum())} of {len(runs)} runs selected")
    st.query_params.from_dict({f: _encode(v) for f, v in active.items()})
    return runs[mask]


def selected_runs_or_stop(store: Store) -> pd.DataFrame:
    """The sidebar selection of runs; on an empty one, say what to do and stop the page there."""
    runs = select_runs(load_runs(store))
    if runs.empty:
        st.info("No runs selected. Launch some, or widen the selection in the sidebar.")
        st.page_link("pages/launch.py", label="Launch experiments", icon=":material/rocket_launch:")
        st.stop()
    return runs


def apply_selection(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs the current selection admits (no sidebar drawn): for fragments that refresh on their own."""
    if runs.empty:
        return runs
    mask = pd.Series(True, index=runs.index)
    for field, values in _selection_state().items():
        if values and field in runs.columns:
            mask &= runs[field].astype(str).isin(values)
    return runs[mask]


def figure_downloads(make_figure, name: str, key: str) -> None:
    """Download buttons for a figure: PNG, SVG, PDF (print style) and its data as CSV.

    `make_figure` is a figure or a zero-argument function building one; files are made when clicked, from
    the data as it is then. Put these outside auto-refreshing fragments so a click is never lost to a refresh.
    """
    build = make_figure if callable(make_figure) else (lambda: make_figure)
    cols = st.columns([1, 1, 1, 1, 6])
    chromium = find_chromium() is not None
    if chromium:
        for col, fmt in zip(cols, ("png", "svg", "pdf")):
            def make(fmt=fmt):
                try:
                    return figure_bytes(build(), fmt)
                except ExportError as exc:  # shown in the file the user gets: better than a broken download
                    return f"export failed: {exc}".encode()
            col.download_button(fmt.upper(), data=make, file_name=f"{name}.{fmt}", mime=MIME[fmt],
                                key=f"{key}_{fmt}", on_click="ignore", icon=":material/download:")
    cols[3].download_button("CSV", data=lambda: csv_bytes(build()), file_name=f"{name}.csv", mime=MIME["csv"],
                            key=f"{key}_csv", on_click="ignore", icon=":material/table:")
    if not chromium:
        cols[4].caption(INSTALL_HINT)


def capped(runs: pd.DataFrame, max_runs: int = 12):
    """For pages that draw one line per run: warn when the selection is larger than `max_runs`, and return a
    function giving the current selection's `max_runs` newest runs (for live fragments and downloads)."""
    if len(runs) > max_runs:
        st.warning(f"{len(runs)} runs selected: showing the {max_runs} newest. Narrow the selection to compare others.")
    return lambda: apply_selection(load_runs(get_store())).head(max_runs)


def any_running(runs: pd.DataFrame) -> bool:
    return not runs.empty and bool(runs["status"].isin(["running", "queued"]).any())


def live_every(runs: pd.DataFrame, seconds: float = 5.0):
    """The fragment refresh interval: `seconds` while some selected run is queued or running, else none."""
    return seconds if any_running(runs) else None


def pct(x) -> str:
    return "-" if x is None or x != x else f"{100 * x:.2f}%"
