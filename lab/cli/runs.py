"""Training runs: `run` (one, in the foreground), `sweep` (queue many), `ls`, `show`, `cancel`, `resume`,
`delete`, `worker` and the worker's child entry point `_execute`."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

from ..config import PRESETS, RunConfig, make_config, parse_value
from ..datasets import DATASETS
from ..errors import ConfigError
from ..runs.monitor import printable
from .shared import (Progress, add_data, add_results, add_slot_flags, add_worker_flags, check_slots, open_store,
                     pct, start_worker)

# RunConfig fields with flags of their own (not derived from the field)
EXPLICIT = {"kind", "depth", "dataset", "preset", "seed"}

# exit status of `run` and `_execute` by how the run ended (anything but done is non-zero for `run`)
EXIT = {"done": 0, "failed": 1, "diverged": 1, "cancelled": 3, "interrupted": 3, "lost": 4}

PRESET_HELP = "paper: the paper's 64k-iteration schedule; quick: a CPU demo in minutes; smoke: seconds"


def add_option_flags(p: argparse.ArgumentParser, exclude=EXPLICIT) -> None:
    """One flag per RunConfig field, e.g. --batch-size, --shortcut, --no-augment; help from the field."""
    g = p.add_argument_group("run options (default: the preset's value)")
    for f in fields(RunConfig):
        if f.name in exclude:
            continue
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        if str(f.type) == "bool":
            g.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            g.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper(), help=help_text)


def overrides(args: argparse.Namespace, exclude=EXPLICIT) -> dict:
    out = {}
    for f in fields(RunConfig):
        if f.name in exclude:
            continue
        v = getattr(args, f.name, None)
        if v is not None:
            out[f.name] = v if isinstance(v, bool) else parse_value(f.name, v)
    return out


def check_device_here(configs) -> None:
    """Runs about to be executed on this machine must name a device it has (refused now, not inside the run)."""
    from ..runtime import device_problem

    for device in sorted({c.device for c in configs}):
        problem = device_problem(device)
        if problem:
            raise ConfigError(problem)


def cmd_run(args) -> int:
    from ..runs.execute import execute_run

    cfg = make_config(args.preset, kind=args.kind, depth=args.depth, dataset=args.dataset, seed=args.seed,
                      **overrides(args))
    check_device_here([cfg])
    store = open_store(args)
    run_id, attempt = store.start_run(cfg)
    print(f"run {run_id}: {cfg.label()} on {cfg.dataset}, preset {cfg.preset}, {cfg.iterations} iterations; "
          f"results in {store.root}")
    with Progress(total=cfg.iterations, quiet=args.quiet) as bar:
        status = execute_run(store, run_id, data_dir=args.data, progress=bar.callback,
                             echo=bar.write if bar.callback else None, attempt=attempt)
    run = store.get_run(run_id)
    if status == "lost":
        print(f"lost: this process no longer owns run {run_id}, which is now {run['status']}", file=sys.stderr)
        return EXIT["lost"]
    if run["status"] == "done":
        print(f"done: final training error {pct(run['final_train_error'])}, test error {pct(run['final_test_error'])}")
        return 0
    # what the store says, which is what every reader sees (a signal makes a run interrupted, not cancelled)
    print(f"{run['status']}: {printable(run['message'] or '')}", file=sys.stderr)
    return EXIT.get(run["status"], 1)


def sweep_seeds(args) -> list[int]:
    from ..config import MAX_SEED
    from ..runs.sweep import MAX_SWEEP_RUNS, parse_list

    if args.seed_list is not None:
        seeds = parse_list(args.seed_list, int, "--seed-list")
        if not seeds:
            raise ConfigError("--seed-list needs at least one seed, e.g. --seed-list 0,1,2")
        return seeds
    if not 1 <= args.seeds <= MAX_SWEEP_RUNS:
        raise ConfigError(f"--seeds must be from 1 to {MAX_SWEEP_RUNS:,}, got {args.seeds}")
    if not 0 <= args.seed_start <= MAX_SEED - args.seeds:
        raise ConfigError(f"--seed-start must be from 0 to {MAX_SEED - args.seeds:,} (seeds run to 2**63-1), "
                          f"got {args.seed_start}")
    return list(range(args.seed_start, args.seed_start + args.seeds))


def sweep_grid(items: list[str] | None) -> dict[str, list]:
    """--grid OPTION=V1,V2 (repeatable) -> {option: [values]}, each value parsed as the option's type."""
    from ..runs.sweep import parse_list

    known = {f.name for f in fields(RunConfig)}
    grid = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--grid takes OPTION=V1,V2,...; got {item!r}")
        key, values = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if not key:
            raise ConfigError(f"--grid takes OPTION=V1,V2,...; {item!r} names no option")
        if key in grid:
            raise ConfigError(f"--grid names option {key!r} twice; give all its values in one --grid")
        listed = parse_list(values, what=f"--grid {key}")
        grid[key] = [parse_value(key, v) for v in listed] if key in known else listed
    return grid


