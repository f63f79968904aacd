"""Launch: queue a sweep of plain and residual runs, validated as you type, with a time estimate."""
import streamlit as st

from lab import models
from lab.config import PRESETS, make_config
from lab.data import DATASETS, find_local
from lab.runs.estimate import estimate_sweep
from lab.models import ConfigError
from lab.runs.sweep import SweepSpec, expand
from lab.runs.worker import ensure_worker
from pages.common import get_store

DEFAULTS = dict(kinds=["plain", "residual"], depths=[20, 56], seeds=1, dataset="fashion-mnist", preset="quick",
                iterations=0, lr=0.0, batch_size=0, shortcut="A", block="basic", span=0, init="he", norm="bn",
                width=1.0, precision="auto", device="auto", tag="", slots=1)
ONE_CLICK = {
    "Quick demo (CPU, minutes)": dict(kinds=["plain", "residual"], depths=[20, 56], seeds=1, dataset="fashion-mnist",
                                      preset="quick", tag="quick demo"),
    "Figure 6 (paper schedule)": dict(kinds=["plain", "residual"], depths=[20, 32, 44, 56], seeds=1, dataset="cifar10",
                                      preset="paper", tag="figure 6"),
    "Figure 7 responses": dict(kinds=["plain", "residual"], depths=[20, 56, 110], seeds=1, dataset="cifar10",
                               preset="paper", tag="figure 7"),
}
DEPTH_CHOICES = [8, 14, 20, 26, 32, 44, 56, 110, 164, 1202]


def apply(values: dict) -> None:
    for k, v in {**DEFAULTS, **values}.items():
        st.session_state[f"launch_{k}"] = v


