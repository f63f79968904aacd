import torch

from lab.models import ConvNorm, build_net
from lab.probes import grad_norms, responses


def _hooked_responses(model, images):
    """The straightforward way: forward hooks on every 3x3 conv+BN and on every residual unit's parts."""
    stds, ratios, hooks = [], [], []
    for m in model.modules():
        if isinstance(m, ConvNorm) and m.conv.kernel_size == (3, 3):
            hooks.append(m.bn.register_forward_hook(lambda mod, i, o: stds.append(o.std().item())))
    for _, unit in model.residual_units():
        store = {}
        hooks.append(unit.layers[-1].register_forward_hook(lambda mod, i, o, s=store: s.__setitem__("f", o)))

        def after(mod, i, o, s=store):
            f = s["f"].flatten(1)
            x = mod.shortcut(i[0]).flatten(1)
            ratios.append((f.norm(dim=1) / x.norm(dim=1)).mean().item())

        hooks.append(unit.register_forward_hook(after))
    model.eval()
    with torch.no_grad():
        model(images)
    for h in hooks:
        h.remove()
    return stds, ratios


def test_response_probe_agrees_with_hooks():
    torch.manual_seed(0)
    model = build_net("residual", 20)
    # train a few steps so BN statistics are not trivial
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(3):
        x = torch.randn(16, 3, 32, 32)
        model(x).logsumexp(1).mean().backward()
        opt.step()
        opt.zero_grad()
    images = torch.randn(32, 3, 32, 32)
    model.train()
    std, ratio = responses(model, images)
    assert model.training  # mode restored
    ref_std, ref_ratio = _hooked_responses(model, images)
    assert len(std) == len(ref_std) == 19  # 19 3x3 layers in a 20-layer net
    assert len(ratio) == len(ref_ratio) == 9
    assert torch.allclose(std, torch.tensor(ref_std), rtol=1e-4)
    assert torch.allclose(ratio, torch.tensor(ref_ratio), rtol=1e-4)


def test_plain_net_has_responses_but_no_residual_ratio():
    model = build_net("plain", 20)
    std, ratio = responses(model, torch.randn(8, 3, 32, 32))
    assert len(std) == 19 and len(ratio) == 0


def test_grad_norm_probe_agrees_with_per_parameter_norms():
    torch.manual_seed(0)
    model = build_net("plain", 20)
    model(torch.randn(8, 3, 32, 32)).logsumexp(1).mean().backward()
    names, weights = zip(*model.weight_layers())
    assert len(weights) == 20  # 19 convs and the linear head
    got = grad_norms(list(weights))
    want = torch.tensor([p.grad.norm().item() for p in weights])
    assert torch.allclose(got, want, rtol=1e-5)
    assert names[0] == "stem.conv" and names[-1] == "head"
