"""One suite over the whole model zoo (toy models, own archs, basicsr, timm), as timm tests
its models: exact at init; after perturbing every kernel, λ matters, per-sample rows equal
separate runs, bake equals the tunable model, fx equals the module path, every kernel gets a
gradient, and the state_dict round-trips bit-exactly."""
from dataclasses import dataclass

import pytest
import torch
from conftest import assert_close, perturb
from zoo import ZOO, Entry

from tunify import TraceFailure, TunableLayer, TunableModel, TunableParameter, bake, tunify

LAMS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.3, 0.7]])


@dataclass
class Case:
    entry: Entry
    model: torch.nn.Module
    x: torch.Tensor
    tm: TunableModel


@pytest.fixture(scope="module", params=ZOO, ids=[e.name for e in ZOO])
def case(request) -> Case:
    entry: Entry = request.param
    torch.manual_seed(0)
    model = entry.build().eval()
    with torch.no_grad():  # zero-initialised scales (timm's zero_init_last) would hide a branch
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.1)
    x = torch.randn(entry.shape)
    tm = tunify(model, ["fidelity", "perception"]).eval()
    perturb(tm, seed=1)
    return Case(entry, model, x, tm)


def test_path_and_report(case: Case):
    report = case.tm.tunify_report
    assert report.path == case.entry.path, report.fallback_reason
    assert {t for t, _ in report.leaves} >= set(case.entry.leaves)
    assert report.converted and str(report).count("->") >= len(report.converted)
    # every tunable module in the model is listed in the report, and vice versa
    tunable_layers = {n[len("model."):] for n, m in case.tm.named_modules(remove_duplicate=False)
                      if isinstance(m, TunableLayer) and not isinstance(m, TunableParameter)}
    layer_names = {c.name for c in report.converted if c.tunable != "TunableParameter"}
    aliases = {a for c in report.converted for a in c.aliases}
    assert layer_names | aliases == tunable_layers
    tensors = {n[len("model."):-len(".original")].replace("parametrizations.", "")
               for n, _ in case.tm.named_parameters() if n.endswith(".original")}
    assert {c.name for c in report.converted if c.tunable == "TunableParameter"} == tensors


@torch.no_grad()
def test_exact_at_init(case: Case):
    tm = tunify(case.model, 2)
    ref = case.model(case.x)
    for lam in ([1.0, 0.0], [0.0, 1.0], torch.distributions.Dirichlet(torch.ones(2)).sample((case.x.shape[0],))):
        assert_close(tm(case.x, lam=lam), ref, rel=1e-5)
    assert not any(isinstance(m, TunableLayer) for m in case.model.modules()), "the caller's model was modified"


@torch.no_grad()
def test_lam_changes_output(case: Case):
    a, b = case.tm(case.x, lam=[1.0, 0.0]), case.tm(case.x, lam=[0.0, 1.0])
    assert (a - b).abs().max() > 1e-3 * a.abs().max()


@torch.no_grad()
def test_per_sample_rows_equal_separate_runs(case: Case):
    out = case.tm(case.x, lam=LAMS)
    for i in range(case.x.shape[0]):
        assert_close(out[i : i + 1], case.tm(case.x[i : i + 1], lam=LAMS[i]))


@torch.no_grad()
def test_bake_equals_tunable(case: Case):
    for lam in ([0.0, 1.0], [0.3, 0.7]):
        plain = bake(case.tm, lam)
        assert not any(isinstance(m, TunableLayer) for m in plain.modules())
        assert sorted(type(m).__name__ for m in plain.modules()) == sorted(type(m).__name__ for m in case.model.modules())
        assert_close(plain(case.x), case.tm(case.x, lam=lam))


@torch.no_grad()
def test_fx_equals_module_path(case: Case):
    if case.entry.path != "fx":  # no fx path to compare: asking for it must say why
        with pytest.raises(TraceFailure, match="forward"):
            tunify(case.model, 2, mode="fx")
        return
    tm_module = tunify(case.model, ["fidelity", "perception"], mode="module").eval()
    assert tm_module.tunify_report.path == "module"
    tm_module.load_state_dict(case.tm.state_dict())
    assert_close(tm_module(case.x, lam=LAMS), case.tm(case.x, lam=LAMS))
    assert_close(tm_module(case.x, lam=[0.6, 0.4]), case.tm(case.x, lam=[0.6, 0.4]))


def test_every_kernel_gets_a_gradient(case: Case):
    case.tm.zero_grad()
    out = case.tm(case.x, lam=LAMS)
    out.float().pow(2).mean().backward()
    stacks = [(n, p) for n, p in case.tm.named_parameters() if n.endswith((".weights", ".biases", ".original"))]
    assert stacks
    for name, p in stacks:
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), name
        per_kernel = p.grad.flatten(1).abs().sum(1)
        assert (per_kernel > 0).all(), f"{name}: kernels {per_kernel.tolist()} — one got no gradient"
    case.tm.zero_grad()


@torch.no_grad()
def test_state_dict_round_trip_is_bit_exact(case: Case):
    fresh = tunify(case.model, ["fidelity", "perception"]).eval()
    missing, unexpected = fresh.load_state_dict(case.tm.state_dict())
    assert not missing and not unexpected
    assert torch.equal(fresh(case.x, lam=LAMS), case.tm(case.x, lam=LAMS))
