"""The loss library: every loss against a hand computation, the per-sample contract, the
registry's errors, VGG weight lookup (offline, with files written here), GAN training and
the basicsr fallback."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision
from scipy.signal.windows import gaussian
from torch import nn

from tunify.objectives import (
    LOSSES,
    VGG_URLS,
    BasicsrLoss,
    CharbonnierLoss,
    ContentLoss,
    FFTLoss,
    SpectrumLoss,
    GANLoss,
    GlobalDiscriminator,
    GradientLoss,
    L1Loss,
    Loss,
    MSELoss,
    PatchDiscriminator,
    PerceptualLoss,
    PSNRLoss,
    SSIMLoss,
    StyleLoss,
    VGGFeatures,
    build_loss,
    loss_names,
    register_loss,
    vgg_layer_names,
)
from tunify.objectives.adversarial import gan_logit_loss

VGG11_FILE = "vgg11-8a719046.pth"


@pytest.fixture(autouse=True)
def _offline_vgg_urls(monkeypatch, tmp_path):
    """No test may download: every VGG URL points at a file that does not exist, unless a
    test points one elsewhere itself."""
    for name in list(VGG_URLS):
        monkeypatch.setitem(VGG_URLS, name, (tmp_path / "no-network" / f"{name}.pth").as_uri())


def _pair(b=3, c=3, h=16, w=16, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, h, w, generator=g, dtype=dtype), torch.rand(b, c, h, w, generator=g, dtype=dtype)


def _np(x):
    return x.detach().cpu().double().numpy()


# ---------------------------------------------------------------- pixel losses vs numpy

def test_pixel_losses_match_numpy():
    p, t = _pair()
    d = _np(p) - _np(t)
    np.testing.assert_allclose(_np(L1Loss()(p, t)), np.abs(d).mean(axis=(1, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(_np(MSELoss()(p, t)), (d ** 2).mean(axis=(1, 2, 3)), rtol=1e-12)
    charb = np.sqrt(d ** 2 + 0.01 ** 2).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(_np(CharbonnierLoss(eps=0.01)(p, t)), charb, rtol=1e-12)
    psnr = -10 * np.log10((d ** 2).mean(axis=(1, 2, 3)))
    np.testing.assert_allclose(_np(PSNRLoss()(p, t)), -psnr, rtol=1e-6)  # 1e-8 is negligible here


def test_psnr_to_y_uses_bt601_luma():
    p, t = _pair()
    pn, tn = _np(p), _np(t)

    def y(img):  # Y' = 16 + 65.481 R + 128.553 G + 24.966 B, on the 0..255 scale
        return (16 + 65.481 * img[:, 0] + 128.553 * img[:, 1] + 24.966 * img[:, 2]) / 255

    mse = ((y(pn) - y(tn)) ** 2).mean(axis=(1, 2))
    np.testing.assert_allclose(_np(PSNRLoss(to_y=True)(p, t)), 10 * np.log10(mse + 1e-8), rtol=1e-10)
    with pytest.raises(ValueError, match=r"RGB images of shape \(B, 3, H, W\)"):
        PSNRLoss(to_y=True)(p[:, :2], t[:, :2])


# ---------------------------------------------------------------- SSIM

def _ssim_numpy(x, y, r=1.0):
    """Direct sums over each valid 11x11 window position."""
    g = gaussian(11, std=1.5)
    win = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * r) ** 2, (0.03 * r) ** 2
    b, c, h, w = x.shape
    out = np.zeros(b)
    for i in range(b):
        vals = []
        for ch in range(c):
            for r0 in range(h - 10):
                for q0 in range(w - 10):
                    a, bb = x[i, ch, r0:r0 + 11, q0:q0 + 11], y[i, ch, r0:r0 + 11, q0:q0 + 11]
                    mx, my = (win * a).sum(), (win * bb).sum()
                    vx = (win * (a - mx) ** 2).sum()
                    vy = (win * (bb - my) ** 2).sum()
                    cxy = (win * (a - mx) * (bb - my)).sum()
                    vals.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
        out[i] = np.mean(vals)
    return out


def test_ssim_matches_window_loops_and_skimage():
    from skimage.metrics import structural_similarity

    p, t = _pair(b=2, c=2, h=14, w=13)
    t = 0.7 * p + 0.3 * t  # correlated, so SSIM is far from 0
    expected = 1 - _ssim_numpy(_np(p), _np(t))
    got = _np(SSIMLoss()(p, t))
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    assert (expected > 0.05).all() and (expected < 0.9).all()
    # an independent implementation: Gaussian weights, population statistics, border cropped
    sk = [structural_similarity(_np(p)[i], _np(t)[i], channel_axis=0, data_range=1.0,
                                gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
          for i in range(2)]
    np.testing.assert_allclose(got, 1 - np.array(sk), rtol=1e-6)
    assert torch.allclose(SSIMLoss()(p, p), torch.zeros(2, dtype=p.dtype), atol=1e-12)
    with pytest.raises(ValueError, match="at least 11x11"):
        SSIMLoss()(p[..., :10, :], t[..., :10, :])


# ---------------------------------------------------------------- FFT and gradients

def test_fft_loss_matches_numpy_fft():
    p, t = _pair(c=2, h=8, w=10)
    amp = lambda x: np.abs(np.fft.rfft2(_np(x), norm="ortho"))  # noqa: E731
    expected = np.abs(amp(p) - amp(t)).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(_np(FFTLoss()(p, t)), expected, rtol=1e-10)
    assert amp(p).shape[-1] == 10 // 2 + 1  # the half spectrum is what is averaged


def test_spectrum_loss_matches_numpy_bands_and_ignores_position():
    p, t = _pair(c=2, h=8, w=10)

    def bands(x, k=4):  # an independent loop over the full 2-D spectrum's non-negative-x half
        power = np.abs(np.fft.rfft2(_np(x), norm="ortho")) ** 2
        fy, fx = np.abs(np.fft.fftfreq(8))[:, None], np.fft.rfftfreq(10)[None, :]
        band = np.minimum((np.sqrt(fy ** 2 + fx ** 2) / np.sqrt(0.5) * k).astype(int), k - 1)
        band[0, 0] = -1  # DC left out
        return np.stack([np.sqrt(power[..., band == i].mean(-1)) for i in range(k)], -1)

    expected = np.abs(bands(p) - bands(t)).mean(axis=(1, 2))
    np.testing.assert_allclose(_np(SpectrumLoss(bands=4)(p, t)), expected, rtol=1e-10)
    # circularly shifted content has the same spectrum: no penalty, where a pixel loss sees it all
    shifted = torch.roll(t, shifts=(3, 4), dims=(-2, -1))
    assert float(SpectrumLoss()(shifted, t).max()) < 1e-12 < float(L1Loss()(shifted, t).min())
    # grain adds energy at high frequency: the top band moves far more than the lowest
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(2, 3, 64, 64, generator=g, dtype=torch.float64), 9, 1, 4)
    noisy = smooth + 0.1 * torch.randn(smooth.shape, generator=g, dtype=torch.float64)
    from tunify.objectives.frequency import radial_spectrum
    move = (radial_spectrum(noisy) - radial_spectrum(smooth)).abs().mean((0, 1))
    assert move[-1] > 5 * move[0]
    with pytest.raises(ValueError, match="bands must be a positive integer"):
        SpectrumLoss(bands=0)


def test_gradient_loss_diff_and_sobel_match_loops():
    p, t = _pair(b=2, c=2, h=6, w=7)
    pn, tn = _np(p), _np(t)
    gx = lambda x: x[..., :, 1:] - x[..., :, :-1]  # noqa: E731
    gy = lambda x: x[..., 1:, :] - x[..., :-1, :]  # noqa: E731
    diff = np.abs(gx(pn) - gx(tn)).mean(axis=(1, 2, 3)) + np.abs(gy(pn) - gy(tn)).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(_np(GradientLoss(mode="diff")(p, t)), diff, rtol=1e-12)

    kx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=float)

    def sobel(x, k):
        b, c, h, w = x.shape
        out = np.zeros((b, c, h - 2, w - 2))
        for i in range(h - 2):
            for j in range(w - 2):
                out[:, :, i, j] = (x[:, :, i:i + 3, j:j + 3] * k).sum(axis=(2, 3))
        return out

    sob = (np.abs(sobel(pn, kx) - sobel(tn, kx)).mean(axis=(1, 2, 3))
           + np.abs(sobel(pn, kx.T) - sobel(tn, kx.T)).mean(axis=(1, 2, 3)))
    np.testing.assert_allclose(_np(GradientLoss(mode="sobel")(p, t)), sob, rtol=1e-12)


# ---------------------------------------------------------------- the per-sample contract

SPECS = [
    {"type": "L1Loss"},
    {"type": "MSELoss"},
    {"type": "CharbonnierLoss"},
    {"type": "PSNRLoss", "to_y": True},
    {"type": "SSIMLoss"},
    {"type": "FFTLoss"},
    {"type": "SpectrumLoss"},
    {"type": "GradientLoss", "mode": "sobel"},
    {"type": "PerceptualLoss", "pretrained": False, "criterion": "fro"},
    {"type": "ContentLoss", "pretrained": False},
    {"type": "StyleLoss", "pretrained": False, "criterion": "l2"},
    {"type": "GANLoss", "discriminator": {"type": "PatchDiscriminator", "nf": 8, "n_layers": 2}},
    {"type": "GANLoss", "gan_type": "hinge", "discriminator": {"type": "GlobalDiscriminator", "nf": 8}},
]


def test_every_registered_loss_is_in_the_contract_test():
    assert {s["type"] for s in SPECS} == set(loss_names()) == set(LOSSES)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s["type"] + s.get("gan_type", ""))
def test_per_sample_shape_independence_weight_and_gradient(spec):
    torch.manual_seed(0)
    loss = build_loss(spec).eval()  # eval: spectral norm stops its power iteration
    torch.manual_seed(0)
    heavy = build_loss({**spec, "loss_weight": 2.5}).eval()
    p, t = _pair(b=3, h=32, w=32, dtype=torch.float32)
    p.requires_grad_(True)
    out = loss(p, t)
    assert out.shape == (3,)
    # sample 0's loss does not change when samples 1 and 2 change
    p2, t2 = p.detach().clone(), t.clone()
    p2[1:], t2[1:] = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(loss(p2, t2)[0], out[0].detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss(p[:1].detach(), t[:1]), out[:1].detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(heavy(p, t), 2.5 * out, rtol=1e-5, atol=1e-6)
    out.sum().backward()
    assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    if isinstance(loss, (PerceptualLoss, StyleLoss)):
        assert all(not q.requires_grad for q in loss.vgg.parameters())


def test_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match="same shape"):
        L1Loss()(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 9))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        L1Loss()(torch.rand(3, 8, 8), torch.rand(3, 8, 8))


# ---------------------------------------------------------------- registry and spec errors

def test_registry_errors_name_the_problem_and_the_fix():
    with pytest.raises(ValueError, match=r"unknown loss type 'L1loss'\. Did you mean 'L1Loss'\? Known: .*SSIMLoss"):
        build_loss({"type": "L1loss"})
    with pytest.raises(ValueError, match="has no 'type' key"):
        build_loss({"loss_weight": 1.0})
    with pytest.raises(ValueError, match=r"unknown keyword 'esp'\. Did you mean 'eps'\? Accepted: loss_weight, eps"):
        build_loss({"type": "CharbonnierLoss", "esp": 1e-3})
    with pytest.raises(ValueError, match=r"'criterion' must be one of \['l1', 'l2', 'fro'\].*Did you mean 'l1'"):
        build_loss({"type": "PerceptualLoss", "criterion": "L1", "pretrained": False})
    with pytest.raises(ValueError, match=r"no layer 'conv5_5'\. Did you mean 'conv5_4'"):
        build_loss({"type": "PerceptualLoss", "layer_weights": {"conv5_5": 1.0}, "pretrained": False})
    with pytest.raises(ValueError, match="already registered"):
        register_loss(type("L1Loss", (Loss,), {}))


def test_spec_numbers_from_yaml_strings_and_wrong_types():
    assert build_loss({"type": "CharbonnierLoss", "eps": "1e-3"}).eps == pytest.approx(1e-3)
    assert build_loss({"type": "L1Loss", "loss_weight": "2"}).loss_weight == 2.0
    for key, value in [("eps", "abc"), ("eps", True), ("eps", "nan"), ("loss_weight", [1.0])]:
        with pytest.raises(ValueError, match=f"'{key}' must be a real number"):
            build_loss({"type": "CharbonnierLoss", key: value})
    with pytest.raises(ValueError, match="'to_y' must be a bool"):
        build_loss({"type": "PSNRLoss", "to_y": "yes"})
    with pytest.raises(ValueError, match=r"'layer_weights\.conv1_1' must be a real number"):
        build_loss({"type": "PerceptualLoss", "layer_weights": {"conv1_1": "x"}, "pretrained": False})


# ---------------------------------------------------------------- VGG

def test_layer_names_follow_the_torchvision_trunk():
    names = vgg_layer_names("vgg19")
    assert len(names) == 37 and names[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    assert names.index("conv4_2") == 21 and names.index("relu5_1") == 29 and names.index("conv5_4") == 34 and names[-1] == "pool5"
    assert vgg_layer_names("vgg11")[:4] == ["conv1_1", "relu1_1", "pool1", "conv2_1"]
    ext = VGGFeatures("vgg19", "relu2_1", pretrained=False)
    kinds = [type(m).__name__ for m in ext.features]
    assert kinds == ["Conv2d", "ReLU", "Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU"]
    feats = ext(torch.randn(1, 3, 16, 16), ["conv1_1", "relu1_1"])
    # a conv output keeps its negatives (an in-place ReLU after it would have clipped them)
    assert feats["conv1_1"].min() < 0
    torch.testing.assert_close(feats["relu1_1"], feats["conv1_1"].clamp(min=0))
    ext.train()
    assert not ext.training


@pytest.fixture(scope="module")
def _vgg11():
    torch.manual_seed(1)
    return torchvision.models.vgg11(weights=None)  # built once: its classifier makes it slow


@pytest.fixture(scope="module")
def vgg11_state(_vgg11):
    """The first two convs of torchvision's vgg11 (random init), plus a classifier key: files
    of the full state dict's layout, small enough to write in a test."""
    full = _vgg11.state_dict()
    keep = ["features.0.weight", "features.0.bias", "features.3.weight", "features.3.bias", "classifier.6.bias"]
    return {k: full[k].clone() for k in keep}


