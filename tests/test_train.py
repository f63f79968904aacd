import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from conftest import ROOT
from lab.config import make_config
from lab.runs.execute import execute_run
from lab.models import CifarNet, ConfigError
from lab.train import MemoryReporter, Reporter, learning_rate, train


def test_smoke_run_end_to_end_writes_every_metric(store):
    cfg = make_config("smoke", kind="residual", depth=20)
    (rid,) = store.create_runs([cfg], status="running")
    assert execute_run(store, rid, handle_signals=False) == "done"
    run = store.get_run(rid)
    assert run["status"] == "done" and run["iteration"] == 24 and run["params"] == 269_722
    assert 0 <= run["final_test_error"] <= 1 and 0 <= run["final_train_error"] <= 1
    assert run["env"]["torch"] == torch.__version__ and run["env"]["git"]
    names = set(store.scalars(rid)["name"])
    assert {"train_loss", "train_error", "lr", "images_per_s", "elapsed_s", "epoch",
            "val_error", "val_loss", "test_error", "test_loss"} <= names
    grads = store.layer_series(rid, "grad_norm")
    assert sorted(grads["step"].unique()) == [0, 4, 8, 12, 16, 20, 24]  # step 0: before any update
    assert grads["layer"].nunique() == 20 and (grads["value"] > 0).all()
    resp = store.layer_series(rid, "response_std")
    assert sorted(resp["step"].unique()) == [0, 12, 24] and resp["layer"].nunique() == 19
    assert store.layer_series(rid, "residual_ratio")["layer"].nunique() == 9
    assert resp["layer_name"].iloc[0] == "stem"
    assert (store.run_dir(rid) / "checkpoint.pt").exists()


class Crash(Exception):
    pass


class CrashAt(Reporter):
    """Forwards to a StoreReporter-like target, then dies like a killed process after `step` is logged."""

    def __init__(self, inner, step):
        self.inner, self.step = inner, step

    def start(self, *a):
        self.inner.start(*a)

    def log(self, step, *a):
        self.inner.log(step, *a)
        if step == self.step:
            raise Crash

    def finish(self, *a):
        self.inner.finish(*a)


def test_interrupted_and_resumed_run_has_the_same_step_sequence(store, tmp_path):
    from lab.runs.execute import StoreReporter

    cfg = make_config("smoke", kind="plain", depth=20, width=0.25, precision="fp32")
    ref_id, cut_id = store.create_runs([cfg, cfg], status="running")
    assert execute_run(store, ref_id, handle_signals=False) == "done"

    # die after step 20 was logged (checkpoint at 12): steps 16 and 20 must be dropped and redone
    rep = StoreReporter(store, cut_id, store.begin_attempt(cut_id))
    with pytest.raises(Crash):
        train(cfg, store.run_dir(cut_id), CrashAt(rep, 20))
    rep.close()
    assert store.scalars(cut_id)["step"].max() == 20
    # as after a real crash: found dead, resumed, claimed by a worker under a new attempt
    store.set_status(cut_id, "interrupted")
    store.requeue(cut_id)
    claimed = store.claim_next("w")
    assert execute_run(store, cut_id, handle_signals=False, attempt=claimed["attempt"]) == "done"

    ref, cut = store.scalars(ref_id), store.scalars(cut_id)
    key = ["name", "step"]
    assert ref[key].values.tolist() == cut[key].values.tolist()  # no gaps, no duplicates
    for name in ("train_loss", "train_error", "lr", "test_error"):
        a = ref[ref.name == name]["value"].to_numpy()
        b = cut[cut.name == name]["value"].to_numpy()
        assert a == pytest.approx(b, rel=1e-4, abs=1e-6), name
    for metric in ("grad_norm", "response_std"):
        assert store.layer_steps(ref_id, metric) == store.layer_steps(cut_id, metric)


def test_graceful_stop_then_resume_continues_the_curve(tmp_path):
    cfg = make_config("smoke", kind="residual", depth=20, width=0.25)
    first = MemoryReporter(stop_at=8)
    assert train(cfg, tmp_path / "run", first) == "cancelled"
    second = MemoryReporter()
    assert train(cfg, tmp_path / "run", second) == "done"
    steps = sorted({s for s, n, _ in first.scalars + second.scalars if n == "train_loss"})
    assert steps == [4, 8, 12, 16, 20, 24]


