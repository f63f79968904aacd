"""Fill a results store with simulated runs and time how fast the dashboard pages render on it.

    python scripts/fill_store.py --results /tmp/lab-100 --runs 100 --iterations 64000

Prints the time to fill, then each page's render times through Streamlit's AppTest (a full script run, figures
built, no browser): its first render with nothing of the store in memory, and later renders (mean of --repeat).
With LAB_DB_URL set, the runs go to that database (the folder keeps the run folders).
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

PAGES = ["runs", "curves", "depth", "responses", "gradients", "inside", "studies", "launch", "report"]


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


def warm_figures() -> None:
    """What a server that has drawn any figure has done once: plotly's figure classes built and serialised."""
    from plotly.subplots import make_subplots

    make_subplots(rows=1, cols=2, shared_yaxes=True).to_json()


def time_pages(results: str, repeat: int = 3) -> dict[str, tuple[float, float] | None]:
    """Print and return each page's (first render, mean later render) in seconds (None where it raised) on the
    store in `results` (and $LAB_DB_URL, when set). A first render is the page's first run in a server that has
    imported everything but holds nothing of this store in memory (the lab's series caches and Streamlit's
    caches cleared, as after a restart, once it has drawn a figure); later renders are reruns of the same session."""
    os.environ["LAB_RESULTS"] = str(Path(results).resolve())
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from lab import run_views

    def cold() -> None:
        run_views._cache.clear()
        run_views._layer_cache.clear()
        run_views._cache_rows = run_views._layer_rows = 0
        st.cache_data.clear()
        st.cache_resource.clear()

    warm = AppTest.from_file(str(ROOT / "pages" / "report.py"), default_timeout=120)
    warm.run()  # the imports a running server has done
    warm_figures()
    print(f"{'page':<10} {'first (s)':>9} {'later (s)':>9}  (later: mean of {repeat})")
    out: dict[str, tuple[float, float] | None] = {}
    for page in PAGES:
        cold()
        at = AppTest.from_file(str(ROOT / "pages" / f"{page}.py"), default_timeout=120)
        t = time.perf_counter()
        at.run()
        first = time.perf_counter() - t
        if at.exception:
            print(f"{page:<10} exception: {at.exception[0].value}")
            out[page] = None
            continue
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            at.run()
            times.append(time.perf_counter() - t)
        out[page] = (first, sum(times) / len(times))
        print(f"{page:<10} {first:>9.3f} {out[page][1]:>9.3f}", flush=True)
    return out


if __name__ == "__main__":
    sys.exit(main())
