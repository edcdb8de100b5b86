"""Tunable fully connected layer.

Per-sample λ runs as one batched matmul (bmm) with a (B, in, out) weight per sample; inputs
whose batch axis folds several rows per sample (window attention's (B·nW, N, C)) follow
their sample through :func:`expand_rows`.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .module_layer import TunableModuleLayer

__all__ = ["TunableLinear", "linear_per_sample"]


def linear_per_sample(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """Each row with its own weight: x (N, *, in), weight (N, out, in), bias (N, out) or None
    → (N, *, out), as one batched matmul."""
    if x.dim() < 2:
        raise ValueError("a per-sample λ needs a batched input (N, ..., in) for a linear layer")
    n = x.shape[0]
    y = torch.bmm(x.reshape(n, -1, x.shape[-1]), weight.transpose(1, 2))
    if bias is not None:
        y = y + bias[:, None, :]
    return y.reshape(*x.shape[:-1], weight.shape[1])


class TunableLinear(TunableModuleLayer):
    """``nn.Linear`` with K kernels (K, out, in) and biases (K, out).

    forward(x (N, *, in), coeffs (K,) or (N, K)) → (N, *, out).
    """

    plain_type = nn.Linear

    def _plain_forward(self, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        return F.linear(x, weight, bias)

    def _run_per_sample(self, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        return linear_per_sample(x, weight, bias)
