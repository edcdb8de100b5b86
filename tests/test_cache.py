"""The shared-λ kernel cache never serves a stale kernel.

Every check compares a no-grad (cached) output with a reference computed with autograd on,
which bypasses the cache and mixes afresh. Kernels are perturbed first, so a stale mixture
(or the wrong λ's mixture) changes the output and fails the comparison.
"""
import pytest
import torch
from conftest import assert_close, perturb
from torch import nn
from zoo import FunctionalNet, ScaleBlock

from tunify import tunify
from tunify.archs import create_model
from tunify.layers import TunableConv2d, cached_mix, clear_kernel_cache, coeff_scope, kernel_cache_size, mix


def _fresh(tm, x, lam):
    """Reference output: autograd on, so no cached mixture can be used."""
    with torch.enable_grad():
        return tm(x, lam=lam).detach()


def _cached(tm, x, lam):
    with torch.no_grad():
        return tm(x, lam=lam)


@pytest.fixture(params=["nafnet", "functional", "scale_block"])
def model_and_input(request):
    torch.manual_seed(0)
    if request.param == "nafnet":  # convs, 1x1 convs, β/γ parametrizations
        model, x = create_model("nafnet", width=8, middle_blk_num=1, enc_blk_nums=(1,), dec_blk_nums=(1,)), torch.randn(2, 3, 16, 16)
    elif request.param == "functional":  # F.conv2d on the model's own parameters
        model, x = FunctionalNet(), torch.randn(2, 4, 10, 10)
    else:  # layer scales
        model, x = ScaleBlock(), torch.randn(2, 4, 10, 10)
    tm = tunify(model.eval(), 2).eval()
    perturb(tm, seed=3)
    clear_kernel_cache()
    return tm, x


LAM = [0.3, 0.7]


def test_cache_is_used_and_equal(model_and_input):
    tm, x = model_and_input
    first = _cached(tm, x, LAM)
    assert kernel_cache_size() > 0
    assert torch.equal(_cached(tm, x, torch.tensor(LAM)), first)  # a new tensor, equal value: a hit
    assert_close(first, _fresh(tm, x, LAM))


def test_new_lam_same_shape(model_and_input):
    tm, x = model_and_input
    _cached(tm, x, LAM)
    for lam in ([0.9, 0.1], [0.0, 1.0], LAM, [0.9, 0.1]):
        assert_close(_cached(tm, x, lam), _fresh(tm, x, lam))


def test_in_place_edit_under_no_grad(model_and_input):
    tm, x = model_and_input
    before = _cached(tm, x, LAM)
    with torch.no_grad():
        for p in tm.parameters():
            if p.dim() and p.shape[0] == 2:
                p[1].mul_(1.5)  # one kernel only, through a view
    after = _cached(tm, x, LAM)
    assert not torch.allclose(after, before)
    assert_close(after, _fresh(tm, x, LAM))


def test_optimizer_step(model_and_input):
    tm, x = model_and_input
    for opt in (torch.optim.SGD(tm.parameters(), lr=0.1), torch.optim.AdamW(tm.parameters(), lr=0.05),
                torch.optim.Adam(tm.parameters(), lr=0.05, foreach=False)):
        before = _cached(tm, x, LAM)
        opt.zero_grad()
        tm(x, lam=LAM).square().mean().backward()
        opt.step()
        after = _cached(tm, x, LAM)
        assert not torch.allclose(after, before)
        assert_close(after, _fresh(tm, x, LAM))


def test_load_state_dict(model_and_input):
    tm, x = model_and_input
    before = _cached(tm, x, LAM)
    state = {k: v + 0.1 * torch.randn_like(v) if v.is_floating_point() else v for k, v in tm.state_dict().items()}
    tm.load_state_dict(state)
    after = _cached(tm, x, LAM)
    assert not torch.allclose(after, before)
    assert_close(after, _fresh(tm, x, LAM))


def test_dtype_round_trips(model_and_input):
    tm, x = model_and_input
    _cached(tm, x, LAM)
    tm.double()
    assert _cached(tm, x.double(), LAM).dtype == torch.float64
    assert_close(_cached(tm, x.double(), LAM), _fresh(tm, x.double(), LAM))
    tm.half().float()  # values rounded; storage addresses may be reused, versions unchanged
    assert_close(_cached(tm, x, LAM), _fresh(tm, x, LAM))


