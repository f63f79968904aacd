"""Studies: open questions about degradation, each with the runs that answer it and a verdict computed from them."""
import streamlit as st

from lab.runs.monitor import format_duration
from lab.runs.worker import ensure_worker
from lab.studies import all_studies, get
from lab.studies.budgets import BUDGETS
from lab.studies.plan import queue_missing
from lab.studies.report import evaluate, export_zip, overview_rows, published
from pages.common import get_store, once_per_render, run_list

OUTCOME_ICONS = {"effect": ":material/check_circle:", "no clear difference": ":material/remove_circle:",
                 "not enough seeds": ":material/hourglass_empty:", "not available": ":material/block:"}

store = get_store()
st.title("Studies")
st.caption("Each study is a question readers of the paper ask, the runs that answer it, and a verdict computed "
           "from those runs: means over seeds, differences with 95% intervals. Runs already stored with the same "
           "configuration are reused, never trained twice. The same from a shell: `python -m lab study list`.")

studies = {s.id: s for s in all_studies()}
if "studies_pick" not in st.session_state:  # first visit: from the URL (?study=...&budget=...) or the defaults
    st.session_state["studies_pick"] = st.query_params.get("study") if st.query_params.get("study") in studies \
        else next(iter(studies))
    st.session_state["studies_budget"] = st.query_params.get("budget") if st.query_params.get("budget") in BUDGETS \
        else "cpu"

left, right = st.columns([3, 1])
budget = left.radio("Budget", list(BUDGETS), key="studies_budget", horizontal=True,
                    format_func=lambda b: f"{b}: {BUDGETS[b].about}")
seeds = right.number_input("Seeds per arm", min_value=1, max_value=20, value=BUDGETS[budget].seeds,
                           key=f"studies_seeds_{budget}", help="A verdict needs at least 2 finished seeds per arm")

runs = run_list(store)
rows = overview_rows(store, budget, int(seeds), runs=runs)
st.dataframe(
    [dict(study=r["title"], id=r["id"], state=r["state"], finished=f"{r['finished']} / {r['planned']}",
          to_run=r["to_run"], time=format_duration(r["estimate_s"])) for r in rows],
    hide_index=True, width="stretch",
    column_config={"to_run": "runs to queue", "time": st.column_config.TextColumn(
        "estimated time", help="of the runs still to queue, one at a time, on this machine")},
)
study_id = st.selectbox("Study", list(studies), key="studies_pick",
                        format_func=lambda i: f"{studies[i].title} ({i})")
st.query_params["study"] = study_id
st.query_params["budget"] = budget
study = get(study_id)

st.header(study.title)
st.markdown(f"**Question.** {study.question}")
st.markdown(f"**What the literature says.** {study.literature}")
numbers = published(study)
if numbers:
    with st.expander("Published numbers and their sources"):
        st.dataframe([dict(what=n["what"], value=n["text"], unit=n["unit"], source=n["source"]) for n in numbers],
                     hide_index=True, width="stretch")


def evaluated():
    """The study against the runs of this render, analysed: once per render (the live view below shares it, and
    evaluates afresh when it refreshes on its own)."""
    return once_per_render("study", store, lambda: evaluate(study, store, budget, int(seeds), runs=run_list(store)))


result = evaluated()
plan, status = result.plan, result.status
st.subheader("Runs")
st.dataframe(
    [dict(arm=pa.name, runs=pa.arm.describe(), options=", ".join(f"{k}={v}" for k, v in pa.arm.options.items()),
          seeds=len(pa.configs) or "-", available="yes" if pa.problem is None else f"not yet: {pa.problem}")
     for pa in plan.arms],
    hide_index=True, width="stretch",
)
to_run = status.missing + status.resumable
cfg = plan.configs()[0] if plan.configs() else None
if cfg is not None:
    st.caption(f"{status.planned} run(s) at this budget: {cfg.dataset}, {cfg.iterations:,} iterations of "
               f"{cfg.batch_size}. Estimated time here for all of them: {format_duration(status.total_s)}; for the "
               f"{to_run} still to run: {format_duration(status.to_queue_s)} ({status.basis}).")
for arm, why in status.unavailable.items():
    st.warning(f"{arm} cannot run in this build yet: {why}")
if status.queued and not store.live_workers():
    st.warning("Some of this study's runs are queued but no worker is running.")
    if st.button("Start the background worker", icon=":material/play_arrow:", key="studies_worker"):
        ensure_worker(store)
        st.rerun()


def queue() -> None:
    done = queue_missing(store, plan)
    try:
        pid = ensure_worker(store)
    except OSError as exc:
        st.session_state["studies_msg"] = ("error", f"The runs are queued, but the background worker could not "
                                                    f"start: {exc}. Start it by hand: python -m lab worker")
        return
    st.session_state["studies_msg"] = ("success", f"Queued {len(done.created)} run(s), resumed {len(done.resumed)}; "
                                                  f"reused {len(done.reused)} stored"
                                       + (" and started the background worker." if pid else "."))


st.button(f"Queue {to_run} missing run(s)" if to_run else "Every run is stored or queued", type="primary",
          disabled=not to_run, on_click=queue, icon=":material/play_arrow:", key="studies_queue")
if "studies_msg" in st.session_state:
    kind, text = st.session_state.pop("studies_msg")
    (st.success if kind == "success" else st.error)(text)


@st.fragment(run_every=3 if status.active else None)
def live() -> None:
    current = evaluated()
    s = current.status
    cols = st.columns(5)
    for col, (label, value) in zip(cols, (("done", s.done + s.diverged), ("running", s.running), ("queued", s.queued),
                                         ("to run", s.missing + s.resumable), ("ETA", format_duration(s.eta_s)))):
        col.metric(label, value)
    st.subheader("Verdict")
    if current.verdict is None:
        st.info("Not enough finished runs yet: a verdict needs at least 2 finished seeds in each arm it compares.")
    for f in current.analysis.findings:
        st.markdown(f"{OUTCOME_ICONS.get(f.outcome, '')} *{f.question}*  \n{f.text}")
    for note in current.analysis.notes:
        st.caption(note)
    for name, table in current.analysis.tables.items():
        with st.expander(f"Table: {name}"):
            st.dataframe(table, hide_index=True, width="stretch")
    for name, (title, fig) in current.figures().items():
        st.markdown(f"**{title}**")
        st.plotly_chart(fig, width="stretch", key=f"study_{study.id}_{name}")
    if status.active and not s.active:  # the last run just finished: redraw the page once, without the timer
        st.rerun()


live()
st.download_button("Download the study: figures, data, numbers, summary (zip)",
                   data=lambda: export_zip(evaluated()),
                   file_name=f"study-{study.id}-{budget}.zip", mime="application/zip", on_click="ignore",
                   icon=":material/folder_zip:", key="studies_download")
