"""Runs: a live table of every run and of the analysis jobs, with cancel / resume / delete and the log tail."""
import dataclasses
import time

import streamlit as st

from lab.analysis import AnalysisError
from lab.analysis.queue import analysis_jobs, describe
from lab.checkpoint import checkpoint_problem
from lab.config import RunConfig
from lab.models import ConfigError, valid_depths
from lab.runs.monitor import format_duration, log_tail
from lab.runs.store import StoreError
from lab.runs.worker import ensure_worker
from pages.common import apply_selection, get_store, once_per_render, paged, pct, run_list, select_runs

store = get_store()
st.title("Runs")
select_runs(run_list(store))


def jobs_list():
    return once_per_render("jobs", store, lambda: analysis_jobs(store))


@st.fragment(run_every=2)
def live_table() -> None:
    runs = run_list(store)  # the page's list; read afresh when the table refreshes on its own
    if runs.empty:
        st.info("No runs yet. Queue some on the Launch page, or from a shell: "
                "`python -m lab sweep --preset quick`.")
        st.page_link("pages/launch.py", label="Launch experiments", icon=":material/rocket_launch:")
        return
    runs = apply_selection(runs)
    counts = runs["status"].value_counts().to_dict()
    cols = st.columns(7)
    for col, status in zip(cols, ("queued", "running", "done", "failed", "diverged", "cancelled", "interrupted")):
        col.metric(status, counts.get(status, 0))
    workers = store.live_workers()
    if workers:
        w = workers[0]
        st.caption(f"Worker pid {w['pid']} on {w['host']}: {w['slots']} slot(s) on {w['device']}, "
                   f"last seen {max(0.0, w['age_s']):.0f} s ago. Updated {time.strftime('%H:%M:%S')}.")
    elif counts.get("queued"):
        st.warning("Runs are queued but no worker is running.")
        if st.button("Start the background worker", icon=":material/play_arrow:"):
            ensure_worker(store)
            st.rerun(scope="fragment")
    shown = paged(runs, "runs_page", what="runs")  # newest first
    view = shown.assign(
        eta=shown["eta_s"].map(format_duration),
        test=shown["final_test_error"].map(pct),
        train=shown["final_train_error"].map(pct),
        it=shown["iteration"].astype(int).astype(str) + " / " + shown["total_iterations"].astype(int).astype(str),
        # text, so a run that has not reported them yet (queued) shows "-" rather than "None"
        images_per_s=shown["images_per_s"].map(lambda v: "-" if v is None or v != v else f"{v:.0f}"),
        device=shown["device"].map(lambda v: v if isinstance(v, str) and v else "-"),
    )
    st.dataframe(
        view[["id", "status", "label", "dataset", "preset", "seed", "tag", "progress", "it", "images_per_s", "eta",
              "device", "train", "test", "message"]],
        hide_index=True, width="stretch",
        column_config={
            "id": st.column_config.TextColumn("run"),
            "label": "model",
            "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent"),
            "it": "iterations",
            "images_per_s": st.column_config.TextColumn("images/s"),
            "eta": "ETA",
            "train": "final train err",
            "test": "final test err",
            "message": st.column_config.TextColumn("note", width="large"),
        },
    )


live_table()


@st.fragment(run_every=2)
def jobs_table() -> None:
    jobs = jobs_list()
    if jobs.empty:
        return
    st.subheader("Analysis jobs")
    counts = jobs["status"].value_counts().to_dict()
    st.caption("Lesions, loss landscapes and gradient shattering of stored runs, run by the same worker as "
               "training; their results appear on Inside trained nets. "
               + ", ".join(f"{n} {s}" for s, n in counts.items()) + ".")
    if counts.get("queued") and not store.live_workers():
        st.warning("Analysis jobs are queued but no worker is running.")
        if st.button("Start the background worker", icon=":material/play_arrow:", key="jobs_worker"):
            ensure_worker(store)
            st.rerun(scope="fragment")
    view = jobs.assign(
        what=[describe(j) for j in jobs.to_dict("records")],
        it=jobs["iteration"].astype(int).astype(str) + " / " + jobs["total_iterations"].astype(int).astype(str),
        eta=jobs["eta_s"].map(format_duration),
        device=jobs["device"].map(lambda v: v if isinstance(v, str) and v else "-"),
        message=jobs["message"].map(lambda v: v if isinstance(v, str) else ""),
    )
    st.dataframe(
        view[["id", "status", "what", "progress", "it", "eta", "device", "message"]], hide_index=True, width="stretch",
        column_config={
            "id": st.column_config.TextColumn("job"),
            "what": st.column_config.TextColumn("analysis", width="large"),
            "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent"),
            "it": "steps",
            "eta": "ETA",
            "message": st.column_config.TextColumn("note", width="large"),
        },
    )


jobs_table()

