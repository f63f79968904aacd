"""The analyses of trained nets: restoring checkpoints, lesions, loss-landscape slices, gradient shattering,
stored results and the CLI, on real smoke-preset runs of tiny nets."""
import json
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from lab.__main__ import main
from lab.analysis import AnalysisError, Cancelled, load_results, restore, run_analysis, save_result
from lab.analysis import results as results_module
from lab.analysis.restored import checkpoint_path
from lab.analysis.evaluation import evaluate
from lab.analysis.landscape import filter_normalised_directions, landscape, slice_grid
from lab.analysis.lesion import kendall_tau, lesion
from lab.analysis.shatter import input_gradients, shatter
from lab.config import RunConfig, make_config
from lab.probes import responses
from lab.runs.execute import execute_run
from lab.runs.store import Store, StoreError


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These nets are tiny: one thread does their work as fast as two, and on a busy shared machine two
    threads that spin-wait for each other are many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A plain and a residual 14-layer net (width 0.25) trained by the smoke preset, with their checkpoints."""
    store = Store(tmp_path_factory.mktemp("analysis") / "results")
    ids = {}
    for kind in ("plain", "residual"):
        cfg = make_config("smoke", kind=kind, depth=14, width=0.25)
        (rid,) = store.create_runs([cfg], status="running")
        assert execute_run(store, rid, handle_signals=False, echo=lambda _: None) == "done"
        ids[kind] = rid
    return store, ids


@pytest.fixture(scope="module")
def lesions(trained):
    """Lesion results of both nets on 300 test images, with reordering."""
    store, ids = trained
    return {kind: run_analysis(store, rid, "lesion", {"draws": 2, "reorder": True, "images": 300})[1]
            for kind, rid in ids.items()}


# --- restoring a run ------------------------------------------------------------------------------------


def test_the_restored_checkpoint_evaluates_to_the_runs_final_test_error(trained):
    store, ids = trained
    for rid in ids.values():
        r = restore(store, rid)
        assert r.at == "checkpoint" and r.step == 24 and not r.net.training
        x, y = r.images("test")
        loss, err = evaluate(r.net, x, y, r.eval_batch, r.autocast())
        assert len(y) == 2000
        assert err == store.get_run(rid)["final_test_error"]  # same weights, batches, precision: the same number


def test_init_is_the_trainers_step_zero_network(trained):
    store, ids = trained
    for rid in ids.values():
        r = restore(store, rid, "init")
        assert r.at == "init" and r.step == 0
        probe, _ = r.images("val", r.cfg.probe_batch)
        std = responses(r.net, probe, r.autocast())["response_std"]
        recorded = store.layer_series(rid, "response_std", steps=[0])["value"].to_numpy()
        assert std.float().cpu().numpy() == pytest.approx(recorded, rel=1e-5)
        trained_std = responses(restore(store, rid).net, probe, r.autocast())["response_std"]
        assert not torch.allclose(std.float(), trained_std.float())  # the check can tell init from trained


def _copy_run(store, rid, status="done"):
    """A new run row with the same config as `rid`, without files."""
    (new,) = store.create_runs([RunConfig.from_dict(store.get_run(rid)["config"])], status=status)
    return new


def test_clear_errors_for_runs_that_cannot_be_analysed(trained):
    store, ids = trained
    with pytest.raises(StoreError, match="no run"):
        restore(store, "nothing-like-this")
    queued = _copy_run(store, ids["residual"], status="queued")
    with pytest.raises(AnalysisError, match="queued.*--at init"):
        restore(store, queued)
    assert restore(store, queued, "init").step == 0  # init needs no checkpoint
    running = _copy_run(store, ids["residual"], status="running")
    with pytest.raises(AnalysisError, match="no checkpoint yet.*every 12 iterations"):
        restore(store, running)
    with pytest.raises(AnalysisError, match="no weights at iteration 7.*available: init \\(0\\) and 24"):
        restore(store, ids["residual"], 7)

    target = checkpoint_path(store, running)
    target.parent.mkdir(parents=True)
    good = checkpoint_path(store, ids["residual"]).read_bytes()
    target.write_bytes(good[: len(good) // 2])
    with pytest.raises(AnalysisError, match="cannot be read: truncated"):
        restore(store, running)
    torch.save({"model": {}, "step": 3, "extra": Store}, target)  # a class: not plain data
    with pytest.raises(AnalysisError, match="holds more than tensors"):
        restore(store, running)
    torch.save({"weights": torch.zeros(3)}, target)
    with pytest.raises(AnalysisError, match="not a lab checkpoint"):
        restore(store, running)
    # a plain net's weights fit a residual net name for name (option A): the recorded config tells them apart
    shutil.copy(checkpoint_path(store, ids["plain"]), target)
    with pytest.raises(AnalysisError, match="another network.*kind 'plain' vs 'residual'"):
        restore(store, running)
    state = torch.load(checkpoint_path(store, ids["plain"]), weights_only=True)
    del state["config"]
    state["model"].pop("head.weight")
    torch.save(state, target)
    with pytest.raises(AnalysisError, match="does not fit its network"):
        restore(store, running)


# --- lesions --------------------------------------------------------------------------------------------


def test_deleting_nothing_gives_the_final_test_error(trained):
    store, ids = trained
    _, result = run_analysis(store, ids["residual"], "lesion", {"draws": 1})
    assert result["images"] == 2000  # the whole test set, as the trainer's final evaluation
    assert result["baseline"]["error"] == store.get_run(ids["residual"])["final_test_error"]


def test_lesion_result_shape_and_deletable_units(lesions):
    plain, res = lesions["plain"], lesions["residual"]
    # plain: the first unit of stages 2 and 3 changes the shape and cannot become the identity
    assert [r["deletable"] for r in plain["unit_table"]] == [True, True, False, True, False, True]
    assert [e is None for e in plain["single"]["error"]] == [False, False, True, False, True, False]
    assert all(r["deletable"] for r in res["unit_table"]) and None not in res["single"]["error"]
    assert [r["stage"] for r in res["unit_table"]] == [0, 0, 1, 1, 2, 2]
    # each unit's kind: the first unit of stages 2 and 3 downsamples, in both nets
    for r in (plain, res):
        assert [row["kind"] for row in r["unit_table"]] == ["shape-keeping", "shape-keeping", "downsampling",
                                                            "shape-keeping", "downsampling", "shape-keeping"]
        assert r["format"] == 2 and r["deleted"]["units"] == "shape-keeping" and r["deleted"]["candidates"] == [0, 1, 3, 5]
    # the ResNet's downsampling units are deleted alone and reported apart; the plain net cannot delete them
    kinds = res["single_by_kind"]
    assert kinds["downsampling"]["units"] == [2, 4] and kinds["shape-keeping"]["units"] == [0, 1, 3, 5]
    base = res["baseline"]["error"]
    assert kinds["downsampling"]["max_increase"] == pytest.approx(max(res["single"]["error"][i] - base for i in (2, 4)))
    assert plain["single_by_kind"]["downsampling"]["units"] == [] and plain["single_by_kind"]["downsampling"]["units_total"] == 2
    assert plain["single_by_kind"]["downsampling"]["mean_increase"] is None
    # k-sets from the shape-keeping units in both nets: the same candidates, the same k
    d = res["deleted"]
    assert d["k"] == [1, 2, 3, 4] and d["sets"] == [2, 2, 2, 1] and d["exhaustive"][-1]
    assert all(lo <= m <= hi for lo, m, hi in zip(d["error_min"], d["error_mean"], d["error_max"]))
    assert plain["deleted"]["k"] == [1, 2, 3, 4] and plain["deleted"]["exhaustive"][-1]
    # both nets: units 1 and 2 of stage 1 are the only two with the same shape, so reordering swaps them
    for r in (plain, res):
        o = r["reordered"]
        assert o["swaps"] == [1, 2, 3, 4] and o["kendall_tau"][0] == pytest.approx(1 - 2 / 15)
    json.dumps(res, allow_nan=False)


def test_deleting_a_unit_whose_branch_is_zero_changes_nothing(trained):
    store, ids = trained
    r = restore(store, ids["residual"])
    x, y = r.images("test", 200)
    with torch.no_grad():
        # the branch's last BN (option A shortcuts have none): gamma = beta = 0 makes F(x) = 0
        bn = [m for m in r.net.units[3].modules() if isinstance(m, nn.BatchNorm2d)][-1]
        bn.weight.zero_()
        bn.bias.zero_()
    out = lesion(r.net, x, y, draws=1, batch_size=r.eval_batch, autocast=r.autocast())
    assert out["single"]["error"][3] == out["baseline"]["error"]
    assert out["single"]["loss"][3] == out["baseline"]["loss"]
    others = [lo for i, lo in enumerate(out["single"]["loss"]) if i != 3]
    assert any(lo != out["baseline"]["loss"] for lo in others)  # deleting a live branch does change the loss
    assert not any(u.lesioned for u in r.net.units)


def test_lesion_reports_progress_and_stops_when_asked(trained):
    store, ids = trained
    r = restore(store, ids["plain"])
    x, y = r.images("test", 64)
    seen = []
    lesion(r.net, x, y, draws=1, progress=lambda d, t: seen.append((d, t)))
    assert seen[0][0] == 0 and seen[-1][0] == seen[-1][1] and [d for d, _ in seen] == sorted(d for d, _ in seen)
    calls = []
    with pytest.raises(Cancelled):
        lesion(r.net, x, y, draws=1, should_stop=lambda: calls.append(1) or len(calls) > 2)
    assert not any(u.lesioned for u in r.net.units) and len(list(r.net.units)) == 6


def test_kendall_tau():
    assert kendall_tau([0, 1, 2, 3]) == 1 and kendall_tau([3, 2, 1, 0]) == -1
    assert kendall_tau([1, 0, 2, 3]) == pytest.approx(1 - 2 / 6)


# --- loss landscape -------------------------------------------------------------------------------------


class Quadratic(nn.Module):
    """A 'model' whose loss is a positive-definite quadratic in its weights: sum A * (W - C)^2."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.weight = nn.Parameter(torch.randn(4, 6, generator=g, dtype=torch.float64))
        self.bias = nn.Parameter(torch.randn(4, generator=g, dtype=torch.float64))
        self.register_buffer("a", torch.rand(4, 6, generator=g, dtype=torch.float64) + 0.5)
        self.register_buffer("c", torch.randn(4, 6, generator=g, dtype=torch.float64))

    def loss(self) -> float:
        with torch.no_grad():
            return float((self.a * (self.weight - self.c) ** 2).sum() + (self.bias**2).sum())


