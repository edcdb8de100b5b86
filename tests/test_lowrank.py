"""Low-rank tunable layers against hand-written references: W(λ) = W_0 + Σ λ_i B_i A_i, each
sample's output computed alone with the plain torch op and the weight folded by hand."""
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close
from torch import nn

from tunify import bake, tunify
from tunify.layers import (PER_OBJECTIVE_SUFFIXES, LowRankConv2d, LowRankLinear, TunableConv2d, coeff_scope,
                           kernel_cache_size)

P, R = 3, 2


def _perturb(layer, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in (layer.lora_A, layer.lora_B) + ((layer.biases,) if layer.biases is not None else ()):
            t.add_(torch.randn(t.shape, generator=g) * 0.3)


def _by_hand(layer, c):
    """The folded weight for one coefficient row c (K,), written out factor by factor."""
    dc = c[1:] if layer.zero_tail else c
    w = layer.base_weight.clone()
    for i in range(dc.shape[0]):
        a, b = layer.lora_A[i], layer.lora_B[i]
        if a.dim() == 2:  # linear: B (out, r) @ A (r, in)
            w += dc[i] * b @ a
        else:  # conv, per group: B (out/g, r) @ A (r, in/g·kh·kw)
            g = layer.base_layer.groups
            out, r = b.shape[:2]
            for gi in range(g):
                bg = b[gi * out // g:(gi + 1) * out // g, :, 0, 0]
                ag = a[gi * r:(gi + 1) * r].flatten(1)
                w[gi * out // g:(gi + 1) * out // g] += dc[i] * (bg @ ag).reshape(-1, *a.shape[1:])
    bias = None if layer.biases is None else (c[:, None] * layer.biases).sum(0)
    return w, bias


def _coeffs(b, box):
    if box:
        return torch.cat([torch.ones(b, 1), torch.rand(b, P)], 1)
    return torch.distributions.Dirichlet(torch.ones(P)).sample((b,))


CONVS = [
    dict(in_channels=4, out_channels=6, kernel_size=3, padding=1),
    dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, bias=False),
    dict(in_channels=8, out_channels=8, kernel_size=3, padding=2, dilation=2, groups=2),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 4), padding="same"),
    dict(in_channels=4, out_channels=6, kernel_size=3, padding=1, padding_mode="reflect"),
    dict(in_channels=4, out_channels=6, kernel_size=3, padding=1, padding_mode="circular", stride=2),
    dict(in_channels=6, out_channels=8, kernel_size=1),
]


@pytest.mark.parametrize("box", [False, True], ids=["simplex", "box"])
@pytest.mark.parametrize("cfg", CONVS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items() if k not in ("in_channels", "out_channels")))
def test_conv_matches_per_sample_reference(cfg, box):
    conv = nn.Conv2d(**cfg)
    layer = LowRankConv2d(conv, P + box, zero_tail=box, rank=R)
    x = torch.randn(4, cfg["in_channels"], 9, 8)
    c = _coeffs(4, box)
    ref = nn.Conv2d(**cfg)
    with torch.no_grad():  # at init: the original, for shared and per-sample coefficients
        plain = nn.Conv2d(**cfg)
        plain.weight.copy_(layer.base_weight)
        if plain.bias is not None:
            plain.bias.copy_(layer.biases[0])
        assert_close(layer(x, coeffs=c), plain(x), rel=1e-5)
        assert_close(layer(x, coeffs=c[0]), plain(x), rel=1e-5)
    _perturb(layer)
    out = layer(x, coeffs=c)
    for i in range(4):
        w, b = _by_hand(layer, c[i])
        with torch.no_grad():
            ref.weight.copy_(w)
            if ref.bias is not None:
                ref.bias.copy_(b)
        assert_close(out[i:i + 1], ref(x[i:i + 1]))
    assert_close(layer(x, coeffs=c[0]), layer(x, coeffs=c[:1].repeat(4, 1)))
    assert (out[0] - layer(x[:1], coeffs=c[1])[0]).abs().max() > 1e-4  # the rows really differ


@pytest.mark.parametrize("box", [False, True], ids=["simplex", "box"])
@pytest.mark.parametrize("rows", [1, 5], ids=["one-row-per-sample", "windows-folded"])
def test_linear_matches_per_sample_reference(box, rows):
    lin = nn.Linear(10, 7)
    layer = LowRankLinear(lin, P + box, zero_tail=box, rank=R)
    _perturb(layer)
    c = _coeffs(3, box)
    x = torch.randn(3 * rows, 6, 10)  # rows per sample contiguous, as window attention folds them
    out = layer(x, coeffs=c)
    for i in range(3):
        w, b = _by_hand(layer, c[i])
        assert_close(out[i * rows:(i + 1) * rows], F.linear(x[i * rows:(i + 1) * rows], w, b))


