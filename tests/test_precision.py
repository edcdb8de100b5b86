"""Reduced precision on the CPU: a tunable model under autocast (bfloat16) and cast whole to
bfloat16 follows the plain model in the same precision, at a shared and a per-sample λ, with
every per-sample form and the owners of indexed tables; a training step under autocast gives
every kernel a gradient. (CUDA's float16 autocast takes the same code; no GPU runs here.)"""
import pytest
import torch
from conftest import perturb
from test_owner_split import Net as WindowNet

from tunify import bake, tunify
from tunify.archs import create_model
from tunify.layers import TunableLayer, forced_form

LAMS = torch.tensor([[1.0, 0.0], [0.2, 0.8], [0.6, 0.4], [0.0, 1.0]])


def _models():
    torch.manual_seed(0)
    nafnet = create_model("nafnet", width=8, middle_blk_num=1, enc_blk_nums=(1,), dec_blk_nums=(1,)).eval()
    return {"nafnet": (nafnet, torch.rand(4, 3, 16, 16)), "window-attention": (WindowNet().eval(), torch.randn(4, 3, 4, 6))}


def _gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


@torch.no_grad()
@pytest.mark.parametrize("name", ["nafnet", "window-attention"])
def test_autocast_bfloat16_follows_the_plain_model_at_every_lam(name):
    model, x = _models()[name]
    tm = tunify(model, 2).eval()
    perturb(tm, seed=3)
    exact = {"shared": tm(x, lam=[0.3, 0.7]), "per-sample": tm(x, lam=LAMS)}
    plain = bake(tm, [0.3, 0.7])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        shared, per_sample, ref = tm(x, lam=[0.3, 0.7]), tm(x, lam=LAMS), plain(x)
    assert shared.dtype == ref.dtype  # the same casts as the plain model
    # bfloat16 keeps 8 bits: as close to fp32 as the plain model in bfloat16 is, give or take
    budget = 3 * _gap(ref, exact["shared"]) + 1e-2
    assert _gap(shared, exact["shared"]) < budget
    assert _gap(per_sample, exact["per-sample"]) < budget
    assert _gap(exact["shared"], exact["per-sample"]) > 3 * budget  # λ matters more than rounding


@torch.no_grad()
@pytest.mark.parametrize("form", ["k_outputs", "grouped", "each_sample"])
def test_a_model_cast_to_bfloat16_runs_every_per_sample_form(form):
    model, x = _models()["nafnet"]
    tm = tunify(model, 2).eval()
    perturb(tm, seed=4)
    exact = tm(x, lam=LAMS)
    low = tunify(model, 2).eval()
    low.load_state_dict(tm.state_dict())
    low = low.to(torch.bfloat16)
    with forced_form(form):
        out = low(x.to(torch.bfloat16), lam=LAMS.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    assert _gap(out, exact) < 5e-2


def test_a_training_step_under_autocast_reaches_every_kernel():
    model, x = _models()["window-attention"]
    tm = tunify(model, 2).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = tm(x, lam=LAMS).float().pow(2).mean()
    loss.backward()
    for module in tm.modules():
        if isinstance(module, TunableLayer):
            for name, p in module.named_parameters(recurse=False):
                assert p.grad is not None and p.grad.dtype == p.dtype and p.grad.abs().sum() > 0, name
