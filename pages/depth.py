"""Error vs depth (the degradation plot) and a table in the shape of the paper's Table 6."""
import streamlit as st

from lab import run_views
from lab.export import table_csv
from lab.run_figures import depth_table
from lab.reference import CIFAR10_TEST_ERROR
from pages.common import (apply_selection, figure_downloads, get_store, live_every, run_list, selected_runs_or_stop,
                          selection)

store = get_store()
st.title("Error vs depth")
st.caption("Final training and test error of finished runs against depth, mean ± sd over seeds. Plain nets get "
           "worse with depth (degradation); residual nets get better.")
runs = selected_runs_or_stop(store)
chosen = selection()  # for a download made when it is clicked
reference = st.toggle("Overlay published CIFAR-10 numbers (paper and reproductions)", key="depth_reference")


@st.fragment(run_every=live_every(runs, 10))
def summary() -> None:
    current = apply_selection(run_list(store))  # the page's list; read afresh when it refreshes on its own
    st.plotly_chart(run_views.depth(store, current, reference=reference), width="stretch", key="depth_chart")
    done = current[current["status"] == "done"]
    st.subheader("Table (the shape of the paper's Table 6)")
    if done.empty:
        st.caption("Appears when runs finish.")
        return
    table = depth_table(done)
    # the paper published CIFAR-10 ResNets only: say so instead of showing an empty cell
    shown = table.assign(paper_test_error=table["paper_test_error"].map(
        lambda v: "not published" if v is None or v != v else f"{v:.2f}"))
    st.dataframe(shown, hide_index=True, width="stretch", column_config={
        "params": st.column_config.NumberColumn("# params", format="%d"),
        "train_error_mean": st.column_config.NumberColumn("train err % (mean)", format="%.2f"),
        "train_error_sd": st.column_config.NumberColumn("± sd", format="%.2f"),
        "test_error_mean": st.column_config.NumberColumn("test err % (mean)", format="%.2f"),
        "test_error_sd": st.column_config.NumberColumn("± sd", format="%.2f"),
        "paper_test_error": st.column_config.TextColumn("paper (CIFAR-10)"),
    })
    st.download_button("Table as CSV", table_csv(table), "depth-table.csv", "text/csv", on_click="ignore",
                       icon=":material/table:")


summary()
figure_downloads(lambda: run_views.depth(store, apply_selection(run_list(store), chosen), reference=reference),
                 "error-vs-depth", "depth_dl")
if reference:
    with st.expander("Sources of the published numbers"):
        st.dataframe(CIFAR10_TEST_ERROR, hide_index=True, width="stretch")