def test_a_slice_of_a_quadratic_loss_is_a_parabola():
    model = Quadratic()
    w0 = model.weight.detach().clone()
    (d,) = filter_normalised_directions(model, 1, seed=3)
    assert torch.equal(d["bias"], torch.zeros(4, dtype=torch.float64))  # 1-D parameters stay put
    assert d["weight"].norm(dim=1) == pytest.approx(w0.norm(dim=1), rel=1e-9)  # each row scaled to its weights' row
    alphas = np.linspace(-2, 2, 9)
    values = slice_grid(model, lambda: {"loss": model.loss()}, [d], [(a,) for a in alphas])
    loss = np.array([v["loss"] for v in values])
    fitted = np.polyfit(alphas, loss, 2)
    dw = d["weight"]
    curvature = float((model.a * dw**2).sum())
    slope = float((2 * model.a * (w0 - model.c) * dw).sum())
    assert fitted == pytest.approx([curvature, slope, model.loss()], rel=1e-9)
    assert np.abs(np.polyval(fitted, alphas) - loss).max() < 1e-9 * loss.max()
    assert torch.equal(model.weight.detach(), w0)  # restored


def test_directions_are_filter_normalised_and_seeded(trained):
    store, ids = trained
    net = restore(store, ids["residual"]).net
    d1, d2 = filter_normalised_directions(net, 2, seed=5)
    again = filter_normalised_directions(net, 1, seed=5)[0]
    other = filter_normalised_directions(net, 1, seed=6)[0]
    params = dict(net.named_parameters())
    for name, p in params.items():
        assert torch.equal(d1[name], again[name])
        if p.dim() <= 1:
            assert not d1[name].any() and not d2[name].any(), name  # BN parameters and biases
            continue
        assert not torch.equal(d1[name], other[name])
        norms = d1[name].flatten(1).norm(dim=1)
        assert norms.cpu().numpy() == pytest.approx(p.detach().flatten(1).norm(dim=1).cpu().numpy(), rel=1e-4), name
    assert params["head.weight"].dim() == 2  # the head is normalised per output row (checked above)