@pytest.fixture
def hub_dir(tmp_path):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(old)


@pytest.mark.parametrize("layout", ["full", "features", "bare"])
def test_weights_path_loads_each_state_dict_layout(tmp_path, vgg11_state, layout):
    state = dict(vgg11_state)
    if layout != "full":
        state = {k: v for k, v in state.items() if k.startswith("features.")}
    if layout == "bare":
        state = {k[len("features."):]: v for k, v in state.items()}
    path = tmp_path / "mine.pth"
    torch.save(state, path)
    loss = PerceptualLoss({"conv2_1": 1.0}, vgg_type="vgg11", weights_path=str(path))
    torch.testing.assert_close(loss.vgg.features[0].weight, vgg11_state["features.0.weight"], rtol=0, atol=0)
    torch.testing.assert_close(loss.vgg.features[3].bias, vgg11_state["features.3.bias"], rtol=0, atol=0)
    # the extractor is shared per (vgg_type, weights source, last layer)
    again = build_loss({"type": "StyleLoss", "layer_weights": {"conv2_1": 1}, "vgg_type": "vgg11",
                        "weights_path": str(path)})
    assert again.vgg is loss.vgg
    assert PerceptualLoss({"relu1_1": 1.0}, vgg_type="vgg11", weights_path=str(path)).vgg is not loss.vgg


