"""Launch: queue a sweep of plain and residual runs, validated as you type (each problem under its control), with
a time estimate. The form's controls come from the tables below; every run option starts at the chosen preset's
value and is sent only where it differs from it."""
from dataclasses import dataclass, fields

import streamlit as st

from lab import models
from lab.config import COMPILE_MODES, PRECISIONS, PRESETS, RunConfig, make_config, parse_value
from lab.datasets import DATASETS, find_local
from lab.demo import DEMO_SWEEP, demo_configs
from lab.errors import ConfigError, LabError
from lab.runs.estimate import estimate_sweep
from lab.runs.sweep import SweepSpec, check_sweep, queue_sweep
from pages.common import get_store


@dataclass(frozen=True)
class Control:
    """One control of the form, keyed `launch_<name>`. `widget`: multiselect, select, int, float or text.
    `also`: other options whose problems are shown under this control."""

    name: str
    label: str
    widget: str
    choices: tuple = ()
    help: str | None = None
    fmt: object = None          # a select's format_func
    lo: float | None = None
    hi: float | None = None
    step: float | None = None
    also: tuple = ()


# What to run: the sweep's own fields
WHAT = (
    Control("kinds", "Kinds", "multiselect", ("plain", "residual"), also=("kind",),
            help="A plain net is its residual twin with the shortcuts removed"),
    Control("depths", "Depths", "multiselect", also=("depth",),
            help="6n+2 for basic units of span 2 (20, 32, 44, 56, 110, ...); 9n+2 for bottleneck"),
    Control("seeds", "Seeds per configuration", "int", lo=1, hi=20, also=("seed",)),
    Control("dataset", "Data set", "select", tuple(DATASETS), fmt=lambda d: f"{d} - {DATASETS[d].source}"),
    Control("preset", "Schedule preset", "select", tuple(PRESETS),
            help="paper: 64k iterations, lr 0.1 / 10 at 32k and 48k; quick: a CPU demo in minutes; smoke: seconds. "
                 "Choosing one sets every option below to its values"),
    Control("tag", "Tag", "text", help="Free text to find these runs again (at most 200 characters)"),
)
# How: RunConfig fields, each starting at the preset's value
OPTIONS = (
    Control("shortcut", "Shortcut", "select", tuple(models.SHORTCUTS),
            help="A: zero-padded identity (no parameters); B: projection where shapes change; C: projection everywhere"),
    Control("block", "Block", "select", tuple(models.BLOCKS)),
    Control("span", "Shortcut span", "select", (0, 1, 2, 3, 4, 6, 8, 12),
            fmt=lambda s: "paper's (2, or 3 bottleneck)" if s == 0 else f"{s} layer(s)"),
    Control("init", "Init", "select", tuple(models.INITS), help="identity: Dirac 3x3 layers, the Net2Net question"),
    Control("norm", "Normalisation", "select", tuple(models.NORMS)),
    Control("width", "Width multiplier", "float", lo=0.0625, hi=16.0, step=0.25),
    Control("iterations", "Iterations", "int", lo=1, step=100),
    Control("lr", "Learning rate", "float", lo=0.0, step=0.01),
    Control("batch_size", "Batch size", "int", lo=1, step=32),
    Control("precision", "Precision", "select", PRECISIONS,
            help="auto: bf16 autocast where the hardware has it, else fp32"),
    Control("device", "Device", "select", ("auto", "cpu", "cuda")),
    Control("compile", "Compile", "select", ("off", *COMPILE_MODES), also=("compile_mode",),
            help="torch.compile the model: default (fused kernels), reduce-overhead (plus CUDA graphs, for GPUs), "
                 "max-autotune (plus autotuning; slowest to compile)"),
)
# The background worker this starts (when none is running)
WORKER = (
    Control("slots", "Runs at once (0: automatic)", "int", lo=0, hi=8,
            help="Only used when this starts the background worker; on a CPU the threads are split between runs"),
    Control("per_gpu", "Runs per GPU", "int", lo=1, hi=8,
            help="Only used when this starts the background worker: runs packed on each GPU (each with its share "
                 "of the CPU threads)"),
)
SWEEP_DEFAULTS = dict(kinds=["plain", "residual"], depths=[20, 56], seeds=1, preset="quick", tag="", slots=0,
                      per_gpu=1)
ONE_CLICK = {
    "Quick demo (CPU, minutes)": dict(kinds=DEMO_SWEEP.kinds, depths=DEMO_SWEEP.depths, seeds=len(DEMO_SWEEP.seeds),
                                      dataset=DEMO_SWEEP.dataset, preset=DEMO_SWEEP.preset, tag=DEMO_SWEEP.tag),
    "Figure 6 (paper schedule)": dict(kinds=["plain", "residual"], depths=[20, 32, 44, 56], seeds=1, dataset="cifar10",
                                      preset="paper", tag="figure 6"),
    "Figure 7 responses": dict(kinds=["plain", "residual"], depths=[20, 56, 110], seeds=1, dataset="cifar10",
                               preset="paper", tag="figure 7"),
}
DEPTH_CHOICES = [8, 14, 20, 26, 32, 44, 56, 110, 164, 1202]
# Fields without a control of their own go under "More options" (the seed: the seeds control; threads: the worker
# splits the CPU between its slots)
FIELDS = {f.name: f for f in fields(RunConfig)}
ABOVE = {c.name for c in WHAT + OPTIONS} | {"kind", "depth", "seed", "compile_mode", "threads"}
MORE = tuple(name for name in FIELDS if name not in ABOVE)