def test_landscape_origin_is_the_checkpoints_loss_and_weights_come_back(trained):
    store, ids = trained
    r = restore(store, ids["plain"])
    x, y = r.images("train", 64)
    before = {k: v.clone() for k, v in r.net.state_dict().items()}
    loss, err = evaluate(r.net, x, y, r.eval_batch, r.autocast())
    one = landscape(r.net, x, y, points=5, span=0.5, seed=1, batch_size=r.eval_batch, autocast=r.autocast())
    assert one["origin"] == {"loss": loss, "error": err}
    assert one["alpha"] == [-0.5, -0.25, 0.0, 0.25, 0.5] and one["loss"][2] == loss and one["error"][2] == err
    assert max(one["loss"][0], one["loss"][-1]) > loss
    assert all(torch.equal(v, r.net.state_dict()[k]) for k, v in before.items())
    two = landscape(r.net, x, y, points=3, span=0.5, two_d=True, seed=1, batch_size=r.eval_batch,
                    autocast=r.autocast())
    assert len(two["loss"]) == 3 and all(len(row) == 3 for row in two["loss"])
    # the beta = 0 row of the grid is the 1-D slice along the same (first) direction
    assert two["loss"][1] == [one["loss"][0], one["loss"][2], one["loss"][4]]
    assert landscape(r.net, x, y, points=5, span=0.5, seed=1, batch_size=r.eval_batch,
                     autocast=r.autocast())["loss"] == one["loss"]  # same seed, same slice
    with pytest.raises(Cancelled):
        landscape(r.net, x, y, points=5, should_stop=lambda: True)
    assert all(torch.equal(v, r.net.state_dict()[k]) for k, v in before.items())


