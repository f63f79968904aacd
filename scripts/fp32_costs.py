"""Relative costs on the CPU, measured in one process with the arms interleaved (so a busy machine's drift hits
every arm alike): a training step of a half-width plain net at batches of 32, an evaluated image at several
evaluation batch sizes, channels_last against contiguous, for the training precision given.

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python scripts/fp32_costs.py --depth 56 --threads 1

Prints one JSON line of seconds per trained image and per evaluated image for each arm (medians over rounds).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from lab.models import build_net


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--depth", type=int, default=56)
    p.add_argument("--kind", default="plain")
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--eval-batches", default="500,128")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--compile", action="store_true", help="also the training step of torch.compile's model "
                                                          "(inductor, the CPU backend), its compile time apart")
    p.add_argument("--no-eval", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    dtype_ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if a.bf16 else (lambda: torch.autocast(
        "cpu", enabled=False))
    arms = {}
    for layout in ("channels_last", "contiguous"):
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        net = build_net(a.kind, a.depth, width=a.width, in_channels=1).to(memory_format=fmt)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        arms[layout] = (net, opt, fmt)
    compile_s = None
    if a.compile:
        net, opt, fmt = arms["channels_last"]
        arms["compiled"] = (torch.compile(net), opt, fmt)
        x = torch.randn(a.batch, 1, 32, 32).contiguous(memory_format=fmt)
        t = time.perf_counter()
        with dtype_ctx():
            loss = F.cross_entropy(arms["compiled"][0](x).float(), torch.randint(0, 10, (a.batch,)))
        loss.backward()
        compile_s = time.perf_counter() - t
    eval_batches = [int(b) for b in a.eval_batches.split(",")]
    times: dict[str, list[float]] = {}

    def train(layout: str) -> None:
        net, opt, fmt = arms[layout]
        net.train()
        x = torch.randn(a.batch, 1, 32, 32).contiguous(memory_format=fmt)
        y = torch.randint(0, 10, (a.batch,))
        t = time.perf_counter()
        for _ in range(a.steps):
            with dtype_ctx():
                loss = F.cross_entropy(net(x).float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        times.setdefault(f"train_{layout}", []).append((time.perf_counter() - t) / (a.steps * a.batch))

    @torch.no_grad()
    def evaluate(layout: str, batch: int) -> None:
        net, _, fmt = arms[layout]
        net.eval()
        x = torch.randn(batch, 1, 32, 32).contiguous(memory_format=fmt)
        n = max(1, 1000 // batch)
        t = time.perf_counter()
        for _ in range(n):
            with dtype_ctx():
                net(x).argmax(1)
        times.setdefault(f"eval{batch}_{layout}", []).append((time.perf_counter() - t) / (n * batch))

    for r in range(a.rounds + 1):
        if r == 1:
            times.clear()   # round 0 warms up
        for layout in arms:
            train(layout)
            if layout == "compiled" or a.no_eval:
                continue
            for b in eval_batches:
                evaluate(layout, b)
    med = {k: float(np.median(v)) for k, v in times.items()}
    base = med["train_channels_last"]
    print(json.dumps(dict(depth=a.depth, threads=a.threads, bf16=a.bf16, batch=a.batch, compile_s=compile_s,
                          s_per_image=med,
                          relative_to_trained_image=({k: round(v / base, 3) for k, v in med.items()}))), flush=True)


if __name__ == "__main__":
    main()
