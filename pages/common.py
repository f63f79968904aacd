"""What every dashboard page shares: the store, the run list (read once per render), the run selection (sidebar,
session and URL), long tables a page at a time, downloads.

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
from streamlit.runtime.scriptrunner import get_script_run_ctx

from lab.runs.monitor import LIST_COLUMNS, overview, page_span, selection_mask, sweeps, tagged_studies
from lab.runs.store import Store, StoreError, default_results_dir

# (run column, label) in the order the sidebar shows them
FILTERS = [("kind", "Kind"), ("depth", "Depth"), ("dataset", "Data set"), ("status", "Status"), ("tag", "Tag"),
           ("preset", "Preset"), ("shortcut", "Shortcut"), ("block", "Block"), ("span", "Span"), ("norm", "Norm"),
           ("init", "Init"), ("width", "Width"), ("seed", "Seed")]
# the sidebar's other choices, by their name in the session's selection and the URL: a search of tags and labels,
# the studies and sweeps of the runs
SEARCH, STUDY = "search", "in_study"
LIST_FIELDS = [STUDY, "sweep_id"] + [f for f, _ in FILTERS]
# a study's runs are tagged STUDY_TAG + its id (lab.studies.plan.study_tag)
STUDY_TAG = "study:"
PER_PAGE = 50  # rows a long table shows at a time


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


def _this_render():
    """An object that stays the same through one script run and is new in the next: Streamlit starts every run,
    and every fragment that reruns on its own, with a fresh table of cursors (where its elements go). None
    outside a script run (a download made when it is clicked)."""
    ctx = get_script_run_ctx(suppress_warning=True)
    return None if ctx is None else ctx.cursors


def once_per_render(name: str, store: Store, read):
    """`read()`, called once per script run and the result shared: the page and the fragments it runs inline get
    the same value; a fragment that reruns on its own (a live view) calls `read` again, and so does every call
    outside a script run."""
    render = _this_render()
    if render is None:
        return read()
    key = f"_per_render_{name}"
    held = st.session_state.get(key)
    if held is not None and held[0] is render and held[1] == store.url:
        return held[2]
    value = read()
    st.session_state[key] = (render, store.url, value)
    return value


def run_list(store: Store) -> pd.DataFrame:
    """The training runs with the columns the pages use (LIST_COLUMNS and the config fields), progress and ETA,
    newest first, dead runs reaped first: read once per render (`once_per_render`)."""
    return once_per_render("runs", store, lambda: overview(store, columns=LIST_COLUMNS))


def _encode(values) -> str:
    return values if isinstance(values, str) else ",".join(str(v) for v in values)


def _selection_state() -> dict:
    """The selection, kept in the session (survives page changes) and seeded from the URL on first load:
    {field: [values as text]} and {SEARCH: text}."""
    if "_selection" not in st.session_state:
        chosen = {f: st.query_params.get(f, "").split(",") for f in LIST_FIELDS if st.query_params.get(f)}
        if st.query_params.get(SEARCH):
            chosen[SEARCH] = st.query_params.get(SEARCH)
        st.session_state["_selection"] = chosen
    return st.session_state["_selection"]


def selection() -> dict:
    """A copy of the current selection, for what is made later (a download built when it is clicked)."""
    return {k: (list(v) if isinstance(v, list) else v) for k, v in _selection_state().items()}


def _clear_selection() -> None:
    st.session_state["_selection"] = {}
    st.session_state[f"sel_{SEARCH}"] = ""
    for field in LIST_FIELDS:
        st.session_state[f"sel_{field}"] = []


def _multiselect(field: str, label: str, options: list, chosen: dict, least: int = 2, format_func=str,
                 help: str | None = None) -> None:
    """A sidebar filter over `field` (shown when it has at least `least` options or a chosen value); the choice
    goes into `chosen`, values no run has any more dropped."""
    wanted = [o for o in options if str(o) in set(chosen.get(field, []))]
    if len(options) < least and not wanted:
        chosen.pop(field, None)
        return
    key = f"sel_{field}"
    if key not in st.session_state:  # first time on this page: restore the session's (or URL's) choice
        st.session_state[key] = wanted
    else:  # the widget's own state is the truth; drop values whose runs are gone
        st.session_state[key] = [o for o in options if str(o) in set(map(str, st.session_state[key]))]
    picked = st.multiselect(label, options, key=key, placeholder="all", format_func=format_func, help=help)
    chosen[field] = [str(p) for p in picked]


def _options(values: pd.Series) -> list:
    return sorted(values.dropna().unique().tolist(), key=lambda v: (str(type(v)), v))


def select_runs(runs: pd.DataFrame, title: str = "Run selection") -> pd.DataFrame:
    """Sidebar filters over the runs: a search of tags and labels, the study and sweep they belong to, their
    options; the choice persists across pages and in the URL (bookmark it to share)."""
    chosen = _selection_state()
    with st.sidebar:
        st.subheader(title)
        if runs.empty:
            st.caption("No runs stored yet.")
            return runs
        key = f"sel_{SEARCH}"
        if key not in st.session_state:
            st.session_state[key] = chosen.get(SEARCH, "")
        chosen[SEARCH] = st.text_input("Search", key=key, placeholder="part of a tag or label",
                                       help="Runs whose tag or label contains this text (any case)")
        _multiselect(STUDY, "Study", tagged_studies(runs, STUDY_TAG), chosen, least=1,
                     help=f"The runs a study queued (tagged {STUDY_TAG}<study>)")
        counts = sweeps(runs)
        _multiselect("sweep_id", "Sweep", list(counts), chosen,
                     format_func=lambda s: f"{s} ({counts.get(s, 0)} run{'' if counts.get(s) == 1 else 's'})")
        for field, label in FILTERS:
            if field in runs.columns:
                _multiselect(field, label, _options(runs[field]), chosen)
        mask = _mask(runs, chosen)
        active = {f: v for f, v in chosen.items() if v}
        if active:
            st.button("Clear selection", key="sel_clear", icon=":material/filter_alt_off:", on_click=_clear_selection)
        st.caption(f"{int(mask.sum())} of {len(runs)} runs selected")
    st.query_params.from_dict({f: _encode(v) for f, v in active.items()})
    return runs[mask]


def _mask(runs: pd.DataFrame, chosen: dict) -> pd.Series:
    fields = {f: v for f, v in chosen.items() if f not in (SEARCH, STUDY)}
    return selection_mask(runs, fields, search=chosen.get(SEARCH, ""), studies=chosen.get(STUDY, []),
                          study_prefix=STUDY_TAG)


def selected_runs_or_stop(store: Store) -> pd.DataFrame:
    """The sidebar selection of runs; on an empty one, say what to do and stop the page there."""
    runs = select_runs(run_list(store))
    if runs.empty:
        st.info("No runs selected. Launch some, or widen the selection in the sidebar.")
        st.page_link("pages/launch.py", label="Launch experiments", icon=":material/rocket_launch:")
        st.stop()
    return runs


def apply_selection(runs: pd.DataFrame, chosen: dict | None = None) -> pd.DataFrame:
    """The runs the current selection (or `chosen`, a `selection()`) admits, no sidebar drawn: for fragments that
    refresh on their own and for downloads."""
    if runs.empty:
        return runs
    return runs[_mask(runs, _selection_state() if chosen is None else chosen)]


def paged(rows: pd.DataFrame, key: str, per_page: int = PER_PAGE, what: str = "rows") -> pd.DataFrame:
    """`rows` a page at a time: with more than `per_page`, a page control (kept in the session under `key`) and
    which rows are shown; returns the page's rows."""
    if len(rows) <= per_page:
        return rows
    pages = page_span(len(rows), 1, per_page)[2]
    st.session_state[key] = min(max(1, int(st.session_state.get(key, 1))), pages)
    left, right = st.columns([1, 5], vertical_alignment="bottom")
    page = left.number_input(f"Page (of {pages})", min_value=1, max_value=pages, step=1, key=key)
    start, stop, _ = page_span(len(rows), page, per_page)
    right.caption(f"{what} {start + 1}-{stop} of {len(rows):,}")
    return rows.iloc[start:stop]


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


def capped(store: Store, runs: pd.DataFrame, max_runs: int = 12):
    """For pages that draw one line per run: warn when the selection is larger than `max_runs`, and return a
    function giving the selection's `max_runs` newest runs (for live fragments and downloads)."""
    if len(runs) > max_runs:
        st.warning(f"{len(runs)} runs selected: showing the {max_runs} newest. Narrow the selection to compare others.")
    chosen = selection()
    return lambda: apply_selection(run_list(store), chosen).head(max_runs)


def any_running(runs: pd.DataFrame) -> bool:
    return not runs.empty and bool(runs["status"].isin(["running", "queued"]).any())


def live_every(runs: pd.DataFrame, seconds: float = 2.0):
    """The fragment refresh interval: `seconds` while some selected run is queued or running, else none. The
    default 2 s and a render of at most 0.5 s show a logged window within 3 s of its writing."""
    return seconds if any_running(runs) else None


def pct(x) -> str:
    return "-" if x is None or x != x else f"{100 * x:.2f}%"
