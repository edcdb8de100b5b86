"""Image quality metrics on (B, C, H, W) tensors in [0, 1], per sample."""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["psnr", "ssim"]


def psnr(pred: Tensor, target: Tensor, data_range: float = 1.0, crop: int = 0) -> Tensor:
    """PSNR in dB per sample: (B, C, H, W) × 2 → (B,). ``crop`` trims that many border pixels."""
    if crop:
        pred, target = pred[..., crop:-crop, crop:-crop], target[..., crop:-crop, crop:-crop]
    mse = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse.clamp_min(1e-12))


def ssim(pred: Tensor, target: Tensor, data_range: float = 1.0, size: int = 11, sigma: float = 1.5) -> Tensor:
    """SSIM per sample (Gaussian window, valid region, mean over channels): (B, C, H, W) × 2 → (B,)."""
    from .objectives.structural import gaussian_window, ssim_per_sample

    return ssim_per_sample(pred.float(), target.float(), gaussian_window(size, sigma), data_range)
