"""The paper's ImageNet nets (Table 1): torchvision's parameter counts and function, the plain twins, the
family's depth rules, and every unit option on the family."""
import pytest
import torch
import torchvision

from lab.config import make_config, validate
from lab.models import (
    IMAGENET_STAGES, ConfigError, ImageNetNet, build_net, count_parameters, create_model, forward_macs,
    load_torchvision_weights, net_for,
)

TORCHVISION = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}


def imagenet(kind: str, depth: int, **options):
    block = IMAGENET_STAGES[depth][0]
    return build_net(kind, depth, family="imagenet", block=block, **options)


@pytest.mark.parametrize("depth", sorted(TORCHVISION))
def test_residual_nets_have_torchvisions_parameter_count(depth):
    net = imagenet("residual", depth, shortcut="B", num_classes=1000)
    assert isinstance(net, ImageNetNet)
    assert count_parameters(net) == TORCHVISION[depth]
    assert count_parameters(getattr(torchvision.models, f"resnet{depth}")()) == TORCHVISION[depth]
    assert count_parameters(create_model(f"resnet{depth}")) == TORCHVISION[depth]


@pytest.mark.parametrize("depth", sorted(TORCHVISION))
def test_plain_twins_drop_exactly_the_projection_shortcuts(depth):
    residual = imagenet("residual", depth, shortcut="B", num_classes=1000)
    plain = imagenet("plain", depth, num_classes=1000)
    projections = sum(count_parameters(u.shortcut) for u in residual.units if u.shortcut is not None)
    assert projections > 0
    assert count_parameters(plain) == TORCHVISION[depth] - projections
    assert all(u.shortcut is None for u in plain.units)


def _randomise_bn(model: torch.nn.Module) -> None:
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=gen) * 0.2 - 0.1)


@pytest.mark.parametrize("depth", [18, 50])
def test_given_torchvisions_weights_the_net_computes_torchvisions_function(depth):
    torch.manual_seed(0)
    reference = getattr(torchvision.models, f"resnet{depth}")().eval()
    _randomise_bn(reference)  # fresh BNs are the identity in eval mode: make them matter
    net = imagenet("residual", depth, shortcut="B", num_classes=1000).eval()
    load_torchvision_weights(net, reference.state_dict())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(net(x), reference(x))


def test_weights_of_another_net_are_refused_in_one_line():
    net = imagenet("residual", 18, shortcut="B", num_classes=1000)
    with pytest.raises(ConfigError, match="missing") as err:
        load_torchvision_weights(net, torchvision.models.resnet34().state_dict())
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="shape"):
        load_torchvision_weights(net, torchvision.models.resnet18(num_classes=10).state_dict())


@pytest.mark.parametrize("options, message", [
    (dict(depth=20, block="basic"), "Table 1 has 18 \\(basic\\)"),
    (dict(depth=50, block="basic"), "uses bottleneck units"),
    (dict(depth=26, block="inception"), "Inception units are cifar-family only"),
    (dict(depth=18, block="basic", span=1), "span 2"),
    (dict(depth=18, block="basic", family="tiny"), "family 'tiny' is not one of cifar, imagenet"),
])
def test_the_familys_rules_are_refused_with_what_is_allowed(options, message):
    options = {"family": "imagenet", **options}
    with pytest.raises(ConfigError, match=message):
        build_net("residual", **options)


@pytest.mark.parametrize("options", [
    dict(kind="plain"), dict(kind="residual", shortcut="A"), dict(kind="residual", shortcut="C"),
    dict(kind="residual", unit="preact"), dict(kind="residual", norm="none", init="fixup"),
    dict(kind="residual", branch_init="zero"), dict(kind="plain", conv="dirac"), dict(kind="residual", width=0.25),
])
@pytest.mark.parametrize("depth", [18, 50])
def test_every_unit_option_trains_on_the_family(options, depth):
    torch.manual_seed(0)
    opts = {"width": 0.125, **options}
    net = imagenet(opts.pop("kind"), depth, in_channels=1, num_classes=5, **opts)
    out = net(torch.randn(2, 1, 64, 64))
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.square().sum().backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None]
    assert not dead


def test_stem_and_pool_quarter_the_image_before_the_first_stage():
    net = imagenet("residual", 18, shortcut="B", num_classes=10, width=0.25)
    seen = {}

    def remember(_module, inputs, _output):
        seen["in"] = inputs[0].shape

    net.units[0].register_forward_hook(remember)
    net(torch.randn(1, 3, 64, 64))
    assert seen["in"][-2:] == (16, 16)
    # 1.81 GMACs for ResNet-18 at 224 px (the paper's Table 1: 1.8e9 FLOPs, which count multiply-adds)
    assert round(forward_macs(imagenet("residual", 18, shortcut="B", num_classes=1000), 224) / 1e9, 2) == 1.81


def test_run_config_builds_the_family_and_validates_it():
    cfg = validate(make_config("quick", family="imagenet", depth=34, block="basic", shortcut="B", dataset="synthetic"))
    net = net_for(cfg.net_spec(3, 10))
    assert isinstance(net, ImageNetNet) and net.spec.stage_units() == (3, 4, 6, 3)
    with pytest.raises(ConfigError, match="depth 20 is not an imagenet-family depth"):
        validate(make_config("quick", family="imagenet", depth=20, dataset="synthetic"))


def test_lab_models_names_each_nets_classes_and_family(capsys):
    from lab.__main__ import main

    assert main(["models", "resnet1*"]) == 0
    out = capsys.readouterr().out
    assert "resnet18       11,689,512 parameters (1000 classes, imagenet family)" in out
    assert "resnet110       1,727,962 parameters (10 classes, cifar family)" in out
