"""Behaviour of tunify() beyond the zoo suite: the caller's model, methods, sharing, refused
layers, user-registered types, the report, and reads of a layer's weight."""
import copy

import pytest
import torch
from conftest import assert_close, perturb
from torch import nn
from torch.nn.utils import parametrizations, spectral_norm
from zoo import SWINIR_TINY, SharedConv, Untraceable

from tunify import (
    TraceFailure,
    TunableConv2d,
    TunableLinear,
    TunableModuleLayer,
    bake,
    list_targets,
    register_layer,
    tunify,
)
from tunify.archs import NAFNet, create_model


def _nafnet():
    m = NAFNet(width=8, middle_blk_num=1, enc_blk_nums=(1,), dec_blk_nums=(1,)).eval()
    with torch.no_grad():
        for blk in m.modules():
            if hasattr(blk, "beta"):
                blk.beta.normal_(0, 0.5)
                blk.gamma.normal_(0, 0.5)
    return m


def test_caller_model_untouched_unless_inplace():
    m = _nafnet()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    tm = tunify(m, 2)
    perturb(tm)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert type(m.intro) is nn.Conv2d
    tm2 = tunify(m, 2, inplace=True)
    assert isinstance(m.intro, TunableConv2d) and tm2.model is m


def test_methods_and_attributes_of_the_original_keep_working():
    m = _nafnet()
    tm = tunify(m, ["strong", "weak"])
    assert tm.padder_size == m.padder_size and tm.objectives == ("strong", "weak")
    x = torch.randn(1, 3, 10, 10)
    assert tm.check_image_size(x).shape == m.check_image_size(x).shape  # no layer runs
    with pytest.raises(RuntimeError, match="lam_scope"):
        tm.middle_blks(torch.randn(1, 16, 4, 4))
    perturb(tm)
    with tm.lam_scope([0.3, 0.7]):
        direct = tm.ending(tm.intro(x))
    ref = bake(tm, [0.3, 0.7])
    assert_close(direct, ref.ending(ref.intro(x)))


def test_swinir_mean_is_not_left_as_a_proxy_and_block_is_kept_whole():
    m = create_model("swinir", **SWINIR_TINY).eval()
    tm = tunify(m, 2)
    assert isinstance(m.mean, torch.Tensor) and isinstance(tm.model.mean, torch.Tensor)
    assert [t for t, _ in tm.tunify_report.leaves] == ["SwinTransformerBlock"]
    hows = {c.name: c.how for c in tm.tunify_report.converted}
    assert hows["conv_first"] == "fx"
    assert hows["layers.0.residual_group.blocks.0.attn.qkv"] == "inside kept-whole SwinTransformerBlock"
    assert "relative_position_bias_table" in tm.tunify_report.per_sample
    # any input size works, since the untraceable block runs eagerly
    x = torch.randn(1, 3, 20, 24)
    with torch.no_grad():
        assert_close(tm(x, lam=[0.5, 0.5]), m(x), rel=1e-5)


def test_weight_sharing_stays_shared():
    m = SharedConv().eval()
    tm = tunify(m, 2)
    assert [c.name for c in tm.tunify_report.converted] == ["conv", "out"]
    n_params = sum(p.numel() for p in tm.parameters())
    assert n_params == 2 * sum(p.numel() for p in m.parameters())
    # a module registered under two names is converted once and stays one object
    alias = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU())
    alias.add_module("again", alias[0])
    tma = tunify(alias, 2)
    assert tma.model[0] is tma.model.again
    assert tma.tunify_report.converted[0].aliases == ("again",)


class Hooked(nn.Module):
    def __init__(self):
        super().__init__()
        self.sn_old = spectral_norm(nn.Conv2d(3, 4, 3, padding=1))
        self.sn_new = parametrizations.spectral_norm(nn.Conv2d(4, 4, 3, padding=1))
        self.wn = parametrizations.weight_norm(nn.Conv2d(4, 4, 3, padding=1))
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
        self.plain = nn.Conv2d(4, 3, 1)

    def forward(self, x):
        y = self.wn(self.sn_new(self.sn_old(x)))
        t = y.flatten(2).transpose(1, 2)
        t = self.attn(t, t, t, need_weights=False)[0]
        return self.plain(t.transpose(1, 2).reshape(y.shape))


