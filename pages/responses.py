"""Layer responses (the paper's Fig. 7) and how much each residual block changes its input."""
import streamlit as st

from lab import run_views
from pages.common import capped, figure_downloads, get_store, live_every, selected_runs_or_stop

MAX_RUNS = 12

store = get_store()
st.title("Layer responses")
st.caption("Std of each 3x3 layer's output after BN, before the ReLU or the addition, measured in eval mode on a "
           "fixed batch of held-out images at each evaluation. The paper's Fig. 7: residual responses are smaller, "
           "and smaller the deeper the ResNet.")
runs = selected_runs_or_stop(store)
selected = capped(store, runs, MAX_RUNS)
at = st.slider("When in training (fraction of each run's progress so far)", 0.0, 1.0, 1.0, 0.05, key="resp_at")
every = live_every(runs, 10)


@st.fragment(run_every=every)
def profiles() -> None:
    current = selected()
    st.plotly_chart(run_views.responses(store, current, at=at), width="stretch", key="resp_profile")


profiles()
figure_downloads(lambda: run_views.responses(store, selected(), at=at), "layer-responses", "resp_dl")

st.subheader("Residual ratio ‖F(x)‖ / ‖x‖ per block")


@st.fragment(run_every=every)
def ratios() -> None:
    st.plotly_chart(run_views.residual_ratios(store, selected(), at=at), width="stretch", key="resp_ratio")


ratios()
figure_downloads(lambda: run_views.residual_ratios(store, selected(), at=at), "residual-ratio", "ratio_dl")

st.subheader("Over training")
shown = runs.head(MAX_RUNS)
labels = {r.id: f"{r.label} seed {r.seed} ({r.id})" for r in shown.itertuples()}
run_id = st.selectbox("Run", list(labels), format_func=labels.get, key="resp_run")
run = shown[shown["id"] == run_id].iloc[0]
metric = "response_std"
if run["kind"] == "residual":
    metric = st.radio("Metric", ["response_std", "residual_ratio"], horizontal=True, key="resp_metric",
                      format_func=lambda m: "response std" if m == "response_std" else "‖F(x)‖ / ‖x‖")


@st.fragment(run_every=every)
def evolution() -> None:
    st.plotly_chart(run_views.response_evolution(store, run, metric), width="stretch", key="resp_evolution")


evolution()
figure_downloads(lambda: run_views.response_evolution(store, run, metric), "response-evolution", "evo_dl")
