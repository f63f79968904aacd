"""Gradients: is degradation vanishing gradients? Per-layer gradient norms of plain and residual nets."""
import streamlit as st

from lab import run_views
from pages.common import capped, figure_downloads, get_store, live_every, selected_runs_or_stop

MAX_RUNS = 12

store = get_store()
st.title("Gradient norms")
st.caption("L2 norm of the gradient of every conv and linear weight, sampled every grad_every iterations and "
           "averaged over the samples in each logging window (one sample when grad_every equals log_every). With BN "
           "the plain net's gradients do not vanish (the paper's point); launch runs with normalisation 'none' "
           "to see them vanish.")
runs = selected_runs_or_stop(store)
selected = capped(store, runs, MAX_RUNS)
at = st.slider("When in training (fraction of each run's progress so far)", 0.0, 1.0, 1.0, 0.05, key="grad_at")
every = live_every(runs, 10)


@st.fragment(run_every=every)
def profile() -> None:
    st.plotly_chart(run_views.gradients(store, selected(), at=at), width="stretch", key="grad_profile")


profile()
figure_downloads(lambda: run_views.gradients(store, selected(), at=at), "gradient-norms", "grad_dl")

st.subheader("First-layer / last-layer ratio over training")


@st.fragment(run_every=every)
def ratio() -> None:
    st.plotly_chart(run_views.gradient_ratio(store, selected()), width="stretch", key="grad_ratio")


ratio()
figure_downloads(lambda: run_views.gradient_ratio(store, selected()), "gradient-ratio", "gratio_dl")

st.subheader("Heatmap: layer x iteration")
shown = runs.head(MAX_RUNS)
labels = {r.id: f"{r.label} seed {r.seed} ({r.id})" for r in shown.itertuples()}
run_id = st.selectbox("Run", list(labels), format_func=labels.get, key="grad_run")
run = shown[shown["id"] == run_id].iloc[0]


@st.fragment(run_every=every)
def heatmap() -> None:
    st.plotly_chart(run_views.gradient_heatmap(store, run), width="stretch", key="grad_heatmap")


heatmap()
figure_downloads(lambda: run_views.gradient_heatmap(store, run), "gradient-heatmap", "heat_dl")
