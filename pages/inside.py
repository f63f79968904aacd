"""Inside trained nets: stored lesion, loss-landscape and gradient-shattering results of the selected runs, and a
button per missing result that queues it as a background job."""
import streamlit as st

from lab.analysis import AnalysisError, result_names
from lab.analysis.restored import checkpoint_path
from lab.analysis.queue import in_flight, latest_jobs, queue_result
from lab.analysis.result_views import FIGURES, build, command
from lab.runs.store import StoreError
from lab.runs.worker import ensure_worker
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
           "Each result not computed yet has a button that queues it as a background job for the worker (the Runs "
           "page shows its progress and can cancel it), and a command to run it from a shell; results are kept "
           "with their run.")
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


def queue(rid: str, result: str) -> None:
    try:
        job = queue_result(store, rid, result)
        pid = ensure_worker(store)
    except (AnalysisError, StoreError) as exc:
        st.session_state["inside_msg"] = ("error", str(exc))
        return
    worker = f"; started a background worker (pid {pid})" if pid else ""
    st.session_state["inside_msg"] = ("success", f"Queued {result} of {labels[rid]} as job {job}{worker}.")


flying = in_flight(store, chosen["id"])


@st.fragment(run_every=3 if flying else None)
def missing_jobs(title: str, missing: list) -> None:
    """A button per missing result, or the progress of the job computing it; the page redraws its figures when
    one of those jobs ends."""
    if "inside_msg" in st.session_state:  # a job was just queued: the whole page says so and follows it
        st.rerun()
    now = in_flight(store, chosen["id"])
    if set(flying) - set(now):  # a job ended: its result (or its failure) is there to show
        st.rerun()
    last = latest_jobs(store, chosen["id"])
    for rid, result in missing:
        job = now.get((rid, result))
        what = f"{result} of {labels[rid]}"
        ended = last.get((rid, result))
        if job is None and ended is not None and ended["status"] == "failed":
            st.caption(f"The last job for {what}, {ended['id']}, failed: {ended['message']}")
        if job is not None:
            steps = f", {int(job['iteration'])}/{int(job['total_iterations'])}" if job["total_iterations"] else ""
            st.progress(float(job["progress"]), text=f"{what}: job {job['id']} {job['status']}{steps}")
            continue
        init = result.endswith("-init")  # at initialisation: no checkpoint needed
        ready = init or checkpoint_path(store, rid).exists()
        st.button(f"Compute {what}", key=f"inside_queue_{title}_{rid}_{result}", on_click=queue, args=(rid, result),
                  icon=":material/play_arrow:", disabled=not ready,
                  help=None if ready else "This run has no checkpoint to analyse (its results were kept without one)")


if "inside_msg" in st.session_state:
    kind, text = st.session_state.pop("inside_msg")
    (st.success if kind == "success" else st.error)(text)

for tab, (title, (about, names)) in zip(st.tabs(list(SECTIONS)), SECTIONS.items()):
    with tab:
        st.caption(about)
        for name in names:
            st.plotly_chart(build(name, store, chosen), width="stretch", key=f"inside_{name}")
            figure_downloads(lambda name=name: build(name, store, chosen), name, f"inside_{name}_dl")
        wanted = dict.fromkeys(r for n in names for r in FIGURES[n][2])
        missing = [(rid, r) for rid in chosen["id"] for r in wanted if r not in stored[rid]]
        if missing:
            missing_jobs(title, missing)
            with st.expander(f"{len(missing)} result(s) not computed yet: commands"):
                st.code("\n".join(command(r, rid, store.root) for rid, r in missing), language="bash")
