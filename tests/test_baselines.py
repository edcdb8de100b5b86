"""The control baselines: each does what its method says at every λ, per sample, and trains
through tunify.training.fit (kernels perturbed so a mix-up of λ entries would show)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tunify.baselines import DNI, AdaFM, DynamicNet, FiLM, OutputBlend, feature_convs, interpolate_state
from tunify.training import fit, parse_recipe



def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float) -> None:
    torch.testing.assert_close(actual, expected, rtol=0, atol=atol)


def backbone(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 3, 3, padding=1)).double()


def added_noise(module: nn.Module, seed: int, scale: float = 0.3) -> None:
    """Perturb every parameter a method adds (its init is the identity: tests must not rely on it)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.control_parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


X = torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
ROWS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.3, 0.7], [0.8, 0.2]], dtype=torch.float64)


def per_sample_equals_rows(model: nn.Module) -> None:
    together = model(X, lam=ROWS)
    for i, row in enumerate(ROWS):
        assert_close(together[i : i + 1], model(X[i : i + 1], lam=row), atol=1e-10)


def test_feature_convs_skip_image_outputs():
    net = backbone(0)
    assert feature_convs(net) == ["0", "2"]
    with pytest.raises(ValueError, match="no feature Conv2d"):
        feature_convs(nn.Sequential(nn.Conv2d(3, 3, 1)))
    with pytest.raises(ValueError, match=r"sites \['nope'\] are not modules"):
        FiLM(net, sites=["nope"])


def test_dni_interpolates_weights_and_bakes():
    a, b = backbone(0), backbone(1)
    dni = DNI([a, b], ["fidelity", "perception"])
    assert_close(dni(X, lam=[1.0, 0.0]), a(X), atol=1e-12)
    assert_close(dni(X, lam=[0.0, 1.0]), b(X), atol=1e-12)
    manual = copy.deepcopy(a)
    with torch.no_grad():
        for pm, pa, pb in zip(manual.parameters(), a.parameters(), b.parameters()):
            pm.copy_(0.3 * pa + 0.7 * pb)
    assert_close(dni(X, lam=[0.3, 0.7]), manual(X), atol=1e-12)
    assert_close(dni.at([0.3, 0.7])(X), manual(X), atol=1e-12)
    assert not torch.allclose(dni(X, lam=[0.3, 0.7]), 0.3 * a(X) + 0.7 * b(X))  # weights, not outputs
    per_sample_equals_rows(dni)
    with pytest.raises(ValueError, match="one network per objective"):
        DNI([a], 2)
    other = nn.Sequential(nn.Conv2d(3, 3, 1)).double()
    with pytest.raises(ValueError, match="same parameters"):
        interpolate_state([a, other], torch.tensor([0.5, 0.5]))


def test_output_blend_mixes_outputs_and_skips_zero_weight_nets():
    a, b = backbone(0), backbone(1)
    blend = OutputBlend([a, b], 2)
    assert_close(blend(X, lam=[0.3, 0.7]), 0.3 * a(X) + 0.7 * b(X), atol=1e-12)
    per_sample_equals_rows(blend)
    calls = []
    b.register_forward_hook(lambda *_: calls.append(1))
    blend(X, lam=[1.0, 0.0])
    assert calls == []
    with pytest.raises(ValueError, match="sum to 1"):
        blend(X, lam=[0.7, 0.7])


def test_adafm_is_a_filter_interpolated_from_identity():
    net = backbone(0)
    ada = AdaFM(copy.deepcopy(net), ["a", "b"], kernel_size=3).double()
    assert_close(ada(X, lam=[0.4, 0.6]), net(X), atol=1e-12)  # identity filters at init
    added_noise(ada, 0)
    assert_close(ada(X, lam=[1.0, 0.0]), net(X), atol=1e-12)  # objective 0 is the backbone itself
    t = 0.6
    reference = copy.deepcopy(net)
    for site in ("0", "2"):  # an explicit conv → depthwise filter (1-t)·I + t·g, built by hand
        g = ada.filters[0][site]
        eye = torch.zeros_like(g.weight)
        eye[:, 0, 1, 1] = 1.0
        dw = nn.Conv2d(8, 8, 3, padding=1, groups=8).double()
        with torch.no_grad():
            dw.weight.copy_((1 - t) * eye + t * g.weight)
            dw.bias.copy_(t * g.bias)
        reference[int(site)] = nn.Sequential(reference[int(site)], dw)
    assert_close(ada(X, lam=[1 - t, t]), reference(X), atol=1e-12)
    per_sample_equals_rows(ada)
    with pytest.raises(ValueError, match="odd"):
        AdaFM(net, kernel_size=2)


