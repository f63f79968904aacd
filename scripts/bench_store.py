"""Benchmark the results store on SQLite and on PostgreSQL: concurrent writers, then page renders on a full store.

    python scripts/bench_store.py                      # both stores; a throwaway PostgreSQL server of its own
    python scripts/bench_store.py --pg-url postgresql+psycopg://lab@db-host/lab_bench   # an existing database
    python scripts/bench_store.py --runs 1000 --iterations 64000 --stores sqlite

1. Writers: `--writers` processes (fresh interpreters, as the worker's children are) each own one running run and
   log `--steps` windows the way a run does (6 scalars and 3 per-layer rows per window, under its attempt token,
   a heartbeat every 10 windows), all starting at once. Prints rows/s (scalar and layer rows over the wall time
   from the start signal to the last writer's exit), lost rows (written but not in the store: must be 0) and
   failed writers (must be 0).
2. Pages: fills the store with `--runs` simulated runs of `--iterations` iterations (lab/fill.py; `--fill-procs`
   processes) and times every dashboard page through Streamlit's AppTest (scripts/fill_store.py's `time_pages`).

Without --pg-url, PostgreSQL is a throwaway server (Debian's binaries, tests/pg.py) stopped at the end; with it,
the database given must be empty (or hold only earlier benchmark runs). `--runs 0` skips part 2.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts"), str(ROOT / "tests")]

from lab.config import make_config  # noqa: E402
from lab.runs.store import Store  # noqa: E402

SCALARS = ("train_loss", "train_error", "lr", "images_per_s", "elapsed_s", "epoch")
LAYERS = ("grad_norm", "input_grad_norm", "update_ratio")
LAYER_WIDTH = 57  # ResNet-56's probed layers

WRITER = """
import sys, time
from pathlib import Path
from lab.runs.store import Store
root, run_id, go, steps, width = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
store = Store(root)
attempt = store.begin_attempt(run_id)
Path(str(go) + "." + run_id).touch()  # ready
while not go.exists():
    time.sleep(0.005)
started = time.time()
for step in range(1, steps + 1):
    store.log(run_id, scalars=[(step, n, 0.5) for n in {scalars!r}],
              layers=[(step, m, [1.0] * width) for m in {layers!r}], attempt=attempt, iteration=step)
    if step % 10 == 0:
        store.heartbeat(run_id, attempt)
print(started, time.time(), flush=True)
store.set_status(run_id, "done", expect=["running"], attempt=attempt)
""".format(scalars=SCALARS, layers=LAYERS)


def bench_writers(root: Path, url: str | None, writers: int, steps: int) -> dict:
    """`writers` processes logging at once into a new store; rows written, seconds, rows/s, lost, failed."""
    store = Store(root, url=url)
    ids = store.create_runs([make_config("smoke", seed=i, tag="bench") for i in range(writers)], status="running")
    env = {k: v for k, v in os.environ.items() if k != "LAB_DB_URL"}
    if url:
        env["LAB_DB_URL"] = url
    go = root / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(root), rid, str(go), str(steps), str(LAYER_WIDTH)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rid in ids]
    deadline = time.time() + 600
    while (sum(Path(f"{go}.{rid}").exists() for rid in ids) < writers and time.time() < deadline
           and all(p.poll() is None for p in procs)):
        time.sleep(0.05)  # every writer imported, connected and waiting
    go.touch()
    errors, spans = [], []
    for p in procs:
        out, err = p.communicate()
        if p.returncode != 0:
            errors.append(err.strip().splitlines()[-1] if err.strip() else f"exit status {p.returncode}")
        spans += [tuple(map(float, line.split())) for line in out.splitlines()[-1:]]
    # from the first writer's first window to the last writer's last: the time the rows took
    seconds = max(end for _, end in spans) - min(start for start, _ in spans) if spans else float("nan")
    expected = writers * steps * (len(SCALARS) + len(LAYERS))
    stored = len(store.scalars(ids)) + sum(len(store.layer_steps(rid, m)) for rid in ids for m in LAYERS)
    done = int((store.runs(status=["done"])["id"].isin(ids)).sum())
    store.close()
    return dict(rows=expected, seconds=seconds, rows_per_s=stored / seconds, lost=expected - stored,
                failed=len(errors) + (writers - done - len(errors)), errors=errors[:3])


FILLER = """
import json, sys
from lab.fill import simulate_run
from lab.runs.store import Store
store = Store(sys.argv[1])
for seed, kind, depth in json.loads(sys.argv[3]):
    simulate_run(store, kind, depth, seed, iterations=int(sys.argv[2]))
