"""`lab study ...`: list the studies, run one (queueing only what is missing), show its verdict, export it."""
from __future__ import annotations

import argparse
import json
import sys

from .shared import add_results, add_worker_flags, open_store

BUDGET_HELP = "smoke: synthetic data, seconds (tests); cpu: Fashion-MNIST on a CPU (default); paper: CIFAR-10, a GPU"
DEFAULT_BUDGET = "cpu"


def _plan_args(p: argparse.ArgumentParser, budget_help: str = BUDGET_HELP) -> None:
    p.add_argument("--budget", default=DEFAULT_BUDGET, metavar="BUDGET", help=budget_help)
    p.add_argument("--seeds", type=int, default=None, metavar="N", help="seeds per arm (default: the budget's)")
    p.add_argument("--dataset", default=None, metavar="D", help="data set instead of the budget's")


def cmd_list(args) -> int:
    from ..runs.monitor import format_duration
    from ..studies.report import clean, overview_rows

    store = open_store(args, create=False, missing_ok=True)
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
    from ..runs.worker import auto_slots
    from ..studies.plan import make_plan, match, queue_missing, status
    from ..studies.registry import get
    from .shared import start_worker

    study = get(args.name)
    plan = make_plan(study, args.budget, args.seeds, args.dataset)
    store = open_store(args, create=True)
    done = queue_missing(store, plan)
    jobs = sum(len(a.configs) for a in plan.available() if a.arm.analysis)
    print(f"study {study.id} at the {plan.budget} budget ({plan.dataset_name()}, {plan.seeds} seed(s) per arm): "
          f"{len(plan.configs())} run(s)" + (f" and {jobs} analysis job(s)" if jobs else "") + f"; "
          f"{len(done.reused)} already stored or queued, {len(done.resumed)} resumed, {len(done.created)} queued now")
    for arm, why in plan.unavailable().items():
        print(f"  not in this build: {arm}: {why}")
    slots = match(plan, overview(store), store)[0]
    if status(plan, slots, estimate=False).active:
        at_once = args.slots or auto_slots("auto", store)[0]   # what the worker this starts would run at once
        st = status(plan, slots, store, parallel=at_once)
        print(f"  estimated time until the study's runs are done: {format_duration(st.eta_s)} ({st.basis})")
        if st.queued:  # also for runs queued earlier with --no-worker
            start_worker(store, args, prefix="  ")
    print(f"watch with: python -m lab study show {study.id} --budget {plan.budget} --results {store.root}")
    return 0


def budgets_with_runs(name: str, store, seeds, dataset) -> list[str]:
    """The budgets at which the study has stored runs (any state), in the budgets' order."""
    from ..runs.monitor import overview
    from ..studies.budgets import BUDGETS
    from ..studies.report import evaluate

    if store is None:
        return []
    runs = overview(store)
    found = []
    for budget in BUDGETS:
        s = evaluate(name, store, budget, seeds, dataset, runs=runs, estimate=False, analyse=False).status
        if s.done + s.diverged + s.running + s.queued + s.resumable:
            found.append(budget)
    return found


def shown_budget(args, store) -> tuple[str, str]:
    """The budget `study show` shows, and a line saying why when --budget was not given: the default budget
    when it has runs or no budget has, else the budget that has them (naming every budget that has runs)."""
    if args.budget is not None:
        return args.budget, ""
    found = budgets_with_runs(args.name, store, args.seeds, args.dataset)
    if not found or DEFAULT_BUDGET in found:
        others = [b for b in found if b != DEFAULT_BUDGET]
        extra = f"; runs are also stored at: {', '.join(others)} (--budget shows one)" if others else ""
        return DEFAULT_BUDGET, (f"budget: {DEFAULT_BUDGET} (the default){extra}" if others else "")
    chosen = found[0]
    return chosen, (f"budget: {chosen}, the budget with stored runs (none at the default, {DEFAULT_BUDGET}); "
                    f"runs stored at: {', '.join(found)}")


def cmd_show(args) -> int:
    from ..studies.report import describe_time, evaluate

    store = open_store(args, create=False, missing_ok=True)
    budget, why = shown_budget(args, store)
    result = evaluate(args.name, store, budget, args.seeds, args.dataset)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return 0
    s = result.status
    print(f"{result.study.title} [{result.study.id}], {result.plan.budget} budget ({result.plan.dataset_name()}, "
          f"{result.plan.seeds} seed(s) per arm)")
    if why:
        print(why)
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
    from ..studies.report import evaluate, export

    store = open_store(args, create=False, missing_ok=True)
    result = evaluate(args.name, store, args.budget, args.seeds, args.dataset)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    path, notes, count = export(result, args.out, formats)
    print(f"wrote {path}: {count} file(s), {len(result.figures())} figure(s), verdict "
          f"{'included' if result.verdict else 'not available yet'}")
    for n in notes:
        print(f"warning: {n}", file=sys.stderr)
    return 0


def register(sub) -> None:
    """Add `study` and its subcommands to the lab's subcommands."""
    p = sub.add_parser("study", help="studies: open questions about degradation, their runs and verdicts")
    ssub = p.add_subparsers(dest="study_command", required=True, metavar="SUBCOMMAND")

    ls = ssub.add_parser("list", help="every study with its status and estimated time at a budget")
    ls.add_argument("--budget", default=DEFAULT_BUDGET, metavar="BUDGET", help=BUDGET_HELP)
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    add_results(ls)
    ls.set_defaults(func=cmd_list)

    r = ssub.add_parser("run", help="queue the study's missing runs (stored ones are reused) and start a worker")
    r.add_argument("name", help="study id (see `study list`)")
    _plan_args(r)
    add_worker_flags(r)
    add_results(r)
    r.set_defaults(func=cmd_run)

    sh = ssub.add_parser("show", help="the study's question, status and verdict with its numbers")
    sh.add_argument("name", help="study id")
    _plan_args(sh, BUDGET_HELP.replace(" (default)", "") + " (default: cpu, or the budget with the study's "
                                                           "stored runs when only another one has them)")
    sh.set_defaults(budget=None)
    sh.add_argument("--json", action="store_true", help="machine-readable output")
    add_results(sh)
    sh.set_defaults(func=cmd_show)

    e = ssub.add_parser("export", help="figures (SVG/PDF/PNG), data (CSV), numbers (JSON) and a one-page HTML summary")
    e.add_argument("name", help="study id")
    _plan_args(e)
    e.add_argument("--out", required=True, metavar="DIR|FILE.zip", help="output folder, or a .zip path")
    e.add_argument("--formats", default="svg,pdf,png", help="image formats, comma-separated: svg, pdf, png")
    add_results(e)
    e.set_defaults(func=cmd_export)
