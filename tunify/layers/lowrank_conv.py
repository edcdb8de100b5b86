"""The low-rank tunable 2-D convolution (see lowrank.py for the form and the bias choice).

``A_i`` is a convolution with the original's kernel size, stride, padding, padding mode,
dilation and groups, from ``in`` down to r channels per group; ``B_i`` is a 1×1 convolution
back up to ``out`` (same groups). A 1×1 stride-1 conv after a conv composes into one conv with
the first one's geometry, so ``B_i A_i`` folds exactly into a kernel shaped like the original.

Shapes, with g groups and r per group: ``base_weight`` (out, in/g, kh, kw), ``lora_A``
(p, g·r, in/g, kh, kw), ``lora_B`` (p, out, r, 1, 1). The issue's plain case (g = 1) is
``lora_A`` (p, r, in, kh, kw). A layer where rank-r factors would hold as many numbers as a
full delta (depthwise convs: one input channel per group) stays a full TunableConv2d: the
surgery asks :meth:`LowRankConv2d.saves` first.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import expand_rows
from .lowrank import LowRankLayer

__all__ = ["LowRankConv2d"]


class LowRankConv2d(LowRankLayer):
    """``nn.Conv2d`` with a frozen kernel and p rank-r deltas (conv A_i down, 1×1 B_i up).

    forward(x (B, C, H, W), coeffs (K,) or (B, K)) → (B, out, H', W'). Any stride, dilation,
    groups, ``padding='same'`` and padding mode (A_i pads exactly as the original does).
    """

    plain_type = nn.Conv2d
    plain_methods = ("forward", "_conv_forward")

    @classmethod
    def saves(cls, module: nn.Module, rank: int) -> bool:
        out, n_in = module.weight.shape[:2]
        m, n = out // module.groups, n_in * module.weight.shape[2] * module.weight.shape[3]
        return rank * (m + n) < m * n

    def factor_shapes(self, base_layer: nn.Module) -> Tuple[tuple, tuple, int]:
        out, n_in, kh, kw = base_layer.weight.shape
        g = base_layer.groups
        return (g * self.rank, n_in, kh, kw), (out, self.rank, 1, 1), n_in * kh * kw

    def fold_delta(self, a: Tensor, b: Tensor, dc: Tensor) -> Tensor:
        """Σ_i dc_i B_i A_i per group: (out, in/g, kh, kw) from a (p, g·r, in/g, kh, kw), b (p, out, r, 1, 1)."""
        p, out, r = b.shape[:3]
        g = a.shape[1] // r
        bs = (b.reshape(p, g, out // g, r) * dc[:, None, None, None]).permute(1, 2, 0, 3).reshape(g, out // g, p * r)
        as_ = a.reshape(p, g, r, -1).permute(1, 0, 2, 3).reshape(g, p * r, -1)
        return torch.bmm(bs, as_).reshape(out, *a.shape[2:])

    def _plain_forward(self, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        return self._modules["base_layer"]._conv_forward(x, weight, bias)

    def _run_per_sample(self, x: Tensor, coeffs: Tensor) -> Tensor:
        """W_0 x + Σ_i λ_bi B_i (A_i x) + b_b: λ scales the r-channel branches per sample."""
        base = self._modules["base_layer"]
        coeffs = expand_rows(coeffs, x.shape[0])
        a, b = self.lora_A, self.lora_B
        p, out, r = b.shape[:3]
        g = base.groups
        y = base._conv_forward(x, self.base_weight, None)
        # All p A_i as one conv; within each group its channels run (objective, rank).
        a_all = a.reshape(p, g, r, *a.shape[2:]).transpose(0, 1).reshape(g * p * r, *a.shape[2:])
        z = base._conv_forward(x, a_all, None)                                   # (B, g·p·r, H', W')
        z = z.unflatten(1, (g, p, r)) * self.delta_coeffs(coeffs)[:, None, :, None, None, None]
        b_all = b.reshape(p, g, out // g, r).permute(1, 2, 0, 3).reshape(out, p * r, 1, 1)
        y = y + F.conv2d(z.flatten(1, 3), b_all, None, 1, 0, 1, g)
        bias = self._per_sample_bias(coeffs)
        return y if bias is None else y + bias[:, :, None, None]
