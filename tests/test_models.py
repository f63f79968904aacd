import pytest
import torch

from lab.models import ConfigError, build_net, count_parameters, create_model, forward_macs, list_models, nearest_depths

PAPER_PARAMS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962, 1202: 19_421_274}
PAPER_MACS_M = {20: 40.6, 32: 68.9, 44: 97.2, 56: 125.5, 110: 252.9}


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_trains_one_step(name):
    torch.manual_seed(0)
    model = create_model(name)
    x = torch.randn(2, 3, 8, 8)  # any size works (global pooling); small keeps the 1000-layer nets quick
    out = model(x)
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without a gradient: {missing[:5]}"
    if model.spec.kind == "residual" or model.spec.depth <= 200:
        # (plain nets of 1000+ layers have exploding gradients with BN at init: the phenomenon, not a bug)
        bad = [n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
        assert not bad, f"non-finite gradients: {bad[:5]}"


@pytest.mark.parametrize("depth,params", sorted(PAPER_PARAMS.items()))
def test_parameter_counts_match_the_paper(depth, params):
    assert count_parameters(build_net("residual", depth)) == params
    assert count_parameters(build_net("plain", depth)) == params  # option A adds no parameters


@pytest.mark.parametrize("depth,macs", sorted(PAPER_MACS_M.items()))
def test_forward_cost_matches_the_science_table(depth, macs):
    assert forward_macs(build_net("residual", depth)) / 1e6 == pytest.approx(macs, abs=0.05)


def test_plain_is_residual_without_shortcuts():
    torch.manual_seed(0)
    res = build_net("residual", 20)
    plain = build_net("plain", 20)
    assert [n for n, _ in res.named_parameters()] == [n for n, _ in plain.named_parameters()]
    plain.load_state_dict(res.state_dict())
    x = torch.randn(4, 3, 32, 32)
    res.eval(), plain.eval()
    assert not torch.allclose(res(x), plain(x))  # same weights, different function: the shortcuts


def test_projection_shortcuts_add_parameters():
    a, b, c = (count_parameters(build_net("residual", 20, shortcut=s)) for s in "ABC")
    assert a < b < c
    assert count_parameters(build_net("plain", 20, shortcut="C")) == a  # a plain net has no shortcuts at all


@pytest.mark.parametrize("options,depth", [
    (dict(span=1), 11), (dict(span=3), 20), (dict(span=3), 56), (dict(block="bottleneck"), 29),
    (dict(width=0.5), 20), (dict(norm="none"), 20), (dict(init="xavier"), 20), (dict(init="identity"), 20),
    (dict(in_channels=1, num_classes=100), 20),
])
def test_options_build_and_run(options, depth):
    for kind in ("plain", "residual"):
        model = build_net(kind, depth, **options)
        x = torch.randn(2, options.get("in_channels", 3), 28, 28)
        out = model(x)
        assert out.shape == (2, options.get("num_classes", 10)) and torch.isfinite(out).all()
        assert model.spec.depth == depth
        convs_and_fc = sum(1 for n, p in model.named_parameters() if p.dim() in (2, 4) and "shortcut" not in n)
        assert convs_and_fc == depth  # depth counts the weighted layers on the main path


def test_span_sets_number_of_shortcuts():
    assert len(build_net("residual", 20, span=1).residual_units()) == 18
    assert len(build_net("residual", 20).residual_units()) == 9
    assert len(build_net("residual", 20, span=3).residual_units()) == 6


def test_identity_init_makes_3x3_layers_near_identity():
    model = build_net("plain", 20, init="identity")
    w = model.units[1].layers[0].conv.weight
    centre = w[:, :, 1, 1]
    assert torch.allclose(centre.diagonal(), torch.ones(16), atol=0.1)
    assert w.abs().sum() < 16 * 1.2 + 0.1 * w.numel()


@pytest.mark.parametrize("depth,near", [(21, "20 or 26"), (57, "56 or 62"), (3, "8")])
def test_invalid_depth_names_nearest_valid_depths(depth, near):
    with pytest.raises(ConfigError, match=f"nearest valid depths: {near}"):
        build_net("residual", depth)


def test_bad_options_are_refused_clearly():
    with pytest.raises(ConfigError, match="unknown model option"):
        build_net("residual", 20, shortcuts="A")
    with pytest.raises(ConfigError, match="shortcut 'D'"):
        build_net("residual", 20, shortcut="D")
    with pytest.raises(ConfigError, match="bottleneck unit has 3 convolutions"):
        build_net("residual", 29, block="bottleneck", span=2)
    with pytest.raises(ConfigError, match="unknown model 'resnet21'"):
        create_model("resnet21")


def test_registry_lists_and_filters():
    names = list_models()
    assert names[:2] == ["plain20", "plain32"] and "resnet110" in names and "resnet164" in names
    assert list_models("resnet*") == [n for n in names if n.startswith("resnet")]


def test_nearest_depths():
    assert nearest_depths(21) == [20, 26]
    assert nearest_depths(100, "bottleneck") == [92, 101]
