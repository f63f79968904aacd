"""A child run's schedule (deepen_schedule): 'restart' trains on a fresh schedule with a new optimizer, 'continue'
keeps the parent's momentum and final learning rate; a child at the parent's depth is the parent's net trained
on (the net2net study's control)."""
import pytest
import torch

from lab.checkpoint import load_checkpoint
from lab.config import make_config
from lab.models import ConfigError
from lab.models.deepen import child_names
from lab.train import PARENT, MemoryReporter, Trainer, train

FAST = dict(kind="plain", train_limit=256, probe_batch=16, eval_images=64, log_every=2, grad_every=2, eval_every=4,
            checkpoint_every=4, probes=False)


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A finished plain-8 of 8 iterations (milestones at 4 and 6: it ends at lr 0.001) and its checkpoint."""
    root = tmp_path_factory.mktemp("parent")
    cfg = make_config("smoke", depth=8, iterations=8, **FAST)
    assert train(cfg, root / "p", MemoryReporter()) == "done"
    return cfg, root / "p" / "checkpoint.pt"


def _child(parent, tmp_path, **options):
    cfg = make_config("smoke", deepen_from="parent-id", **{**FAST, "iterations": 4, **options})
    return Trainer(cfg, tmp_path / "child", MemoryReporter(), torch.device("cpu"), None, True, None, parent[1])


@pytest.mark.parametrize("depth", [8, 14])
def test_a_continued_child_starts_with_the_parent_s_momentum_and_final_rate(parent, tmp_path, depth):
    trainer = _child(parent, tmp_path, depth=depth, deepen_schedule="continue")
    saved = load_checkpoint(parent[1])
    parent_net_names = [n for n, _ in trainer.net.named_parameters()] if depth == 8 else None
    assert trainer.parent_record["schedule"] == "continue" and trainer.parent_record["lr"] == pytest.approx(0.001)
    assert not trainer.state.warming and trainer.state.fixed_lr == pytest.approx(0.001)
    # the parent's buffers by the parent's parameter order, moved to the child's names
    from lab.models import CifarNet

    parent_net = CifarNet(parent[0].net_spec(trainer.splits.info.channels, trainer.splits.info.classes))
    rename = child_names(parent_net.spec, trainer.net.spec)
    names = [n for n, _ in parent_net.named_parameters()]
    child_params = dict(trainer.net.named_parameters())
    for index, name in enumerate(names):
        buf = saved["optimizer"]["state"][index]["momentum_buffer"]
        assert torch.equal(trainer.optimizer.state[child_params[rename(name)]]["momentum_buffer"], buf)
    new = [p for n, p in child_params.items() if n not in {rename(m) for m in names}]
    assert (len(new) > 0) == (depth > 8) and all(p not in trainer.optimizer.state for p in new)
    if parent_net_names is not None:   # at the parent's depth the child is the parent's net itself
        assert all(torch.equal(v, saved["model"][k]) for k, v in trainer.net.state_dict().items())


def test_a_continued_child_trains_at_the_parent_s_final_rate_and_resumes_so(parent, tmp_path):
    cfg = make_config("smoke", depth=14, deepen_from="parent-id", deepen_schedule="continue",
                      **{**FAST, "iterations": 8})
    first = MemoryReporter(stop_at=4)
    assert train(cfg, tmp_path / "c", first, parent_checkpoint=parent[1]) == "cancelled"
    second = MemoryReporter()
    assert train(cfg, tmp_path / "c", second, parent_checkpoint=parent[1]) == "done"
    lrs = [v for _, n, v in first.scalars + second.scalars if n == "lr"]
    assert len(lrs) == 4 and lrs == pytest.approx([0.001] * 4)   # no warm-up, no milestones: the parent's end
    assert first.env["milestones"] == [] and first.env["parent"]["schedule"] == "continue"
    assert cfg.label().endswith(", parent's schedule continued)")


def test_a_restarted_child_at_the_parent_s_depth_is_the_parent_on_a_fresh_schedule(parent, tmp_path):
    trainer = _child(parent, tmp_path, depth=8)
    saved = load_checkpoint(parent[1])
    assert all(torch.equal(v, saved["model"][k]) for k, v in trainer.net.state_dict().items())
    assert not trainer.optimizer.state and trainer.state.fixed_lr is None    # a new optimizer
    assert "schedule" not in trainer.parent_record and trainer.parent_record["depth"] == 8
    assert trainer.learning_rate() == 0.1
    assert (tmp_path / "child" / PARENT).exists()


def test_deepen_schedule_is_validated():
    with pytest.raises(ConfigError, match="deepen_schedule must be one of restart, continue, got 'warm'"):
        make_config("smoke", deepen_schedule="warm")
    assert make_config("smoke").deepen_schedule == "restart"   # stored runs keep their meaning
