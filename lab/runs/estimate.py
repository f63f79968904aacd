"""How long a sweep will take here: from the throughput of past runs on this host, else a quick measurement."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..config import RunConfig
from ..datasets import TEST_IMAGES, TRAIN_IMAGES, DataError, dataset_info, held_out
from ..models import build_net, forward_macs
from ..runtime import compile_cache_dir, resolve_device, resolve_precision
from .monitor import RATE_COLUMNS, format_duration

STARTUP_S = 6.0        # process start, imports and data loading per run


@dataclass
class Estimate:
    seconds: float
    text: str
    basis: str


@lru_cache(maxsize=64)
def run_macs(depth: int, block: str, width: float, span: int, channels: int, size: int, family: str = "cifar") -> int:
    """Multiply-adds of one forward pass of one image, kept in the user's cache (`kept_file("macs")`) under the
    network code's fingerprint: counting builds and runs the net (a tenth of a second to a second each), and a
    page estimates a dozen networks."""
    key = "|".join(map(str, (_models_fingerprint(), depth, block, width, span, channels, size, family)))
    kept = _kept("macs")
    if key in kept:
        return int(kept[key][0])
    macs = forward_macs(build_net("residual", depth, block=block, width=width, span=span, in_channels=channels,
                                  family=family), size)
    _keep("macs", key, macs)
    return macs


@lru_cache(maxsize=1)
def _models_fingerprint() -> str:
    """A hash of the network code (lab/models): a change to it counts the multiply-adds again."""
    digest = hashlib.sha256()
    for path in sorted((Path(__file__).resolve().parent.parent / "models").glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


@lru_cache(maxsize=16)
def _folder_images(folder: str) -> tuple[int, int]:
    from ..imagefolder import scan

    try:
        index = scan(folder)
    except DataError:
        return 0, 0
    return index.count("train"), index.count("val")


def data_facts(cfg: RunConfig) -> tuple[int, int, int, int]:
    """(channels, image size, training-set images before the hold-out, test images) of a run's data; an image
    folder's are counted (ImageNet's validation-set size, 50,000, where the folder is not known yet)."""
    info = dataset_info(cfg.dataset)
    if cfg.dataset != "imagefolder":
        return info.channels, info.size, TRAIN_IMAGES[info.name], TEST_IMAGES[info.name]
    train, test = _folder_images(cfg.image_folder) if cfg.image_folder else (0, 0)
    return 3, cfg.image_size or 224, train or 50_000, test or 50_000


def _macs(cfg: RunConfig) -> int:
    channels, size, _, _ = data_facts(cfg)
    return run_macs(cfg.depth, cfg.block, cfg.width, cfg.span, channels, size, cfg.family)


KEPT_S = 7 * 24 * 3600  # how long a quick measurement of this machine, or a count, is reused


def kept_file(name: str) -> Path:
    """The user's record of quick measurements ('measured-gflops') or counts ('macs'), beside the compile cache."""
    return compile_cache_dir().parent / f"{name}.json"


@lru_cache(maxsize=16)
def measured_gflops(device: str = "auto", width: float = 1.0, threads: int = 0, precision: str = "auto") -> float:
    """Training GFLOP/s here of ResNet-20 at `width` (a few iterations of 64, about a second), with the lab's
    defaults, `threads` CPU threads (0: torch's) and the runs' `precision` (bf16 and fp32 differ about twofold
    where the CPU has native bf16). Narrow nets on few threads run at a fraction of a full-width net's rate on all
    threads (half width on one of two cores: about a third), so the measurement is taken at the width and threads
    the runs get. A measurement is kept in `kept_file('measured-gflops')` for KEPT_S, keyed by the host, its cores, torch,
    the device and these arguments, so a restarted dashboard does not measure again."""
    dev = resolve_device(device)
    precision = resolve_precision(precision, dev)
    key = "|".join(map(str, (socket.gethostname(), os.cpu_count(), torch.__version__, dev,
                             torch.backends.cpu.get_cpu_capability(), width, threads, precision)))
    kept = _kept("measured-gflops")
    if key in kept:
        return kept[key][0]
    rate = _measure_gflops(dev, width, threads, precision)
    _keep("measured-gflops", key, rate)
    return rate


def _kept(name: str) -> dict:
    """{key: [value, when]} of the record `name`, the entries younger than KEPT_S ({} when it is unreadable)."""
    try:
        data = json.loads(kept_file(name).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    now = time.time()
    return {k: v for k, v in data.items() if isinstance(v, list) and len(v) == 2
            and all(isinstance(x, (int, float)) for x in v) and now - v[1] < KEPT_S}


def _keep(name: str, key: str, value: float) -> None:
    """Add an entry to the record `name` (best effort: an unwritable cache only means measuring again)."""
    path = kept_file(name)
    kept = _kept(name)
    kept[key] = [value, time.time()]
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(kept))
        os.replace(tmp, path)


