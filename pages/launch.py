"""Launch: queue a sweep of plain and residual runs, validated as you type (each problem next to its field),
with a time estimate."""
from dataclasses import fields

import streamlit as st

from lab import models
from lab.config import COMPILE_MODES, PRESETS, RunConfig, make_config, parse_value
from lab.data import DATASETS, find_local
from lab.runs.estimate import estimate_sweep
from lab.models import ConfigError
from lab.runs.store import StoreError
from lab.runs.sweep import SweepSpec, expand
from lab.runs.worker import ensure_worker, slot_problems
from lab.runtime import device_problem
from pages.common import get_store

DEFAULTS = dict(kinds=["plain", "residual"], depths=[20, 56], seeds=1, dataset="fashion-mnist", preset="quick",
                iterations=0, lr=0.0, batch_size=0, shortcut="A", block="basic", span=0, init="he", norm="bn",
                width=1.0, precision="auto", device="auto", tag="", slots=1, per_gpu=1, compile="off")
ONE_CLICK = {
    "Quick demo (CPU, minutes)": dict(kinds=["plain", "residual"], depths=[20, 56], seeds=1, dataset="fashion-mnist",
                                      preset="quick", tag="quick demo"),
    "Figure 6 (paper schedule)": dict(kinds=["plain", "residual"], depths=[20, 32, 44, 56], seeds=1, dataset="cifar10",
                                      preset="paper", tag="figure 6"),
    "Figure 7 responses": dict(kinds=["plain", "residual"], depths=[20, 56, 110], seeds=1, dataset="cifar10",
                               preset="paper", tag="figure 7"),
}
DEPTH_CHOICES = [8, 14, 20, 26, 32, 44, 56, 110, 164, 1202]


# The RunConfig fields with controls of their own above (the seed: the seeds control; threads: the worker splits
# the CPU between its slots). Every other field is under "More options", each starting at the preset's value.
ABOVE = {"kind", "depth", "seed", "dataset", "preset", "tag", "shortcut", "block", "span", "init", "norm", "width",
         "iterations", "lr", "batch_size", "precision", "device", "compile", "compile_mode", "threads"}
FIELDS = {f.name: f for f in fields(RunConfig)}
MORE = tuple(name for name in FIELDS if name not in ABOVE)


def apply(values: dict) -> None:
    for k, v in {**DEFAULTS, **values}.items():
        st.session_state[f"launch_{k}"] = v
    for k in [k for k in st.session_state if str(k).startswith("launch_more_")]:
        del st.session_state[k]  # a one-click sweep starts from its preset's values


def more_control(name: str, preset_value, preset: str):
    """The control for one RunConfig field, keyed per preset (so switching presets shows that preset's values,
    and the field is an override only where it differs from it). Returns (value, problem or None)."""
    f = FIELDS[name]
    key, label, help_text = f"launch_more_{preset}_{name}", name.replace("_", " ").capitalize(), f.metadata["help"]
    choices = f.metadata.get("choices")
    if choices:
        return st.selectbox(label, list(choices), index=list(choices).index(preset_value), key=key,
                            help=help_text), None
    if isinstance(preset_value, bool):
        return st.checkbox(label, value=preset_value, key=key, help=help_text), None
    if isinstance(preset_value, int):
        return int(st.number_input(label, value=preset_value, step=1, key=key, help=help_text)), None
    if isinstance(preset_value, float):
        return float(st.number_input(label, value=preset_value, format="%g", step=None, key=key, help=help_text)), None
    if isinstance(preset_value, tuple):
        text = st.text_input(label, value=", ".join(f"{v:g}" for v in preset_value), key=key, help=help_text)
        try:
            return parse_value(name, text), None
        except ConfigError as exc:
            return preset_value, str(exc)
    return st.text_input(label, value=preset_value, key=key, help=help_text), None


