"""Functional forms, for models that call F.conv2d / F.linear on their own parameters.

The fx rewriter replaces such a call by one of these, with the parameter's stack (K, *W) in
place of the weight, so those call sites get per-sample λ as well.
"""
from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor

from .base import expand_rows, mix
from .cache import cached_mix
from .conv import conv2d_per_sample
from .linear import linear_per_sample

__all__ = ["tunable_conv2d", "tunable_linear"]


def tunable_conv2d(
    x: Tensor,
    coeffs: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    bias_is_stack: bool = False,
) -> Tensor:
    """``F.conv2d`` whose weight is a stack (K, out, in/g, kh, kw) mixed at ``coeffs``.

    x (B, C, H, W); coeffs (K,) or (B, K); bias: a stack (K, out) when ``bias_is_stack``, else
    a plain (out,) tensor or None. The fx rewriter puts this where a model calls F.conv2d on
    its own parameters.
    """
    if coeffs.dim() == 1:
        b = cached_mix(bias, coeffs, mix) if bias_is_stack and bias is not None else bias
        return F.conv2d(x, cached_mix(weight, coeffs, mix), b, stride, padding, dilation, groups)
    coeffs = expand_rows(coeffs, x.shape[0])
    b = None if bias is None else mix(bias, coeffs) if bias_is_stack else bias.expand(x.shape[0], -1)
    return conv2d_per_sample(x, coeffs, weight, b, stride, padding, dilation, groups)


def tunable_linear(x: Tensor, coeffs: Tensor, weight: Tensor, bias: Optional[Tensor] = None, bias_is_stack: bool = False) -> Tensor:
    """``F.linear`` whose weight is a stack (K, out, in); x (N, *, in), coeffs (K,) or (N, K)."""
    if coeffs.dim() == 1:
        b = cached_mix(bias, coeffs, mix) if bias_is_stack and bias is not None else bias
        return F.linear(x, cached_mix(weight, coeffs, mix), b)
    b = None if bias is None else mix(bias, coeffs) if bias_is_stack else bias.expand(coeffs.shape[0], -1)
    return linear_per_sample(x, coeffs, weight, b)
