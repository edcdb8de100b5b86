"""Own architectures (DnCNN, StyleNet) and the official checkpoint layouts of the paper's
models (SwinIR, NAFNet, EDSR, RRDBNet): structure, tunify on the fx path, exactness at init,
loading ``params``/``params_ema`` files exactly, and what each architecture makes tunable."""
import re

import pytest
import torch
from conftest import assert_close, perturb
from torch import nn
from zoo import SWINIR_TINY

import tunify
from tunify import TunableConv2d, TunableLayer, bake
from tunify.archs import DnCNN, StyleNet, create_model
from tunify.archs.stylenet import ResidualBlock
from tunify.archs.weights import load_pretrained
from tunify.training import build_model
from tunify.training.recipe import ModelSpec

LAMS = ([1.0, 0.0], [0.0, 1.0], torch.tensor([[0.3, 0.7], [0.9, 0.1]]))
NORMS = (nn.BatchNorm2d, nn.InstanceNorm2d)


@torch.no_grad()
def _randomise(model: nn.Module, seed: int) -> nn.Module:
    """Trained-looking state: noise on every parameter (zero-initialised β/γ would hide
    branches) and on norm statistics, so a wrong or skipped tensor shows in the output."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.add_(torch.randn(p.shape, generator=g) * 0.05)
    for name, b in model.named_buffers():
        if name.endswith("running_mean"):
            b.copy_(torch.randn(b.shape, generator=g) * 0.1)
        elif name.endswith("running_var"):
            b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return model.eval()


def _count(model: nn.Module, kind) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


# -- DnCNN ----------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 3, 20, 20), (1, 3, 17, 31)])
def test_dncnn_shapes(shape):
    model = DnCNN(features=8, depth=5).eval()
    assert model(torch.rand(shape)).shape == shape
    grey = DnCNN(in_ch=1, out_ch=1, features=8, depth=4, residual=False).eval()
    assert grey(torch.rand(shape[0], 1, *shape[2:])).shape == (shape[0], 1, *shape[2:])


def test_dncnn_layout_and_registry():
    model = DnCNN(features=8, depth=6)
    convs = [m for m in model.body if isinstance(m, nn.Conv2d)]
    assert len(convs) == 6 and _count(model, nn.BatchNorm2d) == 4
    assert all(c.bias is None for c in convs[1:-1]) and convs[0].bias is not None and convs[-1].bias is not None
    plain = DnCNN(features=8, depth=6, batch_norm=False)
    assert _count(plain, nn.BatchNorm2d) == 0
    assert all(m.bias is not None for m in plain.modules() if isinstance(m, nn.Conv2d))
    assert _count(create_model("dncnn-b"), nn.Conv2d) == 20 and _count(create_model("dncnn"), nn.Conv2d) == 17
    # the paper's grey DnCNN-S has about 0.56M parameters: 640 + 15·(36864 + 128) + 577
    assert sum(p.numel() for p in create_model("dncnn", in_ch=1, out_ch=1).parameters()) == 556_097
    with pytest.raises(ValueError, match="in_ch"):
        DnCNN(in_ch=4, out_ch=3)


@torch.no_grad()
def test_dncnn_residual_semantics():
    model = _randomise(DnCNN(features=8, depth=5), seed=1)
    noise_net = DnCNN(features=8, depth=5, residual=False).eval()
    noise_net.load_state_dict(model.state_dict())
    x = torch.rand(2, 3, 12, 12)
    out = model(x)
    assert not torch.allclose(out, x, atol=1e-3)  # the body does predict something
    assert torch.equal(out, x - noise_net(x))
    model.body[-1].weight.zero_()
    model.body[-1].bias.zero_()
    assert torch.equal(model(x), x)


# -- StyleNet -------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(16, 16), (20, 28), (18, 23)])
def test_stylenet_shapes_and_range(size):
    model = _randomise(StyleNet(base=4, n_residual=2), seed=2)
    x = torch.rand(2, 3, *size)
    y = model(x)
    assert y.shape == x.shape and y.min() > 0 and y.max() < 1
    if size[0] % 4 or size[1] % 4:  # documented: reflect-pad to a multiple of 4, then crop
        padded = StyleNet.pad_to_multiple(x)
        assert padded.shape[-2] % 4 == 0 and padded.shape[-1] % 4 == 0
        assert torch.equal(y, model(padded)[:, :, : size[0], : size[1]])


def test_stylenet_structure():
    model = create_model("stylenet")
    assert _count(model, ResidualBlock) == 5 and len(model.blocks) == 5
    norms = [m for m in model.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert len(norms) == 3 + 2 * 5 + 2 and all(n.affine for n in norms)
    assert _count(model, nn.Conv2d) == 3 + 2 * 5 + 2 + 1
    assert all(m.padding_mode == "reflect" for m in model.modules() if isinstance(m, nn.Conv2d))
    assert [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)][:3] == [32, 64, 128]
    assert model.encoder[0].conv.kernel_size == (9, 9) and model.head.kernel_size == (9, 9)
    assert _count(StyleNet(base=4, n_residual=3), ResidualBlock) == 3


# -- tunify on the own architectures --------------------------------------------------------
OWN = {
    "dncnn": (lambda: DnCNN(features=8, depth=5), (2, 3, 14, 14)),
    "stylenet": (lambda: StyleNet(base=4, n_residual=5), (2, 3, 16, 20)),
}


@pytest.mark.parametrize("name", list(OWN))
@torch.no_grad()
def test_own_archs_tunify(name):
    build, shape = OWN[name]
    model = _randomise(build(), seed=3)
    x = torch.rand(shape)
    tm = tunify.tunify(model, 2).eval()
    report = tm.tunify_report
    assert report.path == "fx", report.fallback_reason
    convs = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert {c.name for c in report.converted} == convs  # every conv, nothing else (no norm)
    assert all(isinstance(tm.model.get_submodule(n), TunableConv2d) for n in convs)
    for n, m in model.named_modules():
        if isinstance(m, NORMS):
            assert type(tm.model.get_submodule(n)) is type(m)
    assert not any(n.endswith(".original") for n, _ in tm.named_parameters())
    ref = model(x)
    for lam in LAMS:
        assert_close(tm(x, lam=lam), ref, rel=1e-5)
    perturb(tm, seed=4)
    a, b = tm(x, lam=[1.0, 0.0]), tm(x, lam=[0.0, 1.0])
    assert (a - b).abs().max() > 1e-3 * a.abs().max()
    for lam in ([0.0, 1.0], [0.3, 0.7]):
        plain = bake(tm, lam)
        assert not any(isinstance(m, TunableLayer) for m in plain.modules())
        assert _count(plain, NORMS) == _count(model, NORMS)
        assert_close(plain(x), tm(x, lam=lam))


# -- official checkpoint layouts ------------------------------------------------------------
NAF = {"width": 8, "middle_blk_num": 1, "enc_blk_nums": [1, 1], "dec_blk_nums": [1, 1]}
OFFICIAL = {  # arch, kwargs, input, kwargs of a checkpoint that must not fit, what its error names
    "swinir": ("swinir", SWINIR_TINY, (2, 3, 16, 16), {**SWINIR_TINY, "embed_dim": 12},
               r"shape mismatches: conv_after_body.bias: file \(12,\) vs model \(24,\)"),
    "nafnet": ("nafnet", NAF, (2, 3, 16, 16), {**NAF, "middle_blk_num": 2},
               r"missing keys: none; unexpected keys: middle_blks.1.beta, middle_blks.1.conv1.bias"),
    "edsr": ("edsr", {"num_feat": 16, "num_block": 2, "upscale": 2}, (2, 3, 12, 12),
             {"num_feat": 16, "num_block": 1, "upscale": 2},
             r"missing keys: body.1.conv1.bias, body.1.conv1.weight, body.1.conv2.bias, body.1.conv2.weight; "
             r"unexpected keys: none"),
    "rrdbnet": ("rrdbnet", {"num_feat": 16, "num_block": 1, "num_grow_ch": 8, "scale": 4}, (2, 3, 8, 8),
                {"num_feat": 8, "num_block": 1, "num_grow_ch": 8, "scale": 4},
                r"shape mismatches: body.0.rdb1.conv1.weight: file \(8, 8, 3, 3\) vs model \(8, 16, 3, 3\)"),
}


def _source(arch: str, kwargs: dict, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return _randomise(create_model(arch, **kwargs), seed)


@pytest.mark.parametrize("name", list(OFFICIAL))
@torch.no_grad()
def test_official_layout_loads_exactly_and_tunifies_exactly(tmp_path, name):
    arch, kwargs, shape, _, _ = OFFICIAL[name]
    src = _source(arch, kwargs, seed=10)
    ckpt = {"params": src.state_dict()}
    if name == "swinir":  # BasicSR saves both; the EMA weights are the released ones
        ema = _source(arch, kwargs, seed=11)
        ckpt = {"params": src.state_dict(), "params_ema": ema.state_dict()}
    torch.save(ckpt, tmp_path / "w.pth")
    x = torch.rand(shape)
    loaded = build_model(ModelSpec(arch=arch, kwargs=kwargs, weights=str(tmp_path / "w.pth"))).eval()
    ref = loaded(x)
    if name == "swinir":
        assert torch.equal(ref, ema(x)) and not torch.equal(ref, src(x))
        spec = ModelSpec(arch=arch, kwargs=kwargs, weights=str(tmp_path / "w.pth"), weights_key="params")
        assert torch.equal(build_model(spec).eval()(x), src(x))
    else:
        assert torch.equal(ref, src(x))
    direct = load_pretrained(create_model(arch, **kwargs), str(tmp_path / "w.pth")).state_dict()
    assert all(torch.equal(v, direct[k]) for k, v in loaded.state_dict().items())
    tm = tunify.tunify(loaded, 2).eval()
    assert tm.tunify_report.path == "fx"
    for lam in LAMS + (torch.distributions.Dirichlet(torch.ones(2)).sample((shape[0],)),):
        assert_close(tm(x, lam=lam), ref, rel=1e-6)


@pytest.mark.parametrize("name", list(OFFICIAL))
def test_official_layout_mismatch_lists_keys(tmp_path, name):
    arch, kwargs, _, other, expected = OFFICIAL[name]
    state = create_model(arch, **kwargs).state_dict()
    dropped = sorted(k for k in state if k.endswith("weight"))[-1]
    torch.save({"params": {k: v for k, v in state.items() if k != dropped}}, tmp_path / "cut.pth")
    with pytest.raises(ValueError, match=f"missing keys: {re.escape(dropped)}; unexpected keys: none"):
        load_pretrained(create_model(arch, **kwargs), str(tmp_path / "cut.pth"))
    torch.save({"params": {**state, "extra.weight": torch.ones(1)}}, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match="missing keys: none; unexpected keys: extra.weight"):
        build_model(ModelSpec(arch=arch, kwargs=kwargs, weights=str(tmp_path / "extra.pth")))
    torch.save({"params": create_model(arch, **other).state_dict()}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=expected):
        build_model(ModelSpec(arch=arch, kwargs=kwargs, weights=str(tmp_path / "other.pth")))


# -- what the paper's official models make tunable -------------------------------------------
TUNED = {"swinir": ("relative_position_bias_table",), "nafnet": ("beta", "gamma")}


@pytest.mark.parametrize("name", list(TUNED))
def test_official_tunable_tensors(name):
    arch, kwargs, _, _, _ = OFFICIAL[name]
    model = create_model(arch, **kwargs)
    report = tunify.tunify(model, 2).tunify_report
    params = {c.name for c in report.converted if c.tunable == "TunableParameter"}
    wanted = {n for n, _ in model.named_parameters() if n.rsplit(".", 1)[-1] in TUNED[name]}
    assert wanted and params == wanted
    assert all(c.source.startswith("Parameter") for c in report.converted if c.name in wanted)
    layers = {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert {c.name for c in report.converted if c.tunable != "TunableParameter"} == layers
    norm_params = {f"{n}.{p}" for n, m in model.named_modules() if "norm" in type(m).__name__.lower()
                   for p, _ in m.named_parameters(recurse=False)}
    assert norm_params and not norm_params & {c.name for c in report.converted}
    targets = tunify.list_targets(model)
    assert all(targets[n].endswith("(default)") for n in wanted | layers)
    assert all(targets[n].endswith("(by name only)") for n in norm_params)
