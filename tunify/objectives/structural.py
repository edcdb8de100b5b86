"""Structural similarity (SSIM) loss.

SSIM compares local means, variances and the covariance of two images inside a Gaussian
window (Wang et al., 2004). Here the statistics are taken per channel with a depthwise
convolution over the *valid* region only (no padding), so no border is invented; the SSIM
map is then averaged over channels and positions, one value per sample.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Loss, flat_mean
from .registry import register_loss

__all__ = ["SSIMLoss", "gaussian_window", "ssim_per_sample"]


def gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    """(size,) float64 1-D Gaussian, g_k ∝ exp(−(k − (size−1)/2)² / (2σ²)), summing to 1."""
    k = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(k ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def _filter(x: Tensor, g: Tensor) -> Tensor:
    """Depthwise valid 2-D Gaussian filter as two 1-D passes (the 2-D window is g gᵀ).

    (B, C, H, W) → (B, C, H − k + 1, W − k + 1).
    """
    c, k = x.shape[1], g.numel()
    x = F.conv2d(x, g.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)
    return F.conv2d(x, g.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)


def ssim_per_sample(pred: Tensor, target: Tensor, window: Tensor, data_range: float = 1.0) -> Tensor:
    """Mean SSIM of each sample: (B, C, H, W) × 2 → (B,).

    With μ, σ², σ_pt the Gaussian-weighted local statistics,
    SSIM = (2 μ_p μ_t + C1)(2 σ_pt + C2) / ((μ_p² + μ_t² + C1)(σ_p² + σ_t² + C2)),
    C1 = (0.01 R)², C2 = (0.03 R)², R = data_range.
    """
    k = window.numel()
    if min(pred.shape[-2:]) < k:
        raise ValueError(
            f"SSIMLoss: images must be at least {k}x{k} for the {k}-tap window, "
            f"got {tuple(pred.shape[-2:])}; use larger crops"
        )
    g = window.to(device=pred.device, dtype=pred.dtype)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_p, mu_t = _filter(pred, g), _filter(target, g)
    # E[x²] − E[x]² etc.: the window weights sum to 1, so these are weighted (co)variances
    var_p = _filter(pred * pred, g) - mu_p ** 2
    var_t = _filter(target * target, g) - mu_t ** 2
    cov = _filter(pred * target, g) - mu_p * mu_t
    num = (2 * mu_p * mu_t + c1) * (2 * cov + c2)
    den = (mu_p ** 2 + mu_t ** 2 + c1) * (var_p + var_t + c2)
    return flat_mean(num / den)


@register_loss
class SSIMLoss(Loss):
    """1 − SSIM per sample.

    Shapes: pred, target (B, C, H, W) with H, W ≥ window_size → (B,),
    loss_b = w · (1 − mean_{c,h,w} SSIM_map), see :func:`ssim_per_sample`.

    Args:
        loss_weight: w.
        data_range: R, the value span of the images (1.0 for [0, 1]).
        window_size: taps of the Gaussian window (odd).
        sigma: its standard deviation in pixels.
    """

    def __init__(
        self,
        loss_weight: float = 1.0,
        data_range: float = 1.0,
        window_size: int = 11,
        sigma: float = 1.5,
    ) -> None:
        super().__init__(loss_weight)
        if not data_range > 0 or not sigma > 0:
            raise ValueError(f"SSIMLoss: data_range and sigma must be > 0, got {data_range!r}, {sigma!r}")
        if window_size < 1 or window_size % 2 == 0:
            raise ValueError(f"SSIMLoss: window_size must be a positive odd integer, got {window_size!r}")
        self.data_range = float(data_range)
        self.sigma = float(sigma)
        self.window_size = int(window_size)

    def per_sample(self, pred: Tensor, target: Tensor) -> Tensor:
        # 11 numbers, rebuilt per call in float64: a float32 buffer would cap float64 accuracy
        window = gaussian_window(self.window_size, self.sigma)
        # variances as E[x²] − E[x]² cancel badly in half precision: at least fp32, no autocast
        dtype = torch.promote_types(pred.dtype, torch.float32)
        with torch.autocast(pred.device.type, enabled=False):
            ssim = ssim_per_sample(pred.to(dtype), target.to(dtype), window, self.data_range)
        return (1.0 - ssim).to(pred.dtype)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, data_range={self.data_range:g}, "
                f"window_size={self.window_size}, sigma={self.sigma:g}")
