"""Fill a results store with realistic simulated runs (no training): for page-speed benchmarks, tests and demos.

Curves follow the shapes the paper reports (plain nets train worse with depth, residual nets better, steps at
the learning-rate milestones), with per-seed noise; per-layer gradient norms and responses have the right
number of layers and plausible magnitudes. Every simulated run is tagged `simulated`, so it is never mistaken
for a measurement.
"""
from __future__ import annotations

import time

import numpy as np

from .config import make_config
from .models import build_net
from .probes import layer_names as probe_layer_names
from .runs.store import Store

TAG = "simulated"


def _final_train_error(kind: str, depth: int) -> float:
    if kind == "plain":
        return 0.01 + 0.045 * (depth - 20) / 36   # plain-56 ends clearly above plain-20
    return max(0.002, 0.012 - 0.008 * (depth - 20) / 36)


def simulate_run(store: Store, kind: str, depth: int, seed: int, iterations: int = 64000, log_every: int = 100,
                 eval_every: int = 2000, status: str = "done", dataset: str = "cifar10", upto: float = 1.0) -> str:
    """Insert one simulated run with all its metric kinds; returns its id. `upto` < 1 leaves it part-way."""
    rng = np.random.default_rng(seed * 100_003 + depth * 2 + (kind == "plain"))
    cfg = make_config("paper", kind=kind, depth=depth, seed=seed, iterations=iterations, log_every=log_every,
                      eval_every=eval_every, dataset=dataset, tag=TAG)
    (rid,) = store.create_runs([cfg], status="running")
    net = build_net(kind, depth)
    layer_names = probe_layer_names(net)
    steps = np.arange(log_every, int(iterations * upto) + 1, log_every)
    t = steps / iterations
    final = _final_train_error(kind, depth) * (1 + 0.05 * rng.standard_normal())
    # a plateau per learning-rate phase (steps down at 50% and 75%), approached exponentially, with noise
    plateau = np.where(t < 0.5, 3 * final + 0.06, np.where(t < 0.75, 1.4 * final, final))
    train = np.clip((plateau + (0.85 - plateau) * np.exp(-t * 15)) * (1 + 0.06 * rng.standard_normal(len(t))), 0, 1)
    gap = 0.06 if kind == "plain" else 0.06 - 0.01 * (depth - 20) / 36
    test = np.clip(train + gap + 0.01 * rng.standard_normal(len(t)), 0, 1)
    lr = 0.1 * np.where(t < 0.5, 1, np.where(t < 0.75, 0.1, 0.01))
    ips = 1500 * 20 / depth * (1 + 0.03 * rng.standard_normal(len(t)))
    elapsed = np.cumsum(log_every * 128 / ips)
    scalars = []
    for i, s in enumerate(steps):
        scalars += [(int(s), "train_error", float(train[i])), (int(s), "train_loss", float(-np.log(1 - train[i] + 1e-3))),
                    (int(s), "lr", float(lr[i])), (int(s), "images_per_s", float(ips[i])),
                    (int(s), "elapsed_s", float(elapsed[i])), (int(s), "epoch", float(s * 128 / 45000))]
        if s % eval_every == 0:
            scalars += [(int(s), "test_error", float(test[i])), (int(s), "val_error", float(test[i] + 0.002)),
                        (int(s), "test_loss", float(-np.log(1 - test[i]))), (int(s), "val_loss", float(-np.log(1 - test[i])))]
    layers = _simulated_layers(rng, kind, depth, layer_names, steps, t, lr, eval_every)
    params = sum(p.numel() for p in net.parameters())
    env = {"torch": "simulated", "device": "cpu", "device_name": "simulated", "host": "simulated",
           "precision": "bf16", "git": "simulated", "forward_macs": 0}
    store.update_run(rid, env=env, layers=layer_names, params=params, device="cpu", started_at=time.time() - elapsed[-1] if len(elapsed) else time.time())
    chunk = 20000
    for i in range(0, max(len(scalars), len(layers)), chunk):
        store.log(rid, scalars=scalars[i : i + chunk], layers=layers[i : i + chunk], iteration=int(steps[-1]) if len(steps) else 0,
                  images_per_s=float(ips[-1]) if len(ips) else None, elapsed_s=float(elapsed[-1]) if len(elapsed) else 0.0)
    if status == "done":
        store.set_status(rid, "done", final_train_error=float(np.mean(train[-5:])), final_val_error=float(test[-1] + 0.002),
                         final_test_error=float(test[-1]))
    elif status != "running":
        store.set_status(rid, status, message="simulated")
    else:
        store.update_run(rid, heartbeat_at=time.time() + 3600, host="simulated")  # never reaped as dead
    return rid


