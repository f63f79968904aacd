"""The analyses' commands: `lab lesion|landscape|shatter RUN ...`, in the foreground with a progress
bar on stderr; each saves its result with the run and prints a short summary (or the result as JSON). With
`--background` the command queues the analysis as a job instead (`lab.analysis.queue`), starts a worker unless
one is running, and prints the job's id and how to watch it."""
from __future__ import annotations

import argparse
import json
import shlex

from ..analysis.options import ANALYSES
from ..errors import AnalysisError
from .shared import Progress, add_results, add_worker_flags, check_slots, open_store, pct


def _int_or_word(*words: str):
    """argparse type: an integer, or one of `words`."""
    def parse(text: str):
        if text in words:
            return text
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer or {' / '.join(words)}, got {text!r}") from None
    return parse


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run id (a unique prefix is enough)")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON instead of a summary")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--device", default="auto", help="'auto' (a GPU when there is one), 'cpu', 'cuda', 'cuda:N'")
    p.add_argument("--background", action="store_true",
                   help="queue it as a background job for the worker (progress in `python -m lab ls`, cancel with "
                        "`python -m lab cancel JOB`) instead of running it here; the worker flags apply to it")
    add_worker_flags(p)
    add_results(p)


def register(sub) -> None:
    """Add `lesion`, `landscape` and `shatter` to the lab's subcommands."""
    o = {name: a.options for name, a in ANALYSES.items()}

    p = sub.add_parser("lesion", help="test error with units deleted: each alone, k at once, reordered (Veit et al.)")
    _common(p)
    p.add_argument("--draws", type=int, default=None, help=f"{o['lesion']['draws'].help} (default 5)")
    p.add_argument("--reorder", action="store_true", default=None, help="also measure reordered units (Veit Fig. 5b)")
    p.add_argument("--max-swaps", type=int, default=None, help=o["lesion"]["max_swaps"].help)
    p.add_argument("--images", type=int, default=None, help=o["lesion"]["images"].help)
    p.add_argument("--seed", type=int, default=None, help=o["lesion"]["seed"].help)
    p.set_defaults(func=_command("lesion", ("draws", "reorder", "max_swaps", "images", "seed")))

    p = sub.add_parser("landscape", help="loss along filter-normalised random directions, 1-D or 2-D (Li et al.)")
    _common(p)
    p.add_argument("--points", type=int, default=None, help=f"{o['landscape']['points'].help} (default 21)")
    p.add_argument("--span", type=float, default=None, help=f"{o['landscape']['span'].help} (default 1)")
    p.add_argument("--2d", dest="two_d", action="store_true", default=None, help="a points x points grid over two directions")
    p.add_argument("--images", type=int, default=None, help=f"{o['landscape']['images'].help} (default 2000)")
    p.add_argument("--seed", type=int, default=None, help=o["landscape"]["seed"].help)
    p.set_defaults(func=_command("landscape", ("points", "span", "two_d", "images", "seed")))

    p = sub.add_parser("shatter", help="correlation of input gradients vs input distance (Balduzzi et al.)")
    _common(p)
    p.add_argument("--at", default=None, metavar="ITERATION|init",
                   help="the weights to analyse: init, or the checkpoint's iteration (default: the checkpoint)")
    p.add_argument("--points", type=int, default=None, help=f"{o['shatter']['points'].help} (default 256)")
    p.add_argument("--logit", dest="target", type=_int_or_word("loss"), default=None, metavar="K|loss",
                   help="gradient of logit K, or of the loss against x0's label (default: loss)")
    p.add_argument("--image", type=int, default=None, help=f"{o['shatter']['image'].help} (default 0)")
    p.add_argument("--towards", type=_int_or_word("auto", "random"), default=None, metavar="J|random|auto",
                   help=o["shatter"]["towards"].help)
    p.add_argument("--norm", type=float, default=None, help=o["shatter"]["norm"].help)
    p.add_argument("--seed", type=int, default=None, help=o["shatter"]["seed"].help)
    p.set_defaults(func=_command("shatter", ("at", "points", "target", "image", "towards", "norm", "seed")))


def _command(name: str, option_names: tuple[str, ...]):
    def run(args) -> int:
        # imported here: the lab's other commands start without loading the analyses
        from ..analysis.jobs import run_analysis
        from ..analysis.results import BACKEND, RunFolder, save_result

        store = open_store(args, create=False)
        options = {k: getattr(args, k) for k in option_names if getattr(args, k, None) is not None}
        if args.background:
            return _queue(store, args, name, options)
        if args.no_worker:
            raise AnalysisError("--no-worker goes with --background (a foreground analysis needs no worker)")
        with Progress(unit="step", desc=name, quiet=args.quiet) as bar:
            result_name, result = run_analysis(store, args.run, name, options, data_dir=args.data,
                                               device=args.device, progress=bar.callback)
        save_result(store, result["run"]["run_id"], result_name, result)
        if args.json:
            print(json.dumps(result, indent=1))
            return 0
        print("\n".join(SUMMARIES[name](result)))
        where = (BACKEND.folder(store, result["run"]["run_id"]) / f"{result_name}.json"
                 if isinstance(BACKEND, RunFolder) else f"the store's artifacts as {result_name!r}")
        print(f"saved: {where} ({result['elapsed_s']:.1f} s)")
        return 0

    return run


