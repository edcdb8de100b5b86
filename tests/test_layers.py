"""Each tunable layer against a hand-written reference: per-sample kernels computed one
sample at a time with the plain torch op."""
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close
from torch import nn

from tunify.layers import (
    TunableConv2d,
    TunableConvTranspose2d,
    TunableLinear,
    autotune,
    clear_form_choices,
    coeff_scope,
    expand_rows,
    forced_form,
    form_choices,
    mix,
    split_by_rows,
    tunable_conv2d,
    tunable_linear,
)

K = 3


def _randomise(layer):
    with torch.no_grad():
        for p in layer.parameters():
            if p.dim() and p.shape[0] == K:
                p.copy_(torch.randn_like(p))


def _coeffs(b):
    return torch.distributions.Dirichlet(torch.ones(K)).sample((b,))


CONVS = [
    dict(in_channels=4, out_channels=6, kernel_size=3, padding=1),
    dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, bias=False),
    dict(in_channels=4, out_channels=8, kernel_size=3, padding=2, dilation=2, groups=2),
    dict(in_channels=4, out_channels=4, kernel_size=5, padding=2, groups=4),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 4), padding="same"),
    dict(in_channels=4, out_channels=6, kernel_size=3, padding=1, padding_mode="reflect"),
    dict(in_channels=4, out_channels=6, kernel_size=3, padding=(2, 1), padding_mode="replicate"),
    dict(in_channels=4, out_channels=6, kernel_size=3, padding=1, padding_mode="circular", stride=2),
]


CONVS.append(dict(in_channels=4, out_channels=6, kernel_size=1))  # pointwise: the batched-matmul form


@pytest.mark.parametrize("size", [(11, 10), (4, 5)], ids=["many-pixels", "few-pixels"])
@pytest.mark.parametrize("cfg", CONVS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items() if k not in ("in_channels", "out_channels")))
def test_conv2d_matches_per_sample_reference(cfg, size):
    conv = nn.Conv2d(**cfg)
    layer = TunableConv2d(conv, K)
    _randomise(layer)
    x, c = torch.randn(4, 4, *size), _coeffs(4)
    out = layer(x, coeffs=c)
    for i in range(4):
        ref = nn.Conv2d(**cfg)
        ref.weight.data = mix(layer.weights, c[i])
        if ref.bias is not None:
            ref.bias.data = mix(layer.biases, c[i])
        assert_close(out[i : i + 1], ref(x[i : i + 1]))
    # shared coefficients equal the per-sample path with identical rows
    assert_close(layer(x, coeffs=c[0]), layer(x, coeffs=c[:1].repeat(4, 1)))


def _per_row_reference(layer, x, c, plain):
    """Each sample through ``plain`` at its own mixture, stacked: the value every form must give."""
    return torch.cat([plain(x[i:i + 1], mix(layer.weights, c[i]), None if layer.biases is None else mix(layer.biases, c[i]))
                      for i in range(x.shape[0])])


def _forms_agree(layer, x, c, plain, names):
    """Every per-sample form (forced in turn) equals the per-row reference, and so do the
    gradients of the input and of the stacks."""
    x = x.detach().requires_grad_()
    ref = _per_row_reference(layer, x, c, plain)
    g = torch.randn_like(ref)
    stacks = [t for t in (layer.weights, layer.biases) if t is not None]
    want = torch.autograd.grad(ref, [x, *stacks], g)
    for name in names:
        with forced_form(name):
            out = layer(x, coeffs=c)
        assert_close(out, ref)
        for got, exp in zip(torch.autograd.grad(out, [x, *stacks], g), want):
            assert_close(got, exp, rel=1e-4)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels-last"])
