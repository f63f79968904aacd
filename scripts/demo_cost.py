"""Where a quick-demo run's time goes: training steps (with and without the gradient probes), the periodic and
final evaluations, and start-up, measured with the lab's trainer on one short run per arm.

Run each arm as its own process at the same moment (the ratios between arms are what carry to another machine):

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python scripts/demo_cost.py --depth 56 --probes 1 &
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python scripts/demo_cost.py --depth 56 --probes 0 &

Prints one JSON line: seconds per training step (windows after the first), the final evaluation's seconds per
image (all validation and test images), start-up seconds (process start to the first step), and the run's wall time.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

T0 = time.perf_counter()

from lab.config import make_config  # noqa: E402
from lab.train import MemoryReporter, train  # noqa: E402


class Timed(MemoryReporter):
    """Notes the wall time of the trainer's start and of each logged window."""

    def start(self, env, layers, params, resumed_from):
        self.started = time.perf_counter()
        super().start(env, layers, params, resumed_from)

    def log(self, step, scalars, layers, progress):
        self.times = getattr(self, "times", []) + [(step, time.perf_counter())]
        super().log(step, scalars, layers, progress)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--kind", default="plain")
    p.add_argument("--depth", type=int, default=56)
    p.add_argument("--probes", type=int, default=1)
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    a = p.parse_args()
    n = a.iterations
    cfg = make_config("quick", dataset="fashion-mnist", kind=a.kind, depth=a.depth, width=0.5, batch_size=a.batch_size,
                      augment=False, iterations=n, log_every=20, eval_every=n, grad_every=20, probes=bool(a.probes),
                      checkpoint_every=n, precision=a.precision, threads=a.threads, warmup="on", warmup_error=0.6)
    rep = Timed()
    with tempfile.TemporaryDirectory() as run_dir:
        train(cfg, run_dir, rep, data_dir=a.data)
    end = time.perf_counter()
    # the last window's log comes after the final evaluation: steps are timed on the windows before it
    steps = [(s, t) for s, t in rep.times if s > 0]
    (s1, t1), (s2, t2), (s3, t3) = steps[0], steps[-2], steps[-1]
    step_s = (t2 - t1) / (s2 - s1)
    final_eval = (t3 - t2) - step_s * (s3 - s2)
    images = rep.env["val_images"] + rep.env["test_images"]
    print(json.dumps(dict(kind=a.kind, depth=a.depth, probes=a.probes, batch=a.batch_size, step_s=step_s,
                          final_eval_s=final_eval, final_eval_s_per_image=final_eval / images,
                          end_s=end - t3, startup_s=rep.started - T0, wall_s=end - T0)), flush=True)


if __name__ == "__main__":
    main()
