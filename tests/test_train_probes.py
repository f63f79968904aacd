"""The trainer's probes (every layer metric, step 0 included) and runs that grow from a parent (deepen_from)."""
import json

import numpy as np
import pytest

from lab.config import make_config
from lab.models import ConfigError
from lab.runs.execute import execute_run
from lab.train import PARENT, MemoryReporter, train

FAST = dict(iterations=8, log_every=4, eval_every=8, grad_every=4, checkpoint_every=8, probe_batch=16,
            batch_size=16, train_limit=512, eval_images=64, precision="fp32")


def _layers(rep, metric):
    return {s: v for s, n, v in rep.layers if n == metric}


def test_every_layer_metric_is_recorded_with_its_layer_names(tmp_path):
    cfg = make_config("smoke", kind="residual", depth=20, **FAST)
    rep = MemoryReporter()
    assert train(cfg, tmp_path / "run", rep, resume=False) == "done"
    names = rep.layer_names
    assert set(names) == {"grad_norm", "input_grad_norm", "update_ratio", "response_std", "response_std_batch",
                          "bn_gamma", "bn_beta_std", "residual_ratio"}
    for metric, steps in [("grad_norm", [0, 4, 8]), ("input_grad_norm", [0, 4, 8]), ("update_ratio", [4, 8]),
                          ("response_std", [0, 8]), ("response_std_batch", [0, 8]), ("bn_gamma", [0, 8]),
                          ("bn_beta_std", [0, 8]), ("residual_ratio", [0, 8])]:
        got = _layers(rep, metric)
        assert sorted(got) == steps, metric
        assert all(len(v) == len(names[metric]) for v in got.values()), metric
    assert all(v > 0 for v in _layers(rep, "input_grad_norm")[0])
    assert all(0 < v < 1 for v in _layers(rep, "update_ratio")[4])
    # at step 0 the running statistics are still (0, 1): only the batch-statistics response is normalised
    assert _layers(rep, "response_std_batch")[0][1] == pytest.approx(1.0, rel=0.05)
    assert _layers(rep, "bn_gamma")[0] == [1.0] * 19


def test_a_deepened_run_starts_from_its_parent_and_keeps_its_function(store):
    parent_cfg = make_config("smoke", kind="plain", depth=8, **FAST)
    (pid,) = store.create_runs([parent_cfg], status="running")
    assert execute_run(store, pid, handle_signals=False) == "done"
    child_cfg = make_config("smoke", kind="plain", depth=20, deepen_from=pid[:12], **FAST)
    assert child_cfg.label() == "plain-8 → 20 (deepened)"
    (cid,) = store.create_runs([child_cfg], status="running")
    assert execute_run(store, cid, handle_signals=False) == "done", store.get_run(cid)["message"]
    child = store.get_run(cid)
    assert child["env"]["parent"] == {"id": pid[:12], "iteration": 8, "depth": 8, "where": "spread", "noise": 0.0,
                                      "bn_batches": 4}
    assert json.loads((store.run_dir(cid) / PARENT).read_text())["iteration"] == 8
    # a fresh schedule of its own: iterations counted from 0 again, the base learning rate at the start
    lrs = store.scalars(cid, ["lr"])
    assert lrs["step"].min() == 4 and lrs["value"].iloc[0] == pytest.approx(0.1)
    # it started with its parent's function: at the child's step 0 (eval mode) every copied layer responds as
    # the parent's layer did at the parent's end
    parent_resp = store.layer_series(pid, "response_std")
    child_resp = store.layer_series(cid, "response_std")
    final = dict(zip(parent_resp[parent_resp.step == 8]["layer_name"], parent_resp[parent_resp.step == 8]["value"]))
    first = dict(zip(child_resp[child_resp.step == 0]["layer_name"], child_resp[child_resp.step == 0]["value"]))
    for stage in range(3):  # one parent unit per stage, followed by its two new units
        for layer in range(2):
            name = f"units.{{}}.layers.{layer}"
            assert first[name.format(3 * stage)] == pytest.approx(final[name.format(stage)], rel=1e-4)
    assert first["stem"] == pytest.approx(final["stem"], rel=1e-4)