@pytest.mark.parametrize("cfg", CONVS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items() if k not in ("in_channels", "out_channels")))
def test_every_per_sample_conv_form_is_exact_with_its_gradients(cfg, channels_last):
    layer = TunableConv2d(nn.Conv2d(**cfg), K)
    _randomise(layer)
    x, c = torch.randn(4, 4, 9, 7), _coeffs(4)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    base = layer.base_layer
    ref_conv = nn.Conv2d(**cfg)

    def plain(xi, w, b):
        return ref_conv._conv_forward(xi, w, b)

    pointwise = cfg["kernel_size"] == 1
    _forms_agree(layer, x, c, plain, ("k_outputs", "grouped", "each_sample") + (("pointwise", "pointwise_k") if pointwise else ()))
    assert base.weight is None  # the slots stay empty
    if channels_last and cfg.get("padding_mode", "zeros") == "zeros":  # K outputs keep the memory format
        for form in ("k_outputs",) + (("pointwise_k",) if pointwise else ()):
            with torch.no_grad(), forced_form(form):
                assert layer(x, coeffs=c).is_contiguous(memory_format=torch.channels_last), form


@pytest.mark.parametrize("bias", [True, False])
def test_every_per_sample_linear_form_is_exact_with_its_gradients(bias):
    layer = TunableLinear(nn.Linear(5, 7, bias=bias), K)
    _randomise(layer)
    _forms_agree(layer, torch.randn(3, 6, 5), _coeffs(3), F.linear, ("k_outputs", "batched"))


def test_forms_are_measured_once_per_signature_and_not_where_off():
    """The first per-sample call of a signature times its forms and keeps the fastest; a call
    with a backward is a signature of its own; with autotune off the static rule decides and
    nothing is measured. Timing draws no random numbers."""
    layer = TunableConv2d(nn.Conv2d(4, 6, 3, padding=1), K)
    x, c = torch.randn(2, 4, 8, 8), _coeffs(2)
    clear_form_choices()
    try:
        autotune(False)
        with torch.no_grad():
            layer(x, coeffs=c)
        assert form_choices() == {}
        autotune(True)
        state = torch.get_rng_state()
        with torch.no_grad():
            layer(x, coeffs=c)
            layer(x, coeffs=c)
        assert torch.equal(torch.get_rng_state(), state)
        (key, chosen), = form_choices().items()
        assert chosen in ("k_outputs", "grouped", "each_sample") and key[0] == "conv2d" and key[1] is False
        layer(x, coeffs=c).sum().backward()
        assert sorted(k[1] for k in form_choices()) == [False, True]
        layer(x[:, :, :6], coeffs=c)  # another shape: measured afresh
        assert len(form_choices()) == 3
    finally:
        autotune(True)
        clear_form_choices()


def test_a_form_is_forced_then_off_then_measured_then_remembered():
    from tunify.layers.forms import choose_form

    ran = []
    forms = {"a": lambda t: ran.append("a") or t * 1, "b": lambda t: ran.append("b") or t * 2}
    args = (("test-signature",), forms, ("a", "b"), (torch.ones(3),))
    clear_form_choices()
    try:
        with forced_form("a"):
            assert choose_form(*args, "b") == "a" and not ran
        chosen = choose_form(*args, "b")  # measured: both ran, one warm-up and three timed runs each
        assert ran.count("a") == ran.count("b") == 4 and form_choices() == {("test-signature",): chosen}
        ran.clear()
        other = "a" if chosen == "b" else "b"
        autotune(False)  # the static rule, though a choice was measured
        assert choose_form(*args, other) == other
        autotune(True)
        assert choose_form(*args, other) == chosen and not ran  # remembered, not measured again
    finally:
        autotune(True)
        clear_form_choices()


@pytest.mark.parametrize("cfg", [
    dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, output_padding=1),
    dict(in_channels=4, out_channels=6, kernel_size=4, stride=2, padding=1, groups=2, bias=False),
    dict(in_channels=4, out_channels=4, kernel_size=3, stride=3, dilation=2),
])
def test_conv_transpose2d_matches_per_sample_reference(cfg):
    layer = TunableConvTranspose2d(nn.ConvTranspose2d(**cfg), K)
    _randomise(layer)
    x, c = torch.randn(3, 4, 7, 6), _coeffs(3)
    out = layer(x, coeffs=c)
    for i in range(3):
        ref = nn.ConvTranspose2d(**cfg)
        ref.weight.data = mix(layer.weights, c[i])
        if ref.bias is not None:
            ref.bias.data = mix(layer.biases, c[i])
        assert_close(out[i : i + 1], ref(x[i : i + 1]))


