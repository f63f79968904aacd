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


def build(current=None):
    """The figure of `current` (default: the selected runs as they are now)."""
    current = apply_selection(run_list(store), chosen) if current is None else current
    return run_views.curves(store, current, x=x, smoothing=smoothing, log_y=log_y, band=band)


@st.fragment(run_every=live_every(runs))
def chart() -> None:
    current = apply_selection(run_list(store))  # the page's list; read afresh when the chart refreshes on its own
    st.plotly_chart(build(current), width="stretch", key="curves_chart")
    running = int((current["status"] == "running").sum())
    if running:
        st.caption(f"{running} run(s) training: the chart updates every few seconds.")


chart()
figure_downloads(build, "training-curves", "curves_dl")
