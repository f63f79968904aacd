"""`python -m lab bench`: images/s of the lab trainer against the loop people usually write.

Measures, for each ResNet depth, on CIFAR-10-format data (generated files in torchvision's on-disk layout, so
no download is needed and the figures do not depend on image content):

  (a) the lab trainer, probes on (gradient norms every 10 iterations: 10x the paper preset's rate)
  (b) the lab trainer, probes off
  (c) a reference loop: the same model in fp32, torchvision's CIFAR10 dataset through a DataLoader with
      RandomCrop, RandomHorizontalFlip, ToTensor and Normalize

and prints, side by side, the ratios a/c and a/b, the lab's training GFLOP/s (training costs about 3x the
forward FLOPs: 6 x the forward multiply-adds per image) and their fraction of the machine's matrix-multiply
ceiling, measured in the precision the lab trains in there (`resolve_precision`: bf16 where the hardware has it,
fp32 elsewhere; `--precision` overrides it for the lab's figures and the ceiling alike). On the CPU the default
(ResNet-20 and -56, 10 timed iterations of 128 images after untimed ones: about 7,000 trained images per depth,
the three measurements together) comes to about 2 minutes on 2 AVX2 cores at the rates measured there (ResNet-20 fp32: the lab
324 images/s, the reference loop 238).

With --sweep, on the CPU it also measures a CPU sweep's aggregate images/s through the real worker with 1 and
2 slots; on a GPU it measures the lab trainer (no probes) in each compile mode (`--modes`: off, default,
reduce-overhead, max-autotune) at each depth, and packed runs: `--packed N` runs at once on the one GPU as
separate processes through the real worker (`--per-gpu N`), their aggregate images/s. Each trainer figure is
the median of `--repeats` timed windows of `--iterations` steps after an untimed first window (which holds
compilation and CUDA-graph capture). `--iterations 0` picks 10 on the CPU and 300 on a GPU.
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .config import make_config
from .models import ConfigError, build_net, forward_macs
from .runtime import PROJECT_ROOT, device_name, mps_status, resolve_device, resolve_precision
from .train import MemoryReporter, train

MODES = ("off", "default", "reduce-overhead", "max-autotune")   # "off": eager; the others: RunConfig.compile_mode
# The generated data set: its validation (a tenth) and test images are what the trainer's final evaluation reads,
# so they are kept small (on 2 CPU cores 1,000 ResNet-56 evaluations take a few seconds).
BENCH_TRAIN_IMAGES = 5000
BENCH_TEST_IMAGES = 500
CPU_ITERATIONS = 10
GPU_ITERATIONS = 300
TARGET_OVER_REFERENCE = {"fp32": 1.5, "bf16": 2.0}   # a/c, by the lab's precision


def write_cifar10_format(root: Path, n_train: int = 10000, n_test: int = 1000, seed: int = 0) -> Path:
    """Random images in torchvision's CIFAR-10 layout (cifar-10-batches-py); returns `root`."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    per = n_train // 5
    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (per, 3072), dtype=np.uint8),
                         "labels": rng.integers(0, 10, per).tolist()}, f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": rng.integers(0, 256, (n_test, 3072), dtype=np.uint8),
                     "labels": rng.integers(0, 10, n_test).tolist()}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}".encode() for i in range(10)]}, f)
    return root


def reference_loop(depth: int, root: Path, device: torch.device, iterations: int, warmup: int, batch_size: int) -> float:
    """(c): images/s of the usual torchvision + DataLoader training loop, fp32, NCHW."""
    import torchvision
    import torchvision.transforms as T

    class LocalCIFAR10(torchvision.datasets.CIFAR10):
        # generated files have no published checksums (torchvision skips the check for md5 None)
        train_list = [[f"data_batch_{i}", None] for i in range(1, 6)]
        test_list = [["test_batch", None]]
        meta = {"filename": "batches.meta", "key": "label_names", "md5": None}

    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))])
    ds = LocalCIFAR10(str(root), train=True, transform=tf, download=False)
    workers = min(4, os.cpu_count() or 1)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         drop_last=True, persistent_workers=True)
    model = build_net("residual", depth).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    model.train()
    done, start = 0, None
    while done < warmup + iterations:
        for x, y in loader:
            if done == warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done == warmup + iterations:
                break
    loss.item()
    return iterations * batch_size / (time.perf_counter() - start)


def lab_trainer(depth: int, root: Path, device: str, iterations: int, batch_size: int, probes: bool, threads: int,
                mode: str = "off", repeats: int = 1, precision: str = "auto") -> float:
    """(a)/(b): images/s of the lab trainer, the median of `repeats` windows of `iterations` steps after one
    untimed window (start-up, compilation, graph capture); `mode` "off" is eager, else the compile mode."""
    windows = 1 + repeats
    cfg = make_config(
        "paper", dataset="cifar10", depth=depth, iterations=windows * iterations, batch_size=batch_size,
        log_every=iterations, eval_every=windows * iterations, grad_every=10, checkpoint_every=windows * iterations,
        probes=probes, device=device, threads=threads, eval_images=500, compile=mode != "off",
        compile_mode="default" if mode == "off" else mode, precision=precision,
    )
    rep = MemoryReporter()
    with tempfile.TemporaryDirectory() as run_dir:
        train(cfg, run_dir, rep, data_dir=root)
    speeds = [v for s, n, v in rep.scalars if n == "images_per_s"]
    return float(np.median(speeds[1:]))  # the windows after the first