def test_conv_transpose2d_output_size_argument():
    layer = TunableConvTranspose2d(nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1), K)
    x = torch.randn(2, 4, 5, 5)
    assert layer(x, output_size=[10, 10], coeffs=_coeffs(2)).shape[-2:] == (10, 10)
    assert layer(x, coeffs=_coeffs(1)[0]).shape[-2:] == (9, 9)


@pytest.mark.parametrize("tokens", [4, 40], ids=["few-rows", "many-rows"])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_reference_and_follows_folded_batches(bias, tokens):
    layer = TunableLinear(nn.Linear(5, 7, bias=bias), K)
    _randomise(layer)
    c = _coeffs(2)
    # (B·nW, N, C): each sample's 3 windows are contiguous, as window attention lays them out
    x = torch.randn(6, tokens, 5)
    out = layer(x, coeffs=c)
    for i in range(6):
        w, b = mix(layer.weights, c[i // 3]), mix(layer.biases, c[i // 3]) if bias else None
        assert_close(out[i], F.linear(x[i], w, b))
    with pytest.raises(ValueError, match="not a multiple"):
        layer(torch.randn(5, 4, 5), coeffs=c)


def test_functional_forms_match_layers():
    conv = nn.Conv2d(4, 6, 3, padding=1)
    layer = TunableConv2d(conv, K)
    _randomise(layer)
    x, c = torch.randn(3, 4, 8, 8), _coeffs(3)
    got = tunable_conv2d(x, c, layer.weights, layer.biases, 1, 1, 1, 1, bias_is_stack=True)
    assert_close(got, layer(x, coeffs=c))
    plain_bias = torch.randn(6)
    for xs in (x, x[..., :4, :4]):  # many pixels, and few (the K-wide form)
        got = tunable_conv2d(xs, c, layer.weights, plain_bias, padding=1)
        ref = torch.cat([F.conv2d(xs[i : i + 1], mix(layer.weights, c[i]), plain_bias, padding=1) for i in range(3)])
        assert_close(got, ref)
    lin = TunableLinear(nn.Linear(5, 2), K)
    _randomise(lin)
    xl = torch.randn(3, 4, 5)
    assert_close(tunable_linear(xl, c, lin.weights, lin.biases, bias_is_stack=True), lin(xl, coeffs=c))
    assert_close(tunable_linear(xl, c[0], lin.weights, lin.biases, bias_is_stack=True), lin(xl, coeffs=c[0]))


def test_weight_reads_and_scope_errors():
    layer = TunableConv2d(nn.Conv2d(2, 3, 3), K)
    _randomise(layer)
    with pytest.raises(RuntimeError, match="lam_scope"):
        layer.weight
    c = _coeffs(1)[0]
    with coeff_scope(c):
        assert_close(layer.weight, mix(layer.weights, c))
        x = torch.randn(2, 2, 5, 5)
        assert_close(layer(x), layer(x, coeffs=c))  # no explicit coeffs: the scope's
    with coeff_scope(_coeffs(2)):
        with pytest.raises(RuntimeError, match="per sample"):
            layer.weight
    assert layer.in_channels == 2 and layer.kernel_size == (3, 3)  # read through to the base
    with pytest.raises(ValueError, match="3 kernels"):
        layer(torch.randn(1, 2, 5, 5), coeffs=torch.ones(2) / 2)


def test_to_plain_and_repr():
    conv = nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect")
    layer = TunableConv2d(conv, K)
    _randomise(layer)
    c = _coeffs(1)[0]
    plain = layer.to_plain(c)
    assert type(plain) is nn.Conv2d and plain.padding_mode == "reflect"
    x = torch.randn(2, 2, 6, 6)
    assert_close(plain(x), layer(x, coeffs=c))
    text = repr(layer)
    assert "kernels=3" in text and "padding_mode=reflect" in text and "bias=False" not in text


def test_zero_tail_start_and_expand_rows():
    lin = nn.Linear(3, 2)
    original = lin.weight.detach().clone()
    layer = TunableLinear(lin, 3, zero_tail=True)
    assert torch.equal(layer.weights[0], original)
    assert torch.equal(layer.weights[1:], torch.zeros(2, 2, 3))
    assert expand_rows(torch.eye(2), 6).tolist() == [[1, 0]] * 3 + [[0, 1]] * 3


def test_split_by_rows_groups_and_restores_order():
    calls = []

    def fn(x, scale, coeffs):
        calls.append(x.shape[0])
        return {"y": x * coeffs.sum() * scale, "tag": "kept"}

    c = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, 2.0], [0.0, 3.0]])
    x = torch.arange(5.0).reshape(5, 1).requires_grad_()
    out = split_by_rows(fn, c, (x, 10.0), {})
    assert sorted(calls) == [1, 2, 2] and out["tag"] == "kept"
    assert out["y"].squeeze(1).tolist() == [0.0, 20.0, 20.0, 60.0, 120.0]
    out["y"].sum().backward()
    assert x.grad.squeeze(1).tolist() == [10.0, 20.0, 10.0, 20.0, 30.0]