def test_learning_rate_schedule():
    cfg = make_config("paper")
    assert cfg.milestone_iterations() == [32000, 48000]
    assert learning_rate(0, cfg, False) == 0.1
    assert learning_rate(31999, cfg, False) == 0.1
    assert learning_rate(32000, cfg, False) == pytest.approx(0.01)
    assert learning_rate(48000, cfg, False) == pytest.approx(0.001)
    assert learning_rate(100, cfg, True) == 0.01


def test_warmup_returns_to_the_base_rate(tmp_path):
    # the paper's 110-layer warm-up: 0.01 until training error < 80%, then back to 0.1 for good
    cfg = make_config("smoke", depth=110, width=0.25, iterations=40, warmup_error=0.9, milestones=(0.9,),
                      log_every=2, eval_every=40, checkpoint_every=40, probes=False)
    assert cfg.uses_warmup()
    rep = MemoryReporter()
    assert train(cfg, tmp_path / "run", rep, resume=False) == "done"
    lrs = [v for s, n, v in rep.scalars if n == "lr" and s <= 36]  # the milestone (0.9 x 40) divides it by 10
    errors = [v for s, n, v in rep.scalars if n == "train_error"]
    assert lrs[0] == 0.01
    back = lrs.index(0.1)
    assert min(errors[:back]) < 0.9 and all(e >= 0.9 for e in errors[: back - 1])
    assert set(lrs[back:]) == {0.1}  # it stays at 0.1 until the milestone


def test_a_warmup_that_never_ends_stops_at_the_first_milestone(tmp_path):
    """A net whose training error stays above warmup_error (a plain-110 above 80%) still gets the schedule's
    decays: the warm-up ends at the first milestone at the latest, and the run records when it ended."""
    cfg = make_config("smoke", depth=8, warmup="on", warmup_error=1e-9, warmup_lr=0.05, iterations=12, milestones=(0.5, 0.75),
                      log_every=4, eval_every=12, checkpoint_every=4, probes=False)
    assert learning_rate(5, cfg, True) == cfg.warmup_lr
    assert learning_rate(6, cfg, True) == pytest.approx(0.01)    # the first milestone: the base rate / 10
    assert learning_rate(9, cfg, True) == pytest.approx(0.001)
    assert learning_rate(100, replace(cfg, milestones=()), True) == cfg.warmup_lr  # no milestone: no end
    rep = MemoryReporter(stop_at=8)   # stopped and resumed after the warm-up ended: the record survives
    assert train(cfg, tmp_path / "run", rep) == "cancelled"
    rest = MemoryReporter()
    assert train(cfg, tmp_path / "run", rest) == "done"
    scalars = rep.scalars + rest.scalars
    lrs = {s: v for s, n, v in scalars if n == "lr"}   # the rate of each window's last iteration
    assert lrs[4] == 0.05 and lrs[8] == pytest.approx(0.01) and lrs[12] == pytest.approx(0.001)
    assert [(s, v) for s, n, v in scalars if n == "warmup_end"] == [(8, 6.0)]   # logged once, with iteration 7
    assert rest.summary["warmup_end"] == 6


def test_the_warmup_end_is_logged_after_the_error_falls(tmp_path):
    cfg = make_config("smoke", depth=8, warmup="on", warmup_error=1.0, iterations=12, milestones=(0.9,),
                      log_every=4, eval_every=12, checkpoint_every=12, probes=False)
    rep = MemoryReporter()
    assert train(cfg, tmp_path / "run", rep) == "done"
    assert [(s, v) for s, n, v in rep.scalars if n == "warmup_end"] == [(8, 4.0)]   # the first window ended it
    assert [v for s, n, v in rep.scalars if n == "lr"] == pytest.approx([0.01, 0.1, 0.01])   # milestone at 11
    assert rep.summary["warmup_end"] == 4


def test_divergence_ends_the_run_cleanly(store):
    cfg = make_config("smoke", kind="plain", depth=20, norm="none", lr=1e6)
    (rid,) = store.create_runs([cfg], status="running")
    assert execute_run(store, rid, handle_signals=False) == "diverged"
    run = store.get_run(rid)
    assert run["status"] == "diverged" and "NaN or infinite at iteration" in run["message"]
    assert run["iteration"] < 24