def _measure_gflops(dev: torch.device, width: float, threads: int, precision: str) -> float:
    """`measured_gflops` measured."""
    previous = torch.get_num_threads()
    if threads and dev.type == "cpu":
        torch.set_num_threads(threads)
    try:
        net = build_net("residual", 20, width=width)
        macs = forward_macs(net)
        model = net.to(dev).to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        x = torch.randn(64, 3, 32, 32, device=dev).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (64,), device=dev)

        def step():
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = torch.nn.functional.cross_entropy(model(x).float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss

        step().item()
        t = time.perf_counter()
        for _ in range(3):
            loss = step()
        loss.item()
        ips = 3 * 64 / (time.perf_counter() - t)
    finally:
        torch.set_num_threads(previous)
    return ips * 6 * macs / 1e9


def past_gflops(store, width: float | None = None) -> tuple[float, int, str, float] | None:
    """Median training GFLOP/s of this host's finished runs (from their images/s and model cost), else of its
    running ones (their latest logging window): (GFLOP/s, how many runs, 'finished' or 'running', their width).
    With `width`, of the runs of that width when there are any (narrow nets run at a lower rate); otherwise of
    all, with their median width. A quick measurement while runs are training would see a busy machine and come
    out several times too slow."""
    host = socket.gethostname()
    for status, word in (("done", "finished"), ("running", "running")):
        runs = store.runs(status=[status], columns=RATE_COLUMNS)
        if runs is None or runs.empty:
            continue
        rates, widths = [], []
        mine = runs[runs["host"] == host] if "host" in runs.columns else runs.iloc[0:0]
        # plain column reads, not a row object per run: a page estimates several studies over 1,000 runs
        for env, ips, config in zip(mine["env"], mine["images_per_s"], mine["config"]):
            macs = env.get("forward_macs") if isinstance(env, dict) else None
            if macs and ips is not None and ips == ips and ips > 0:
                rates.append(ips * 6 * macs / 1e9)
                widths.append(float(config.get("width", 1.0)) if isinstance(config, dict) else 1.0)
        if not rates:
            continue
        same = [g for g, w in zip(rates, widths) if w == width]
        if same:
            return float(np.median(same)), len(same), word, float(width)
        return float(np.median(rates)), len(rates), word, float(np.median(widths))
    return None


def training_macs(cfg: RunConfig) -> float:
    """Multiply-adds the run's training needs (forward and backward, about 3x the forward pass, per image): a
    machine-independent measure of how long it takes, for ordering runs."""
    return 3.0 * cfg.iterations * cfg.batch_size * _macs(cfg)


def evaluation_macs(cfg: RunConfig) -> float:
    """Multiply-adds of the run's evaluations, forward passes only: the periodic ones on up to `eval_images` of the
    validation and of the test set, the final one on all of both, and (with probes) the response probe's batch at
    each evaluation and at step 0, where its gradients are taken too. Measured on 2 cores (plain- and ResNet-56 at
    half width, Fashion-MNIST, training batches of 32): an evaluated image took 0.28 to 0.31 of a trained image's
    time, as one forward pass against training's three (forward and backward) says, so both are timed at one
    rate. At batches of 32 with 2,000-image evaluations every 200 iterations they were a quarter of a run."""
    _, _, train, test = data_facts(cfg)
    val = held_out(train, cfg.val_fraction)
    periodic = max(0, cfg.iterations - 1) // max(1, cfg.eval_every)   # the evaluations before the final one
    each = min(cfg.eval_images or val, val) + min(cfg.eval_images or test, test)
    images = periodic * each + val + test
    if cfg.probes:
        probe = min(cfg.probe_batch, val)
        images += (periodic + 2) * probe + 3 * probe   # responses at each evaluation and step 0; step 0's gradients
    return float(images) * _macs(cfg)


def longest_first(configs: list[RunConfig]) -> list[int]:
    """Indices of `configs`, the costliest training first (ties in their given order). Queued in this order, runs
    that share a machine's slots end close together: the short ones fill the gaps at the end, instead of one long
    run finishing alone while the other slots idle."""
    cost = [training_macs(c) for c in configs]
    return sorted(range(len(configs)), key=lambda i: -cost[i])


def estimate_sweep(store, configs: list[RunConfig], slots: int = 1) -> Estimate:
    """Wall time of `configs` run `slots` at a time on this machine: each run at the rate of this host's past runs
    of its width (`past_gflops`), else at a quick measurement of its width and precision on the threads a slot
    gets."""
    rates, bases = {}, set()
    threads = max(1, (os.cpu_count() or 1) // max(1, slots))
    total = 0.0
    for cfg in configs:
        key = (cfg.width, cfg.precision)
        if key not in rates:
            past = past_gflops(store, cfg.width) if store is not None else None
            if past:
                rate, n, word, of_width = past
                if of_width != cfg.width:  # runs of other widths, scaled by the measured rates' ratio
                    rate *= (measured_gflops(width=cfg.width, threads=threads, precision=cfg.precision)
                             / measured_gflops(width=of_width, threads=threads, precision=cfg.precision))
                rates[key] = rate
                bases.add(f"from {n} {word} run(s) on this machine"
                          + ("" if of_width == cfg.width else f" of width {of_width:g}, scaled to {cfg.width:g}"))
            else:
                rates[key] = measured_gflops(width=cfg.width, threads=threads, precision=cfg.precision)
                bases.add("from a quick ResNet-20 measurement on this machine")
        # 2 FLOPs per multiply-add; evaluations at the training rate (`evaluation_macs`)
        total += STARTUP_S + 2 * (training_macs(cfg) + evaluation_macs(cfg)) / (rates[key] * 1e9)
    basis = "; ".join(sorted(bases)) or "from a quick ResNet-20 measurement on this machine"
    seconds = total / max(1, min(slots, len(configs))) if configs else 0.0
    return Estimate(seconds, format_duration(seconds), basis)