class _InitOnly(nn.Conv2d):
    """A subclass that only sets its weights (RCAN's MeanShift): nn.Conv2d's own code runs."""

    def __init__(self):
        super().__init__(3, 5, 3, padding=1)
        self.weight.data.normal_()


class _OwnConvForward(nn.Conv2d):
    """Replaces the method nn.Conv2d.forward calls: code of its own."""

    def _conv_forward(self, x, weight, bias):
        return super()._conv_forward(x, weight * 2, bias)


@pytest.mark.parametrize("make, own", [(_InitOnly, False), (lambda: _OwnConvForward(3, 5, 3, padding=1), True),
                                        (lambda: type("InitOnlyLinear", (nn.Linear,), {})(3, 5), False)])
def test_a_subclass_runs_its_own_code_only_where_it_replaces_a_method(make, own):
    """An init-only subclass takes the plain per-sample forms (before, every one ran each λ
    row on its own); a replaced method keeps the subclass's forward, so both stay exact."""
    base = make()
    layer = (TunableLinear if isinstance(base, nn.Linear) else TunableConv2d)(base, K)
    assert layer.custom_forward is own
    _randomise(layer)
    x = torch.randn(4, 3, 6, 6) if isinstance(base, nn.Conv2d) else torch.randn(4, 3)
    c = _coeffs(4)
    y = layer(x, coeffs=c)
    for i in range(4):
        base.weight, base.bias = (nn.Parameter(t) for t in (mix(layer.weights, c[i]), mix(layer.biases, c[i])))
        assert_close(y[i:i + 1], type(base).forward(base, x[i:i + 1]))
        base._parameters["weight"] = base._parameters["bias"] = None


class _OwnForward(nn.Conv2d):
    """A conv subclass with its own forward: the layer runs it with the mixture in its weight slot."""

    def forward(self, x):
        x = x + F.conv2d(x, torch.zeros(4, 4, 5, 5), padding=2)  # work (the GIL released) before the weight is read
        return super().forward(x)


@torch.no_grad()
def test_a_layer_with_its_own_forward_is_safe_from_two_threads():
    import threading

    layer = TunableConv2d(_OwnForward(4, 4, 3, padding=1), K)
    assert layer.custom_forward
    _randomise(layer)
    x = torch.randn(2, 4, 24, 24)
    cs = [_coeffs(1)[0], _coeffs(1)[0]]
    refs = [F.conv2d(x, mix(layer.weights, c), mix(layer.biases, c), padding=1) for c in cs]
    wrong = [0, 0]

    def work(k):
        with torch.no_grad():
            for _ in range(300):
                wrong[k] += not torch.allclose(layer(x, coeffs=cs[k]), refs[k], atol=1e-5)

    threads = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert wrong == [0, 0]