@pytest.mark.parametrize("args,message", [
    (["--depth", "21"], "nearest valid depths: 20 or 26"),
    (["--lr", "-1"], "lr must be a positive number"),
    (["--dataset", "imagenet"], "invalid choice: 'imagenet'"),
    (["--shortcutz", "A"], "unrecognized arguments: --shortcutz"),
    (["--shortcut", "Q"], "shortcut 'Q' is not one of A, B, C"),
    (["--iterations", "ten"], "iterations: 'ten' is not a valid int"),
])
def test_cli_refuses_bad_input_clearly(args, message, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lab", "run", "--preset", "smoke", "--results", str(tmp_path), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_make_config_lists_every_problem():
    with pytest.raises(ConfigError) as err:
        make_config("quick", depth=21, lr=-1, batch_size=0)
    msg = str(err.value)
    assert "depth 21" in msg and "lr must be" in msg and "batch_size must be" in msg
    with pytest.raises(ConfigError, match="unknown option"):
        make_config("quick", learning_rate=0.1)
    with pytest.raises(ConfigError, match="unknown preset"):
        make_config("fast")


def test_scalar_parameters_train_at_their_share_of_the_schedule(tmp_path):
    # Zhang et al.'s Fixup code: scalar biases and multipliers at a tenth of whatever rate the schedule sets
    from lab.checkpoint import load_checkpoint
    from lab.train import make_optimizer, set_learning_rate

    cfg = make_config("smoke", depth=14, norm="none", init="fixup", scalar_lr=0.1, precision="fp32")
    net = CifarNet(cfg.net_spec())
    opt = make_optimizer(net, cfg, torch.device("cpu"))
    others, scalars = opt.param_groups
    assert scalars["params"] and all(p.numel() == 1 for p in scalars["params"])
    assert len(others["params"]) + len(scalars["params"]) == len(list(net.parameters()))
    set_learning_rate(opt, 0.01)
    assert (others["lr"], scalars["lr"]) == (0.01, pytest.approx(0.001))
    assert len(make_optimizer(net, replace(cfg, scalar_lr=1.0), torch.device("cpu")).param_groups) == 1

    # One step from the same start: the same update of every other parameter, a tenth of the scalars' (SGD's
    # first step is lr x (gradient + weight decay)). Zero-init branch scalars, whose first gradients are not zero
    # (Fixup's are: its branches and classifier start at zero).
    moved = {}
    cfg = make_config("smoke", depth=14, width=0.25, branch_init="zero", precision="fp32")
    for share in (1.0, 0.1):
        run_cfg = replace(cfg, scalar_lr=share, iterations=1, log_every=1, eval_every=1, checkpoint_every=1,
                          probes=False, train_limit=256, eval_images=32)
        assert train(run_cfg, tmp_path / str(share), MemoryReporter(), resume=False) == "done"
        torch.manual_seed(run_cfg.seed)  # the net the trainer starts from
        start = CifarNet(run_cfg.net_spec()).state_dict()
        after = load_checkpoint(tmp_path / str(share) / "checkpoint.pt")["model"]
        moved[share] = {k: (after[k] - start[k]).abs().sum().item() for k in start if start[k].is_floating_point()}
    scalar_names = [k for k, v in CifarNet(cfg.net_spec()).named_parameters() if v.numel() == 1]
    assert scalar_names and all(moved[1.0][k] > 0 for k in scalar_names)
    for k in moved[1.0]:
        expected = 0.1 * moved[1.0][k] if k in scalar_names else moved[1.0][k]
        assert moved[0.1][k] == pytest.approx(expected, rel=1e-4, abs=1e-9), k


def test_scalar_lr_is_validated_and_named():
    with pytest.raises(ConfigError, match=r"scalar_lr must be a finite number in \(0, 100\]"):
        make_config("smoke", scalar_lr=0)
    assert make_config("smoke", norm="none", init="fixup", scalar_lr=0.1).label() == \
        "resnet-20 (none, fixup, scalars at lr x0.1)"
