"""A deepened net trains as a whole: every parameter of every deepenable variant gets a gradient within a few
SGD steps (a new unit's branch starts at zero, but never by zeroing two factors of one product)."""
import pytest
import torch
import torch.nn.functional as F

from lab.models import build_net, deepen

# every kind of net deepen accepts: plain basic nets, and residual nets of each unit, block, shortcut,
# normalisation, initialisation, branch scalar and conv
VARIANTS = [
    ("plain", dict()), ("plain", dict(norm="none")), ("plain", dict(init="identity")),
    ("plain", dict(conv="dirac")), ("plain", dict(conv="dirac", norm="none")),
    ("residual", dict()), ("residual", dict(shortcut="B")), ("residual", dict(shortcut="C")),
    ("residual", dict(unit="preact")), ("residual", dict(unit="bn-after-add")),
    ("residual", dict(unit="relu-before-add", branch_init="zero")), ("residual", dict(unit="relu-preact")),
    ("residual", dict(block="bottleneck")), ("residual", dict(block="inception")),
    ("residual", dict(span=1)), ("residual", dict(residual_scale=0.3)),
    ("residual", dict(norm="none")), ("residual", dict(norm="none", init="fixup")),
    ("residual", dict(branch_init="zero")), ("residual", dict(branch_init="zero", norm="none")),
    ("residual", dict(conv="dirac")), ("residual", dict(conv="dirac", unit="preact")),
    ("residual", dict(conv="dirac", norm="none")),
]
STEPS = 4


def _depths(options: dict) -> tuple[int, int]:
    block, span = options.get("block"), options.get("span")
    if block == "bottleneck":
        return 11, 29
    if block == "inception":
        return 14, 26
    if span == 1:
        return 5, 11
    return 8, 20


@pytest.mark.parametrize("kind,options", VARIANTS, ids=[f"{k}-{'-'.join(f'{a}={b}' for a, b in o.items()) or 'default'}"
                                                         for k, o in VARIANTS])
def test_every_parameter_of_a_deepened_net_gets_a_gradient(kind, options):
    torch.manual_seed(0)
    shallow, deep = _depths(options)
    parent = build_net(kind, shallow, width=0.5, **options)
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(STEPS)]
    child = deepen(parent, deep, data=[x for x, _ in data[:2]]).train()
    optimizer = torch.optim.SGD(child.parameters(), lr=0.05, momentum=0.9)
    moved = {name: False for name, _ in child.named_parameters()}
    for x, y in data:
        optimizer.zero_grad()
        F.cross_entropy(child(x), y).backward()
        for name, p in child.named_parameters():
            moved[name] |= p.grad is not None and bool(p.grad.abs().sum() > 0)
        optimizer.step()
    dead = [name for name, got in moved.items() if not got]
    assert not dead, f"{len(dead)} parameters got no gradient in {STEPS} steps: {dead[:8]}"


def test_a_unit_whose_branch_ends_in_a_relu_is_not_deepened_into_a_dead_one():
    """relu-before-add: a zero branch ending in a ReLU passes no gradient, so such new units would never train."""
    from lab.models import ConfigError

    with pytest.raises(ConfigError, match="relu-before-add unit's branch ends in a ReLU"):
        deepen(build_net("residual", 8, unit="relu-before-add"), 20)