def cmd_sweep(args) -> int:
    from ..runs.sweep import SweepSpec, check_sweep, parse_list, queue_sweep

    check_slots(args.slots, args.per_gpu)
    spec = SweepSpec(
        kinds=parse_list(args.kinds, what="--kinds"), depths=parse_list(args.depths, int, "--depths"),
        seeds=sweep_seeds(args), preset=args.preset, dataset=args.dataset, grid=sweep_grid(args.grid),
        overrides=overrides(args, EXPLICIT | {"tag"}), tag=args.tag or "",
    )
    configs = check_sweep(spec, here=not args.no_worker).check().configs  # refused before a store is made
    store = open_store(args)
    sweep = queue_sweep(store, configs).check()
    print(f"queued {len(sweep.ids)} run(s) in {store.root}:")
    shown = 20
    for rid, cfg in list(zip(sweep.ids, sweep.configs))[:shown]:
        print(f"  {rid}  {cfg.label()} seed {cfg.seed}")
    if len(sweep.ids) > shown:
        print(f"  ... and {len(sweep.ids) - shown} more (python -m lab ls lists them all)")
    start_worker(store, args)
    print(f"watch with: python -m lab ls --results {store.root}")
    return 0


def statuses(text: str | None) -> list[str] | None:
    from ..runs.store import STATUSES

    if text is None:
        return None
    wanted = [s.strip() for s in text.split(",") if s.strip()]
    if not wanted:
        raise ConfigError(f"--status needs at least one status; statuses: {', '.join(STATUSES)}")
    unknown = [s for s in wanted if s not in STATUSES]
    if unknown:
        raise ConfigError(f"unknown status {', '.join(map(repr, unknown))}; statuses: {', '.join(STATUSES)}")
    return wanted


def cmd_ls(args) -> int:
    from ..runs.monitor import SUMMARY_COLUMNS, format_duration, overview

    wanted = statuses(args.status)
    store = open_store(args, create=False, readonly=True)
    df = overview(store, jobs=None)  # training runs and analysis jobs
    if wanted:
        df = df[df["status"].isin(wanted)]
    if args.json:
        records = json.loads(df[SUMMARY_COLUMNS].to_json(orient="records")) if not df.empty else []
        print(json.dumps(records, indent=2))
        return 0
    if df.empty:
        print(f"no runs in {store.root}" + (f" with status {', '.join(wanted)}" if wanted else ""))
        return 0
    print(f"{'id':<28} {'status':<11} {'run':<26} {'data':<13} {'progress':>15} {'img/s':>7} {'eta':>8} "
          f"{'device':<7} {'test err':>8}  tag")
    for r in df.itertuples():
        prog = f"{int(r.iteration)}/{int(r.total_iterations)} {100 * r.progress:3.0f}%"
        ips = "-" if r.images_per_s is None or r.images_per_s != r.images_per_s else f"{r.images_per_s:.0f}"
        device = r.device if isinstance(r.device, str) else "-"
        tag = printable(r.tag)[:40] if isinstance(r.tag, str) else ""
        print(f"{printable(r.id):<28} {r.status:<11} {printable(r.label)[:26]:<26} {printable(r.dataset):<13} "
              f"{prog:>15} {ips:>7} {format_duration(r.eta_s):>8} {printable(device):<7} "
              f"{pct(r.final_test_error):>8}  {tag}")
    return 0


def cmd_show(args) -> int:
    from ..runs.monitor import log_tail

    if not 0 <= args.lines <= 10000:
        raise ConfigError(f"--lines must be from 0 to 10000, got {args.lines}")
    store = open_store(args, create=False, readonly=True)
    run = store.get_run(args.run)
    scal = store.scalars(run["id"])
    last = scal.sort_values("step").groupby("name").last()["value"].to_dict() if not scal.empty else {}
    tail = log_tail(store, run["id"], args.lines) if args.lines else ""
    if args.json:
        print(json.dumps({**run, "last_metrics": last, "log_tail": tail}, indent=2, default=str))
        return 0
    print(f"run {run['id']}  {printable(run['label'])}  [{run['status']}]")
    if run.get("message"):
        print(f"  {printable(run['message'])}")
    print(f"  iteration {run['iteration']}/{run['total_iterations']}, device {printable(run['device'] or '-')}, "
          f"{run['params'] or '-'} parameters")
    print(f"  final train error {pct(run['final_train_error'])}, val {pct(run['final_val_error'])}, "
          f"test {pct(run['final_test_error'])}")
    print("  config: " + ", ".join(f"{k}={printable(v)}" for k, v in sorted(run["config"].items())))
    if run.get("env"):
        env = run["env"]
        print(f"  env: torch {printable(env.get('torch'))}, {printable(env.get('device_name'))}, "
              f"precision {printable(env.get('precision'))}, git {printable(env.get('git'))}")
    if last:
        print("  last metrics: " + ", ".join(f"{printable(k)}={v:.4g}" for k, v in sorted(last.items()) if v == v))
    if tail:
        print("  log:\n" + "\n".join("    " + printable(line) for line in tail.splitlines()))
    return 0