# --- shattered gradients --------------------------------------------------------------------------------


def test_a_linear_net_has_perfectly_correlated_gradients():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    out = shatter(net, torch.randn(3, 8, 8), torch.randn(3, 8, 8), points=64, target=4)
    assert out["correlation"] == pytest.approx([1.0] * 63, abs=1e-9)
    assert len(out["distance_t"]) == 63 and out["distance_t"][-1] == pytest.approx(1.0)


def test_one_batched_backward_equals_one_backward_per_input(trained):
    store, ids = trained
    r = restore(store, ids["residual"])
    x, y = r.images("val", 6)
    batched = input_gradients(r.net, x, "loss", label=int(y[0]))
    for i in (0, 3, 5):
        alone = input_gradients(r.net, x[i : i + 1], "loss", label=int(y[0]))
        assert torch.allclose(batched[i], alone[0], rtol=1e-4, atol=1e-7)


def test_shatter_on_stored_runs(trained):
    store, ids = trained
    name, res = run_analysis(store, ids["plain"], "shatter", {"at": "init", "points": 64, "target": 2})
    assert name == "shatter-init" and res["run"]["at"] == "init" and res["target"] == 2
    assert res["summary"]["distance_t"] == pytest.approx(1 / 63) and res["summary"]["correlation"] == res["correlation"][0]
    assert res["correlation"][0] > res["correlation"][-1] and res["correlation"][-1] < 0.99  # a ReLU net decorrelates
    assert res["distance"][-1] == pytest.approx(res["line_length"]) and len(res["grad_norm"]) == 64
    name, res = run_analysis(store, ids["residual"], "shatter", {"points": 16, "towards": "random", "norm": 5.0})
    assert name == "shatter" and res["line_length"] == pytest.approx(5.0, rel=1e-5) and res["line"]["direction"] == "random"
    with pytest.raises(AnalysisError, match="logit 10 does not exist"):
        run_analysis(store, ids["plain"], "shatter", {"target": 10})
    with pytest.raises(AnalysisError, match="unknown option 'colour'.*points must be an integer from 3 to 1024, got 2"):
        run_analysis(store, ids["plain"], "shatter", {"points": 2, "colour": 1})