def test_weights_path_errors(tmp_path, vgg11_state):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PerceptualLoss({"conv1_1": 1.0}, vgg_type="vgg11", weights_path=str(tmp_path / "nope.pth"))
    path = tmp_path / "short.pth"
    torch.save({"features.0.weight": vgg11_state["features.0.weight"]}, path)
    with pytest.raises(RuntimeError, match=r"lack \['0.bias'"):
        PerceptualLoss({"conv1_1": 1.0}, vgg_type="vgg11", weights_path=str(path))


def test_perceptual_and_style_match_torchvision_features_by_hand(tmp_path, vgg11_state, _vgg11):
    path = tmp_path / "w.pth"
    torch.save(vgg11_state, path)
    trunk = _vgg11.features[:5]  # torchvision's own modules compute the reference features
    p, t = _pair(b=2, h=12, w=12, dtype=torch.float32)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])

    def feats(x):
        x = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
        with torch.no_grad():
            return _np(trunk[:1](x.clone())), _np(trunk[:5](x.clone()))  # conv1_1, relu2_1

    (c_p, r_p), (c_t, r_t) = feats(p), feats(t)
    got = PerceptualLoss({"conv1_1": 0.5, "relu2_1": 2.0}, vgg_type="vgg11", weights_path=str(path))(p, t)
    l1 = lambda a, b: np.abs(a - b).mean(axis=(1, 2, 3))  # noqa: E731
    np.testing.assert_allclose(_np(got), 0.5 * l1(c_p, c_t) + 2.0 * l1(r_p, r_t), rtol=1e-4)
    fro = PerceptualLoss({"relu2_1": 1.0}, vgg_type="vgg11", criterion="fro", weights_path=str(path))(p, t)
    np.testing.assert_allclose(_np(fro), np.sqrt(((r_p - r_t) ** 2).sum(axis=(1, 2, 3))), rtol=1e-4)

    def gram(f):
        _, c, h, w = f.shape
        return np.einsum("bchw,bdhw->bcd", f, f) / (c * h * w)

    style = StyleLoss({"conv1_1": 1.0, "relu2_1": 3.0}, vgg_type="vgg11", criterion="l2", weights_path=str(path))
    expected = (((gram(c_p) - gram(c_t)) ** 2).mean(axis=(1, 2))
                + 3.0 * ((gram(r_p) - gram(r_t)) ** 2).mean(axis=(1, 2)))
    np.testing.assert_allclose(_np(style(p, t)), expected, rtol=1e-4)
    # range_norm maps [-1, 1] inputs back onto the same features
    ranged = PerceptualLoss({"conv1_1": 0.5, "relu2_1": 2.0}, vgg_type="vgg11", range_norm=True,
                            weights_path=str(path))(2 * p - 1, 2 * t - 1)
    torch.testing.assert_close(ranged, got, rtol=1e-4, atol=1e-6)
    assert ContentLoss(pretrained=False).layer_weights == {"conv4_2": 1.0}