def _simulated_layers(rng, kind: str, depth: int, names: dict, steps, t, lr, eval_every: int) -> list:
    """Per-layer metrics at step 0 and at every logging step (responses at evaluations), as the trainer records
    them. Magnitudes: weight-gradient norms ~1 shrinking as training goes on; input-gradient norms growing
    towards the first layers of deep plain nets (BN plain nets explode at initialisation); update ratios ~1e-3
    times lr/0.1; responses ~0.5-1.5 (residual ones smaller, Fig. 7); batch-statistics responses ~1; BN |gamma|
    ~1 except the first layers of deep plain nets, which grow to tens in the first steps."""
    n_grad, n_resp = len(names["grad_norm"]), len(names["response_std"])
    n_res = len(names.get("residual_ratio", []))
    plain_deep = kind == "plain" and depth > 20
    layers = []
    for i, s in enumerate([0, *steps]):
        ti = 0.0 if s == 0 else t[i - 1]
        noise = lambda n, a=0.1: 1 + a * rng.standard_normal(n)  # noqa: E731
        decay = 0.3 + np.exp(-ti * 5)
        profile = np.linspace(1.4, 0.8, n_grad) if kind == "residual" else np.linspace(0.9, 1.3, n_grad)
        layers.append((int(s), "grad_norm", list(profile * decay * noise(n_grad))))
        blowup = np.geomspace(1 + depth / 10, 1, n_grad) if plain_deep else np.linspace(1.2, 1.0, n_grad)
        layers.append((int(s), "input_grad_norm", list(0.05 * blowup * decay * noise(n_grad))))
        if s:
            layers.append((int(s), "update_ratio", list(1e-3 * lr[i - 1] / 0.1 * profile * noise(n_grad, 0.2))))
        if s % eval_every == 0:
            scale = 0.5 if kind == "residual" else 1.0
            resp = scale * (0.6 + 0.4 * rng.random(n_resp)) * (1 + 0.5 * np.exp(-ti * 5))
            layers.append((int(s), "response_std", list(resp)))
            layers.append((int(s), "response_std_batch", list(np.clip(0.9 * noise(n_resp), 0.1, None))))
            early = np.exp(-np.arange(n_resp) / 5) * (20 * min(ti * 50, 1) if plain_deep else 0)
            layers.append((int(s), "bn_gamma", list((1 + early) * noise(n_resp, 0.05))))
            layers.append((int(s), "bn_beta_std", list((0.02 + 0.3 * min(ti * 10, 1)) * (1 + early / 4) * noise(n_resp))))
            if n_res:
                layers.append((int(s), "residual_ratio", list(0.2 + 0.3 * rng.random(n_res) * 20 / depth)))
    return layers


def fill(store: Store, runs: int = 100, iterations: int = 64000, depths=(20, 32, 44, 56, 110), seeds: int | None = None) -> list[str]:
    """`runs` simulated runs spread over kinds x depths x seeds, all finished."""
    combos = [(k, d) for k in ("plain", "residual") for d in depths]
    seeds = seeds or max(1, -(-runs // len(combos)))
    ids = []
    for seed in range(seeds):
        for kind, depth in combos:
            if len(ids) >= runs:
                return ids
            ids.append(simulate_run(store, kind, depth, seed, iterations=iterations))
    return ids

