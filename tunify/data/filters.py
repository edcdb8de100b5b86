"""Blur kernels and per-image filtering, the building blocks of the blur degradations.

Every image in a batch can have its own kernel. :func:`filter2d` runs the whole batch as one
grouped convolution (groups = B·C), which is much faster than a Python loop over images
and gives the same numbers. Borders use reflect padding (``d c b | a b c d``, OpenCV's
BORDER_REFLECT_101), so a constant image stays constant up to the edges.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["gaussian_kernel", "motion_kernel", "filter2d"]


def _check_size(kernel_size: int) -> None:
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer (the kernel needs a centre), got {kernel_size!r}")


def _grid(kernel_size: int, dtype: torch.dtype) -> Tensor:
    r = kernel_size // 2
    return torch.arange(-r, r + 1, dtype=dtype)


def gaussian_kernel(sigma: Tensor, kernel_size: int = 21) -> Tensor:
    """Isotropic Gaussian kernels, one per entry of ``sigma``.

    sigma: (B,) standard deviations in pixels; 0 gives a delta (identity filter).
    Returns (B, k, k) float32 kernels, each summing to 1 (truncated at the kernel border,
    then renormalised, as scipy.ndimage.gaussian_filter does).
    """
    _check_size(kernel_size)
    sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1).cpu()
    t = _grid(kernel_size, torch.float64)
    # clamp keeps 0/0 out of σ = 0; with σ = 1e-8 every tap but the centre underflows to 0
    g = torch.exp(-0.5 * (t / sigma.clamp_min(1e-8)) ** 2)
    g = g / g.sum(dim=1, keepdim=True)
    # far tails would be float32 denormals, which slow CPU convolutions ~10×; they are < 1e-8
    g = torch.where(g < 1e-8, torch.zeros_like(g), g)
    g = g / g.sum(dim=1, keepdim=True)
    return (g[:, :, None] * g[:, None, :]).float()


def motion_kernel(length: Tensor, angle: Tensor, kernel_size: int = 21) -> Tensor:
    """Linear motion-blur kernels: a line segment of ``length`` pixels through the centre.

    length: (B,) segment lengths in pixels (0 or less than 1 gives a delta); at most kernel_size.
    angle: (B,) directions in degrees, counter-clockwise from the +x axis as seen on screen
    (0 = horizontal, 90 = vertical; θ and θ + 180 give the same kernel).
    Returns (B, k, k) float32 kernels summing to 1. The segment is rasterised with a 1-pixel
    tent across it and a linear ramp at its ends, so a horizontal kernel of length L has
    exactly L units of weight on the centre row and sub-pixel lengths change it smoothly.
    """
    _check_size(kernel_size)
    length = torch.as_tensor(length, dtype=torch.float64).reshape(-1, 1, 1).cpu()
    theta = torch.deg2rad(torch.as_tensor(angle, dtype=torch.float64).reshape(-1, 1, 1).cpu())
    t = _grid(kernel_size, torch.float64)
    y, x = t[:, None], t[None, :]
    # rows grow downwards on screen, hence -sin: positive angles tilt the segment upwards
    dx, dy = torch.cos(theta), -torch.sin(theta)
    along = x * dx + y * dy
    across = -x * dy + y * dx
    w = (1 - across.abs()).clamp_min(0) * (length / 2 + 0.5 - along.abs()).clamp(0, 1)
    return (w / w.sum(dim=(1, 2), keepdim=True)).float()


def filter2d(x: Tensor, kernels: Tensor) -> Tensor:
    """Correlate each image with its own kernel, reflect-padded so the size is kept.

    x: (B, C, H, W); kernels: (B, k, k) or (k, k) for all images, odd k, applied to every
    channel. H and W must exceed k // 2 (a reflect-padding limit). Returns (B, C, H, W).
    """
    if x.dim() != 4:
        raise ValueError(f"filter2d expects a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    if kernels.dim() == 2:
        kernels = kernels.expand(b, *kernels.shape)
    if kernels.shape[0] != b or kernels.shape[1] != kernels.shape[2] or kernels.shape[1] % 2 == 0:
        raise ValueError(f"expected {b} square odd-sized kernels, got shape {tuple(kernels.shape)}")
    k = kernels.shape[-1]
    pad = k // 2
    if pad >= min(h, w):
        raise ValueError(
            f"a {h}×{w} image is too small for a {k}×{k} kernel (reflect padding needs H, W > {pad}); "
            f"use a kernel_size below {2 * min(h, w)} or larger patches"
        )
    if pad == 0:
        return x * kernels.to(x)[:, None, :, :]
    weight = kernels.to(x).repeat_interleave(c, dim=0)[:, None]  # (B·C, 1, k, k)
    padded = F.pad(x.reshape(1, b * c, h, w), (pad, pad, pad, pad), mode="reflect")
    return F.conv2d(padded, weight, groups=b * c).reshape(b, c, h, w)

