import pytest
import torch
import torch.nn.functional as F

from lab.models import ConvNorm, build_net
from lab.probes import (
    InputGradNorms, grad_norms, initial_gradients, layer_names, responses, update_ratios, weight_snapshot,
)


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
    got = responses(model, images)
    std, ratio = got["response_std"], got["residual_ratio"]
    assert model.training  # mode restored
    ref_std, ref_ratio = _hooked_responses(model, images)
    assert len(std) == len(ref_std) == 19  # 19 3x3 layers in a 20-layer net
    assert len(ratio) == len(ref_ratio) == 9
    assert torch.allclose(std, torch.tensor(ref_std), rtol=1e-4)
    assert torch.allclose(ratio, torch.tensor(ref_ratio), rtol=1e-4)


def test_plain_net_has_responses_but_no_residual_ratio():
    model = build_net("plain", 20)
    got = responses(model, torch.randn(8, 3, 32, 32))
    assert len(got["response_std"]) == 19 and "residual_ratio" not in got
    assert set(got) == set(layer_names(model)) - {"grad_norm", "input_grad_norm", "update_ratio"}


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


def _a_few_steps(model, steps=3):
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(steps):
        model(torch.randn(16, 3, 16, 16)).logsumexp(1).mean().backward()
        opt.step()
        opt.zero_grad()


def test_batch_statistics_response_equals_a_manual_bn_forward_and_leaves_buffers_alone():
    torch.manual_seed(0)
    model = build_net("plain", 20)
    _a_few_steps(model)
    model.eval()
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.randn(16, 3, 16, 16)
    got = responses(model, images)
    after = model.state_dict()
    assert all(torch.equal(buffers[k], after[k]) for k in buffers)  # running stats and batch counters untouched
    assert not model.training
    # the manual way: every BN normalises its input by the batch's own mean and (biased) variance
    manual = []

    def bn_train(bn, x):
        return F.batch_norm(x, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)

    hooks = [m.bn.register_forward_hook(lambda mod, i, o: bn_train(mod, i[0]))
             for m in model.modules() if isinstance(m, ConvNorm)]  # replace each BN's output
    hooks += [m.register_forward_hook(lambda mod, i, o: manual.append(o.std().item()))
              for m in model.modules() if isinstance(m, ConvNorm) and m.is_response]
    with torch.no_grad():
        model(images)
    for h in hooks:
        h.remove()
    assert torch.allclose(got["response_std_batch"], torch.tensor(manual), rtol=1e-4)
    assert not torch.allclose(got["response_std_batch"], got["response_std"], rtol=1e-2)


def test_bn_parameter_metrics():
    torch.manual_seed(0)
    model = build_net("residual", 20)
    _a_few_steps(model)
    got = responses(model, torch.randn(4, 3, 16, 16))
    bns = [m.bn for _, m in model.response_layers()]
    assert torch.allclose(got["bn_gamma"], torch.stack([b.weight.abs().mean() for b in bns]).detach())
    assert torch.allclose(got["bn_beta_std"], torch.stack([b.bias.std() for b in bns]).detach())
    assert "bn_gamma" not in responses(build_net("residual", 20, norm="none"), torch.randn(4, 3, 16, 16))
    # a 3x3 layer without its own BN (the first unit of a pre-activation net) has NaN
    pre = responses(build_net("residual", 20, unit="preact"), torch.randn(4, 3, 16, 16))["bn_gamma"]
    assert torch.isnan(pre[1]) and not torch.isnan(pre[0]) and not torch.isnan(pre[2:]).any()


@pytest.mark.parametrize("kind,options", [("plain", {}), ("residual", {}), ("residual", dict(block="inception")),
                                          ("residual", dict(shortcut="C", unit="preact"))])
def test_input_gradient_norms_equal_autograd(kind, options):
    torch.manual_seed(0)
    depth = 14 if options.get("block") == "inception" else 20
    model = build_net(kind, depth, **options)
    images, labels = torch.randn(8, 3, 16, 16).requires_grad_(), torch.randint(0, 10, (8,))
    names = [n for n, _ in model.weight_layers()]
    inputs = []
    hooks = [model.get_submodule(n).register_forward_pre_hook(lambda mod, a: inputs.append(a[0])) for n in names]
    loss = F.cross_entropy(model(images), labels)
    for h in hooks:
        h.remove()
    grads = torch.autograd.grad(loss, inputs)
    want = torch.stack([g.norm() for g in grads])
    with InputGradNorms(model) as probe:
        F.cross_entropy(model(images.detach()), labels).backward()
    got = probe.norms()
    assert len(got) == len(names)
    assert torch.allclose(got, want, rtol=1e-4)
    assert got[0] > 0  # the stem's input is the image: it gets a gradient inside the block only
    assert not model.stem.conv._forward_pre_hooks  # nothing stays hooked


def test_initial_gradients_without_a_step_or_buffer_change():
    torch.manual_seed(0)
    model = build_net("residual", 20)
    images, labels = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    got = initial_gradients(model, images, labels)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    F.cross_entropy(model(images), labels).backward()  # training mode: batch statistics, as the probe used
    want = torch.stack([p.grad.norm() for _, p in model.weight_layers()])
    assert torch.allclose(got["grad_norm"], want, rtol=1e-4)
    assert len(got["input_grad_norm"]) == len(want) and (got["input_grad_norm"] > 0).all()


def test_update_ratio_equals_a_manual_step():
    torch.manual_seed(0)
    model = build_net("residual", 20, norm="none", init="fixup")
    weights = [p for _, p in model.weight_layers()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    model(torch.randn(8, 3, 16, 16)).logsumexp(1).mean().backward()
    before = weight_snapshot(weights)
    manual_before = [p.detach().clone() for p in weights]
    opt.step()
    got = update_ratios(weights, before)
    want = torch.tensor([((p.detach() - b).norm() / b.norm()).item() for p, b in zip(weights, manual_before)])
    zero = torch.tensor([b.abs().sum().item() == 0 for b in manual_before])
    assert zero.any() and torch.isnan(got[zero]).all()  # Fixup's zero-initialised layers: no ratio
    assert torch.allclose(got[~zero], want[~zero], rtol=1e-4)


def test_layer_names_cover_every_metric():
    names = layer_names(build_net("residual", 20))
    assert set(names) == {"grad_norm", "input_grad_norm", "update_ratio", "response_std", "response_std_batch",
                          "bn_gamma", "bn_beta_std", "residual_ratio"}
    assert len(names["input_grad_norm"]) == 20 and len(names["bn_gamma"]) == 19 and len(names["residual_ratio"]) == 9