def test_factor_shapes_names_and_gradients():
    layer = LowRankConv2d(nn.Conv2d(8, 16, 3, padding=1, groups=2), P, rank=R)
    assert layer.base_weight.shape == (16, 4, 3, 3) and "base_weight" in dict(layer.named_buffers())
    assert layer.lora_A.shape == (P, 2 * R, 4, 3, 3) and layer.lora_B.shape == (P, 16, R, 1, 1)
    assert not layer.lora_B.any(), "B starts at zero"
    assert {n for n, _ in layer.named_parameters()} == {"lora_A", "lora_B", "biases"}
    assert all(f".{n}".endswith(PER_OBJECTIVE_SUFFIXES) for n, _ in layer.named_parameters())
    _perturb(layer)
    for c in (_coeffs(3, False), _coeffs(1, False)[0]):
        layer.zero_grad()
        layer(torch.randn(3, 8, 6, 6), coeffs=c).pow(2).sum().backward()
        for name, t in layer.named_parameters():
            assert (t.grad.flatten(1).abs().sum(1) > 0).all(), f"{name}: an objective's slice got no gradient"
    assert layer.base_weight.grad is None


def test_bake_folds_exactly_into_plain_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1, groups=16),
                          nn.Conv2d(16, 8, 1), nn.Flatten(), nn.Linear(8 * 36, 5)).eval()
    tm = tunify(model, ["a", "b"], rank=2, lam_space="box")
    kinds = {c.name: c.tunable for c in tm.tunify_report.converted}
    assert kinds == {"0": "LowRankConv2d", "2": "TunableConv2d", "3": "LowRankConv2d", "5": "LowRankLinear"}, kinds
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():  # at init every corner of the box, and its origin, is the original
        for lam in ([0.0, 0.0], [1.0, 1.0], torch.rand(2, 2)):
            assert_close(tm(x, lam=lam), model(x), rel=1e-5)
    for layer in tm.modules():
        if isinstance(layer, (LowRankConv2d, LowRankLinear)):
            _perturb(layer)
    with torch.no_grad():
        for lam in ([0.2, 0.9], [1.0, 1.0]):
            plain = bake(tm, lam)
            assert [type(m) for m in plain.modules()] == [type(m) for m in model.modules()]
            assert_close(plain(x), tm(x, lam=lam))


def test_kernel_cache_serves_the_fold_and_never_a_stale_one():
    layer = LowRankConv2d(nn.Conv2d(4, 8, 3, padding=1), P, rank=R).eval()
    _perturb(layer)
    x, c = torch.randn(2, 4, 7, 7), _coeffs(1, False)[0]
    with torch.no_grad():
        first = layer(x, coeffs=c)
        assert kernel_cache_size() >= 1
        assert torch.equal(layer(x, coeffs=c.clone()), first)  # a hit: same values
        for tensor in (layer.lora_B, layer.lora_A, layer.base_weight, layer.biases):
            before = layer(x, coeffs=c)
            tensor.add_(0.05)
            after = layer(x, coeffs=c)
            w, b = _by_hand(layer, c)
            assert_close(after, F.conv2d(x, w, b, padding=1))
            assert (after - before).abs().max() > 1e-4, "a cached fold survived an in-place write"
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    layer(x, coeffs=c).sum().backward()
    opt.step()
    with torch.no_grad():
        w, b = _by_hand(layer, c)
        assert_close(layer(x, coeffs=c), F.conv2d(x, w, b, padding=1))


def test_weight_reads_and_rank_validation():
    layer = LowRankLinear(nn.Linear(6, 6), 2, rank=1)
    _perturb(layer)
    c = torch.tensor([0.25, 0.75])
    with coeff_scope(c):
        assert_close(layer.weight, _by_hand(layer, c)[0])
    with pytest.raises(ValueError, match="rank must be a positive integer"):
        tunify(nn.Linear(4, 4), 2, rank=0)
    with pytest.raises(ValueError, match="rank must be a positive integer"):
        tunify(nn.Linear(4, 4), 2, rank=2.5)
    # rank so large the factors would not be smaller: the layer keeps full kernels
    tm = tunify(nn.Sequential(nn.Linear(4, 4)), 2, rank=2)
    assert isinstance(tm.model[0], type(tunify(nn.Sequential(nn.Linear(4, 4)), 2).model[0]))
    assert not isinstance(tm.model[0], TunableConv2d)


@pytest.mark.parametrize("kind", ["StdConv2d", "Conv2dSame"])
def test_convs_with_their_own_forward(kind):
    """timm's convs that standardise or pad their weight: the folded weight runs through their
    forward (per-sample λ by rows), so bake and per-sample rows stay exact."""
    import timm.layers as tl

    torch.manual_seed(0)
    conv = getattr(tl, kind)(4, 8, 3, stride=2)
    model = nn.Sequential(conv, nn.ReLU(), nn.Conv2d(8, 6, 1)).eval()
    x = torch.randn(3, 4, 9, 9)
    tm = tunify(model, ["a", "b"], rank=2)
    assert type(tm.model[0]).__name__ == "LowRankConv2d" and tm.model[0].custom_forward
    with torch.no_grad():
        assert_close(tm(x, lam=torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])), model(x), rel=1e-5)
        for layer in (tm.model[0], tm.model[2]):
            _perturb(layer)
        lams = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.3, 0.7]])
        out = tm(x, lam=lams)
        for i in range(3):
            assert_close(out[i:i + 1], tm(x[i:i + 1], lam=lams[i]))
        assert (out[0] - tm(x[:1], lam=lams[1])).abs().max() > 1e-4
        plain = bake(tm, [0.3, 0.7])
        assert type(plain[0]) is type(conv)
        assert_close(plain(x), tm(x, lam=[0.3, 0.7]))