def test_dynamic_net_scales_residual_tuning_blocks():
    net = backbone(0)
    dyn = DynamicNet(copy.deepcopy(net), 2).double()
    assert_close(dyn(X, lam=[0.5, 0.5]), net(X), atol=1e-12)
    added_noise(dyn, 1)
    assert_close(dyn(X, lam=[1.0, 0.0]), net(X), atol=1e-12)
    t = 0.25
    reference = copy.deepcopy(net)

    class Tuned(nn.Module):
        def __init__(self, conv, block):
            super().__init__()
            self.conv, self.block = conv, block

        def forward(self, x):
            h = self.conv(x)
            return h + t * self.block(h)

    for site in ("0", "2"):
        reference[int(site)] = Tuned(reference[int(site)], dyn.blocks[0][site])
    assert_close(dyn(X, lam=[1 - t, t]), reference(X), atol=1e-12)
    per_sample_equals_rows(dyn)


def test_film_modulates_per_sample_and_gets_gradients():
    net = backbone(0)
    film = FiLM(copy.deepcopy(net), 2, hidden=16).double()
    assert_close(film(X, lam=[0.2, 0.8]), net(X), atol=1e-12)
    added_noise(film, 2, scale=0.5)
    a, b = film(X, lam=[1.0, 0.0]), film(X, lam=[0.0, 1.0])
    assert (a - b).abs().max() > 1e-3
    per_sample_equals_rows(film)
    film(X, lam=ROWS).pow(2).mean().backward()
    for name, p in film.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert "method=film" in repr(film) and "sites=2" in repr(film)


def _recipe(tmp_path, fixed):
    lam = {"sampler": "fixed", "fixed": fixed} if fixed else {"sampler": "dirichlet"}
    return parse_recipe({
        "name": "baseline", "seed": 0, "model": {"arch": "dncnn-tiny"},
        "objectives": [{"name": "clean", "target": "clean", "losses": [{"type": "MSELoss"}]},
                       {"name": "grain", "target": "input", "losses": [{"type": "MSELoss"}]}],
        "data": {"train": {"type": "degraded", "images": "skimage:coffee", "patch_size": 16, "max_size": 64,
                           "degradation": [{"type": "gaussian_noise", "sigma": 25}]},
                 "batch_size": 2, "val_images": 1, "val_patch": 16},
        "lam": lam, "optim": {"steps": 3, "lr": 1e-2},
        "validation": {"lams": [[1.0, 0.0], [0.0, 1.0]]},
        "output": {"dir": str(tmp_path), "progress": False, "tensorboard": "off"},
    })


def test_two_stage_training_moves_only_the_added_modules(tmp_path):
    ada = AdaFM(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1)), 2)
    for p in ada.base_parameters():
        p.requires_grad_(False)
    base = {k: v.clone() for k, v in ada.net.state_dict().items()}
    added = [p.detach().clone() for p in ada.control_parameters()]
    fit(ada, _recipe(tmp_path / "adafm", [0.0, 1.0]), log=lambda *_: None)
    assert all(torch.equal(v, ada.net.state_dict()[k]) for k, v in base.items())
    assert any(not torch.equal(a, p) for a, p in zip(added, ada.control_parameters()))


def test_film_trains_with_sampled_lam_through_fit(tmp_path):
    film = FiLM(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1)), ["clean", "grain"])
    heads = [p.detach().clone() for p in film.heads.parameters()]
    result = fit(film, _recipe(tmp_path / "film", None), log=lambda *_: None)
    assert result.step == 3 and len(result.validation) == 2  # fit's λ sweep ran the baseline at each λ
    assert any(not torch.equal(a, p) for a, p in zip(heads, film.heads.parameters()))