def shown_value(cfg: RunConfig, name: str):
    """A RunConfig's value as its control shows it (compile and compile_mode share one menu)."""
    if name == "compile":
        return cfg.compile_mode if cfg.compile else "off"
    return getattr(cfg, name)


def config_values(name: str, value) -> dict:
    """A control's value as RunConfig fields."""
    if name == "compile":
        return dict(compile=value != "off") | ({"compile_mode": value} if value != "off" else {})
    return {name: float(value) if FIELDS[name].type == "float" else value}


def load_preset(preset: str | None = None) -> None:
    """Set the options (and the data set) to the preset's values."""
    preset = preset or st.session_state["launch_preset"]
    cfg = make_config(preset)
    for c in OPTIONS:
        st.session_state[f"launch_{c.name}"] = shown_value(cfg, c.name)
    st.session_state["launch_dataset"] = cfg.dataset


def apply(values: dict) -> None:
    """A one-click sweep (or the start): its values, the options at its preset's values."""
    values = {**SWEEP_DEFAULTS, **values}
    load_preset(values["preset"])
    for k, v in values.items():
        st.session_state[f"launch_{k}"] = v
    for k in [k for k in st.session_state if str(k).startswith("launch_more_")]:
        del st.session_state[k]  # a one-click sweep starts from its preset's values


