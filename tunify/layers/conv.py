"""Tunable 2-D convolutions.

Shared λ: mix the K kernels once, then one ordinary convolution (the cost of the original).
Per-sample λ: every sample meets its own kernel in one call, in the form that is fastest
for the shape (see :func:`conv2d_per_sample`): a grouped convolution with ``groups =
B·groups`` (the batch folded into the channels), a batched matmul for pointwise kernels, or,
on tiny feature maps, all K kernels at once with the outputs mixed per sample.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import expand_rows, mix
from .module_layer import TunableModuleLayer

__all__ = ["TunableConv2d", "TunableConvTranspose2d", "conv2d_per_sample"]


def _ones(stride) -> bool:
    return all(v == 1 for v in stride) if isinstance(stride, (tuple, list)) else stride == 1


# Below this many input pixels a per-sample kernel costs more to build (B copies of the
# weight, and their gradients) than to skip: run all K kernels as one wider convolution and
# mix the K outputs per sample instead. Measured crossover on CPUs: 16-64 pixels. Dense convs
# only: a grouped conv (NAFNet's depthwise ones) made K times wider runs mkldnn's slow path,
# 1.4-14x a plain step at 2x2-8x8 (fwd+bwd, B=8), where the B·groups grouped form costs 0.95-1.5x.
FEW_PIXELS = 32


def conv2d_per_sample(
    x: Tensor, coeffs: Tensor, weights: Tensor, bias: Optional[Tensor], stride=1, padding=0, dilation=1,
    groups: int = 1,
) -> Tensor:
    """Each sample with its own mixture of K kernels.

    x (B, C, H, W), coeffs (B, K), weights (K, out, C/groups, kh, kw), bias (B, out) or None
    → (B, out, H', W'). Picks one of three exact forms by shape: K-wide convolution with
    per-sample output mixing (few pixels), one batched matmul (pointwise), or one grouped
    convolution with B·groups groups (the rest).
    """
    b, c, h, w = x.shape
    k, out = weights.shape[:2]
    if h * w <= FEW_PIXELS and groups == 1:
        rest = weights.shape[2:]
        # Interleave so that each group's K·out/g output channels stay contiguous.
        wide = weights.reshape(k, groups, out // groups, *rest).transpose(0, 1).reshape(-1, *rest)
        y = F.conv2d(x, wide, None, stride, padding, dilation, groups)
        y = y.reshape(b, groups, k, out // groups, *y.shape[-2:])
        y = torch.einsum("bgkohw,bk->bgohw", y, coeffs.to(y.dtype)).reshape(b, out, *y.shape[-2:])
    elif groups == 1 and weights.shape[-2:] == (1, 1) and _ones(stride) and padding in (0, (0, 0), "valid", "same"):
        # Pointwise: one batched matmul, which trains several times faster on CPUs than a
        # grouped convolution with B groups (its weight gradient is B small kernels). The
        # bias goes in as the matmul's addend: a separate add is one more pass over y.
        kern, xs = mix(weights, coeffs).reshape(b, out, c), x.reshape(b, c, h * w)
        y = torch.bmm(kern, xs) if bias is None else torch.baddbmm(bias[:, :, None].expand(b, out, h * w), kern, xs)
        return y.reshape(b, out, h, w)
    else:
        # Each sample's bias is the bias of its own B·groups channels: the conv adds it.
        weight = mix(weights, coeffs)
        y = F.conv2d(x.reshape(1, b * c, h, w), weight.reshape(-1, *weight.shape[2:]),
                     None if bias is None else bias.reshape(-1), stride, padding, dilation, groups * b)
        return y.reshape(b, out, *y.shape[-2:])
    return y if bias is None else y + bias[:, :, None, None]


class TunableConv2d(TunableModuleLayer):
    """``nn.Conv2d`` with K kernels (K, out, in/groups, kh, kw) and biases (K, out).

    forward(x (B, C, H, W), coeffs (K,) or (B, K)) → (B, out, H', W'). Any stride, dilation,
    groups, ``padding='same'`` and padding modes zeros/reflect/replicate/circular.
    """

    plain_type = nn.Conv2d
    plain_methods = ("forward", "_conv_forward")

    def _plain_forward(self, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        return self._modules["base_layer"]._conv_forward(x, weight, bias)

    def _run_per_sample(self, x: Tensor, coeffs: Tensor) -> Tensor:
        base = self.base_layer
        coeffs = expand_rows(coeffs, x.shape[0])
        padding = base.padding
        if base.padding_mode != "zeros":
            x = F.pad(x, base._reversed_padding_repeated_twice, mode=base.padding_mode)
            padding = 0
        return conv2d_per_sample(x, coeffs, self.weights, self._mixed_bias(coeffs), base.stride, padding,
                                 base.dilation, base.groups)


class TunableConvTranspose2d(TunableModuleLayer):
    """``nn.ConvTranspose2d`` with K kernels (K, in, out/groups, kh, kw) and biases (K, out).

    forward(x (B, C, H, W), output_size=None, coeffs (K,) or (B, K)) → (B, out, H', W');
    output_padding and groups as in the original.
    """

    plain_type = nn.ConvTranspose2d
    plain_methods = ("forward", "_output_padding")

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

    def _run_per_sample(self, x: Tensor, coeffs: Tensor, output_size: Optional[list] = None) -> Tensor:
        base = self.base_layer
        coeffs = expand_rows(coeffs, x.shape[0])
        weight, bias = mix(self.weights, coeffs), self._mixed_bias(coeffs)
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
