"""Net2DeeperNet: the deepened net computes its parent's function; placement, copying, BN statistics, refusals."""
import pytest
import torch

from lab.models import ConfigError, build_net, deepen
from lab.models.deepen import _positions


def _trained(kind, depth=20, steps=2, **options):
    """A parent with non-trivial weights and BN statistics: a few SGD steps on random 16x16 images."""
    torch.manual_seed(0)
    net = build_net(kind, depth, **options)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    for _ in range(steps):
        net(torch.randn(8, 3, 16, 16)).logsumexp(1).mean().backward()
        opt.step()
        opt.zero_grad()
    return net


def _batches(n=2, size=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(size, 3, 16, 16, generator=g) for _ in range(n)]


@pytest.mark.parametrize("kind", ["plain", "residual"])
@pytest.mark.parametrize("depth", [56, 110])
def test_deepened_net_computes_the_parent_function(kind, depth):
    parent = _trained(kind)
    held_out = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(99))
    parent.eval()
    with torch.no_grad():
        want = parent(held_out)
    child = deepen(parent, depth, data=_batches())
    assert child.spec.depth == depth and len(child.units) == 3 * (depth - 2) // 6
    assert not child.training
    with torch.no_grad():
        got = child(held_out)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5), (got - want).abs().max()


@pytest.mark.parametrize("kind,options", [
    ("residual", dict()), ("residual", dict(shortcut="C")), ("residual", dict(unit="bn-after-add")),
    ("residual", dict(unit="preact")), ("residual", dict(block="inception")), ("residual", dict(block="bottleneck")),
    ("residual", dict(norm="none", init="fixup")), ("residual", dict(branch_init="zero", norm="none")),
    ("plain", dict(conv="dirac")), ("plain", dict(conv="dirac", norm="none")), ("residual", dict(conv="dirac")),
])
def test_deepening_without_data_keeps_the_function_in_eval_mode(kind, options):
    depth = {"inception": 14, "bottleneck": 29}.get(options.get("block"), 20)
    parent = _trained(kind, depth, **options).eval()
    x = torch.randn(4, 3, 16, 16)
    child = deepen(parent, depth + 2 * (depth - 2), where="end").eval()
    with torch.no_grad():
        assert torch.allclose(child(x), parent(x), rtol=1e-4, atol=1e-5)


def test_parent_weights_are_copied_unchanged_and_new_units_go_between_them():
    parent = _trained("plain")
    before = {k: v.clone() for k, v in parent.state_dict().items()}
    child = deepen(parent, 56, data=_batches())
    assert all(torch.equal(v, parent.state_dict()[k]) for k, v in before.items())  # parent BN buffers untouched
    assert _positions(3, 9, "spread") == ([0, 3, 6], [1, 2, 4, 5, 7, 8])
    assert _positions(3, 18, "spread")[0] == [0, 6, 12]
    assert _positions(3, 9, "end") == ([0, 1, 2], [3, 4, 5, 6, 7, 8])
    for stage in range(3):
        for j, c in enumerate([0, 3, 6]):
            p, q = parent.units[3 * stage + j].state_dict(), child.units[9 * stage + c].state_dict()
            assert all(torch.equal(p[k], q[k]) for k in p)
    for name in ("stem.conv.weight", "stem.bn.running_var", "head.weight", "head.bias"):
        assert torch.equal(child.state_dict()[name], parent.state_dict()[name])


def test_new_plain_unit_is_dirac_with_bn_undoing_the_measured_statistics():
    parent = _trained("plain")
    data = _batches()
    child = deepen(parent, 32, data=data, where="end")  # one new unit at the end of each stage
    new = child.units[4]  # 5 units per stage: parent units at 0, 1, 2, new ones at 3 and 4
    # what reaches the new units of stage 1 is the output of parent unit 2 (the new units pass it on)
    captured = []
    parent.train()
    for m in parent.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.track_running_stats = False  # batch statistics, as during the measurement
    h = parent.units[2].register_forward_hook(lambda mod, i, o: captured.append(o.detach()))
    with torch.no_grad():
        for x in data:
            parent(x)
    h.remove()
    acts = torch.cat(captured).double()
    mean, var = acts.mean(dim=(0, 2, 3)), acts.var(dim=(0, 2, 3), unbiased=False)
    for layer in new.layers:
        bn = layer.bn
        assert torch.allclose(bn.running_mean.double(), mean, atol=1e-5)
        assert torch.allclose(bn.running_var.double(), var, rtol=1e-4, atol=1e-6)
        assert torch.allclose(bn.weight.double(), (var + bn.eps).sqrt(), rtol=1e-4)
        assert torch.allclose(bn.bias.double(), mean, atol=1e-5)
        w = layer.conv.weight
        assert torch.equal(w, torch.nn.init.dirac_(torch.empty_like(w)))


def test_new_residual_unit_starts_with_its_branch_at_zero():
    child = deepen(_trained("residual"), 32, where="end")
    new = child.units[3]
    assert new.layers[-1].bn.weight.abs().sum() == 0 and new.layers[-1].bn.bias.abs().sum() == 0
    assert new.layers[0].conv.weight.std() > 0  # the rest of the branch keeps the child's own initialisation


def test_noise_breaks_the_identity_a_little():
    parent = _trained("plain").eval()
    x = torch.randn(4, 3, 16, 16)
    child = deepen(parent, 32, noise=0.01, generator=torch.Generator().manual_seed(0)).eval()
    w = child.units[1].layers[0].conv.weight
    assert not torch.equal(w, torch.nn.init.dirac_(torch.empty_like(w)))
    with torch.no_grad():
        want, got = parent(x), child(x)
    assert not torch.equal(got, want)
    assert (got - want).abs().max() < 0.1 * want.abs().max()


@pytest.mark.parametrize("kind,options,depth,message", [
    ("plain", dict(block="bottleneck"), 56, "plain bottleneck unit cannot compute the identity"),
    ("plain", dict(block="inception"), 26, "plain inception unit cannot compute the identity"),
    ("residual", dict(shortcut_scale=0.5), 32, "not the identity"),
    ("residual", dict(), 20, "must be an integer above the parent's 20"),
    ("residual", dict(), 21, "nearest valid depths: 20 or 26"),
])
def test_deepening_refusals(kind, options, depth, message):
    depth0 = {"bottleneck": 29, "inception": 14}.get(options.get("block"), 20)
    net = build_net(kind, depth0, **options)
    with pytest.raises(ConfigError, match=message):
        deepen(net, depth)
    with pytest.raises(ConfigError, match="where 'middle' is not one of spread, end"):
        deepen(build_net("plain", 20), 32, where="middle")