def test_layers_whose_weight_is_computed_are_skipped_with_reasons():
    m = Hooked().eval()
    tm = tunify(m, 2)
    reasons = {s.name: s.reason for s in tm.tunify_report.skipped}
    assert "pre-hook" in reasons["sn_old"] and "parametrization" in reasons["sn_new"]
    assert "MultiheadAttention" in reasons["attn.out_proj"]
    # weight norm is mixed then normalised (tests/test_rewriter_cases.py), not skipped
    assert {c.name for c in tm.tunify_report.converted} == {"plain", "wn"}
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        assert_close(tm(x, lam=[[1.0, 0.0], [0.2, 0.8]]), m(x), rel=1e-4)  # wn mixes then normalises: rounding
    assert "skipped (3)" in str(tm.tunify_report)


def test_untraceable_model_uses_module_path_and_fx_mode_says_why():
    m = Untraceable().eval()
    tm = tunify(m, 2)
    assert tm.tunify_report.path == "module" and "control flow" in tm.tunify_report.fallback_reason
    with pytest.raises(TraceFailure, match="Untraceable.forward"):
        tunify(m, 2, mode="fx")
    with pytest.raises(ValueError, match="mode must be one of"):
        tunify(m, 2, mode="jit")


class Scaled(nn.Module):
    """A layer type tunify does not know: y = x·W·s."""

    def __init__(self, n):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n, n) * 0.3)
        self.s = 2.0

    def forward(self, x):
        return x @ self.weight * self.s


class TunableScaled(TunableModuleLayer):
    plain_type = Scaled

    def _plain_forward(self, x, weight, bias):
        return x @ weight * self.base_layer.s

    def _run_per_sample(self, x, coeffs):
        from tunify.layers import mix

        return torch.bmm(x, mix(self.weights, coeffs)) * self.base_layer.s


def test_user_registered_layer_type():
    m = nn.Sequential(nn.Linear(4, 4), Scaled(4)).eval()
    with pytest.raises(ValueError, match="nothing to convert"):
        tunify(m, 2, targets=lambda n, mod: isinstance(mod, Scaled) and not n.endswith("weight"), exclude=["0"])
    register_layer(Scaled, TunableScaled)
    try:
        tm = tunify(m, 2)
        assert isinstance(tm.model[1], TunableScaled) and isinstance(tm.model[0], TunableLinear)
        perturb(tm)
        x = torch.randn(2, 3, 4)
        out = tm(x, lam=[[1.0, 0.0], [0.0, 1.0]])
        assert_close(out[1:], tm(x[1:], lam=[0.0, 1.0]))
        assert_close(bake(tm, [0.0, 1.0])(x), tm(x, lam=[0.0, 1.0]))
    finally:
        from tunify.surgery.dispatch import LAYER_TYPES
        LAYER_TYPES.pop(Scaled)
    with pytest.raises(TypeError, match="TunableModuleLayer"):
        register_layer(Scaled, nn.Linear)


def test_tunifying_twice_and_deepcopy():
    tm = tunify(_nafnet(), 2)
    with pytest.raises(ValueError, match="already tunable"):
        tunify(tm.model, 2)
    perturb(tm)
    twin = copy.deepcopy(tm)
    x = torch.randn(2, 3, 8, 8)
    lam = [[1.0, 0.0], [0.4, 0.6]]
    with torch.no_grad():
        assert torch.equal(twin(x, lam=lam), tm(x, lam=lam))
        twin.model.intro.weights.add_(1.0)  # the copy owns its tensors, and the graph follows it
        assert not torch.equal(twin(x, lam=lam), tm(x, lam=lam))


def test_report_lists_and_reprs():
    tm = tunify(_nafnet(), ["strong", "weak"])
    text = str(tm.tunify_report)
    assert "intro" in text and "Conv2d -> TunableConv2d" in text and "Parameter(1, 8, 1, 1) -> TunableParameter" in text
    before, after = sum(p.numel() for p in _nafnet().parameters()), sum(p.numel() for p in tm.parameters())
    assert f"{before:,} -> {after:,} (x{after / before:.2f})" in text and 1.9 < after / before <= 2.0
    assert "objectives=('strong', 'weak')" in repr(tm) and "TunableConv2d(kernels=2, Conv2d(3, 8" in repr(tm)
    assert "converted (" in tm.tunify_report.summary()
    assert list_targets(_nafnet())["intro"] == "Conv2d (default)"


def test_functional_calls_on_own_parameters_are_rewritten():
    from zoo import FunctionalNet

    tm = tunify(FunctionalNet().eval(), 2)
    hows = {c.name: c.how for c in tm.tunify_report.converted}
    assert hows == {"conv": "fx, functional call", "k": "fx, functional call", "kb": "fx",
                    "w": "fx, functional call"}
    assert tm.tunify_report.per_sample == "native"
    code = tm._graph.code
    assert "tunable_conv2d" in code and "tunable_linear" in code and "torch.conv2d" not in code