"""


def fill_store(root: Path, url: str | None, runs: int, iterations: int, procs: int) -> float:
    """`runs` finished simulated runs, as lab.fill.fill spreads them (kinds x depths x seeds); seconds taken."""
    depths = (20, 32, 44, 56, 110)
    combos = [(k, d) for k in ("plain", "residual") for d in depths]
    seeds = -(-runs // len(combos))
    todo = [(s, k, d) for s in range(seeds) for k, d in combos][:runs]
    Store(root, url=url).close()  # the schema, before the fill processes race to it
    started = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k != "LAB_DB_URL"}
    if url:
        env["LAB_DB_URL"] = url
    fillers = [subprocess.Popen([sys.executable, "-c", FILLER, str(root), str(iterations), json.dumps(todo[i::procs])],
                                cwd=ROOT, env=env) for i in range(procs)]
    if any(f.wait() != 0 for f in fillers):
        raise SystemExit("error: filling the store failed (see above)")
    return time.perf_counter() - started


def time_store_pages(root: Path, url: str | None, repeat: int) -> dict:
    from fill_store import time_pages

    saved = os.environ.get("LAB_DB_URL")
    if url:
        os.environ["LAB_DB_URL"] = url
    else:
        os.environ.pop("LAB_DB_URL", None)
    try:
        return time_pages(str(root), repeat)
    finally:
        if saved is None:
            os.environ.pop("LAB_DB_URL", None)
        else:
            os.environ["LAB_DB_URL"] = saved


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stores", default="sqlite,postgresql", help="which stores: sqlite, postgresql or both")
    p.add_argument("--pg-url", default=None, help="an empty PostgreSQL database (default: a throwaway server)")
    p.add_argument("--writers", type=int, default=32, help="concurrent writer processes")
    p.add_argument("--steps", type=int, default=100, help="logging windows each writer logs")
    p.add_argument("--runs", type=int, default=1000, help="simulated runs for the page timings (0: skip them)")
    p.add_argument("--iterations", type=int, default=64000, help="iterations per simulated run (logged every 100)")
    p.add_argument("--fill-procs", type=int, default=2, help="processes filling the store")
    p.add_argument("--repeat", type=int, default=3, help="timed renders per page")
    args = p.parse_args()
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    unknown = set(stores) - {"sqlite", "postgresql"}
    if unknown:
        p.error(f"unknown store {', '.join(sorted(unknown))}; give sqlite, postgresql or both")

    server = None
    urls: dict[str, str | None] = {"sqlite": None}
    if "postgresql" in stores:
        from pg import PgServer, PgUnavailable, create_database

        if args.pg_url:
            urls["postgresql"] = args.pg_url
        else:
            try:
                server = PgServer().start()
            except PgUnavailable as exc:
                print(f"error: no PostgreSQL server: {exc} (or give --pg-url)", file=sys.stderr)
                return 2
            admin = server.url()
            urls["postgresql"] = None  # a fresh database per part, below
    tmp = Path(tempfile.mkdtemp(prefix="lab-bench-store-"))

    def url_for(name: str) -> str | None:
        if name == "sqlite" or args.pg_url:
            return urls[name]
        return create_database(admin, "lab_bench")

    try:
        print(f"writers: {args.writers} processes x {args.steps} windows ({len(SCALARS)} scalars + {len(LAYERS)} "
              f"layer rows of {LAYER_WIDTH} values each, a heartbeat every 10), all at once; "
              f"{os.cpu_count()} CPU cores")
        print(f"{'store':<11} {'rows':>7} {'s':>7} {'rows/s':>8} {'lost':>5} {'failed':>6}")
        for name in stores:
            r = bench_writers(tmp / f"writers-{name}", url_for(name), args.writers, args.steps)
            print(f"{name:<11} {r['rows']:>7} {r['seconds']:>7.1f} {r['rows_per_s']:>8.0f} {r['lost']:>5} "
                  f"{r['failed']:>6}", flush=True)
            for e in r["errors"]:
                print(f"  writer error: {e}")
        if args.runs > 0:
            for name in stores:
                root, url = tmp / f"pages-{name}", url_for(name)
                seconds = fill_store(root, url, args.runs, args.iterations, max(1, args.fill_procs))
                print(f"\n{name}: filled {args.runs} runs of {args.iterations} iterations in {seconds:.0f} s", flush=True)
                time_store_pages(root, url, args.repeat)
    finally:
        if server is not None:
            server.stop()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
