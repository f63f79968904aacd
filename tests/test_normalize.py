"""Input normalisation: the lab's per-channel default and the paper's per-pixel mean subtraction (issue 23)."""
import pytest
import torch

from lab.config import PRESETS, RunConfig, config_problems, make_config
from lab.datasets import DeviceLoader, make_splits
from lab.models import ConfigError


def test_pixel_mean_subtracts_the_mean_image_and_does_not_rescale():
    splits = make_splits("synthetic", val_fraction=0.1, limit=512, normalize="pixel-mean")
    assert splits.mean.shape == (3, 32, 32) and torch.equal(splits.std, torch.ones(3))
    loader = DeviceLoader(splits.train, splits.mean, splits.std, torch.device("cpu"), 64)
    x, _ = loader.batch(torch.arange(len(loader)))
    # every pixel of every channel is centred over the training split, and the scale stays [0, 1] units
    assert x.mean(dim=0).abs().max() < 1e-4
    raw = splits.train.images.float() / 255
    assert torch.allclose(x, raw - raw.mean(dim=0), atol=1e-5)
    record = splits.normalisation()
    assert record["kind"] == "pixel-mean" and len(record["mean"]) == 3 and record["std"] == [1.0, 1.0, 1.0]


def test_channel_normalisation_is_the_default():
    splits = make_splits("synthetic", val_fraction=0.1, limit=512)
    assert splits.mean.shape == (3,) and splits.normalisation()["kind"] == "channel"
    assert RunConfig().normalize == "channel" and make_config("quick").normalize == "channel"


def test_unknown_normalisation_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="normalize must be one of channel, pixel-mean"):
        make_splits("synthetic", normalize="zca")
    assert any("normalize must be one of" in p for p in config_problems(RunConfig(normalize="zca")))


def test_paper_preset_subtracts_the_per_pixel_mean():
    assert make_config("paper").normalize == "pixel-mean" and PRESETS["paper"]["normalize"] == "pixel-mean"


def test_stored_runs_without_the_field_read_as_channel():
    """Runs stored before the option existed were normalised per channel, and read back so (a paper-preset run
    among them is not taken for a pixel-mean one)."""
    stored = {k: v for k, v in make_config("paper").__dict__.items() if k != "normalize"}
    assert RunConfig.from_dict(stored).normalize == "channel"


def test_paper_study_plans_use_pixel_mean():
    from lab.studies.plan import make_plan
    from lab.studies.registry import get

    plan = make_plan(get("degradation"), "paper")
    assert {c.normalize for pa in plan.arms for c in pa.configs} == {"pixel-mean"}
    assert {c.normalize for pa in make_plan(get("degradation"), "cpu").arms for c in pa.configs} == {"channel"}


def test_normalize_is_a_cli_flag_and_a_launch_option():
    import subprocess
    import sys
    from dataclasses import fields

    out = subprocess.run([sys.executable, "-m", "lab", "run", "--help"], capture_output=True, text=True, timeout=120)
    assert "--normalize" in out.stdout and "pixel-mean" in out.stdout
    # the Launch page's More options offer every RunConfig field with choices as a menu, with the field's help
    field = {f.name: f for f in fields(RunConfig)}["normalize"]
    assert field.metadata["choices"] == ("channel", "pixel-mean") and "paper" in field.metadata["help"]