def as_depth(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return value  # left as typed: validation below names it


if "launch_kinds" not in st.session_state:
    apply({})
for _key, _value in DEFAULTS.items():  # a control added since this session started
    st.session_state.setdefault(f"launch_{_key}", _value)
st.session_state["launch_depths"] = [as_depth(v) for v in st.session_state["launch_depths"]]

store = get_store()
st.title("Launch experiments")
st.caption("Queue plain and residual nets; a background worker trains them one after another (a GPU when there is "
           "one), independent of this browser tab.")

cols = st.columns(len(ONE_CLICK))
for col, (name, values) in zip(cols, ONE_CLICK.items()):
    col.button(name, on_click=apply, args=(values,), width="stretch", key=f"preset_{name}")

notes = {}  # option -> the place right below its control, where its problems are shown


def note(*fields_: str) -> None:
    """Reserve the space below the control just drawn for problems with these options."""
    place = st.empty()
    for f in fields_:
        notes[f] = place


left, right = st.columns(2)
with left:
    st.subheader("What")
    kinds = st.multiselect("Kinds", ["plain", "residual"], key="launch_kinds",
                           help="A plain net is its residual twin with the shortcuts removed")
    note("kind")
    depth_options = sorted(set(DEPTH_CHOICES) | set(st.session_state["launch_depths"]),
                           key=lambda v: (not isinstance(v, int), v if isinstance(v, int) else 0, str(v)))
    depths = st.multiselect("Depths", depth_options,
                            key="launch_depths", accept_new_options=True,
                            help="6n+2 for basic units of span 2 (20, 32, 44, 56, 110, ...); 9n+2 for bottleneck")
    note("depth")
    seeds = st.number_input("Seeds per configuration", min_value=1, max_value=20, key="launch_seeds")
    note("seed")
    dataset = st.selectbox("Data set", list(DATASETS), key="launch_dataset",
                           format_func=lambda d: f"{d} - {DATASETS[d].source}")
    note("dataset", "val_fraction", "train_limit")
    preset = st.selectbox("Schedule preset", list(PRESETS), key="launch_preset",
                          help="paper: 64k iterations, lr 0.1 / 10 at 32k and 48k; quick: a CPU demo in minutes; "
                               "smoke: seconds")
    note("preset")
    tag = st.text_input("Tag", key="launch_tag", help="Free text to find these runs again (at most 200 characters)")
    note("tag")
with right:
    st.subheader("Options")
    c1, c2 = st.columns(2)
    with c1:
        shortcut = st.selectbox("Shortcut", list(models.SHORTCUTS), key="launch_shortcut",
                                help="A: zero-padded identity (no parameters); B: projection where shapes change; "
                                     "C: projection everywhere")
        note("shortcut")
    with c2:
        block = st.selectbox("Block", list(models.BLOCKS), key="launch_block")
        note("block")
    with c1:
        span = st.selectbox("Shortcut span", [0, 1, 2, 3, 4, 6, 8, 12], key="launch_span",
                            format_func=lambda s: "paper's (2, or 3 bottleneck)" if s == 0 else f"{s} layer(s)")
        note("span")
    with c2:
        init = st.selectbox("Init", list(models.INITS), key="launch_init",
                            help="identity: Dirac 3x3 layers, the Net2Net question")
        note("init")
    with c1:
        norm = st.selectbox("Normalisation", list(models.NORMS), key="launch_norm")
        note("norm")
    with c2:
        width = st.number_input("Width multiplier", min_value=0.0625, max_value=16.0, step=0.25, key="launch_width")
        note("width")
    with c1:
        iterations = st.number_input("Iterations (0: preset's)", min_value=0, step=100, key="launch_iterations")
        note("iterations", "log_every", "eval_every", "grad_every", "checkpoint_every", "milestones")
    with c2:
        lr = st.number_input("Learning rate (0: preset's)", min_value=0.0, step=0.01, format="%.4f", key="launch_lr")
        note("lr")
    with c1:
        batch_size = st.number_input("Batch size (0: preset's)", min_value=0, step=32, key="launch_batch_size")
        note("batch_size")
    with c2:
        precision = st.selectbox("Precision", ["auto", "fp32", "bf16"], key="launch_precision",
                                 help="auto: bf16 autocast where the hardware has it, else fp32")
        note("precision")
    with c1:
        device = st.selectbox("Device", ["auto", "cpu", "cuda"], key="launch_device")
        note("device")
    with c2:
        slots = st.number_input("Runs at once (CPU)", min_value=1, max_value=8, key="launch_slots",
                                help="Only used when this starts the background worker; threads are split between runs")
        note("slots")
    with c1:
        per_gpu = st.number_input("Runs per GPU", min_value=1, max_value=8, key="launch_per_gpu",
                                  help="Only used when this starts the background worker: runs packed on each GPU "
                                       "(each with its share of the CPU threads)")
        note("per_gpu")
    with c2:
        compile_choice = st.selectbox("Compile", ["off", *COMPILE_MODES], key="launch_compile",
                                      help="torch.compile the model: default (fused kernels), reduce-overhead (plus "
                                           "CUDA graphs, for GPUs), max-autotune (plus autotuning; slowest to "
                                           "compile). Compiled code is cached in the results folder")
        note("compile", "compile_mode")

more, more_problems = {}, []
with st.expander("More options (each starts at the preset's value)"):
    st.caption("The unit and branch variants, the optimiser and learning-rate schedule, the probes and logging, "
               "and deepening a stored run. Only the options changed from the preset's values are sent.")
    base = make_config(preset)
    cols = st.columns(3)
    for i, name in enumerate(MORE):
        with cols[i % 3]:
            value, problem = more_control(name, getattr(base, name), preset)
            note(name)
        if problem:
            more_problems.append((name, problem))
        elif value != getattr(base, name):
            more[name] = value

overrides = dict(shortcut=shortcut, block=block, span=span, init=init, norm=norm, width=float(width),
                 precision=precision, device=device)
overrides |= more
if compile_choice != "off":
    overrides |= dict(compile=True, compile_mode=compile_choice)
if iterations:
    overrides["iterations"] = int(iterations)
if lr:
    overrides["lr"] = float(lr)
if batch_size:
    overrides["batch_size"] = int(batch_size)

problems, configs = [], []   # problems: (option, message)
try:
    depth_values = [int(d) for d in depths]
except (TypeError, ValueError):
    depth_values = []
    problems = [("depth", f"depths must be whole numbers, got {', '.join(repr(str(d)) for d in depths)}")]
problems += more_problems
if not problems:
    try:
        configs = expand(SweepSpec(kinds=kinds, depths=depth_values, seeds=list(range(int(seeds))), preset=preset,
                                   dataset=dataset, overrides=overrides, tag=tag))
    except ConfigError as exc:
        problems = getattr(exc, "problems", None) or [("", p) for p in str(exc).split("; ")]
    else:
        # these runs are for the worker on this machine: it must have the device they name
        problems = [("device", p) for p in sorted({device_problem(c.device) for c in configs} - {None})]
problems += [("per_gpu" if "per-gpu" in p else "slots", p) for p in slot_problems(int(slots), int(per_gpu))]

general = []
for field, msg in problems:
    if field in notes:
        notes[field].error(msg, icon=":material/error:")
    else:
        general.append(msg)

st.divider()
if problems:
    st.error("This sweep cannot be queued: " + (
        "\n".join(f"- {p}" for p in general) if general else "see the marked fields above."))
else:
    est = estimate_sweep(store, configs, slots=int(slots))
    st.info(f"**{len(configs)} run(s)**, {sum(c.iterations for c in configs):,} iterations in all. "
            f"Estimated time here: **{est.text}** ({est.basis}).")
    if dataset != "synthetic" and find_local(dataset) is None:
        st.warning(f"{dataset} is not in the data folder yet: the runs will try to download it "
                   f"(and fail with a clear message if this machine is offline).")
if st.button("Queue runs", type="primary", disabled=bool(problems), icon=":material/play_arrow:"):
    try:
        ids = store.create_runs(configs)
    except (StoreError, ConfigError) as exc:
        st.error(f"The runs could not be queued: {exc}")
        st.stop()
    try:
        pid = ensure_worker(store, slots=int(slots), per_gpu=int(per_gpu))
    except (OSError, StoreError) as exc:
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
        "- per-layer gradient norms of every conv and linear weight, sampled every `grad_every` iterations and "
        "averaged over the samples of each logging window\n"
        "- layer responses (Fig. 7): std of each 3x3 conv's output after BN, in eval mode on a fixed held-out "
        "batch; per residual block ||F(x)|| / ||x||\n"
        "- the full configuration, torch version, device, host and the project's git revision"
    )
    st.json({k: v for k, v in vars(make_config(preset)).items()}, expanded=False)
