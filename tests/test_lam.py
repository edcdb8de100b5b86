"""λ validation and λ spaces, through the public model call."""
import pytest
import torch
from conftest import assert_close, perturb
from torch import nn

from tunify import LamSpace, bake, tunify


def _net():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1)).eval()


@pytest.mark.parametrize("lam, message", [
    ([0.5, 0.5, 0.0], r"shape \(3,\); expected shape \(B, 2\) or \(2,\)"),
    (torch.ones(2, 2, 2) / 2, r"shape \(2, 2, 2\)"),
    ([[0.5, 0.5]] * 3, "3 rows but the batch has 2"),
    ([float("nan"), 1.0], "NaN or inf"),
    ([float("inf"), 0.0], "NaN or inf"),
    ([1.5, -0.5], "negative"),
    ([0.7, 0.7], "sum to 1"),
    ("strong", "could not be read as numbers"),
    (None, "λ is missing"),
])
def test_simplex_rejects_bad_lam_with_what_was_expected(lam, message):
    tm = tunify(_net(), ["strong", "weak"])
    with pytest.raises(ValueError, match=message) as err:
        tm(torch.randn(2, 3, 8, 8), lam=lam)
    if "expected" in message or "sum" in message:
        assert "'strong', 'weak'" in str(err.value)


def test_box_space_accepts_independent_knobs_and_rejects_above_one():
    tm = tunify(_net(), ["denoise", "deblur"], lam_space="box")
    x = torch.randn(2, 3, 8, 8)
    tm(x, lam=[1.0, 1.0])
    tm(x, lam=[0.0, 0.0])
    with pytest.raises(ValueError, match="above 1"):
        tm(x, lam=[1.2, 0.0])


@torch.no_grad()
def test_box_space_is_exact_at_init_for_every_corner_and_then_tunable():
    net = _net()
    tm = tunify(net, ["denoise", "deblur"], lam_space="box")
    assert tm.tunify_report.num_kernels == 3  # base + one delta per knob
    x = torch.randn(4, 3, 8, 8)
    corners = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert_close(tm(x, lam=corners), net(x), rel=1e-6)
    perturb(tm)
    out = tm(x, lam=corners)
    assert (out[0] - out[3]).abs().max() > 1e-3
    for i in range(4):
        assert_close(bake(tm, corners[i])(x[i : i + 1]), out[i : i + 1])


def test_identical_rows_take_the_shared_path():
    tm = tunify(_net(), 2)
    c = tm.coefficients(torch.tensor([[0.2, 0.8]] * 4), batch=4)
    assert c.shape == (2,)
    assert tm.coefficients([[0.2, 0.8], [1.0, 0.0]], batch=2).shape == (2, 2)


def test_default_lam_and_space_object():
    tm = tunify(_net(), 2)
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(ValueError, match="missing"):
        tm(x)
    tm.set_default_lam([0.25, 0.75])
    assert torch.equal(tm(x), tm(x, lam=[0.25, 0.75]))
    with pytest.raises(ValueError, match="sum to 1"):
        tm.set_default_lam([1.0, 1.0])
    with pytest.raises(ValueError, match="lam_space must be one of"):
        LamSpace("sphere", 2)
    assert LamSpace("box", 2).coefficients(torch.tensor([0.3, 0.9])).tolist() == pytest.approx([1.0, 0.3, 0.9])
