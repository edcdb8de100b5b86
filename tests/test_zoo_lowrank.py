"""The zoo suite for low-rank deltas (tunify(..., rank=2)) over a cross-section of the zoo:
every layer flavour, functional reads of a conv's weight, a shared conv, weight-like tensors,
the module path, NAFNet, SwinIR (kept-whole blocks) and RRDBNet (module path). Exact at init;
after perturbing every factor (B_i starts at zero, which would hide every bug), λ matters,
per-sample rows equal separate runs, bake equals the tunable model with the original's module
types, fx equals the module path, every trainable tensor gets a gradient, and the state_dict
round-trips bit-exactly."""
from dataclasses import dataclass

import pytest
import torch
from conftest import assert_close, perturb
from zoo import ZOO, Entry

from tunify import TunableLayer, TunableModel, bake, tunify
from tunify.layers import PER_OBJECTIVE_SUFFIXES, LowRankLayer

LAMS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.3, 0.7]])
# timm's own conv forwards (StdConv2d, Conv2dSame) are covered in test_lowrank.py on one layer:
# whole timm models here cost a minute each on two cores.
NAMES = ("conv_flavours", "token_mlp", "functional", "shared_conv", "scale_block", "untraceable", "nafnet", "swinir",
         "rrdbnet_x2")
ENTRIES = [e for e in ZOO if e.name in NAMES]
RANK = 2


@dataclass
class Case:
    entry: Entry
    model: torch.nn.Module
    x: torch.Tensor
    tm: TunableModel


@pytest.fixture(scope="module", params=ENTRIES, ids=[e.name for e in ENTRIES])
def case(request) -> Case:
    entry: Entry = request.param
    torch.manual_seed(0)
    model = entry.build().eval()
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.1)
    x = torch.randn(entry.shape)
    tm = tunify(model, ["fidelity", "perception"], rank=RANK).eval()
    assert any(isinstance(m, LowRankLayer) for m in tm.modules()), "no layer became low rank"
    perturb(tm, seed=1)
    return Case(entry, model, x, tm)


def test_path_and_frozen_base(case: Case):
    assert case.tm.tunify_report.path == case.entry.path
    assert case.tm.tunify_report.rank == RANK
    for m in case.tm.modules():
        if isinstance(m, LowRankLayer):
            assert "base_weight" in dict(m.named_buffers()) and not m.base_weight.requires_grad


@torch.no_grad()
def test_exact_at_init(case: Case):
    tm = tunify(case.model, 2, rank=RANK)
    ref = case.model(case.x)
    for lam in ([1.0, 0.0], [0.0, 1.0], torch.distributions.Dirichlet(torch.ones(2)).sample((case.x.shape[0],))):
        assert_close(tm(case.x, lam=lam), ref, rel=1e-5)


@torch.no_grad()
def test_lam_changes_output_and_rows_follow_samples(case: Case):
    a, b = case.tm(case.x, lam=[1.0, 0.0]), case.tm(case.x, lam=[0.0, 1.0])
    assert (a - b).abs().max() > 1e-3 * a.abs().max()
    out = case.tm(case.x, lam=LAMS)
    for i in range(case.x.shape[0]):
        assert_close(out[i:i + 1], case.tm(case.x[i:i + 1], lam=LAMS[i]))


@torch.no_grad()
def test_bake_equals_tunable(case: Case):
    for lam in ([0.0, 1.0], [0.3, 0.7]):
        plain = bake(case.tm, lam)
        assert not any(isinstance(m, TunableLayer) for m in plain.modules())
        assert sorted(type(m).__name__ for m in plain.modules()) == sorted(type(m).__name__ for m in case.model.modules())
        assert_close(plain(case.x), case.tm(case.x, lam=lam))


@torch.no_grad()
def test_fx_equals_module_path_and_round_trip(case: Case):
    if case.entry.path == "fx":
        tm_module = tunify(case.model, ["fidelity", "perception"], mode="module", rank=RANK).eval()
        tm_module.load_state_dict(case.tm.state_dict())
        assert_close(tm_module(case.x, lam=LAMS), case.tm(case.x, lam=LAMS))
        assert_close(tm_module(case.x, lam=[0.6, 0.4]), case.tm(case.x, lam=[0.6, 0.4]))
    fresh = tunify(case.model, ["fidelity", "perception"], rank=RANK).eval()
    missing, unexpected = fresh.load_state_dict(case.tm.state_dict())
    assert not missing and not unexpected
    assert torch.equal(fresh(case.x, lam=LAMS), case.tm(case.x, lam=LAMS))


def test_every_trainable_tensor_gets_a_gradient(case: Case):
    case.tm.zero_grad()
    case.tm(case.x, lam=LAMS).float().pow(2).mean().backward()
    stacks = [(n, p) for n, p in case.tm.named_parameters() if n.endswith(PER_OBJECTIVE_SUFFIXES)]
    assert any(n.endswith(".lora_A") for n, _ in stacks) and any(n.endswith(".lora_B") for n, _ in stacks)
    for name, p in stacks:
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), name
        per_slice = p.grad.flatten(1).abs().sum(1)
        assert (per_slice > 0).all(), f"{name}: slices {per_slice.tolist()} — one got no gradient"
    case.tm.zero_grad()