def _bns(net):
    return [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]


def test_analyses_at_init_recalibrate_the_bn_statistics(trained):
    """A fresh net's running statistics are (0, 1): every BN the identity in eval mode. At init the analyses
    recalibrate them on training batches first, record that they did, and leave the weights alone."""
    store, ids = trained
    fresh = restore(store, ids["plain"], "init")
    assert fresh.bn_statistics == "running" and all(torch.equal(m.running_var, torch.ones_like(m.running_var))
                                                    for m in _bns(fresh.net))
    r = restore(store, ids["plain"], "init", bn_batches=4)
    assert r.bn_statistics == "recalibrated" and r.bn_images == 4 * r.cfg.batch_size and not r.net.training
    assert all(torch.equal(a, b) for a, b in zip(fresh.net.parameters(), r.net.parameters()))
    assert all(not torch.equal(m.running_var, torch.ones_like(m.running_var)) for m in _bns(r.net))
    # in eval mode the first BN now normalises the training images: per channel about mean 0, variance 1
    from lab.analysis.restored import training_batches

    out = []
    hook = _bns(r.net)[0].register_forward_hook(lambda _m, _i, o: out.append(o.detach().float()))
    with torch.no_grad():
        for x in training_batches(r, 4):
            r.net(x)
    hook.remove()
    y = torch.cat(out)
    assert y.mean(dim=(0, 2, 3)).abs().max() < 0.05 and (y.var(dim=(0, 2, 3)) - 1).abs().max() < 0.1
    assert restore(store, ids["plain"], bn_batches=4).bn_statistics == "running"   # trained: its own statistics


def test_the_summary_lag_separates_plain_and_residual_nets_at_init():
    """The summary correlation (neighbouring inputs on the line) tells a plain net from its residual twin at
    init, with the BN statistics recalibrated as the analyses do: cheap nets at init, no training."""
    from lab.analysis.restored import recalibrate_bn
    from lab.datasets import DeviceLoader, make_splits
    from lab.models import build_net

    splits = make_splits("synthetic", val_fraction=0.1, limit=1024)
    x, y = DeviceLoader(splits.train, splits.mean, splits.std, torch.device("cpu"), 64).batch(torch.arange(128))
    summary = {}
    for kind in ("plain", "residual"):
        for depth in (20, 56):
            torch.manual_seed(0)
            net = build_net(kind, depth, width=0.25)
            recalibrate_bn(net, [x[:64], x[64:]])
            out = shatter(net, x[0], x[1] - x[0], points=64, label=int(y[0]))
            assert out["summary"]["distance_t"] == pytest.approx(1 / 63)   # lag 1: neighbouring inputs
            summary[kind, depth] = out["summary"]["correlation"]
    for depth in (20, 56):
        assert summary["residual", depth] > summary["plain", depth] + 0.3, summary
    assert abs(summary["plain", 56]) < 0.1 < summary["plain", 20]   # the deep plain net's gradients: white noise