def test_weights_come_from_the_hub_cache_without_downloading(hub_dir, vgg11_state, monkeypatch):
    (hub_dir / "checkpoints").mkdir(parents=True)
    torch.save(vgg11_state, hub_dir / "checkpoints" / VGG11_FILE)
    monkeypatch.setitem(VGG_URLS, "vgg11", (hub_dir / "missing" / VGG11_FILE).as_uri())
    loss = PerceptualLoss({"conv1_1": 1.0}, vgg_type="vgg11")
    torch.testing.assert_close(loss.vgg.features[0].weight, vgg11_state["features.0.weight"], rtol=0, atol=0)


def test_weights_download_into_the_hub_cache(hub_dir, tmp_path, vgg11_state, monkeypatch):
    remote = tmp_path / "remote"
    remote.mkdir()
    torch.save(vgg11_state, remote / "vgg11-mirror.pth")  # cached under torchvision's name anyway
    monkeypatch.setitem(VGG_URLS, "vgg11", (remote / "vgg11-mirror.pth").as_uri())
    cached = hub_dir / "checkpoints" / VGG11_FILE
    assert not cached.exists()
    loss = PerceptualLoss({"relu2_1": 1.0}, vgg_type="vgg11")
    assert cached.is_file()
    torch.testing.assert_close(loss.vgg.features[3].weight, vgg11_state["features.3.weight"], rtol=0, atol=0)


