"""Pixel-wise fidelity losses: L1, MSE, Charbonnier and PSNR.

All map pred, target of shape (B, C, H, W) to one value per sample, shape (B,).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Loss, flat_mean
from .registry import register_loss

__all__ = ["L1Loss", "MSELoss", "CharbonnierLoss", "PSNRLoss", "rgb_to_y"]

# ITU-R BT.601 luma for RGB in [0, 1], giving Y in [16, 235] / 255 (studio swing)
_Y_COEFFS = (65.481, 128.553, 24.966)
_Y_OFFSET = 16.0


def rgb_to_y(img: Tensor) -> Tensor:
    """(B, 3, H, W) RGB in [0, 1] → (B, 1, H, W) BT.601 Y in [16/255, 235/255].

    Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255.
    """
    if img.dim() != 4 or img.shape[1] != 3:
        raise ValueError(f"to_y needs RGB images of shape (B, 3, H, W), got {tuple(img.shape)}")
    coeffs = img.new_tensor(_Y_COEFFS).view(1, 3, 1, 1)
    return ((img * coeffs).sum(dim=1, keepdim=True) + _Y_OFFSET) / 255.0


@register_loss
class L1Loss(Loss):
    """Mean absolute error per sample.

    Shapes: pred, target (B, C, H, W) → (B,), loss_b = w · mean_{c,h,w} |p − t|.
    """

    def per_sample(self, pred: Tensor, target: Tensor) -> Tensor:
        return flat_mean((pred - target).abs())


@register_loss
class MSELoss(Loss):
    """Mean squared error per sample.

    Shapes: pred, target (B, C, H, W) → (B,), loss_b = w · mean_{c,h,w} (p − t)².
    """

    def per_sample(self, pred: Tensor, target: Tensor) -> Tensor:
        return flat_mean((pred - target).square())


@register_loss
class CharbonnierLoss(Loss):
    """Charbonnier (smooth L1) loss per sample: robust like L1, differentiable at 0.

    Shapes: pred, target (B, C, H, W) → (B,), loss_b = w · mean_{c,h,w} sqrt((p − t)² + ε²).

    Args:
        loss_weight: w.
        eps: ε > 0; below it the loss behaves like a scaled L2.
    """

    def __init__(self, loss_weight: float = 1.0, eps: float = 1e-3) -> None:
        super().__init__(loss_weight)
        if not eps > 0:
            raise ValueError(f"CharbonnierLoss: eps must be > 0, got {eps!r}")
        self.eps = float(eps)

    def per_sample(self, pred: Tensor, target: Tensor) -> Tensor:
        return flat_mean(torch.sqrt((pred - target).square() + self.eps ** 2))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, eps={self.eps:g}"


@register_loss
class PSNRLoss(Loss):
    """Negative PSNR up to a constant, per sample.

    Shapes: pred, target (B, C, H, W) → (B,), loss_b = w · 10 · log10(MSE_b + 1e-8), with
    MSE_b = mean_{c,h,w} (p − t)². For images in [0, 1], PSNR_b = −10·log10(MSE_b), so
    minimising this maximises PSNR; the 1e-8 keeps the log finite for identical images.

    Args:
        loss_weight: w.
        to_y: compare the BT.601 luma Y of RGB inputs (C must be 3) instead of all channels,
            as super-resolution benchmarks usually report PSNR on Y.
    """

    def __init__(self, loss_weight: float = 1.0, to_y: bool = False) -> None:
        super().__init__(loss_weight)
        self.to_y = bool(to_y)

    def per_sample(self, pred: Tensor, target: Tensor) -> Tensor:
        if self.to_y:
            pred, target = rgb_to_y(pred), rgb_to_y(target)
        mse = flat_mean((pred - target).square())
        return (10.0 / math.log(10.0)) * torch.log(mse + 1e-8)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, to_y={self.to_y}"
