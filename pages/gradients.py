"""Gradients: is degradation vanishing gradients? Per-layer gradient norms of plain and residual nets."""
import streamlit as st

from lab import views
from pages.common import figure_downloads, get_store, load_runs, select_runs

store = get_store()
st.title("Gradient norms")
st.caption("L2 norm of the gradient of every conv and linear weight, averaged over each logging window. With BN "
           "the plain net's gradients do not vanish (the paper's point); launch runs with normalisation 'none' "
           "to see them vanish.")
runs = select_runs(load_runs(store))
if runs.empty:
    st.info("No runs selected.")
    st.stop()
if len(runs) > 12:
    st.warning(f"{len(runs)} runs selected: showing the 12 newest. Narrow the selection to compare others.")
    runs = runs.head(12)

at = st.slider("When in training (fraction of each run's progress so far)", 0.0, 1.0, 1.0, 0.05, key="grad_at")
fig = views.gradients(store, runs, at=at)
st.plotly_chart(fig, width="stretch", key="grad_profile")
figure_downloads(fig, "gradient-norms", "grad_dl")

st.subheader("First-layer / last-layer ratio over training")
fig = views.gradient_ratio(store, runs)
st.plotly_chart(fig, width="stretch", key="grad_ratio")
figure_downloads(fig, "gradient-ratio", "gratio_dl")

st.subheader("Heatmap: layer x iteration")
labels = {r.id: f"{r.label} seed {r.seed} ({r.id})" for r in runs.itertuples()}
run_id = st.selectbox("Run", list(labels), format_func=labels.get, key="grad_run")
fig = views.gradient_heatmap(store, runs[runs["id"] == run_id].iloc[0])
st.plotly_chart(fig, width="stretch", key="grad_heatmap")
figure_downloads(fig, "gradient-heatmap", "heat_dl")