def matmul_ceiling(device: torch.device, dtype=torch.bfloat16, n: int = 0, repeat: int = 0) -> float:
    """Measured GFLOP/s of a large square matrix multiply: the practical compute ceiling. By default 2048^2
    ten times on the CPU, 8192^2 a hundred times on a GPU (seconds of work, after warm-up). Measure it in the
    precision that training uses (`ceiling_dtype`): bf16 on a CPU without native bf16 runs at about 1 GFLOP/s,
    where fp32 runs at about 139 (2 AVX2 cores), and would take many minutes."""
    gpu = device.type == "cuda"
    n = n or (8192 if gpu else 2048)
    repeat = repeat or (100 if gpu else 10)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(10 if gpu else 2):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeat):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * repeat / (time.perf_counter() - t) / 1e9


def ceiling_dtype(precision: str) -> torch.dtype:
    """The matrix-multiply dtype that matches the lab's training precision ('bf16' autocast or 'fp32')."""
    return torch.bfloat16 if precision == "bf16" else torch.float32


def _worker_runs(root: Path, configs: list, worker_args: list[str]) -> tuple[list[float], float]:
    """Run `configs` through the real worker (`lab worker` + `worker_args`); returns each run's median
    images/s after its first window, and the worker's wall time."""
    from .runs.store import Store

    with tempfile.TemporaryDirectory() as results:
        store = Store(results)
        ids = store.create_runs(configs)
        env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "lab", "worker", "--results", results, *worker_args,
                        "--exit-when-idle", "1", "--data", str(root)],
                       cwd=PROJECT_ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t
        per_run = []
        for rid in ids:
            s = store.scalars(rid, ["images_per_s"])["value"].to_numpy()[1:]  # skip the first window (start-up)
            per_run.append(float(np.median(s)))
        statuses = set(store.runs()["status"])
        if statuses != {"done"}:
            raise RuntimeError(f"benchmark sweep runs ended {statuses}; see {results}")
    return per_run, wall


def sweep_throughput(root: Path, slots: int, runs: int, iterations: int, depth: int = 20) -> float:
    """Aggregate steady-state images/s of a CPU sweep through the real worker (sum over concurrent runs)."""
    cfg = dict(dataset="cifar10", depth=depth, iterations=iterations, log_every=10, eval_every=iterations,
               checkpoint_every=iterations, eval_images=500, device="cpu")
    per_run, _ = _worker_runs(root, [make_config("paper", seed=s, **cfg) for s in range(runs)],
                              ["--slots", str(slots), "--device", "cpu"])
    return float(np.mean(per_run)) * slots


