"""Tunable 2-D convolutions.

Shared λ: mix the K kernels once, then one ordinary convolution (the cost of the original).
Per-sample λ: fold the batch into the channels and run one grouped convolution with
``groups = B·groups`` (timm's CondConv2d trick), so every sample meets its own kernel in a
single call.
"""
from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn

from .module_layer import TunableModuleLayer

__all__ = ["TunableConv2d", "TunableConvTranspose2d", "conv2d_per_sample"]


def conv2d_per_sample(
    x: Tensor, weight: Tensor, bias: Optional[Tensor], stride=1, padding=0, dilation=1, groups: int = 1
) -> Tensor:
    """Each sample with its own kernel: x (B, C, H, W), weight (B, out, C/groups, kh, kw),
    bias (B, out) or None → (B, out, H', W'), as one grouped convolution."""
    b, c, h, w = x.shape
    y = F.conv2d(
        x.reshape(1, b * c, h, w), weight.reshape(-1, *weight.shape[2:]), None, stride, padding, dilation, groups * b
    )
    y = y.reshape(b, weight.shape[1], *y.shape[-2:])
    return y if bias is None else y + bias[:, :, None, None]


class TunableConv2d(TunableModuleLayer):
    """``nn.Conv2d`` with K kernels (K, out, in/groups, kh, kw) and biases (K, out).

    forward(x (B, C, H, W), coeffs (K,) or (B, K)) → (B, out, H', W'). Any stride, dilation,
    groups, ``padding='same'`` and padding modes zeros/reflect/replicate/circular.
    """

    plain_type = nn.Conv2d

    def _plain_forward(self, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        return self.base_layer._conv_forward(x, weight, bias)

    def _run_per_sample(self, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        base = self.base_layer
        padding = base.padding
        if base.padding_mode != "zeros":
            x = F.pad(x, base._reversed_padding_repeated_twice, mode=base.padding_mode)
            padding = 0
        return conv2d_per_sample(x, weight, bias, base.stride, padding, base.dilation, base.groups)


class TunableConvTranspose2d(TunableModuleLayer):
    """``nn.ConvTranspose2d`` with K kernels (K, in, out/groups, kh, kw) and biases (K, out).

    forward(x (B, C, H, W), output_size=None, coeffs (K,) or (B, K)) → (B, out, H', W');
    output_padding and groups as in the original.
    """

    plain_type = nn.ConvTranspose2d

    def _plain_forward(
        self, x: Tensor, weight: Tensor, bias: Optional[Tensor], output_size: Optional[list] = None
    ) -> Tensor:
        base = self.base_layer
        output_padding = base._output_padding(
            x, output_size, base.stride, base.padding, base.kernel_size, 2, base.dilation
        )
        return F.conv_transpose2d(
            x, weight, bias, base.stride, base.padding, output_padding, base.groups, base.dilation
        )

    def _run_per_sample(
        self, x: Tensor, weight: Tensor, bias: Optional[Tensor], output_size: Optional[list] = None
    ) -> Tensor:
        base = self.base_layer
        b, c, h, w = x.shape
        output_padding = base._output_padding(
            x, output_size, base.stride, base.padding, base.kernel_size, 2, base.dilation
        )
        # Transposed weights are (in, out/groups, kh, kw): the batch folds into `in`.
        y = F.conv_transpose2d(
            x.reshape(1, b * c, h, w),
            weight.reshape(b * weight.shape[1], *weight.shape[2:]),
            None,
            base.stride,
            base.padding,
            output_padding,
            base.groups * b,
            base.dilation,
        )
        y = y.reshape(b, -1, *y.shape[-2:])
        return y if bias is None else y + bias[:, :, None, None]