def test_deepening_is_refused_clearly(store, tmp_path):
    with pytest.raises(ConfigError, match="the parent's checkpoint '.*nothing.pt' does not exist"):
        train(make_config("smoke", depth=20, deepen_from="x", **FAST), tmp_path / "a",
              parent_checkpoint=tmp_path / "nothing.pt")
    parent_cfg = make_config("smoke", kind="residual", depth=14, **FAST)
    (pid,) = store.create_runs([parent_cfg], status="running")
    assert execute_run(store, pid, handle_signals=False) == "done"
    ckpt = store.run_dir(pid) / "checkpoint.pt"
    with pytest.raises(ConfigError, match=r"keeps its parent's kind.*kind 'residual' \(this run: 'plain'\)"):
        train(make_config("smoke", kind="plain", depth=20, deepen_from=pid, **FAST), tmp_path / "b",
              parent_checkpoint=ckpt)
    with pytest.raises(ConfigError, match="depth 8 must be at least the parent's 14"):
        train(make_config("smoke", kind="residual", depth=8, deepen_from=pid, **FAST), tmp_path / "c",
              parent_checkpoint=ckpt)
    # through the store: an unknown parent fails the run with the store's message
    (cid,) = store.create_runs([make_config("smoke", depth=20, deepen_from="nosuchrun", **FAST)], status="running")
    assert execute_run(store, cid, handle_signals=False) == "failed"
    assert "no run 'nosuchrun'" in store.get_run(cid)["message"]


def test_deepening_options_are_validated():
    with pytest.raises(ConfigError) as err:
        make_config("smoke", kind="plain", block="bottleneck", depth=29, deepen_from="x", deepen_noise=-1,
                    deepen_where="middle")
    msg = str(err.value)
    assert "deepen_noise must be a number from 0 to 10" in msg
    assert "deepen_where must be one of spread, end" in msg
    assert "plain bottleneck unit cannot compute the identity" in msg


@pytest.mark.parametrize("options,label", [
    (dict(depth=56, unit="preact"), "resnet-56 (preact)"),
    (dict(depth=14, block="inception", residual_scale=0.3), "resnet-14 (inception, branch x0.3)"),
    (dict(depth=38, span=6, shortcut="B"), "resnet-38 (B, span 6)"),
    (dict(depth=20, norm="none", init="fixup"), "resnet-20 (none, fixup)"),
    (dict(depth=20, shortcut_scale=0.5, branch_init="zero"), "resnet-20 (shortcut x0.5, zero-init branch scalar)"),
    (dict(depth=56, deepen_from="resid20-0101-abcdef"), "resnet-20 → 56 (deepened)"),
])
def test_labels_name_the_new_options(options, label):
    assert make_config("smoke", **options).label() == label


def test_every_new_field_has_help_and_choices_where_closed():
    from dataclasses import fields

    from lab.config import RunConfig

    meta = {f.name: f.metadata for f in fields(RunConfig)}
    for name in ("unit", "residual_scale", "shortcut_scale", "branch_init", "deepen_from", "deepen_noise", "deepen_where"):
        assert meta[name]["help"]
    assert meta["unit"]["choices"] == ("original", "preact", "bn-after-add", "relu-before-add", "relu-preact")
    assert meta["block"]["choices"] == ("basic", "bottleneck", "inception")
    assert meta["deepen_where"]["choices"] == ("spread", "end")
    assert meta["branch_init"]["choices"] == ("none", "zero")
    assert meta["warmup"]["choices"] == ("auto", "on", "off") and meta["precision"]["choices"] == ("auto", "fp32", "bf16")


def _simulated_child(store, parent_id, parent_iteration, iterations=1000, seed=0):
    """A finished deepened run with simulated curves (the store's rows as a child's would be)."""
    from lab.fill import simulate_run

    cid = simulate_run(store, "plain", 56, seed, iterations=iterations, log_every=100, eval_every=500)
    cfg = store.get_run(cid)["config"] | {"deepen_from": parent_id[:-1]}  # a unique prefix
    env = store.get_run(cid)["env"] | {"parent": {"id": parent_id[:-1], "iteration": parent_iteration}}
    store.update_run(cid, config=cfg, env=env)
    return cid