def test_missing_weights_error_says_how_to_provide_them(hub_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(VGG_URLS, "vgg11", (tmp_path / "nowhere" / VGG11_FILE).as_uri())
    with pytest.raises(RuntimeError) as err:
        build_loss({"type": "PerceptualLoss", "vgg_type": "vgg11", "layer_weights": {"conv1_1": 1}})
    text = str(err.value)
    assert os.path.join(str(hub_dir), "checkpoints", VGG11_FILE) in text
    assert "weights_path:" in text and "pretrained: false" in text
    assert not (hub_dir / "checkpoints" / VGG11_FILE).exists()


def test_random_vgg_follows_the_callers_seed_and_is_not_shared():
    torch.manual_seed(3)
    a = PerceptualLoss({"conv1_1": 1.0}, pretrained=False)
    torch.manual_seed(3)
    b = PerceptualLoss({"conv1_1": 1.0}, pretrained=False)
    assert a.vgg is not b.vgg
    torch.testing.assert_close(a.vgg.features[0].weight, b.vgg.features[0].weight, rtol=0, atol=0)


# ---------------------------------------------------------------- adversarial

def test_gan_logit_losses_match_hand_formulas():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0], dtype=torch.float64)
    xn = _np(x)
    sig = 1 / (1 + np.exp(-xn))
    cases = {
        ("vanilla", True, True): -np.log(sig), ("vanilla", False, True): -np.log(1 - sig),
        ("vanilla", True, False): -np.log(sig),
        ("lsgan", True, True): (xn - 1) ** 2, ("lsgan", False, True): xn ** 2, ("lsgan", True, False): (xn - 1) ** 2,
        ("hinge", True, True): np.maximum(0, 1 - xn), ("hinge", False, True): np.maximum(0, 1 + xn),
        ("hinge", True, False): -xn,
    }
    for (kind, real, disc), expected in cases.items():
        np.testing.assert_allclose(_np(gan_logit_loss(x, kind, real, disc)), expected, rtol=1e-12, err_msg=str(kind))