def packed_throughput(root: Path, runs: int, iterations: int, depth: int = 20, mode: str = "off",
                      device: str = "auto") -> dict:
    """`runs` runs at once on the one GPU, each its own process (the worker with --per-gpu `runs`; on the CPU,
    `runs` slots): the sum of their steady-state images/s, and all images over the worker's wall time (start-up
    and compilation in)."""
    log = max(10, iterations // 10)
    cfg = dict(dataset="cifar10", depth=depth, iterations=iterations, log_every=log, eval_every=iterations,
               checkpoint_every=iterations, eval_images=500, device=device, compile=mode != "off",
               compile_mode="default" if mode == "off" else mode)
    configs = [make_config("paper", seed=s, **cfg) for s in range(runs)]
    per_run, wall = _worker_runs(root, configs, ["--per-gpu", str(runs), "--slots", str(runs)])
    return dict(packed=runs, depth=depth, mode=mode, steady_images_per_s=float(np.sum(per_run)),
                wall_s=wall, wall_images_per_s=runs * iterations * configs[0].batch_size / wall)


def measure_depth(depth: int, root: Path, device: torch.device, args, iterations: int, repeats: int,
                  precision: str, ceiling: float) -> dict:
    """One row of the table: (a), (b), (c) at `depth`, their ratios, and the lab's training GFLOP/s (a) as a
    fraction of the `ceiling` (GFLOP/s)."""
    macs = forward_macs(build_net("residual", depth))
    c = reference_loop(depth, root, device, iterations, args.warmup, args.batch_size)
    a, b = (lab_trainer(depth, root, args.device, iterations, args.batch_size, probes, args.threads, repeats=repeats,
                        precision=precision) for probes in (True, False))
    gflops = a * 6 * macs / 1e9
    return dict(depth=depth, a=a, b=b, c=c, a_over_c=a / c, a_over_b=a / b, gflops=gflops, ceiling=ceiling,
                fraction=gflops / ceiling, precision=precision)


def table(rows: list[dict]) -> list[str]:
    """The result lines: images/s of (a), (b), (c), the ratios, and the lab's GFLOP/s against the ceiling."""
    lines = [f"{'model':<10} {'(a) lab+probes':>15} {'(b) lab':>9} {'(c) reference':>14} {'a/c':>6} {'a/b':>6} "
             f"{'(a) GFLOP/s':>12} {'of ceiling':>11}"]
    for r in rows:
        lines.append(f"resnet{r['depth']:<4} {r['a']:>15.0f} {r['b']:>9.0f} {r['c']:>14.0f} {r['a_over_c']:>6.2f} "
                     f"{r['a_over_b']:>6.3f} {r['gflops']:>12.1f} {100 * r['fraction']:>10.1f}%")
    if rows:
        target = TARGET_OVER_REFERENCE.get(rows[0]["precision"], 2.0)
        lines.append(f"targets ({rows[0]['precision']}): a/c >= {target:g}; a within 5% of b (a/b >= 0.95)")
    return lines


def main(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    iterations = args.iterations or (GPU_ITERATIONS if gpu else CPU_ITERATIONS)
    repeats = getattr(args, "repeats", 0) or (3 if gpu else 1)
    depths = [int(d) for d in str(args.depths).split(",")]
    modes = [m.strip() for m in str(getattr(args, "modes", None) or ",".join(MODES)).split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ConfigError(f"--modes: unknown compile mode(s) {', '.join(unknown)}; allowed: {', '.join(MODES)}")
    packed = [int(n) for n in str(getattr(args, "packed", None) or "1,2,4,8").split(",") if int(n) > 0]
    gpu_part = (args.sweep and gpu) or getattr(args, "gpu_sweep", False)
    precision = resolve_precision(getattr(args, "precision", None) or "auto", device)
    ceiling = matmul_ceiling(device, ceiling_dtype(precision))
    print(f"device: {device} ({device_name(device)}), {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"lab precision {precision}, channels_last")
    if gpu:
        mps = mps_status()
        print(f"CUDA {torch.version.cuda}; MPS {'running' if mps['running'] else 'not running'} ({mps['how']})")
    print(f"measured {precision} matrix-multiply ceiling: {ceiling:.0f} GFLOP/s")
    print(f"timed iterations: {iterations} of batch {args.batch_size} after {args.warmup}+ untimed"
          + (f" (trainer: median of {repeats} windows after an untimed one)" if repeats > 1 else ""), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = write_cifar10_format(Path(tmp), BENCH_TRAIN_IMAGES, BENCH_TEST_IMAGES)
        for depth in depths:
            rows.append(measure_depth(depth, root, device, args, iterations, repeats, precision, ceiling))
        print()
        print("\n".join(table(rows)), flush=True)
        if args.sweep and not gpu_part:
            ref20 = next((r["c"] for r in rows if r["depth"] == 20), None) or reference_loop(
                20, root, device, iterations, args.warmup, args.batch_size)
            print()
            print("CPU sweep through the worker: 4 ResNet-20 runs, aggregate steady-state images/s")
            for slots in (1, 2):
                agg = sweep_throughput(root, slots, runs=4, iterations=max(60, 2 * iterations))
                print(f"  {slots} slot(s): {agg:.0f} images/s = {agg / ref20:.2f}x the reference loop (target >= 2.2x)")
                rows.append(dict(sweep_slots=slots, images_per_s=agg, over_reference=agg / ref20))
        if gpu_part:
            rows += gpu_sweep(root, args, depths, modes, packed, iterations, repeats)
    if getattr(args, "json", False):
        print(json.dumps(rows))
    return 0


def gpu_sweep(root: Path, args, depths: list[int], modes: list[str], packed: list[int], iterations: int,
              repeats: int) -> list[dict]:
    """The GPU part of --sweep: the trainer (no probes) in each compile mode, then packed runs (each run
    4 x `iterations` steps)."""
    rows = []
    print()
    print("lab trainer without probes by compile mode, images/s (first window, with compilation, untimed)")
    print(f"{'model':<10} " + " ".join(f"{m:>16}" for m in modes))
    for depth in depths:
        speeds = {m: lab_trainer(depth, root, args.device, iterations, args.batch_size, False, args.threads,
                                 mode=m, repeats=repeats) for m in modes}
        print(f"resnet{depth:<4} " + " ".join(f"{speeds[m]:>16.0f}" for m in modes), flush=True)
        rows += [dict(depth=depth, mode=m, images_per_s=v) for m, v in speeds.items()]
    if not packed:
        return rows
    mode = max((r for r in rows if r["depth"] == depths[-1]), key=lambda r: r["images_per_s"])["mode"]
    print()
    print(f"packed on one GPU: N ResNet-{depths[-1]} runs at once, each its own process (the fastest mode above, "
          f"{mode}; {4 * iterations} iterations each)")
    for n in packed:
        r = packed_throughput(root, n, 4 * iterations, depths[-1], mode, args.device)
        print(f"  {n} at once: {r['steady_images_per_s']:.0f} images/s steady (sum of runs), "
              f"{r['wall_images_per_s']:.0f} over the {r['wall_s']:.0f} s wall time", flush=True)
        rows.append(r)
    return rows
