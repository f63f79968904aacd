"""Fill a results store with simulated runs and time how fast the dashboard pages render on it.

    python scripts/fill_store.py --results /tmp/lab-100 --runs 100 --iterations 64000

Prints the time to fill, then each page's render time through Streamlit's AppTest (a full script run, figures
built, no browser), averaged over --repeat runs after one warm-up run. With LAB_DB_URL set, the runs go to that
database (the folder keeps the run folders).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab.fill import fill  # noqa: E402
from lab.runs.store import Store  # noqa: E402

PAGES = ["runs", "curves", "depth", "responses", "gradients", "launch", "report"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", required=True, help="results folder to fill (created; use an empty one)")
    p.add_argument("--runs", type=int, default=100, help="simulated runs")
    p.add_argument("--iterations", type=int, default=64000, help="iterations per run (logged every 100)")
    p.add_argument("--repeat", type=int, default=3, help="timed renders per page")
    p.add_argument("--no-fill", action="store_true", help="only time the pages on an existing store")
    args = p.parse_args()
    store = Store(args.results)
    if not args.no_fill:
        t = time.perf_counter()
        fill(store, runs=args.runs, iterations=args.iterations)
        db = Path(args.results) / "lab.db"
        size = f" ({db.stat().st_size / 2**20:.0f} MiB)" if db.exists() else ""
        print(f"filled {args.runs} runs of {args.iterations} iterations in {time.perf_counter() - t:.1f} s{size}")
    time_pages(args.results, args.repeat)
    return 0


def time_pages(results: str, repeat: int = 3) -> dict[str, float | None]:
    """Print and return each page's mean render time (s; None where it raised) on the store in `results` (and
    $LAB_DB_URL, when set)."""
    os.environ["LAB_RESULTS"] = str(Path(results).resolve())
    from streamlit.testing.v1 import AppTest

    print(f"{'page':<10} {'render (s)':>10}  (mean of {repeat}, after a warm-up)")
    out: dict[str, float | None] = {}
    for page in PAGES:
        at = AppTest.from_file(str(ROOT / "pages" / f"{page}.py"), default_timeout=120)
        at.run()
        if at.exception:
            print(f"{page:<10} exception: {at.exception[0].value}")
            out[page] = None
            continue
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            at.run()
            times.append(time.perf_counter() - t)
        out[page] = sum(times) / len(times)
        print(f"{page:<10} {out[page]:>10.3f}")
    return out


if __name__ == "__main__":
    sys.exit(main())
