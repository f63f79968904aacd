"""Sweeps: a spec (kinds x depths x seeds x option lists) expanded into validated RunConfigs."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field, fields

from ..config import RunConfig, field_problems, make_config, PRESETS
from ..models import ConfigError

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


def parse_list(text: str, cast=str) -> list:
    """'20,32, 44' -> [20, 32, 44]; raises ConfigError naming the bad item."""
    out = []
    for item in (t.strip() for t in str(text).split(",")):
        if not item:
            continue
        try:
            out.append(cast(item))
        except (TypeError, ValueError):
            raise ConfigError(f"{item!r} is not a valid {getattr(cast, '__name__', 'value')}") from None
    return out
