import pytest
import torch

import torch.nn.functional as F

from lab.models import (
    UNITS, ConfigError, build_net, count_parameters, create_model, forward_macs, list_models, nearest_depths,
    valid_depths, valid_spans,
)
from lab.models.deepen import _zero_branch

PAPER_PARAMS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962, 1202: 19_421_274}
PAPER_MACS_M = {20: 40.6, 32: 68.9, 44: 97.2, 56: 125.5, 110: 252.9}


def _one_step(model):
    # any size works (global pooling); small keeps the 1000-layer nets quick. The imagenet family divides the
    # image by 32: at 64 px its last stage still has 2x2 maps, so BN's batch statistics are not over 2 values.
    size = 64 if model.spec.family == "imagenet" else 8
    x = torch.randn(2, 3, size, size)
    out = model(x)
    assert out.shape == (2, model.spec.num_classes)
    assert torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without a gradient: {missing[:5]}"
    if model.spec.kind == "residual" or model.spec.depth <= 200:
        # (plain nets of 1000+ layers have exploding gradients with BN at init: the phenomenon, not a bug)
        bad = [n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
        assert not bad, f"non-finite gradients: {bad[:5]}"


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_trains_one_step(name):
    torch.manual_seed(0)
    _one_step(create_model(name))


# every option that changes the architecture, at small depths (kind, depth, options)
VARIANTS = (
    [("residual", 20, dict(unit=u)) for u in UNITS]
    + [("residual", 29, dict(block="bottleneck", unit=u)) for u in UNITS]
    + [(k, 14, dict(block="inception")) for k in ("plain", "residual")]
    + [("residual", 14, dict(block="inception", residual_scale=0.1, shortcut="B")),
       ("residual", 14, dict(block="inception", norm="none", branch_init="zero"))]
    + [("residual", 38, dict(span=s, shortcut=o)) for s, o in ((1, "A"), (4, "B"), (6, "C"), (12, "A"))]
    + [("plain", 38, dict(span=12)), ("plain", 20, dict(norm="none")),
       ("residual", 20, dict(residual_scale=0.3, shortcut_scale=0.5)),
       ("residual", 20, dict(norm="none", branch_init="zero")), ("residual", 20, dict(branch_init="zero", unit="preact")),
       ("residual", 20, dict(norm="none", init="fixup")), ("residual", 29, dict(block="bottleneck", norm="none", init="fixup")),
       ("residual", 11, dict(span=1, norm="none", init="fixup", shortcut="B")),
       ("residual", 20, dict(unit="preact", shortcut="C", norm="none")),
       ("plain", 20, dict(conv="dirac")), ("plain", 20, dict(conv="dirac", norm="none")),
       ("residual", 14, dict(block="inception", conv="dirac")), ("residual", 29, dict(block="bottleneck", conv="dirac"))]
)


@pytest.mark.parametrize("kind,depth,options", VARIANTS, ids=lambda v: str(v))
def test_every_variant_trains_one_step(kind, depth, options):
    torch.manual_seed(0)
    _one_step(build_net(kind, depth, **options))


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
    assert names[:2] == ["inception26", "inception50"] and "resnet110" in names and "resnet164" in names
    assert list_models("plain*")[:3] == ["plain18", "plain20", "plain32"]  # the ImageNet nets (Table 1) too
    assert {"preresnet110", "preresnet164", "resinception26"} <= set(names)
    assert list_models("resnet*") == [n for n in names if n.startswith("resnet")]


def test_nearest_depths():
    assert nearest_depths(21) == [20, 26]
    assert nearest_depths(100, "bottleneck") == [92, 101]


# --- shortcut span ---------------------------------------------------------------------------------------


def test_spans_that_divide_a_stage():
    assert valid_spans(38) == [1, 2, 3, 4, 6, 12]
    assert valid_spans(74) == [1, 2, 3, 4, 6, 8, 12, 24]
    assert valid_spans(21) == [] and valid_spans(164, "bottleneck") == [3] and valid_spans(26, "inception") == [4]
    assert valid_depths(span=4, up_to=74) == [14, 26, 38, 50, 62, 74]


@pytest.mark.parametrize("span", [1, 2, 3, 4, 6, 12])
def test_every_span_of_depth_38_builds_with_the_same_layers(span):
    res, plain = build_net("residual", 38, span=span), build_net("plain", 38, span=span)
    assert len(res.residual_units()) == 36 // span and len(plain.residual_units()) == 0
    assert len(res.weight_layers()) == 38  # option A: no projection weights, the same 38 weighted layers
    assert count_parameters(res) == count_parameters(plain) == count_parameters(build_net("plain", 38))


def test_span_refusals_name_the_valid_spans_and_depths():
    with pytest.raises(ConfigError, match=r"span 5 \(depth must be 15n\+2\); nearest valid depths: 32 or 47; "
                                          r"at depth 38 the span can be 1, 2, 3, 4, 6, 12"):
        build_net("residual", 38, span=5)
    with pytest.raises(ConfigError, match="no span fits depth 21"):
        build_net("residual", 21, span=1)
    with pytest.raises(ConfigError, match="span -1 must be an integer"):
        build_net("residual", 20, span=-1)


# --- unit placements (He et al. 2016) ---------------------------------------------------------------------


PAPER_2016_PARAMS = [(56, "basic", 853_018), (110, "basic", 1_727_962), (164, "bottleneck", 1_661_274)]


@pytest.mark.parametrize("unit", UNITS)
@pytest.mark.parametrize("depth,block,params", PAPER_2016_PARAMS)
def test_every_placement_has_the_same_parameter_count(unit, depth, block, params):
    # each placement moves BNs around: preact drops the first unit's, uses the input's width in reshaping
    # units and adds the final BN; the totals come out equal to the original's
    assert count_parameters(build_net("residual", depth, block=block, unit=unit)) == params


def _bn(layer, x):
    return layer.bn(x)


def _manual_unit(unit, x):
    """Fig. 4 of He et al. 2016, written out for a basic unit of span 2 with an identity shortcut."""
    l1, l2 = unit.layers
    c1, c2 = l1.conv, l2.conv
    if unit.placement == "original":
        return F.relu(x + l2.bn(c2(F.relu(l1.bn(c1(x))))))
    if unit.placement == "bn-after-add":
        return F.relu(unit.post_bn(x + c2(F.relu(l1.bn(c1(x))))))
    if unit.placement == "relu-before-add":
        return x + F.relu(l2.bn(c2(F.relu(l1.bn(c1(x))))))
    if unit.placement == "relu-preact":
        return x + l2.bn(c2(F.relu(l1.bn(c1(F.relu(x))))))
    if unit.placement == "preact":
        return x + c2(F.relu(l2.bn(c1(F.relu(l1.bn(x))))))
    raise AssertionError(unit.placement)


@pytest.mark.parametrize("unit", UNITS)
def test_placements_compute_figure_4(unit):
    torch.manual_seed(0)
    net = build_net("residual", 20, unit=unit)
    for m in net.modules():  # non-trivial BN statistics and affine parameters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5), m.bias.data.uniform_(-0.2, 0.2)
    net.eval()
    block = net.units[1]  # an identity-shortcut unit in the middle of stage 1
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        assert torch.allclose(block(x), _manual_unit(block, x), atol=1e-5)


def test_preact_net_activates_stem_and_ends_with_bn_relu():
    net = build_net("residual", 20, unit="preact")
    assert net.units[0].layers[0].norm_layer() is None  # the stem's BN-ReLU comes right before
    assert net.units[3].shared_preact and not net.units[4].shared_preact  # stage 2's first unit reshapes
    assert isinstance(net.final_bn, torch.nn.BatchNorm2d) and net.final_relu
    assert isinstance(build_net("residual", 20).final_bn, torch.nn.Identity)


def test_branch_and_shortcut_scaling():
    torch.manual_seed(0)
    base = build_net("residual", 20).eval()
    scaled = build_net("residual", 20, residual_scale=0.3, shortcut_scale=0.5).eval()
    scaled.load_state_dict(base.state_dict())
    x = torch.randn(2, 16, 8, 8).relu()
    u, v = base.units[1], scaled.units[1]
    with torch.no_grad():
        f = u.branch(x)
        assert torch.allclose(v(x), F.relu(0.5 * x + 0.3 * f), atol=1e-6)


def test_zero_branch_init_starts_every_residual_unit_as_its_shortcut():
    torch.manual_seed(0)
    net = build_net("residual", 20, branch_init="zero").eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        out = net(x)
        for u in net.units:
            u.lesioned = True
        assert torch.equal(out, net(x))
    net.train()
    for u in net.units:
        u.lesioned = False
    net(x).logsumexp(1).sum().backward()
    assert all(u.alpha.grad.abs() > 0 for u in net.units)  # the scalars learn from the first step


def test_fixup_initialisation():
    torch.manual_seed(0)
    net = build_net("residual", 56, norm="none", init="fixup")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert net.head.weight.abs().sum() == 0 and net.head.bias.abs().sum() == 0
    he = build_net("residual", 56, norm="none")
    for fu, hu in zip(net.units, he.units):
        assert fu.layers[1].conv.weight.abs().sum() == 0  # the branch's last layer starts at zero
        ratio = (fu.layers[0].conv.weight.std() / hu.layers[0].conv.weight.std()).item()
        assert ratio == pytest.approx(27 ** -0.5, rel=0.15)  # L = 27 branches of m = 2 layers: L^(-1/(2m-2))
        assert fu.layers[1].scale.item() == 1 and fu.layers[0].bias_in.item() == 0
    assert fu.layers[0].conv.bias is None and net.head_bias is not None


@pytest.mark.parametrize("kind,depth,options", [v for v in VARIANTS if v[0] == "residual"], ids=lambda v: str(v))
def test_lesioned_unit_computes_its_shortcut_path(kind, depth, options):
    """With its branch at zero a residual unit computes exactly what it computes when lesioned."""
    torch.manual_seed(0)
    net = build_net(kind, depth, **options).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        for u in net.units:
            assert u.lesionable()
            _zero_branch(u)
        out = net(x)
        for u in net.units:
            u.lesioned = True
        assert torch.allclose(out, net(x), atol=1e-6)


# --- Inception units ------------------------------------------------------------------------------------


INCEPTION_PARAMS = {14: 50_586, 26: 103_898, 50: 210_522}


@pytest.mark.parametrize("depth,params", sorted(INCEPTION_PARAMS.items()))
def test_inception_depth_rule_and_parameter_count(depth, params):
    res, plain = build_net("residual", depth, block="inception"), build_net("plain", depth, block="inception")
    assert count_parameters(res) == count_parameters(plain) == params
    units = list(res.units)
    assert len(units) == 3 * (depth - 2) // 12
    # depth = stem + 4 weighted layers on each unit's longest path (1x1, 3x3, 3x3, projection) + head
    assert 1 + sum(len(u.branches[-1]) + 1 for u in units) + 1 == depth
    assert len(res.response_layers()) == 1 + 3 * len(units)  # stem + three 3x3 convs per unit


def test_inception_unit_shapes_and_downsampling():
    net = build_net("residual", 14, block="inception")
    first_of_stage2 = net.units[1]
    assert [b[-1].conv.out_channels for b in first_of_stage2.branches] == [16, 16, 16]  # 32 / 2 each
    assert first_of_stage2.project.conv.in_channels == 48 and first_of_stage2.project.conv.out_channels == 32
    strides = [[layer.conv.stride[0] for layer in b] for b in first_of_stage2.branches]
    assert strides == [[2], [1, 2], [1, 2, 1]]
    out = net.units[:2](torch.randn(1, 16, 32, 32))
    assert out.shape == (1, 32, 16, 16)


def test_inception_refusals():
    with pytest.raises(ConfigError, match="nearest valid depths: 14 or 26"):
        build_net("residual", 20, block="inception")
    with pytest.raises(ConfigError, match="its shortcut span is 4"):
        build_net("residual", 14, block="inception", span=2)
    with pytest.raises(ConfigError, match="an Inception unit uses unit 'original'"):
        build_net("residual", 14, block="inception", unit="preact")


# --- refusals ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("options,message", [
    (dict(unit="post"), "unit 'post' is not one of original, preact, bn-after-add, relu-before-add, relu-preact"),
    (dict(block="wide"), "block 'wide' is not one of basic, bottleneck, inception"),
    (dict(branch_init="one"), "branch_init 'one' is not one of none, zero"),
    (dict(init="orthogonal"), "init 'orthogonal' is not one of he, xavier, identity, fixup"),
    (dict(residual_scale=0), "residual_scale 0 must be a number above 0 and at most 10"),
    (dict(shortcut_scale="half"), "shortcut_scale 'half' must be a number"),
    (dict(init="fixup"), "init 'fixup' replaces normalisation: use norm 'none'"),
    (dict(init="fixup", norm="none", branch_init="zero"), "use branch_init 'none'"),
    (dict(conv="winograd"), "conv 'winograd' is not one of standard, dirac"),
    (dict(init="fixup", norm="none", conv="dirac"), "use conv 'standard'"),
    (dict(init="identity", conv="dirac"), "init 'identity' would add nothing"),
])
def test_bad_model_options_name_the_allowed_values(options, message):
    with pytest.raises(ConfigError, match=message):
        build_net("residual", 20, **options)