@pytest.mark.parametrize("gan_type", ["vanilla", "lsgan", "hinge"])
def test_generator_loss_is_per_sample_mean_and_leaves_the_discriminator_alone(gan_type):
    loss = GANLoss(gan_type, {"type": "PatchDiscriminator", "nf": 8, "n_layers": 2}, loss_weight=0.1).eval()
    pred = torch.rand(2, 3, 24, 24, requires_grad=True)
    out = loss(pred, None)
    with torch.no_grad():
        logits = _np(loss.discriminator(pred))
    assert logits.shape == (2, 1, 4, 4)
    hand = {"vanilla": np.log1p(np.exp(-logits)), "lsgan": (logits - 1) ** 2, "hinge": -logits}[gan_type]
    np.testing.assert_allclose(_np(out), 0.1 * hand.mean(axis=(1, 2, 3)), rtol=1e-5)
    out.sum().backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    params = list(loss.discriminator.parameters())
    assert all(q.grad is None for q in params) and all(q.requires_grad for q in params)


def test_discriminator_training_lowers_its_loss_and_never_trains_the_generator():
    torch.manual_seed(0)
    loss = build_loss({"type": "GANLoss", "gan_type": "lsgan",
                       "discriminator": {"type": "PatchDiscriminator", "nf": 8, "n_layers": 2}})
    real = torch.linspace(0, 1, 16).view(1, 1, 1, 16).expand(4, 3, 16, 16).contiguous()  # smooth ramps
    fake = torch.rand(4, 3, 16, 16, requires_grad=True)  # noise
    opt = torch.optim.Adam(loss.discriminator.parameters(), lr=2e-3)
    with torch.no_grad():
        before = loss.discriminator_loss(real, fake).item()
    for _ in range(15):
        opt.zero_grad()
        d_loss = loss.discriminator_loss(real, fake)
        assert d_loss.dim() == 0
        d_loss.backward()
        opt.step()
    with torch.no_grad():
        after = loss.discriminator_loss(real, fake).item()
    assert after < 0.5 * before
    assert fake.grad is None  # fakes are detached inside discriminator_loss


def test_discriminators_shapes_and_spec_errors():
    g = GlobalDiscriminator(nf=4, input_size=32)
    assert g(torch.rand(2, 3, 32, 32)).shape == (2, 1) and g(torch.rand(2, 3, 45, 37)).shape == (2, 1)
    assert GlobalDiscriminator(nf=4)(torch.rand(1, 3, 64, 80)).shape == (1, 1)
    assert PatchDiscriminator(nf=4, n_layers=3)(torch.rand(1, 3, 32, 32)).shape == (1, 1, 2, 2)
    with pytest.raises(ValueError, match="at least 24x24"):
        PatchDiscriminator(nf=4, n_layers=3)(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"unknown discriminator type 'PatchDiscrminator'\. Did you mean 'PatchDiscriminator'"):
        GANLoss(discriminator={"type": "PatchDiscrminator"})
    with pytest.raises(ValueError, match=r"unknown keyword 'nlayers'\. Did you mean 'n_layers'"):
        build_loss({"type": "GANLoss", "discriminator": {"type": "PatchDiscriminator", "nlayers": 2}})
    with pytest.raises(ValueError, match=r"Did you mean 'hinge'"):
        build_loss({"type": "GANLoss", "gan_type": "hinj"})
    assert isinstance(GANLoss(discriminator=nn.Conv2d(3, 1, 3)).discriminator, nn.Conv2d)


