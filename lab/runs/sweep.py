"""Sweeps: a spec (kinds x depths x seeds x option lists) expanded into validated RunConfigs, and `queue_sweep`,
which the CLI's `sweep`, the Launch page and the studies queue runs through (one cap, one validation)."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field, fields

from ..config import RunConfig, field_problems, make_config, PRESETS
from ..errors import ConfigError

# what a sweep's own lists are called, as the RunConfig option they set
LIST_FIELDS = {"kinds": "kind", "depths": "depth", "seeds": "seed"}


@dataclass
class SweepSpec:
    """What to run: every combination of kinds, depths, seeds and the values in `grid`, on one data set/preset."""

    kinds: list[str] = field(default_factory=lambda: ["plain", "residual"])
    depths: list[int] = field(default_factory=lambda: [20, 56])
    seeds: list[int] = field(default_factory=lambda: [0])
    preset: str = "quick"
    dataset: str | None = None                            # None: the preset's
    grid: dict[str, list] = field(default_factory=dict)   # option -> values, e.g. {"shortcut": ["A", "B"]}
    overrides: dict = field(default_factory=dict)         # option -> one value for every run
    tag: str = ""


def refuse(problems: list[tuple[str, str]]) -> ConfigError:
    """A ConfigError listing every problem in one line; `.problems` keeps them as (option, message) pairs, so
    a form can show each next to its field."""
    err = ConfigError("; ".join(msg for _, msg in problems))
    err.problems = problems
    return err


def expand(spec: SweepSpec) -> list[RunConfig]:
    """All the sweep's runs, validated. Raises ConfigError listing every problem; nothing half-expanded."""
    problems: list[tuple[str, str]] = []
    if spec.preset not in PRESETS:
        raise refuse([("preset", f"unknown preset {spec.preset!r}; known: {', '.join(PRESETS)}")])
    for name, values in (("kinds", spec.kinds), ("depths", spec.depths), ("seeds", spec.seeds)):
        if not values:
            problems.append((LIST_FIELDS[name], f"{name}: give at least one"))
    known = {f.name for f in fields(RunConfig)}
    reserved = {"kind", "depth", "seed", "preset", "dataset", "tag"}
    for key in list(spec.grid) + list(spec.overrides):
        if key not in known:
            problems.append(("", f"unknown option {key!r}; known: {', '.join(sorted(known - reserved))}"))
        elif key in reserved:
            problems.append((key, f"option {key!r} is set by the sweep's own fields, not as an option"))
    for key, values in spec.grid.items():
        if not values:
            problems.append((key, f"option {key!r}: give at least one value"))
    if problems:
        raise refuse(problems)

    keys = list(spec.grid)
    configs, seen_problems, seen = [], [], set()
    base = dict(spec.overrides)
    if spec.dataset:
        base["dataset"] = spec.dataset
    for kind, depth, seed, *values in itertools.product(spec.kinds, spec.depths, spec.seeds, *spec.grid.values()):
        options = {**base, **dict(zip(keys, values)), "kind": kind, "depth": depth, "seed": seed, "tag": spec.tag}
        try:
            cfg = RunConfig(**{**PRESETS[spec.preset], **options, "preset": spec.preset})
        except TypeError as exc:
            seen_problems.append(("", str(exc)))
            continue
        for p in field_problems(cfg):
            if p[1] not in seen:
                seen.add(p[1])
                seen_problems.append(p)
        configs.append(cfg)
    if seen_problems:
        raise refuse(seen_problems)
    return [make_config(c.preset, **{f.name: getattr(c, f.name) for f in fields(RunConfig) if f.name != "preset"}) for c in configs]


# A sweep may queue at most this many runs (a typo in --seeds or a grid must not flood the store).
MAX_SWEEP_RUNS = 100_000


@dataclass
class Sweep:
    """A sweep checked (and, by `queue_sweep`, queued): its runs, or the problems that refuse it as
    (option, message) pairs ('' where no single option is at fault), so a form shows each under its control."""

    configs: list[RunConfig] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)   # the queued runs' ids, in the order of `configs`

    def check(self) -> "Sweep":
        """Raise the problems as one ConfigError (for callers that refuse rather than show); else self."""
        if self.problems:
            raise refuse(self.problems)
        return self


def sweep_size(spec: SweepSpec) -> int:
    count = len(spec.kinds) * len(spec.depths) * len(spec.seeds)
    for values in spec.grid.values():
        count *= len(values)
    return count


def worker_problems(slots: int, per_gpu: int) -> list[tuple[str, str]]:
    """The worker settings' problems, each with the option at fault."""
    from .worker import slot_problems

    return ([("slots", p) for p in slot_problems(slots, 1)] +
            [("per_gpu", p) for p in slot_problems(0, per_gpu)])


def check_sweep(sweep: SweepSpec | list[RunConfig], here: bool = False, slots: int | None = None,
                per_gpu: int = 1) -> Sweep:
    """The sweep's validated runs, or every problem with it; queues nothing. `here`: the runs are for a worker on
    this machine, which must have the device they name. `slots`/`per_gpu`: the worker this would start."""
    problems = worker_problems(slots, per_gpu) if slots is not None else []
    count = sweep_size(sweep) if isinstance(sweep, SweepSpec) else len(sweep)
    if count > MAX_SWEEP_RUNS:
        return Sweep(problems=problems + [
            ("", f"this sweep would queue {count:,} runs; a sweep may queue at most {MAX_SWEEP_RUNS:,}")])
    if isinstance(sweep, SweepSpec):
        try:
            configs = expand(sweep)
        except ConfigError as exc:
            return Sweep(problems=problems + (getattr(exc, "problems", None) or [("", str(exc))]))
    else:
        configs = list(sweep)
    if here:
        from ..runtime import device_problem

        problems += [("device", p) for p in sorted({device_problem(c.device) for c in configs} - {None})]
    return Sweep(configs=configs, problems=problems)


def queue_sweep(store, sweep: SweepSpec | list[RunConfig], *, here: bool = False, slots: int | None = None,
                per_gpu: int = 1, sweep_id: str | None = None, parent_id: str | None = None) -> Sweep:
    """Check the sweep (`check_sweep`) and, when nothing is wrong, queue its runs in the store in one go.
    Returns the Sweep: its `ids` when queued, else its `problems` (nothing is queued then). Starts no worker:
    the caller decides (the CLI's --no-worker, the page's button)."""
    checked = check_sweep(sweep, here=here, slots=slots, per_gpu=per_gpu)
    if checked.problems or not checked.configs:
        return checked
    checked.ids = store.create_runs(checked.configs, sweep_id=sweep_id, parent_id=parent_id)
    return checked


def parse_list(text: str, cast=str, what: str = "") -> list:
    """'20,32, 44' -> [20, 32, 44]; '' (or only commas) -> []. Raises ConfigError naming the bad item, or the
    empty one ('0.1,,0.2' is refused, not read as two values). `what` names the list in the message."""
    text = str(text)
    if not text.replace(",", "").strip():
        return []
    where = f"{what}: " if what else ""
    out = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            raise ConfigError(f"{where}{text!r} has an empty value between commas; give the values separated by "
                              f"single commas, e.g. 0.1,0.2")
        try:
            out.append(cast(item))
        except (TypeError, ValueError):
            raise ConfigError(f"{where}{item!r} is not a valid {getattr(cast, '__name__', 'value')}") from None
    return out
