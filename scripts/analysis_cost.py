"""Measure what each analysis costs on a ResNet-56-size net, once: `python scripts/analysis_cost.py`.

Cost does not depend on the weights, so a freshly initialised net stands in for a trained one; the images
are the synthetic set's (32x32 colour, like CIFAR-10). Precision and memory format are what a run on this
machine uses by default (`--precision auto`, channels_last). The lesion study is timed over its first
evaluations and extrapolated to its whole default plan (it is one test-set pass per evaluation).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab.analysis import Cancelled  # noqa: E402
from lab.analysis.landscape import landscape  # noqa: E402
from lab.analysis.lesion import lesion  # noqa: E402
from lab.analysis.shatter import shatter  # noqa: E402
from lab.datasets import DeviceLoader, make_splits  # noqa: E402
from lab.models import build_net  # noqa: E402
from lab.runtime import resolve_device, resolve_precision  # noqa: E402
from lab.train import _autocast_factory  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depth", type=int, default=56)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--lesion-evaluations", type=int, default=8, help="lesion evaluations timed before stopping")
    args = p.parse_args()
    device = resolve_device("auto")
    precision = resolve_precision("auto", device)
    autocast = _autocast_factory(device, precision)
    splits = make_splits("synthetic")
    print(f"device {device}, precision {precision}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.1f}")

    def data(split, n):
        loader = DeviceLoader(split.subset(torch.arange(n)), splits.mean, splits.std, device, 500, channels_last=True)
        return loader.batch(torch.arange(n, device=device))

    x_test, y_test = data(splits.test, args.images)
    x_train, y_train = data(splits.train, args.images)
    for kind in ("residual", "plain"):
        torch.manual_seed(0)
        net = build_net(kind, args.depth).to(device).to(memory_format=torch.channels_last).eval()
        name = f"{kind}-{args.depth}"

        marks = []
        t0 = time.perf_counter()
        try:
            lesion(net, x_test, y_test, autocast=autocast, progress=lambda d, t: marks.append((d, t, time.perf_counter())),
                   should_stop=lambda: len(marks) > args.lesion_evaluations)
        except Cancelled:
            pass
        done, total, t_end = marks[-1]
        per = (t_end - t0) / done
        print(f"{name} lesion: {per:.2f} s per evaluation of {args.images} test images; the default plan "
              f"(draws 5) has {total} evaluations: about {per * total / 60:.1f} min")

        t0 = time.perf_counter()
        landscape(net, x_train, y_train, points=21, autocast=autocast)
        print(f"{name} landscape: 21 points x {args.images} images in {time.perf_counter() - t0:.1f} s")

        t0 = time.perf_counter()
        shatter(net, x_test[0], x_test[1] - x_test[0], points=256, target="loss", label=int(y_test[0]))
        print(f"{name} shatter: 256 points (fp32, one batched backward) in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
