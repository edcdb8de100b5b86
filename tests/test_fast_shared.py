"""The fast graph at a shared λ (surgery/fast.py): plain ops, never a stale kernel, steps aside for hooks."""
import copy

import pytest
import torch
from torch import nn
from conftest import jittered_tunable, warm_fast

from tunify import bake, tunify
from tunify.surgery.fast import FastShared

LAM, OTHER = [0.3, 0.7], [0.8, 0.2]


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1, groups=2, dilation=1, stride=1)
        self.reflect = nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect")  # not a plain F.conv2d: kept as a layer
        self.gamma = nn.Parameter(torch.ones(1, 8, 1, 1))
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        y = torch.relu(self.a(x))
        y = self.reflect(self.b(y)) * self.gamma
        return self.fc(y.mean((2, 3)))[:, :, None, None] + x


def _tm(seed=0):
    return jittered_tunable(Net, seed)


def _warm(tm, x, lam=LAM):
    fast = warm_fast(tm, x, lam)
    assert isinstance(fast, FastShared) and {type(m).__name__ for m in fast.layers} == {"TunableConv2d", "TunableLinear"}
    assert len(fast.layers) == 3  # a, b and fc; the reflect-padded conv runs as its layer
    assert len(fast.folds) == 1  # gamma's mixture, held once per λ
    return fast


@torch.no_grad()
def test_fast_graph_equals_the_baked_model_and_follows_lam():
    tm, x = _tm(), torch.rand(2, 3, 12, 12)
    _warm(tm, x)
    for lam in (LAM, OTHER, LAM, [1.0, 0.0]):
        assert torch.allclose(tm(x, lam=lam), bake(tm, lam)(x), atol=1e-6), lam
    assert (tm(x, lam=LAM) - tm(x, lam=OTHER)).abs().max() > 1e-3


@torch.no_grad()
def test_no_stale_kernel_after_edits_loads_steps_and_conversions():
    tm, x = _tm(), torch.rand(1, 3, 10, 10)
    _warm(tm, x)
    tm.model.a.weights.add_(0.5)  # an in-place edit of a stack
    assert torch.allclose(tm(x, lam=LAM), bake(tm, LAM)(x), atol=1e-6)
    tm.model.parametrizations.gamma.original.mul_(3)  # and of a folded weight-like tensor's stack
    assert torch.allclose(tm(x, lam=LAM), bake(tm, LAM)(x), atol=1e-6)
    other = _tm(seed=1)
    tm.load_state_dict(other.state_dict())  # copy_ into the same tensors
    assert torch.allclose(tm(x, lam=LAM), other(x, lam=LAM), atol=1e-6)
    tm.load_state_dict(_tm(seed=2).state_dict(), assign=True)  # new Parameter objects
    assert torch.allclose(tm(x, lam=LAM), bake(tm, LAM)(x), atol=1e-6)
    with torch.enable_grad():
        opt = torch.optim.SGD(tm.parameters(), lr=0.5)
        tm(x, lam=LAM).square().mean().backward()
        opt.step()
    assert torch.allclose(tm(x, lam=LAM), bake(tm, LAM)(x), atol=1e-6)
    tm.double()
    out = tm(x.double(), lam=LAM)
    assert out.dtype == torch.float64 and torch.allclose(out, bake(tm, LAM)(x.double()), atol=1e-9)


@torch.no_grad()
def test_hooks_registered_later_still_run():
    tm, x = _tm(), torch.rand(1, 3, 10, 10)
    _warm(tm, x)
    seen = []
    handle = tm.model.b.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    tm(x, lam=LAM)
    assert seen == [torch.Size([1, 8, 10, 10])]
    handle.remove()
    tm(x, lam=LAM)
    assert len(seen) == 1
    glob = nn.modules.module.register_module_forward_hook(lambda m, i, o: seen.append(type(m).__name__))
    try:
        tm(x, lam=LAM)
    finally:
        glob.remove()
    assert "TunableConv2d" in seen and "TunableLinear" in seen


def test_autograd_and_per_sample_calls_take_the_layers():
    tm, x = _tm(), torch.rand(2, 3, 10, 10)
    _warm(tm, x)
    out = tm(x, lam=LAM)  # grad enabled: the mixture must be part of the graph
    out.sum().backward()
    assert tm.model.a.weights.grad is not None and tm.model.a.weights.grad.abs().sum() > 0
    with torch.no_grad():
        rows = torch.tensor([LAM, OTHER])
        per = tm(x, lam=rows)
        assert torch.allclose(per[1:], bake(tm, OTHER)(x[1:]), atol=1e-6)


@torch.no_grad()
def test_copies_and_state_dicts_do_not_carry_it():
    tm, x = _tm(), torch.rand(1, 3, 10, 10)
    _warm(tm, x)
    keys = set(tm.state_dict())
    assert not any("_tunify_" in k for k in keys)
    twin = copy.deepcopy(tm)
    # the root network is parametrized (gamma): its __deepcopy__ must not answer for the model
    assert type(twin).__name__ == "TunableModel" and twin.model is not tm.model
    assert twin.__dict__.get("_fast") is None  # rebuilt on the copy's own tensors
    twin.model.a.weights.mul_(2)
    assert torch.allclose(twin(x, lam=LAM), bake(twin, LAM)(x), atol=1e-6)
    assert torch.allclose(tm(x, lam=LAM), bake(tm, LAM)(x), atol=1e-6)  # the original kept its own


@pytest.mark.parametrize("name", ["nafnet", "swinir-light"])
@torch.no_grad()
def test_real_architectures_bake_equal_through_the_fast_graph(name):
    from tunify.archs import create_model

    kw = dict(width=8, middle_blk_num=1, enc_blk_nums=(1,), dec_blk_nums=(1,)) if name == "nafnet" else {}
    torch.manual_seed(0)
    tm = tunify(create_model(name, **kw), 2).eval()
    for p in tm.parameters():
        p.add_(0.02 * torch.randn_like(p))
    x = torch.rand(1, 3, 16, 16)
    for _ in range(3):
        out = tm(x, lam=LAM)
    assert isinstance(tm.__dict__.get("_fast"), FastShared)
    assert torch.allclose(out, bake(tm, LAM)(x), atol=1e-5)


@pytest.mark.parametrize("through", ["tm", "tm.model"])
@torch.no_grad()
def test_assign_loads_reach_the_traced_graph(through):
    """load_state_dict(assign=True) brings new tensors; the graph's attribute reads (here the
    root's parametrized gamma) must follow them, with or without the fast graph."""
    for warm in (False, True):
        tm, x = _tm(), torch.rand(1, 3, 10, 10)
        (_warm if warm else lambda t, x: t(x, lam=LAM))(tm, x)
        new = _tm(seed=2)
        target = tm if through == "tm" else tm.model
        target.load_state_dict((new if through == "tm" else new.model).state_dict(), assign=True)
        assert torch.allclose(tm(x, lam=LAM), new(x, lam=LAM), atol=1e-6), warm