def as_depth(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return value  # left as typed: validation below names it


if "launch_kinds" not in st.session_state:
    apply({})
st.session_state["launch_depths"] = [as_depth(v) for v in st.session_state["launch_depths"]]

store = get_store()
st.title("Launch experiments")
st.caption("Queue plain and residual nets; a background worker trains them one after another (a GPU when there is "
           "one), independent of this browser tab.")

cols = st.columns(len(ONE_CLICK))
for col, (name, values) in zip(cols, ONE_CLICK.items()):
    col.button(name, on_click=apply, args=(values,), width="stretch", key=f"preset_{name}")

left, right = st.columns(2)
with left:
    st.subheader("What")
    kinds = st.multiselect("Kinds", ["plain", "residual"], key="launch_kinds",
                           help="A plain net is its residual twin with the shortcuts removed")
    depth_options = sorted(set(DEPTH_CHOICES) | set(st.session_state["launch_depths"]),
                           key=lambda v: (not isinstance(v, int), v if isinstance(v, int) else 0, str(v)))
    depths = st.multiselect("Depths", depth_options,
                            key="launch_depths", accept_new_options=True,
                            help="6n+2 for basic units of span 2 (20, 32, 44, 56, 110, ...); 9n+2 for bottleneck")
    seeds = st.number_input("Seeds per configuration", min_value=1, max_value=20, key="launch_seeds")
    dataset = st.selectbox("Data set", list(DATASETS), key="launch_dataset",
                           format_func=lambda d: f"{d} - {DATASETS[d].source}")
    preset = st.selectbox("Schedule preset", list(PRESETS), key="launch_preset",
                          help="paper: 64k iterations, lr 0.1 / 10 at 32k and 48k; quick: a CPU demo in minutes; "
                               "smoke: seconds")
    tag = st.text_input("Tag", key="launch_tag", help="Free text to find these runs again")
with right:
    st.subheader("Options")
    c1, c2 = st.columns(2)
    shortcut = c1.selectbox("Shortcut", list(models.SHORTCUTS), key="launch_shortcut",
                            help="A: zero-padded identity (no parameters); B: projection where shapes change; "
                                 "C: projection everywhere")
    block = c2.selectbox("Block", list(models.BLOCKS), key="launch_block")
    span = c1.selectbox("Shortcut span", [0, 1, 2, 3], key="launch_span",
                        format_func=lambda s: "paper's (2, or 3 bottleneck)" if s == 0 else f"{s} layer(s)")
    init = c2.selectbox("Init", list(models.INITS), key="launch_init",
                        help="identity: Dirac 3x3 layers, the Net2Net question")
    norm = c1.selectbox("Normalisation", list(models.NORMS), key="launch_norm")
    width = c2.number_input("Width multiplier", min_value=0.0625, max_value=16.0, step=0.25, key="launch_width")
    iterations = c1.number_input("Iterations (0: preset's)", min_value=0, step=100, key="launch_iterations")
    lr = c2.number_input("Learning rate (0: preset's)", min_value=0.0, step=0.01, format="%.4f", key="launch_lr")
    batch_size = c1.number_input("Batch size (0: preset's)", min_value=0, step=32, key="launch_batch_size")
    precision = c2.selectbox("Precision", ["auto", "fp32", "bf16"], key="launch_precision",
                             help="auto: bf16 autocast where the hardware has it, else fp32")
    device = c1.selectbox("Device", ["auto", "cpu", "cuda"], key="launch_device")
    slots = c2.number_input("Runs at once (CPU)", min_value=1, max_value=8, key="launch_slots",
                            help="Only used when this starts the background worker; threads are split between runs")

overrides = dict(shortcut=shortcut, block=block, span=span, init=init, norm=norm, width=float(width),
                 precision=precision, device=device)
if iterations:
    overrides["iterations"] = int(iterations)
if lr:
    overrides["lr"] = float(lr)
if batch_size:
    overrides["batch_size"] = int(batch_size)

problems, configs = [], []
try:
    depth_values = [int(d) for d in depths]
except ValueError:
    depth_values, problems = [], [f"depths must be whole numbers, got {', '.join(map(str, depths))}"]
if not problems:
    try:
        configs = expand(SweepSpec(kinds=kinds, depths=depth_values, seeds=list(range(int(seeds))), preset=preset,
                                   dataset=dataset, overrides=overrides, tag=tag))
    except ConfigError as exc:
        problems = str(exc).split("; ")

st.divider()
if problems:
    st.error("This sweep cannot be queued:\n" + "\n".join(f"- {p}" for p in problems))
else:
    est = estimate_sweep(store, configs, slots=int(slots))
    st.info(f"**{len(configs)} run(s)**, {sum(c.iterations for c in configs):,} iterations in all. "
            f"Estimated time here: **{est.text}** ({est.basis}).")
    if dataset != "synthetic" and find_local(dataset) is None:
        st.warning(f"{dataset} is not in the data folder yet: the runs will try to download it "
                   f"(and fail with a clear message if this machine is offline).")
if st.button("Queue runs", type="primary", disabled=bool(problems), icon=":material/play_arrow:"):
    ids = store.create_runs(configs)
    try:
        pid = ensure_worker(store, slots=int(slots))
    except OSError as exc:
        st.error(f"The runs are queued, but the background worker could not start: {exc}. "
                 f"Start it by hand: python -m lab worker")
        pid = None
    st.success(f"Queued {len(ids)} run(s)" + (" and started the background worker." if pid else "."))
    st.page_link("pages/runs.py", label="Watch them on the Runs page", icon=":material/list_alt:")
    st.page_link("pages/curves.py", label="See their training curves", icon=":material/show_chart:")

with st.expander("What each run records"):
    st.markdown(
        "- training loss and error per logging window, learning rate, images/s, elapsed time\n"
        "- validation and test error at each evaluation and at the end (the final one on the full sets)\n"
        "- per-layer gradient norms of every conv and linear weight\n"
        "- layer responses (Fig. 7): std of each 3x3 conv's output after BN, in eval mode on a fixed held-out "
        "batch; per residual block ||F(x)|| / ||x||\n"
        "- the full configuration, torch version, device, host and the project's git revision"
    )
    st.json({k: v for k, v in vars(make_config(preset)).items()}, expanded=False)