def test_results_record_their_bn_statistics(trained):
    store, ids = trained
    _, res = run_analysis(store, ids["residual"], "shatter", {"at": "init", "points": 16})
    assert res["bn_statistics"] == res["run"]["bn_statistics"] == "recalibrated" and res["options"]["bn_batches"] == 20
    _, res = run_analysis(store, ids["residual"], "shatter", {"at": "init", "points": 16, "bn_batches": 0})
    assert res["bn_statistics"] == "running"
    _, res = run_analysis(store, ids["residual"], "landscape", {"at": "init", "points": 3, "images": 64})
    assert res["bn_statistics"] == "recalibrated"
    _, res = run_analysis(store, ids["plain"], "lesion", {"images": 64, "draws": 1})
    assert res["bn_statistics"] == "running"


# --- stored results and the CLI -------------------------------------------------------------------------


def test_results_are_saved_atomically_and_loaded_back(trained):
    store, ids = trained
    rid = ids["plain"]
    save_result(store, rid[:12], "test-result", {"a": [1.0, float("nan")], "b": (1, 2), "c": float("inf")})
    assert load_results(store, [rid, ids["residual"]], "test-result") == {rid: {"a": [1.0, None], "b": [1, 2], "c": None}}
    folder = store.run_dir(rid) / "analysis"
    assert sorted(p.name for p in folder.iterdir()) == ["test-result.json"]  # no temporary files left
    with pytest.raises(ValueError, match="result name"):
        save_result(store, rid, "../escape", {})


class ArtifactStore:
    """The store's artifacts interface of schema version 2 (put_artifact, artifact, artifacts), in memory."""

    def __init__(self, store):
        self.inner, self.rows = store, {}

    def get_run(self, run_id):
        return self.inner.get_run(run_id)

    def put_artifact(self, run_id, name, data):
        self.rows[(run_id, name)] = json.dumps(data)

    def artifact(self, run_id, name):
        row = self.rows.get((run_id, name))
        return None if row is None else json.loads(row)

    def artifacts(self, run_id):
        return {n: json.loads(v) for (r, n), v in self.rows.items() if r == run_id}


def test_results_can_live_in_the_stores_artifacts_table(trained, monkeypatch):
    store, ids = trained
    monkeypatch.setattr(results_module, "BACKEND", results_module.StoreArtifacts())
    fake = ArtifactStore(store)
    save_result(fake, ids["plain"], "lesion", {"x": 1})
    assert load_results(fake, list(ids.values()), "lesion") == {ids["plain"]: {"x": 1}}
    assert results_module.result_names(fake, ids["plain"]) == ["lesion"]


def test_cli_commands(trained, capsys):
    store, ids = trained
    root = str(store.root)
    others = [i for i in store.runs()["id"] if i != ids["residual"]]
    prefix = next(ids["residual"][:n] for n in range(1, 65) if not any(i.startswith(ids["residual"][:n]) for i in others))
    assert main(["lesion", prefix, "--results", root, "--images", "64", "--draws", "1", "--json", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["analysis"] == "lesion" and out["images"] == 64 and out["run"]["run_id"] == ids["residual"]
    assert load_results(store, [ids["residual"]], "lesion")[ids["residual"]]["images"] == 64
    assert main(["landscape", ids["plain"], "--results", root, "--points", "3", "--images", "32", "--span", "0.2"]) == 0
    text = capsys.readouterr()
    assert "on 32 training images" in text.out and "+0.20" in text.out and "landscape.json" in text.out
    assert "landscape" in text.err  # the progress bar
    assert main(["shatter", ids["plain"], "--results", root, "--at", "init", "--points", "32", "--logit", "loss",
                 "--quiet"]) == 0
    assert "at init" in capsys.readouterr().out
    assert main(["shatter", ids["plain"], "--results", root, "--at", "5", "--quiet"]) == 2
    assert "available: init (0) and 24" in capsys.readouterr().err
    assert main(["landscape", ids["plain"], "--results", root, "--points", "1", "--quiet"]) == 2
    assert "points must be an integer from 2 to 1001, got 1" in capsys.readouterr().err
