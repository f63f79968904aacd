"""Time the quick demo end to end as a user gets it: the four runs of `lab.demo` queued in a fresh results
folder and trained by the real background worker, from queueing to the last run's end, with the verdict.

On an idle 2-core machine (the demo's reference: two slots of one thread each):

    python scripts/time_demo.py --slots 2

To emulate a CPU without AVX-512 and native bf16 on one that has them (fp32 training, as such a CPU gets):

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python scripts/time_demo.py --slots 2 --precision fp32

Prints each run's wall time and final training error, the whole demo's wall time, and the verdict; exits 1 when
the pattern the demo is sized for (plain-56 at least 10 points above plain-20 and ResNet-56 at least 10 below
plain-56) does not show.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from lab.demo import demo_configs, run_demo
from lab.runs.store import Store


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--slots", type=int, default=2, help="worker slots (0: the worker's own choice)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--results", default="", help="results folder (default: a temporary one)")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(a.results or tmp))
        t = time.time()
        code = run_demo(store, data=a.data, slots=a.slots, configs=demo_configs(precision=a.precision), poll_s=2.0)
        wall = time.time() - t
        runs = store.runs()
        errors = {}
        for _, r in runs.iterrows():
            errors[(r["kind"], int(r["depth"]))] = 100 * (r["final_train_error"] or float("nan"))
            print(f"{r['label']:<18} {r['status']:<8} {r['finished_at'] - r['started_at']:6.0f} s  "
                  f"final training error {errors[(r['kind'], int(r['depth']))]:.1f}%  "
                  f"val {100 * r['final_val_error']:.1f}%  {r['images_per_s']:.0f} images/s")
        print(f"demo wall time: {wall:.0f} s ({wall / 60:.1f} min), from queueing to the last run's end")
    ok = (errors.get(("plain", 56), 0) - errors.get(("plain", 20), 99) >= 10
          and errors.get(("plain", 56), 0) - errors.get(("residual", 56), 99) >= 10)
    print("pattern:", "shown" if ok else "NOT shown", "(plain-56 >= plain-20 + 10 and ResNet-56 <= plain-56 - 10)")
    return code or (0 if ok else 1)


if __name__ == "__main__":
    sys.exit(main())
