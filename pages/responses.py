"""Layer responses (the paper's Fig. 7) and how much each residual block changes its input."""
import streamlit as st

from lab import views
from pages.common import figure_downloads, get_store, load_runs, select_runs

store = get_store()
st.title("Layer responses")
st.caption("Std of each 3x3 layer's output after BN, before the ReLU or the addition, measured in eval mode on a "
           "fixed batch of held-out images at each evaluation. The paper's Fig. 7: residual responses are smaller, "
           "and smaller the deeper the ResNet.")
runs = select_runs(load_runs(store))
if runs.empty:
    st.info("No runs selected.")
    st.stop()
if len(runs) > 12:
    st.warning(f"{len(runs)} runs selected: showing the 12 newest. Narrow the selection to compare others.")
    runs = runs.head(12)
at = st.slider("When in training (fraction of each run's progress so far)", 0.0, 1.0, 1.0, 0.05, key="resp_at")

fig = views.responses(store, runs, at=at)
st.plotly_chart(fig, width="stretch", key="resp_profile")
figure_downloads(fig, "layer-responses", "resp_dl")

st.subheader("Residual ratio ‖F(x)‖ / ‖x‖ per block")
fig = views.residual_ratios(store, runs, at=at)
st.plotly_chart(fig, width="stretch", key="resp_ratio")
figure_downloads(fig, "residual-ratio", "ratio_dl")

st.subheader("Over training")
labels = {r.id: f"{r.label} seed {r.seed} ({r.id})" for r in runs.itertuples()}
run_id = st.selectbox("Run", list(labels), format_func=labels.get, key="resp_run")
run = runs[runs["id"] == run_id].iloc[0]
metric = "response_std"
if run["kind"] == "residual":
    metric = st.radio("Metric", ["response_std", "residual_ratio"], horizontal=True, key="resp_metric",
                      format_func=lambda m: "response std" if m == "response_std" else "‖F(x)‖ / ‖x‖")
fig = views.response_evolution(store, run, metric)
st.plotly_chart(fig, width="stretch", key="resp_evolution")
figure_downloads(fig, "response-evolution", "evo_dl")