def test_inference_mode_and_frozen(model_and_input):
    tm, x = model_and_input
    with torch.inference_mode():
        a = tm(x, lam=LAM)
    assert_close(_cached(tm, x, LAM), a.clone())
    tm.requires_grad_(False)  # nothing needs grad: cacheable even with autograd on
    clear_kernel_cache()
    with torch.enable_grad():
        b = tm(x, lam=LAM)
    assert kernel_cache_size() > 0
    assert_close(b, a.clone())


def test_training_bypasses_cache_and_gets_gradients(model_and_input):
    tm, x = model_and_input
    clear_kernel_cache()
    tm.train()
    tm(x, lam=LAM).sum().backward()
    assert kernel_cache_size() == 0
    assert all(p.grad is not None for p in tm.parameters() if p.dim() and p.shape[0] == 2)


def test_written_result_and_data_writes():
    conv = TunableConv2d(nn.Conv2d(3, 4, 3), 2)
    perturb(conv, seed=1)
    c = torch.tensor([0.4, 0.6])
    with torch.no_grad(), coeff_scope(c):
        w = conv.weight
        assert conv.weight is w  # cached
        w.zero_()  # someone wrote into the mixture handed out: never reused
        assert torch.equal(conv.weight, mix(conv.weights, c))
        conv.weights.data.mul_(2)  # invisible to version counters (documented blind spot)
        clear_kernel_cache()
        assert torch.equal(conv.weight, mix(conv.weights, c))


def test_per_sample_and_grad_not_cached():
    stack = torch.randn(2, 5, requires_grad=True)
    clear_kernel_cache()
    cached_mix(stack, torch.rand(3, 2), mix)  # per-sample coefficients: never cached
    out = cached_mix(stack, torch.tensor([0.5, 0.5]), mix)  # autograd on and stack needs grad
    assert kernel_cache_size() == 0 and out.requires_grad


# -- the λ memo of TunableModel.coefficients ------------------------------------------------------
def test_lam_memo_reuses_only_what_is_unchanged():
    torch.manual_seed(0)
    tm = tunify(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 1)), 2).eval()
    first = tm.coefficients([0.3, 0.7], 1)
    assert tm.coefficients([0.3, 0.7], 1) is first             # an equal list: reused
    assert tm.coefficients((0.3, 0.7), 1) is first             # a tuple of the same numbers too
    assert torch.equal(tm.coefficients([0.6, 0.4], 1), torch.tensor([0.6, 0.4]))
    lam = torch.tensor([0.2, 0.8])
    a = tm.coefficients(lam, 1)
    assert tm.coefficients(lam, 1) is a
    lam[0], lam[1] = 0.9, 0.1                                   # edited in place: never stale
    assert torch.allclose(tm.coefficients(lam, 1), torch.tensor([0.9, 0.1]))
    assert torch.allclose(tm.coefficients(torch.tensor([0.5, 0.5]), 1), torch.tensor([0.5, 0.5]))
    assert tm.coefficients([0.3, 0.7], 2) is not first          # another batch size is checked again
    tm.double()
    assert tm.coefficients([0.3, 0.7], 1).dtype == torch.float64  # a new dtype: computed again
    for _ in range(2):                                          # a bad λ is refused every time
        with pytest.raises(ValueError, match="sum to 1"):
            tm.coefficients([0.3, 0.3], 1)


def test_lam_follows_the_model_after_to_and_assign_loads():
    tm = tunify(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1)), 2).eval()
    x = torch.rand(1, 3, 8, 8)
    tm(x, lam=[0.5, 0.5])
    tm.double()
    assert tm(x.double(), lam=[0.5, 0.5]).dtype == torch.float64
    state = {k: v.float() for k, v in tm.state_dict().items()}
    tm.load_state_dict(state, assign=True)                    # new Parameter objects, float32 again
    assert tm.coefficients([0.5, 0.5]).dtype == torch.float32 and tm(x, lam=[0.5, 0.5]).dtype == torch.float32