def test_curves_can_be_joined_to_the_parent_curves(store):
    from lab import run_figures, run_views
    from lab.fill import simulate_run

    pid = simulate_run(store, "plain", 20, 0, iterations=1000, log_every=100, eval_every=500)
    cid = _simulated_child(store, pid, parent_iteration=600)  # grew from the parent's iteration 600
    runs = store.runs()
    child_only = runs[runs["id"] == cid]
    alone = run_views.curves(store, child_only)
    joined = run_views.curves(store, child_only, join_parents=True)
    train_alone = next(t for t in alone.data if t.name.endswith("train"))
    train_joined = next(t for t in joined.data if t.name.endswith("train"))
    assert list(train_alone.x) == list(range(100, 1001, 100))
    assert list(train_joined.x) == list(range(100, 601, 100)) + list(range(700, 1601, 100))
    parent_train = store.scalars(pid, ["train_error"])
    assert np.allclose(np.array(train_joined.y[:6]), parent_train["value"].to_numpy()[:6] * 100)
    assert np.allclose(np.array(train_joined.y[6:]), np.array(train_alone.y))
    # cumulative wall time continues from the parent's
    scalars = store.scalars([pid, cid], ["elapsed_s"])
    out = run_figures.join_parent_curves(child_only, scalars)
    child_rows = out[out.run_id == cid].sort_values("step")
    parent_at = scalars[(scalars.run_id == pid) & (scalars.step == 600)]["value"].item()
    own_first = scalars[(scalars.run_id == cid) & (scalars.step == 100)]["value"].item()
    assert child_rows[child_rows.step == 700]["value"].item() == pytest.approx(parent_at + own_first)
    # a run without a parent, or whose parent is gone, is drawn as it is
    assert run_figures.join_parent_curves(runs[runs["id"] == pid], scalars).equals(scalars)


def test_join_follows_a_chain_of_deepened_runs(store):
    from lab import run_views
    from lab.fill import simulate_run

    gid = simulate_run(store, "plain", 20, 0, iterations=400, log_every=100, eval_every=200)
    pid = _simulated_child(store, gid, parent_iteration=400, iterations=400)
    cid = _simulated_child(store, pid, parent_iteration=200, iterations=400, seed=1)
    runs = store.runs()
    fig = run_views.curves(store, runs[runs["id"] == cid], join_parents=True)
    train = next(t for t in fig.data if t.name.endswith("train"))
    # grandparent 100..400, parent 500..600 (its first 200), child 700..1000
    assert list(train.x) == list(range(100, 1001, 100))


def test_simulated_runs_carry_every_layer_metric_and_the_views_draw_them(store):
    from lab import run_views
    from lab.fill import simulate_run
    from lab.models import build_net
    from lab.probes import layer_names

    rid = simulate_run(store, "plain", 56, 0, iterations=1000, log_every=100, eval_every=500)
    names = layer_names(build_net("plain", 56))
    for metric, n in names.items():
        df = store.layer_series(rid, metric)
        steps = sorted(df["step"].unique())
        assert steps[0] == (100 if metric == "update_ratio" else 0), metric
        assert (df.groupby("step").size() == len(n)).all(), metric
    gamma = store.layer_series(rid, "bn_gamma", steps=[1000])
    assert gamma["value"].iloc[0] > 5 * gamma["value"].iloc[-1]  # deep plain nets: early BN scales grow
    runs = store.runs()
    for metric in run_views.RESPONSE_METRICS:
        fig = run_views.responses(store, runs, metric=metric)
        assert len(fig.data) == 2 and fig.layout.yaxis.title.text, metric
    for metric in run_views.GRADIENT_METRICS:
        fig = run_views.gradients(store, runs, metric=metric)
        assert len(fig.data) == 1 and len(fig.data[0].y) == 56 and fig.layout.yaxis.title.text == run_views.LAYER_METRICS[metric]