def _queue(store, args, name: str, options: dict) -> int:
    """`--background`: queue the job (or find the identical one in flight), start a worker, say how to watch it."""
    from ..analysis.queue import queue_analysis
    from ..runs.monitor import printable

    if args.device != "auto":
        raise AnalysisError("--device applies to an analysis run here; a background job runs on the device of "
                            "the worker's slot (a GPU when the worker has one)")
    check_slots(args.slots, args.per_gpu)
    before = {r["id"] for r in _in_flight(store)}
    job_id = queue_analysis(store, args.run, name, options)
    job = store.get_run(job_id)
    pid = None
    if not args.no_worker:
        from ..runs.worker import ensure_worker

        pid = ensure_worker(store, slots=args.slots, per_gpu=args.per_gpu, data_dir=args.data)
    if args.json:
        print(json.dumps({"job": job_id, "status": job["status"], "analysed_run": job["parent_id"],
                          "reused": job_id in before, "options": job["config"], "worker_pid": pid}))
        return 0
    if job_id in before:
        print(f"job {job_id} ({printable(job['label'])}) is already {job['status']}: not queued twice")
    else:
        print(f"queued job {job_id}: {printable(job['label'])} ({job['parent_id']})")
    if not args.no_worker:
        print(f"started a background worker (pid {pid})" if pid else "a worker is already running for this store")
    root = f" --results {shlex.quote(str(store.root))}" if args.results else ""
    print(f"watch it with: python -m lab ls{root} (its log: python -m lab show {job_id}{root}); "
          f"stop it with: python -m lab cancel {job_id}{root}")
    return 0


def _in_flight(store) -> list[dict]:
    from ..analysis.queue import IN_FLIGHT, analysis_jobs

    jobs = analysis_jobs(store)
    return jobs[jobs["status"].isin(IN_FLIGHT)].to_dict("records") if not jobs.empty else []


def _num(x, fmt: str = ".4f") -> str:
    return "-" if x is None else format(x, fmt)


def _header(result: dict) -> str:
    run = result["run"]
    at = "at init" if run["at"] == "init" else f"at iteration {run['step']}"
    return f"{run['run_id']}: {run['label']} {at} ({run['device']}, {run['precision']})"


def lesion_summary(result: dict) -> list[str]:
    table, single = result["unit_table"], result["single"]["error"]
    lines = [_header(result),
             f"test error on {result['images']} images: {pct(result['baseline']['error'])} with every unit"]
    deletable = [(r, e) for r, e in zip(table, single) if e is not None]
    if deletable:
        worst = max(deletable, key=lambda t: t[1])
        mean = sum(e for _, e in deletable) / len(deletable)
        lines.append(f"one unit deleted ({len(deletable)} of {len(table)} deletable): mean {pct(mean)}, "
                     f"worst {pct(worst[1])} ({worst[0]['name']}, stage {worst[0]['stage'] + 1})")
    fixed = [r["name"] for r in table if not r["deletable"]]
    if fixed:
        lines.append(f"not deletable (they change the shape): {', '.join(fixed)}")
    d = result["deleted"]
    if d["k"]:
        shown = sorted({0, len(d["k"]) // 4, len(d["k"]) // 2, len(d["k"]) - 1})
        lines.append("k deleted at once (mean over sets): " + ", ".join(
            f"k={d['k'][i]}: {pct(d['error_mean'][i])}" for i in shown))
    r = result.get("reordered")
    if r and r["swaps"]:
        shown = sorted({0, len(r["swaps"]) // 2, len(r["swaps"]) - 1})
        lines.append("reordered: " + ", ".join(
            f"{r['swaps'][i]} swaps (tau {r['kendall_tau'][i]:.2f}): {pct(r['error_mean'][i])}" for i in shown))
    elif r is not None:
        lines.append("reordered: no two units share a shape, so none can swap places")
    return lines


def landscape_summary(result: dict) -> list[str]:
    o = result["origin"]
    lines = [_header(result),
             f"on {result['images']} training images: loss {_num(o['loss'])}, error {pct(o['error'])} at the weights"]
    if result["dimensions"] == 1:
        lines.append("alpha    loss       error")
        lines += [f"{a:+6.2f}  {_num(lo, '9.4f'):>9}  {pct(e):>8}"
                  for a, lo, e in zip(result["alpha"], result["loss"], result["error"])]
    else:
        flat = [v for row in result["loss"] for v in row if v is not None]
        spread = f"loss from {min(flat):.4f} to {max(flat):.4f}" if flat else "the loss is not finite anywhere"
        lines.append(f"{len(result['alpha'])} x {len(result['beta'])} grid over [{result['alpha'][0]:g}, "
                     f"{result['alpha'][-1]:g}]^2: {spread}")
    return lines


def shatter_summary(result: dict) -> list[str]:
    s = result["summary"]
    target = "the loss" if result["target"] == "loss" else f"logit {result['target']}"
    line = result["line"]
    towards = f"towards validation image {line['towards']}" if line["direction"] != "random" else "in a random direction"
    lines = [_header(result),
             f"{result['points']} inputs on a line from validation image {line['x0']} {towards} "
             f"(length {result['line_length']:.2f}); gradients of {target}",
             f"correlation at distance {s['distance_t']:.4f} of the line: {_num(s['correlation'])}"]
    n = len(result["distance_t"])
    for i in sorted({n // 16, n // 4, n // 2, n - 1}):
        lines.append(f"  at {result['distance_t'][i]:.4f}: {_num(result['correlation'][i])}")
    return lines


SUMMARIES = {"lesion": lesion_summary, "landscape": landscape_summary, "shatter": shatter_summary}
