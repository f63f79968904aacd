"""`python -m lab study ...`: list the studies, run one (queueing only what is missing), show its verdict, export it.

Heavy imports happen inside the commands, so `python -m lab --help` stays quick.
"""
from __future__ import annotations

import argparse
import json
import sys

BUDGET_HELP = "smoke: synthetic data, seconds (tests); cpu: Fashion-MNIST on a CPU (default); paper: CIFAR-10, a GPU"


def _store_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", metavar="DIR", default=None,
                   help="results folder (default: $LAB_RESULTS or results/); $LAB_DB_URL selects another database")


def _plan_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budget", default="cpu", metavar="BUDGET", help=BUDGET_HELP)
    p.add_argument("--seeds", type=int, default=None, metavar="N", help="seeds per arm (default: the budget's)")
    p.add_argument("--dataset", default=None, metavar="D", help="data set instead of the budget's")


def _open_store(args, create: bool):
    from ..runs.store import Store, StoreError

    try:
        return Store(args.results, create=create)
    except StoreError:
        if create:
            raise
        return None  # no store yet: the study is shown as not started


def cmd_list(args) -> int:
    from ..runs.monitor import format_duration
    from .report import clean, overview_rows

    store = _open_store(args, create=False)
    rows = overview_rows(store, args.budget)
    if args.json:
        print(json.dumps(clean(rows), indent=2))
        return 0
    print(f"studies at the {args.budget} budget (estimated time of the runs still to do, one at a time, here):")
    print(f"{'id':<14} {'state':<12} {'finished':>9} {'to run':>7} {'time':>9}  title")
    for row in rows:
        finished = f"{row['finished']}/{row['planned']}"
        print(f"{row['id']:<14} {row['state']:<12} {finished:>9} {row['to_run']:>7} "
              f"{format_duration(row['estimate_s']):>9}  {row['title']}")
        if row["unavailable"]:
            print(f"{'':<14} not in this build: {', '.join(row['unavailable'])}")
    return 0


def cmd_run(args) -> int:
    from ..runs.monitor import format_duration, overview
    from ..runs.worker import ensure_worker
    from .plan import make_plan, match, queue_missing, status
    from .registry import get

    study = get(args.name)
    plan = make_plan(study, args.budget, args.seeds, args.dataset)
    store = _open_store(args, create=True)
    done = queue_missing(store, plan)
    jobs = sum(len(a.configs) for a in plan.available() if a.arm.analysis)
    print(f"study {study.id} at the {plan.budget} budget ({plan.dataset_name()}, {plan.seeds} seed(s) per arm): "
          f"{len(plan.configs())} run(s)" + (f" and {jobs} analysis job(s)" if jobs else "") + f"; "
          f"{len(done.reused)} already stored or queued, {len(done.resumed)} resumed, {len(done.created)} queued now")
    for arm, why in plan.unavailable().items():
        print(f"  not in this build: {arm}: {why}")
    slots = match(plan, overview(store), store)[0]
    if status(plan, slots, estimate=False).active:
        st = status(plan, slots, store, parallel=args.slots or 1)
        print(f"  estimated time until the study's runs are done: {format_duration(st.eta_s)} ({st.basis})")
        if st.queued and not args.no_worker:  # also for runs queued earlier with --no-worker
            pid = ensure_worker(store, slots=args.slots, data_dir=args.data)
            print(f"  started a background worker (pid {pid})" if pid else "  a worker is already running for this store")
    print(f"watch with: python -m lab study show {study.id} --budget {plan.budget} --results {store.root}")
    return 0


def cmd_show(args) -> int:
    from .report import describe_time, evaluate

    store = _open_store(args, create=False)
    result = evaluate(args.name, store, args.budget, args.seeds, args.dataset)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return 0
    s = result.status
    print(f"{result.study.title} [{result.study.id}], {result.plan.budget} budget ({result.plan.dataset_name()}, "
          f"{result.plan.seeds} seed(s) per arm)")
    print(f"question: {result.study.question}")
    print(f"literature: {result.study.literature}")
    print(f"status: {s.state}: {s.done} done, {s.diverged} diverged, {s.running} running, {s.queued} queued, "
          f"{s.missing + s.resumable} to run, of {s.planned}; ETA {describe_time(s.eta_s)}")
    for arm, why in s.unavailable.items():
        print(f"not in this build: {arm}: {why}")
    print("verdict:" if result.verdict else "verdict: not enough finished runs yet")
    for f in result.analysis.findings:
        print(f"  - [{f.outcome}] {f.text}")
    for note in result.analysis.notes:
        print(f"  {note}")
    return 0


def cmd_export(args) -> int:
    from .report import evaluate, export

    store = _open_store(args, create=False)
    result = evaluate(args.name, store, args.budget, args.seeds, args.dataset)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    path, notes, count = export(result, args.out, formats)
    print(f"wrote {path}: {count} file(s), {len(result.figures())} figure(s), verdict "
          f"{'included' if result.verdict else 'not available yet'}")
    for n in notes:
        print(f"warning: {n}", file=sys.stderr)
    return 0


def add_commands(sub) -> None:
    """Register `study` and its subcommands on the main parser's subparsers."""
    p = sub.add_parser("study", help="studies: open questions about degradation, their runs and verdicts")
    ssub = p.add_subparsers(dest="study_command", required=True, metavar="SUBCOMMAND")

    ls = ssub.add_parser("list", help="every study with its status and estimated time at a budget")
    ls.add_argument("--budget", default="cpu", metavar="BUDGET", help=BUDGET_HELP)
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    _store_arg(ls)
    ls.set_defaults(func=cmd_list)

    r = ssub.add_parser("run", help="queue the study's missing runs (stored ones are reused) and start a worker")
    r.add_argument("name", help="study id (see `study list`)")
    _plan_args(r)
    r.add_argument("--no-worker", action="store_true", help="only queue; do not start a background worker")
    r.add_argument("--slots", type=int, default=0, help="runs at once if this starts a worker (CPU default 1)")
    r.add_argument("--data", metavar="DIR", default=None, help="data folder for the worker")
    _store_arg(r)
    r.set_defaults(func=cmd_run)

    sh = ssub.add_parser("show", help="the study's question, status and verdict with its numbers")
    sh.add_argument("name", help="study id")
    _plan_args(sh)
    sh.add_argument("--json", action="store_true", help="machine-readable output")
    _store_arg(sh)
    sh.set_defaults(func=cmd_show)

    e = ssub.add_parser("export", help="figures (SVG/PDF/PNG), data (CSV), numbers (JSON) and a one-page HTML summary")
    e.add_argument("name", help="study id")
    _plan_args(e)
    e.add_argument("--out", required=True, metavar="DIR|FILE.zip", help="output folder, or a .zip path")
    e.add_argument("--formats", default="svg,pdf,png", help="image formats, comma-separated: svg, pdf, png")
    _store_arg(e)
    e.set_defaults(func=cmd_export)
