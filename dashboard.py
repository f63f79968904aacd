"""Degradation Lab dashboard: `streamlit run dashboard.py` (options: `-- --results DIR`)."""
import streamlit as st

from lab.dashboard_address import address_problem, is_loopback, remote_allowed, remote_warning
from lab.export import warm_up_in_background

st.set_page_config(page_title="Degradation Lab", page_icon=":material/stacked_line_chart:", layout="wide")
# no authentication: beyond loopback only when the server was started with explicit permission (--allow-remote)
_address = st.get_option("server.address")
_problem = address_problem(_address, remote_allowed())
if _problem:
    st.error(_problem)
    st.stop()
if not is_loopback(_address):
    st.warning(remote_warning(_address), icon=":material/public:")
st.cache_resource(show_spinner=False)(warm_up_in_background)()  # once per server: first figure export is quick

pages = {
    "Experiments": [
        st.Page("pages/launch.py", title="Launch", icon=":material/rocket_launch:", default=True),
        st.Page("pages/runs.py", title="Runs", icon=":material/list_alt:"),
    ],
    "Analysis": [
        st.Page("pages/studies.py", title="Studies", icon=":material/science:"),
        st.Page("pages/curves.py", title="Training curves", icon=":material/show_chart:"),
        st.Page("pages/depth.py", title="Error vs depth", icon=":material/stacked_line_chart:"),
        st.Page("pages/responses.py", title="Responses", icon=":material/equalizer:"),
        st.Page("pages/gradients.py", title="Gradients", icon=":material/gradient:"),
        st.Page("pages/inside.py", title="Inside trained nets", icon=":material/biotech:"),
        st.Page("pages/report.py", title="Report", icon=":material/ios_share:"),
    ],
}
st.session_state["_via_dashboard"] = True  # pages.common.through_dashboard: this page runs through here
st.navigation(pages).run()