st.subheader("Act on a run or job")
runs = apply_selection(run_list(store))  # the selected runs
jobs = jobs_list()
if runs.empty and jobs.empty:
    st.stop()
labels = dict(zip(runs["id"], runs["id"] + " - " + runs["label"].astype(str) + " seed " + runs["seed"].astype(str)
                  + " [" + runs["status"] + "]"))
labels |= {j["id"]: f"{j['id']} - {describe(j)} [{j['status']}]" for j in jobs.to_dict("records")}
if st.session_state.get("runs_pick") not in labels:  # its run left the selection (or was deleted)
    st.session_state.pop("runs_pick", None)
run_id = st.selectbox("Run or job", list(labels), format_func=labels.get, key="runs_pick",
                      help="The runs selected in the sidebar, and the analysis jobs")
is_job = run_id in set(jobs["id"])
run = (jobs if is_job else runs).set_index("id").loc[run_id]
c1, c2, c3, c4 = st.columns([1, 1, 1, 3])


def act(what: str) -> None:
    try:
        if what == "cancel":
            st.session_state["runs_msg"] = ("success", f"{run_id}: {store.request_cancel(run_id)}")
        elif what == "resume" and is_job:  # the same row runs again from the start (as `lab resume JOB`)
            store.requeue_job(run_id)
            ensure_worker(store)
            st.session_state["runs_msg"] = ("success", f"{run_id}: queued again")
        elif what == "resume":
            scratch = st.session_state.get("runs_scratch", False)
            archive = store.requeue(run_id, from_scratch=scratch, checkpoint_problem=checkpoint_problem)
            ensure_worker(store)
            done = ("queued to train again from iteration 0" + (f"; its earlier metrics are in run {archive}"
                                                                   if archive else "")) if scratch else \
                "queued to resume from its last checkpoint"
            st.session_state["runs_msg"] = ("success", f"{run_id}: {done}")
        elif what == "delete":
            store.delete_run(run_id)
            st.session_state["runs_msg"] = ("success", f"{run_id}: deleted with its files")
    except (StoreError, AnalysisError) as exc:
        st.session_state["runs_msg"] = ("error", str(exc))


c1.button("Cancel", on_click=act, args=("cancel",), disabled=run["status"] not in ("queued", "running"),
          icon=":material/stop:")
c2.button("Queue again" if is_job else "Resume", on_click=act, args=("resume",),
          disabled=run["status"] not in ("interrupted", "cancelled", "failed"), icon=":material/replay:")
if not is_job:
    c4.checkbox("Resume from scratch (its metrics so far move to an archived run)", key="runs_scratch",
                help="For a run whose checkpoint is missing or unusable")
confirm = c4.checkbox(f"I really want to delete this {'job (its result stays with its run)' if is_job else 'run'} "
                      f"and its files", key="runs_confirm")
c3.button("Delete", on_click=act, args=("delete",), disabled=not confirm or run["status"] == "running",
          icon=":material/delete:")
# Deepen a trained run (Net2DeeperNet): a new run of the same net at a larger depth that starts from this run's
# checkpoint, its new units computing the identity, and trains on a fresh schedule of its own
if str(run.get("job") or "train") == "train" and run["status"] in ("done", "interrupted"):
    with st.expander("Deepen this run (Net2DeeperNet)"):
        parent_cfg = RunConfig.from_dict(store.get_run(run_id)["config"])
        deeper = [d for d in valid_depths(parent_cfg.block, parent_cfg.span, up_to=2000) if d > parent_cfg.depth][:20]
        st.caption(f"Units that compute the identity are inserted into {run_id}'s trained net; the new run trains "
                   f"{parent_cfg.iterations} iterations on a fresh schedule and records its parent, so Training "
                   "curves can draw it joined to this run (x: total iterations).")
        depth = st.selectbox("Depth", deeper, key="runs_deepen_depth")
        if st.button("Queue the deepened run", key="runs_deepen", icon=":material/add_circle:"):
            try:
                (child,) = store.create_runs([dataclasses.replace(parent_cfg, depth=int(depth), deepen_from=run_id)])
                ensure_worker(store)
                st.session_state["runs_msg"] = ("success", f"{run_id}: queued {child}, deepened to {depth} layers")
            except (ConfigError, StoreError) as exc:
                st.session_state["runs_msg"] = ("error", str(exc))
if "runs_msg" in st.session_state:
    kind, text = st.session_state.pop("runs_msg")
    (st.success if kind == "success" else st.error)(text)


@st.fragment(run_every=3)
def log_view() -> None:
    tail = log_tail(store, run_id, 40)
    st.caption(f"Log of {run_id} (last 40 lines)")
    st.code(tail or "(no output yet)", language=None)


log_view()
with st.expander("Configuration and environment"):
    try:
        full = store.get_run(run_id)
        st.json({"options" if is_job else "config": full["config"], "env": full.get("env") or {}}, expanded=False)
    except StoreError as exc:
        st.error(str(exc))
