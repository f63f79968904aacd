"""Training curves (the paper's Fig. 6): plain and residual side by side, live while runs train."""
import streamlit as st

from lab import run_views
from lab.run_figures import BANDS, X_AXES
from pages.common import (apply_selection, figure_downloads, get_store, live_every, run_list, selected_runs_or_stop,
                          selection)

store = get_store()
st.title("Training curves")
st.caption("Training error thin and dashed, test error bold; one colour per depth. Seeds of the same "
           "configuration are averaged, with a band. The paper's Fig. 6: deeper plain nets train worse.")
runs = selected_runs_or_stop(store)
chosen = selection()  # for a download made when it is clicked

c1, c2, c3, c4 = st.columns([2, 3, 1, 2])
x = c1.selectbox("x axis", list(X_AXES), key="curves_x")
smoothing = c2.slider("Smoothing of training error (debiased EMA weight)", 0.0, 0.99, 0.6, 0.01, key="curves_smoothing")
log_y = c3.toggle("log y", key="curves_logy")
band = c4.selectbox("Seed band", list(BANDS), key="curves_band")
window = None
top = int(runs["total_iterations"].fillna(0).max() or 0) if x == "iterations" else 0
if top > 1:
    span = st.session_state.get("curves_window", (0, top))
    st.session_state["curves_window"] = (min(max(0, span[0]), top), min(max(0, span[1]), top))  # a new selection
    lo, hi = st.slider("Iterations (a range narrower than the runs reads every logged point in it; the whole range "
                       "draws each run's stored summary)", 0, top, key="curves_window", step=max(1, top // 1000))
    window = (lo, hi) if (lo, hi) != (0, top) and hi > lo else None


def build(current=None):
    """The figure of `current` (default: the selected runs as they are now)."""
    current = apply_selection(run_list(store), chosen) if current is None else current
    return run_views.curves(store, current, x=x, smoothing=smoothing, log_y=log_y, band=band, window=window)


@st.fragment(run_every=live_every(runs))
def chart() -> None:
    current = apply_selection(run_list(store))  # the page's list; read afresh when the chart refreshes on its own
    st.plotly_chart(build(current), width="stretch", key="curves_chart")
    running = int((current["status"] == "running").sum())
    if running:
        st.caption(f"{running} run(s) training: the chart updates every 2 seconds.")


chart()
figure_downloads(build, "training-curves", "curves_dl")