def cmd_cancel(args) -> int:
    store = open_store(args, create=False)
    for rid in store.resolve_many(args.runs):  # every id is checked before any run is touched
        print(f"{rid}: {store.request_cancel(rid)}")
    return 0


def cmd_resume(args) -> int:
    from ..checkpoint import checkpoint_problem

    check_slots(args.slots, args.per_gpu)
    store = open_store(args, create=False)
    ids = store.resolve_many(args.runs)
    archives = store.requeue_many(ids, from_scratch=args.from_scratch, checkpoint_problem=checkpoint_problem)
    for rid, archive in zip(ids, archives):
        if args.from_scratch:
            kept = f"; its earlier metrics and files are in run {archive}" if archive else ""
            print(f"{rid}: queued to train again from iteration 0{kept}")
        else:
            print(f"{rid}: queued to resume from its last checkpoint")
    start_worker(store, args, say_running=False)
    return 0


def cmd_delete(args) -> int:
    store = open_store(args, create=False)
    for rid in store.delete_runs(args.runs, yes=args.yes):
        print(f"{rid}: deleted")
    return 0


def cmd_worker(args) -> int:
    from ..runs.executors import make_executor
    from ..runs.worker import Worker, dispatch_problems

    check_slots(args.slots, args.per_gpu)
    problems = dispatch_problems(args.retries, args.cancel_grace)
    if not (0 < args.cpus_per_run <= 1024):
        problems.append(f"--cpus-per-run must be more than 0 and at most 1024, got {args.cpus_per_run:g}")
    if args.executor != "ray" and (args.ray_address or args.cpus_per_run != 1):
        problems.append("--ray-address and --cpus-per-run are for --executor ray")
    if problems:
        raise ConfigError("; ".join(problems))
    store = open_store(args)
    if args.executor == "ray":
        executor = make_executor("ray", store, address=args.ray_address, per_gpu=args.per_gpu,
                                 cpus_per_run=args.cpus_per_run, device=args.device, data_dir=args.data,
                                 slots=args.slots)
    else:
        executor = make_executor("local", store, slots=args.slots, per_gpu=args.per_gpu, device=args.device,
                                 data_dir=args.data)
    return Worker(store, executor=executor, idle_exit_s=args.exit_when_idle, retries=args.retries,
                  cancel_grace_s=args.cancel_grace).run()


def cmd_execute(args) -> int:
    import torch

    from ..runs.execute import execute_run
    from ..analysis import queue  # noqa: F401 (registers the analysis job kinds: lab.runs.kinds)

    if args.threads:
        torch.set_num_threads(args.threads)
    store = open_store(args, create=False)
    status = execute_run(store, args.run, data_dir=args.data, attempt=args.attempt, device=args.device)
    if status == "failed":
        print(f"run {args.run}: failed: {store.get_run(args.run)['message']}", flush=True)
    # a stop the run recorded (cancelled, interrupted) and an outcome (done, diverged) are not the worker's
    # business; a failure or a lost run is
    return 0 if status in ("done", "cancelled", "interrupted", "diverged") else EXIT.get(status, 1)


def _add_run(sub) -> None:
    r = sub.add_parser("run", help="train one run in the foreground, with a progress bar")
    r.add_argument("--kind", choices=["plain", "residual"], default="residual", help="plain net or its residual twin")
    r.add_argument("--depth", type=int, default=20, help="weighted layers: 6n+2 (20, 32, 44, 56, 110, ...)")
    r.add_argument("--dataset", choices=list(DATASETS), default=None, help="data set (default: the preset's)")
    r.add_argument("--preset", choices=list(PRESETS), default="quick", help=PRESET_HELP)
    r.add_argument("--seed", type=int, default=0, help="seed for init, batch order and augmentation")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    add_data(r)
    add_results(r)
    add_option_flags(r)
    r.set_defaults(func=cmd_run)


