"""Kept-whole blocks at a shared λ (surgery/baked_part.py): a plain copy whose kernels follow λ,
sharing every other tensor with the original; never stale, steps aside for hooks and reassignments."""
import copy

import torch
from torch import nn
from conftest import jittered_tunable, warm_fast

from tunify import bake
from tunify.surgery.fast import FastShared, FastWhole

LAM, OTHER = [0.3, 0.7], [0.8, 0.2]


class Block(nn.Module):
    """fx cannot trace it (a branch on a tensor's value), so the rewriter keeps it whole; inside,
    a linear, a norm with running statistics and a table read by indexing."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.norm = nn.BatchNorm1d(8)
        self.table = nn.Parameter(torch.randn(5, 8))
        self.register_buffer("index", torch.tensor([0, 2, 4, 1, 3, 0, 2, 4]))

    def forward(self, x):  # x (B, 8)
        y = self.norm(self.fc(x)) + self.table[self.index].diagonal()
        return y if float(y.abs().mean()) < 1e9 else y * 0


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.block = Block()
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.block(self.conv(x).mean((2, 3))))[:, :, None, None] + x


class Untraceable(nn.Module):
    """Its own forward branches on a value: no graph at all, the module path throughout."""

    def __init__(self):
        super().__init__()
        self.net = Net()
        self.up = nn.ConvTranspose2d(3, 3, 3, padding=1)  # a transposed conv bakes too

    def forward(self, x):
        return self.up(self.net(x)) if float(x.mean()) > -1e9 else x


def _tm(cls=Net, seed=0):
    return jittered_tunable(cls, seed)


def _warm(tm, x, lam=LAM):
    return warm_fast(tm, x, lam)


def _slow(tm, x, lam):
    with torch.enable_grad():  # autograd never takes the fast path: the layers themselves
        return tm(x, lam=lam).detach()


@torch.no_grad()
def test_the_kept_block_runs_baked_and_equals_the_layers():
    tm, x = _tm(), torch.rand(4, 3, 6, 6)
    assert [name for name, _ in tm.tunify_report.leaves] == ["Block"]  # the premise: fx kept the block whole
    fast = _warm(tm, x)
    assert isinstance(fast, FastShared) and len(fast.parts) == 1
    plain = fast.parts[0].module
    assert type(plain.fc) is nn.Linear and not hasattr(plain, "parametrizations")  # plain types inside
    assert plain.norm.running_mean is tm.model.block.norm.running_mean  # shared, not copied
    for lam in (LAM, OTHER, LAM, [1.0, 0.0]):
        torch.testing.assert_close(tm(x, lam=lam), _slow(tm, x, lam), atol=1e-6, rtol=0)
        torch.testing.assert_close(tm(x, lam=lam), bake(tm, lam)(x), atol=1e-6, rtol=0)
    assert (tm(x, lam=LAM) - tm(x, lam=OTHER)).abs().max() > 1e-3


@torch.no_grad()
def test_edits_reassignments_flags_and_hooks_inside_the_block_are_followed():
    tm, x = _tm(), torch.rand(4, 3, 6, 6)
    _warm(tm, x)
    block = tm.model.block
    block.fc.weights.add_(0.5)  # a stack inside the block
    torch.testing.assert_close(tm(x, lam=LAM), _slow(tm, x, LAM), atol=1e-6, rtol=0)
    block.parametrizations.table.original.mul_(2.0)  # the indexed table's stack
    torch.testing.assert_close(tm(x, lam=LAM), _slow(tm, x, LAM), atol=1e-6, rtol=0)
    block.norm.weight.mul_(3.0)  # a shared tensor, edited in place
    torch.testing.assert_close(tm(x, lam=LAM), _slow(tm, x, LAM), atol=1e-6, rtol=0)
    seen = []
    hook = block.fc.register_forward_hook(lambda *a: seen.append(1))  # a hook registered later runs
    tm(x, lam=LAM)
    assert seen
    hook.remove()
    tm(x, lam=LAM)  # warm again: the next check is the per-call one
    block.norm.bias = nn.Parameter(torch.full((8,), 0.5))  # a new object in a slot the copy shares
    torch.testing.assert_close(tm(x, lam=LAM), _slow(tm, x, LAM), atol=1e-6, rtol=0)


@torch.no_grad()
def test_training_flags_are_followed_and_running_statistics_land_on_the_original():
    tm, x = _tm(), torch.rand(4, 3, 6, 6)
    _warm(tm, x)
    ref = copy.deepcopy(tm)
    tm.train(), ref.train()  # batch statistics, and running statistics updated in place
    out = tm(x, lam=LAM)
    torch.testing.assert_close(out, _slow(ref, x, LAM), atol=1e-6, rtol=0)
    torch.testing.assert_close(tm.model.block.norm.running_mean, ref.model.block.norm.running_mean)
    assert not torch.equal(tm.model.block.norm.running_mean, torch.zeros(8))
    tm.eval(), ref.eval()
    torch.testing.assert_close(tm(x, lam=OTHER), _slow(ref, x, OTHER), atol=1e-6, rtol=0)


@torch.no_grad()
def test_an_untraced_network_runs_baked_whole():
    tm, x = _tm(Untraceable), torch.rand(4, 3, 6, 6)
    assert tm._graph is None  # the premise: the module path throughout
    fast = _warm(tm, x)
    assert isinstance(fast, FastWhole)
    assert type(fast.parts[0].module.up) is nn.ConvTranspose2d
    for lam in (LAM, OTHER):
        torch.testing.assert_close(tm(x, lam=lam), _slow(tm, x, lam), atol=1e-6, rtol=0)
    tm.model.net.conv.weights.add_(0.3)
    torch.testing.assert_close(tm(x, lam=OTHER), _slow(tm, x, OTHER), atol=1e-6, rtol=0)
    lams = torch.tensor([LAM, OTHER, LAM, OTHER])  # per sample: the layers, each row its own λ
    rows = torch.cat([_slow(tm, x[i:i + 1], lams[i]) for i in range(4)])
    torch.testing.assert_close(tm(x, lam=lams), rows, atol=1e-5, rtol=0)
    assert copy.deepcopy(tm).__dict__.get("_fast") is None  # never copied


@torch.no_grad()
def test_threads_at_different_lams_each_get_their_own():
    """Two threads calling one model at two λ values: the fast path's held kernels are one λ's
    for a whole forward, so only one thread runs it at a time; the other takes the layers."""
    import threading

    tm, x = _tm(), torch.rand(4, 3, 6, 6)
    _warm(tm, x)
    refs = {k: bake(tm, lam)(x) for k, lam in enumerate((LAM, OTHER))}
    wrong = [0, 0]

    def work(k):
        with torch.no_grad():
            for _ in range(150):
                wrong[k] += not torch.allclose(tm(x, lam=(LAM, OTHER)[k]), refs[k], atol=1e-5)

    threads = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert wrong == [0, 0]


def test_inference_mode_takes_the_fast_path_and_follows_edits():
    tm, x = _tm(), torch.rand(4, 3, 6, 6)
    with torch.inference_mode():
        for _ in range(3):
            out = tm(x, lam=LAM)
    assert isinstance(tm.__dict__.get("_fast"), FastShared)
    torch.testing.assert_close(out, _slow(tm, x, LAM), atol=1e-6, rtol=0)
    with torch.no_grad():
        tm.model.block.fc.weights.add_(0.4)
    with torch.inference_mode():
        out = tm(x, lam=LAM)
    torch.testing.assert_close(out, _slow(tm, x, LAM), atol=1e-6, rtol=0)
