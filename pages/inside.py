"""Inside trained nets: stored lesion, loss-landscape and gradient-shattering results of the selected runs."""
import streamlit as st

from lab.analysis import result_names
from lab.analysis.checkpoint import checkpoint_path
from lab.analysis.views import FIGURES, build, command
from pages.common import figure_downloads, get_store, selected_runs_or_stop

MAX_RUNS = 8
SECTIONS = {
    "Lesions": ("Test error with units deleted at test time (Veit et al.): a residual net barely notices one "
                "missing unit, a plain net breaks.", ["lesion-units", "lesion-deleted", "lesion-reordered"]),
    "Loss landscape": ("Loss along filter-normalised random directions around the weights (Li et al.), on a fixed "
                       "set of training images, eval mode, BN statistics as trained.", ["landscape-1d", "landscape-2d"]),
    "Shattered gradients": ("Correlation of input gradients at nearby inputs (Balduzzi et al.): it decays fast with "
                            "depth in plain nets, slowly in residual ones.", ["shatter-distance", "shatter-depth"]),
}

store = get_store()
st.title("Inside trained nets")
st.caption("Three analyses of a run's stored weights that explain why residual nets train and plain nets degrade. "
           "Each runs from a shell (the commands are below for results not computed yet) and is kept with its run.")
runs = selected_runs_or_stop(store)
stored = {rid: result_names(store, rid) for rid in runs["id"]}
usable = runs[[checkpoint_path(store, rid).exists() or bool(stored[rid]) for rid in runs["id"]]]
if usable.empty:
    st.info("None of the selected runs has a checkpoint yet: analyses need trained weights (a run writes its "
            "first checkpoint after `checkpoint_every` iterations).")
    st.stop()
labels = {r.id: f"{r.label} seed {r.seed} ({r.id})" for r in usable.itertuples()}
default = [rid for rid in usable["id"] if stored[rid]][:MAX_RUNS] or list(usable["id"][:MAX_RUNS])
picked = st.multiselect("Runs", list(labels), default=default, format_func=labels.get, key="inside_runs",
                        max_selections=MAX_RUNS)
chosen = usable[usable["id"].isin(picked)]

for tab, (title, (about, names)) in zip(st.tabs(list(SECTIONS)), SECTIONS.items()):
    with tab:
        st.caption(about)
        for name in names:
            st.plotly_chart(build(name, store, chosen), width="stretch", key=f"inside_{name}")
            figure_downloads(lambda name=name: build(name, store, chosen), name, f"inside_{name}_dl")
        wanted = dict.fromkeys(r for n in names for r in FIGURES[n][2])
        missing = [(rid, r) for rid in chosen["id"] for r in wanted if r not in stored[rid]]
        if missing:
            with st.expander(f"{len(missing)} result(s) not computed yet: commands"):
                st.code("\n".join(command(r, rid, store.root) for rid, r in missing), language="bash")