# ---------------------------------------------------------------- basicsr fallback

def test_basicsr_is_imported_only_for_foreign_names():
    code = ("import sys; from tunify.objectives import build_loss; build_loss({'type': 'SSIMLoss'}); "
            "assert 'basicsr' not in sys.modules; build_loss({'type': 'WeightedTVLoss'}); "
            "assert 'basicsr' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_basicsr_weighted_tv_loss_is_made_per_sample():
    # basicsr's WeightedTVLoss refuses reduction='none', so it is run one sample at a time
    loss = build_loss({"type": "WeightedTVLoss", "loss_weight": "2"})
    assert isinstance(loss, BasicsrLoss) and loss.per_sample_calls and not loss.needs_target
    p, t = _pair(b=3, c=2, h=5, w=6)
    pn = _np(p)
    tv = np.abs(pn[..., :, 1:] - pn[..., :, :-1]).mean(axis=(1, 2, 3)) + np.abs(pn[..., 1:, :] - pn[..., :-1, :]).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(_np(loss(p, t)), 2 * tv, rtol=1e-12)
    np.testing.assert_allclose(_np(loss(p, torch.zeros_like(t))), 2 * tv, rtol=1e-12)  # target unused


class _Cube(nn.Module):
    """A basicsr-style loss for the test: |p − t|³ with the usual reduction switch."""

    def __init__(self, loss_weight=1.0, reduction="mean"):
        super().__init__()
        self.loss_weight, self.reduction = loss_weight, reduction

    def forward(self, pred, target, weight=None):
        err = (pred - target).abs() ** 3
        return self.loss_weight * (err if self.reduction == "none" else err.mean())


class _ScalarAnyway(_Cube):
    def forward(self, pred, target, weight=None):
        return (pred - target).abs().mean()


@pytest.fixture
def basicsr_registered():
    from basicsr.utils.registry import LOSS_REGISTRY

    names = {"TunifyTestCubeLoss": _Cube, "TunifyTestScalarLoss": _ScalarAnyway}
    for name, cls in names.items():
        LOSS_REGISTRY._obj_map[name] = cls
    yield
    for name in names:
        LOSS_REGISTRY._obj_map.pop(name, None)


def test_basicsr_loss_with_reduction_none_is_reduced_per_sample(basicsr_registered):
    loss = build_loss({"type": "TunifyTestCubeLoss", "loss_weight": 3.0})
    assert not loss.per_sample_calls and loss.inner.loss_weight == 1.0  # weight applied once, by us
    p, t = _pair()
    np.testing.assert_allclose(_np(loss(p, t)), 3 * (np.abs(_np(p) - _np(t)) ** 3).mean(axis=(1, 2, 3)), rtol=1e-12)
    with pytest.raises(ValueError, match="needs a per-sample loss"):
        build_loss({"type": "TunifyTestScalarLoss"})(p, t)
    with pytest.raises(ValueError, match=r"unknown keyword 'los_weight'\. Did you mean 'loss_weight'"):
        build_loss({"type": "TunifyTestCubeLoss", "los_weight": 1.0})


def test_basicsr_scalar_only_loss_is_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"MultiScaleGANLoss \(basicsr\) has no 'reduction'.*per-sample loss of shape \(B,\)"):
        build_loss({"type": "MultiScaleGANLoss", "gan_type": "vanilla"})
    with pytest.raises(ValueError, match=r"WeightedTVLoss \(basicsr\): 'loss_weight' must be a real number"):
        build_loss({"type": "WeightedTVLoss", "loss_weight": "heavy"})
    with pytest.raises(ValueError, match="remove 'reduction'"):
        build_loss({"type": "WeightedTVLoss", "reduction": "mean"})
    with pytest.raises(ValueError, match=r"Did you mean 'WeightedTVLoss'\?.*from basicsr: .*WeightedTVLoss"):
        build_loss({"type": "WeightedTVloss"})