@pytest.mark.parametrize("options,message", [
    (dict(unit="preact"), "gives the same conv-BN-ReLU chain as a plain net with unit 'original'"),
    (dict(residual_scale=0.3), "residual_scale needs a residual net"),
    (dict(shortcut_scale=0.5), "shortcut_scale needs a residual net"),
    (dict(branch_init="zero"), "branch_init 'zero' needs a residual net"),
    (dict(init="fixup", norm="none"), "init 'fixup' needs a residual net"),
])
def test_plain_twins_are_refused_where_they_make_no_sense(options, message):
    with pytest.raises(ConfigError, match=message):
        build_net("plain", 20, **options)


def test_dirac_convs_start_as_identity_plus_a_tenth_of_a_normalised_filter():
    from lab.models import DiracConv2d

    torch.manual_seed(0)
    net = build_net("plain", 20, conv="dirac")
    convs = [m for m in net.modules() if isinstance(m, DiracConv2d)]
    assert len(convs) == 18 and not isinstance(net.stem.conv, DiracConv2d)  # every unit 3x3 conv, not the stem
    assert count_parameters(net) == 269_722 + 2 * 6 * (16 + 32 + 64)  # alpha and beta per output channel
    conv = net.units[3].layers[0].conv  # 16 -> 32 channels, stride 2: the identity repeats over the new channels
    w = conv.effective_weight().detach()
    unit_filters = F.normalize(conv.weight.detach().flatten(1), dim=1).view_as(w)
    assert torch.allclose(w, conv.delta + 0.1 * unit_filters)
    assert torch.allclose(w.flatten(1).sub(conv.delta.flatten(1)).norm(dim=1), torch.full((32,), 0.1))
    assert conv.delta[16:, :, 1, 1].equal(torch.eye(16))