def as_depth(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return value  # left as typed: validation names it


def draw(c: Control, notes: dict):
    """The control, then the empty place right below it where its problems are shown."""
    key, kw = f"launch_{c.name}", dict(help=c.help)
    if c.name == "preset":
        kw["on_change"] = load_preset
    if c.widget == "multiselect":
        options = list(c.choices)
        if c.name == "depths":
            options = sorted(set(DEPTH_CHOICES) | set(st.session_state[key]),
                             key=lambda v: (not isinstance(v, int), v if isinstance(v, int) else 0, str(v)))
            kw["accept_new_options"] = True
        value = st.multiselect(c.label, options, key=key, **kw)
    elif c.widget == "select":
        value = st.selectbox(c.label, list(c.choices), key=key, **kw, **({"format_func": c.fmt} if c.fmt else {}))
    elif c.widget in ("int", "float"):
        cast = int if c.widget == "int" else float
        bounds = {k: cast(v) for k, v in (("min_value", c.lo), ("max_value", c.hi), ("step", c.step)) if v is not None}
        value = st.number_input(c.label, key=key, **bounds, **kw, **({"format": "%g"} if cast is float else {}))
    else:
        value = st.text_input(c.label, key=key, **kw)
    place = st.empty()
    for name in (c.name, *c.also):
        notes[name] = place
    return value


def more_control(name: str, preset_value, preset: str):
    """The control for one RunConfig field under "More options", keyed per preset (so switching presets shows that
    preset's values, and the field is an override only where it differs from it). Returns (value, problem)."""
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


def draw_form(notes: dict) -> dict:
    """Every control; returns their values by name."""
    values = {}
    left, right = st.columns(2)
    with left:
        st.subheader("What")
        values |= {c.name: draw(c, notes) for c in WHAT}
    with right:
        st.subheader("Options")
        cols = st.columns(2)
        for i, c in enumerate(OPTIONS + WORKER):
            with cols[i % 2]:
                values[c.name] = draw(c, notes)
        notes["_auto_slots"] = cols[len(OPTIONS + WORKER) % 2].empty()
    return values


def draw_more(preset: str, notes: dict) -> tuple[dict, list]:
    """"More options": every other RunConfig field. Returns the values changed from the preset's, and problems."""
    more, problems = {}, []
    with st.expander("More options (each starts at the preset's value)"):
        st.caption("The unit and branch variants, the optimiser and learning-rate schedule, the probes and logging, "
                   "and deepening a stored run. Only the options changed from the preset's values are sent.")
        base = make_config(preset)
        cols = st.columns(3)
        for i, name in enumerate(MORE):
            with cols[i % 3]:
                value, problem = more_control(name, getattr(base, name), preset)
                notes[name] = st.empty()
            if problem:
                problems.append((name, problem))
            elif value != getattr(base, name):
                more[name] = value
    return more, problems


def sweep_spec(values: dict, more: dict) -> tuple[SweepSpec, list]:
    """The sweep the form describes (options sent only where they differ from the preset's), and the problems
    found before validation (depths that are not whole numbers)."""
    base, overrides = make_config(values["preset"]), dict(more)
    for c in OPTIONS:
        overrides |= {k: v for k, v in config_values(c.name, values[c.name]).items() if v != getattr(base, k)}
    depths = [as_depth(d) for d in values["depths"]]
    problems = []
    if not all(isinstance(d, int) for d in depths):
        problems.append(("depth", f"depths must be whole numbers, got {', '.join(repr(str(d)) for d in depths)}"))
        depths = []
    return SweepSpec(kinds=values["kinds"], depths=depths, seeds=list(range(int(values["seeds"]))),
                     preset=values["preset"], dataset=values["dataset"], overrides=overrides,
                     tag=values["tag"]), problems


def show_problems(problems: list, notes: dict) -> None:
    """Each problem under its control; the rest, and a summary, below the form."""
    general = []
    for field, msg in problems:
        if field in notes:
            notes[field].error(msg, icon=":material/error:")
        else:
            general.append(msg)
    st.error("This sweep cannot be queued: " + (
        "\n".join(f"- {p}" for p in general) if general else "see the marked fields above."))


def auto_slots_note(configs, notes: dict) -> int:
    """Show the worker's automatic choice of runs at once for these runs; returns it."""
    from lab.runs.worker import auto_slots

    slots, reason = auto_slots("auto", configs)
    notes["_auto_slots"].caption(f"Automatic here: {reason}")
    return slots


def demo_estimate(store) -> None:
    """The quick demo's estimated time on this machine (with the worker's automatic runs at once), before it is
    queued."""
    from lab.runs.worker import auto_slots

    configs = demo_configs()
    est = estimate_sweep(store, configs, slots=auto_slots("auto", configs)[0])
    st.caption(f"Quick demo: {len(configs)} runs, about **{est.text}** on this machine ({est.basis}).")


def queue(store, spec: SweepSpec, slots: int, per_gpu: int) -> None:
    """The Queue button's callback: queue the sweep the user saw (validated again), start the background worker
    unless one is running, and keep what happened for `show_outcome` (a callback runs before the page)."""
    from lab.runs.worker import ensure_worker

    try:
        sweep = queue_sweep(store, spec, here=True, slots=slots, per_gpu=per_gpu).check()
    except LabError as exc:
        st.session_state["launch_outcome"] = ("error", f"The runs could not be queued: {exc}")
        return
    try:
        pid = ensure_worker(store, slots=slots, per_gpu=per_gpu)
    except (OSError, LabError) as exc:
        st.session_state["launch_outcome"] = ("error", f"Queued {len(sweep.ids)} run(s), but the background "
                                                       f"worker could not start: {exc}. Start it by hand: lab worker")
        return
    st.session_state["launch_outcome"] = (
        "success", f"Queued {len(sweep.ids)} run(s)" + (" and started the background worker." if pid else "."))


def show_outcome() -> None:
    """What the last press of Queue runs did (once)."""
    outcome = st.session_state.pop("launch_outcome", None)
    if outcome is None:
        return
    kind, text = outcome
    getattr(st, kind)(text)
    if kind == "success" or text.startswith("Queued"):
        st.page_link("pages/runs.py", label="Watch them on the Runs page", icon=":material/list_alt:")
        st.page_link("pages/curves.py", label="See their training curves", icon=":material/show_chart:")


def what_each_run_records(preset: str) -> None:
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
        st.json(dict(vars(make_config(preset))), expanded=False)


if "launch_kinds" not in st.session_state:
    apply({})
for _name, _value in SWEEP_DEFAULTS.items():  # a control added since this session started
    st.session_state.setdefault(f"launch_{_name}", _value)
if any(f"launch_{c.name}" not in st.session_state for c in OPTIONS):
    load_preset()
st.session_state["launch_depths"] = [as_depth(v) for v in st.session_state["launch_depths"]]

store = get_store()
st.title("Launch experiments")
st.caption("Queue plain and residual nets; a background worker trains them (a GPU when there is one), independent "
           "of this browser tab.")
for col, (name, values) in zip(st.columns(len(ONE_CLICK)), ONE_CLICK.items()):
    col.button(name, on_click=apply, args=(values,), width="stretch", key=f"preset_{name}")
demo_estimate(store)

notes = {}  # option -> the place right below its control
form = draw_form(notes)
more, problems = draw_more(form["preset"], notes)
spec, early = sweep_spec(form, more)
slots, per_gpu = int(form["slots"]), int(form["per_gpu"])
problems += early
checked = check_sweep(spec, here=True, slots=slots, per_gpu=per_gpu) if not problems else None
problems += checked.problems if checked else []
auto = auto_slots_note(checked.configs if checked else [], notes)

st.divider()
if problems:
    show_problems(problems, notes)
else:
    est = estimate_sweep(store, checked.configs, slots=slots or auto)
    st.info(f"**{len(checked.configs)} run(s)**, {sum(c.iterations for c in checked.configs):,} iterations in all. "
            f"Estimated time here: **{est.text}** ({est.basis}).")
    if form["dataset"] != "synthetic" and find_local(form["dataset"]) is None:
        st.warning(f"{form['dataset']} is not in the data folder yet: the runs will try to download it "
                   f"(and fail with a clear message if this machine is offline).")
st.button("Queue runs", type="primary", disabled=bool(problems), icon=":material/play_arrow:", on_click=queue,
          args=(store, spec, slots, per_gpu))
show_outcome()
what_each_run_records(form["preset"])
