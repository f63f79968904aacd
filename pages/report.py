"""Report: bundle figures (vector and PNG), their data and the runs' configurations into one zip."""
import time

import streamlit as st

from lab import run_views
from lab.export import find_chromium, INSTALL_HINT, report_zip
from pages.common import get_store, selected_runs_or_stop

store = get_store()
st.title("Report")
st.caption("One zip with the selected figures as SVG, PDF and PNG, each figure's data as CSV, a table of the runs' "
           "configurations, and a self-contained HTML page that shows it all. The same from a shell: "
           "`python -m lab export --out report.zip`.")
runs = selected_runs_or_stop(store)
names = st.multiselect("Figures", list(run_views.FIGURES), default=["curves", "depth", "responses", "gradients"],
                       format_func=lambda n: run_views.FIGURES[n][1], key="report_figures")
formats = st.multiselect("Image formats", ["svg", "pdf", "png"], default=["svg", "pdf", "png"], key="report_formats")
size = st.radio("Size", ["column", "wide", "slide"], horizontal=True, key="report_size",
                format_func={"column": "paper column", "wide": "two columns", "slide": "slide (16:9)"}.get)
reference = st.toggle("Published numbers on the depth figure", key="report_reference")
if find_chromium() is None:
    st.warning(INSTALL_HINT)


def build() -> bytes:
    figs = {n: run_views.build(n, store, runs, reference=reference) for n in names}
    data, notes = report_zip(figs, runs, formats=formats, size=size)
    return data


st.download_button("Build and download the report", data=build, file_name=f"degradation-lab-{time.strftime('%Y%m%d-%H%M')}.zip",
                   mime="application/zip", type="primary", disabled=not names, on_click="ignore",
                   icon=":material/folder_zip:")
st.caption(f"{len(runs)} run(s) in the selection.")
