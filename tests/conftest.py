import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
# Two cores: one pytest process uses both; under pytest-xdist (-n N) each worker takes its share,
# since oversubscribed threads spin against each other.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, torch.get_num_threads()) // _workers))


@torch.no_grad()
def jitter(model: torch.nn.Module, scale: float, seed: int = 1) -> torch.nn.Module:
    """Add ``scale``·N(0, 1) to every parameter (norms too, not only tunable stacks); returns it."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.add_(scale * torch.randn(p.shape, generator=g))
    return model


@torch.no_grad()
def perturb(tm: torch.nn.Module, seed: int = 0, scale: float = 0.2) -> None:
    """Give every kernel of every tunable tensor its own random offset, so that a bug in
    mixing, routing λ or sharing would show (copies of one kernel hide most bugs)."""
    from tunify.layers import TunableLayer

    g = torch.Generator().manual_seed(seed)
    for module in tm.modules():
        if not isinstance(module, TunableLayer):
            continue
        stacks = [p for n, p in module.named_parameters(recurse=False)]
        for stack in stacks:
            for k in range(stack.shape[0]):
                ref = stack[k].std().item() if stack[k].numel() > 1 else abs(stack[k].item())
                step = scale * ref if ref > 0 else 0.1
                stack[k].add_(torch.randn(stack[k].shape, generator=g) * step)
    # parametrizations keep their stack on the owner, not on the TunableParameter itself
    for name, p in tm.named_parameters():
        if name.endswith(".original"):
            for k in range(p.shape[0]):
                ref = p[k].std().item() if p[k].numel() > 1 else abs(p[k].item())
                p[k].add_(torch.randn(p[k].shape, generator=g) * (scale * ref if ref > 0 else 0.1))


def jittered_tunable(cls, seed: int = 0) -> torch.nn.Module:
    """``cls()`` made tunable (p=2), eval mode, every parameter jittered so that a stale or
    wrong mixture shows."""
    from tunify import tunify

    torch.manual_seed(seed)
    return jitter(tunify(cls(), 2).eval(), 0.1, seed)


def warm_fast(tm: torch.nn.Module, x: torch.Tensor, lam) -> object:
    """Three no-grad calls at one λ (the second builds the fast path, the third runs it); the fast path."""
    with torch.no_grad():
        for _ in range(3):
            tm(x, lam=lam)
    return tm.__dict__.get("_fast")


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-4) -> None:
    """Close relative to the output's own scale (deep nets reach large values)."""
    scale = expected.abs().max().item() + 1e-6
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * scale)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