def _add_sweep(sub) -> None:
    s = sub.add_parser("sweep", help="queue every combination of kinds x depths x seeds x options, run in the "
                                     "background")
    s.add_argument("--kinds", default="plain,residual", help="comma-separated: plain,residual")
    s.add_argument("--depths", default="20,56", help="comma-separated depths, e.g. 20,32,44,56")
    s.add_argument("--seeds", type=int, default=1, help="number of seeds per configuration (seeds 0..N-1)")
    s.add_argument("--seed-start", type=int, default=0, help="first seed when --seeds counts")
    s.add_argument("--seed-list", default=None, help="explicit comma-separated seeds (instead of --seeds)")
    s.add_argument("--dataset", choices=list(DATASETS), default=None, help="data set (default: the preset's)")
    s.add_argument("--preset", choices=list(PRESETS), default="quick", help=PRESET_HELP)
    s.add_argument("--grid", action="append", metavar="OPTION=V1,V2",
                   help="also sweep an option over values, e.g. --grid shortcut=A,B (repeatable)")
    s.add_argument("--tag", default="", help="a tag for every run of the sweep")
    add_worker_flags(s)
    add_results(s)
    add_option_flags(s, EXPLICIT | {"tag"})
    s.set_defaults(func=cmd_sweep)


def _add_readers(sub) -> None:
    ls = sub.add_parser("ls", help="list runs with status, progress, throughput and ETA")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.add_argument("--status", default=None,
                    help="only these statuses, comma-separated: queued, running, done, failed, diverged, cancelled, "
                         "interrupted")
    add_results(ls)
    ls.set_defaults(func=cmd_ls)

    sh = sub.add_parser("show", help="one run: config, environment, metrics, log tail")
    sh.add_argument("run", help="run id (a unique, case-sensitive prefix is enough)")
    sh.add_argument("--json", action="store_true", help="machine-readable output")
    sh.add_argument("--lines", type=int, default=15, help="log lines to show")
    add_results(sh)
    sh.set_defaults(func=cmd_show)


def _add_run_actions(sub) -> None:
    for name, func, text in (
            ("cancel", cmd_cancel, "cancel queued or running runs (a running one checkpoints first)"),
            ("resume", cmd_resume, "queue interrupted, cancelled or failed runs to continue from their checkpoint"),
            ("delete", cmd_delete, "delete runs and their files")):
        c = sub.add_parser(name, help=text)
        c.add_argument("runs", nargs="+", metavar="RUN",
                       help="run ids (a unique, case-sensitive prefix of each is enough; an ambiguous one is refused)")
        if name == "resume":
            c.add_argument("--from-scratch", action="store_true",
                           help="train again from iteration 0 (when the checkpoint is missing or unusable); the "
                                "run's earlier metrics, log and checkpoint move to a new archived run")
            add_worker_flags(c)
        if name == "delete":
            c.add_argument("--yes", action="store_true", help="needed to delete more than one run at once")
        add_results(c)
        c.set_defaults(func=func)


def _add_worker(sub) -> None:
    w = sub.add_parser("worker", help="run queued runs in child processes (or on a Ray cluster) until stopped")
    w.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local: child processes on this host; ray: tasks on a Ray cluster")
    w.add_argument("--ray-address", metavar="HOST:PORT", default=None,
                   help="the Ray head (ray start --head; default $RAY_ADDRESS, else the cluster on this host)")
    add_slot_flags(w, what="(GPU and ray: a cap on runs at once; ray: each run asks 1/N of a GPU)")
    w.add_argument("--cpus-per-run", type=float, default=1, help="ray, on a cluster without GPUs: CPUs each run asks for")
    w.add_argument("--retries", type=int, default=0,
                   help="queue a run whose process or node died again, to resume from its checkpoint, up to N times")
    w.add_argument("--cancel-grace", type=float, default=60.0, metavar="SECONDS",
                   help="stop a run's process when it has not obeyed a cancel request within this")
    w.add_argument("--device", choices=["auto", "cpu"], default="auto", help="cpu: ignore GPUs")
    w.add_argument("--exit-when-idle", type=float, default=None, metavar="SECONDS",
                   help="exit after this long with nothing to do")
    add_data(w)
    add_results(w)
    w.set_defaults(func=cmd_worker)

    x = sub.add_parser("_execute")  # the worker's child entry point; no help, so not listed
    x.add_argument("run")
    x.add_argument("--attempt", required=True)  # the ownership token the claim gave this attempt
    x.add_argument("--device", default=None)    # where the worker placed it (its slot's device)
    x.add_argument("--threads", type=int, default=0)
    add_data(x)
    add_results(x)
    x.set_defaults(func=cmd_execute)


def register(sub) -> None:
    """Add the training runs' commands to the lab's subcommands."""
    _add_run(sub)
    _add_sweep(sub)
    _add_readers(sub)
    _add_run_actions(sub)
    _add_worker(sub)
