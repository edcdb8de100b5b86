"""Tunable fully connected layer.

Per-sample λ runs as one batched matmul with each sample's mixed weight, or, with few rows
per sample, as one matmul against all K weights with the outputs mixed per sample. Inputs
whose batch axis folds several rows per sample (window attention's (B·nW, N, C)) keep each
sample's rows together, so the weight is never copied per window.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import expand_rows, mix
from .module_layer import TunableModuleLayer

# Rows per sample below which running all K weights beats building per-sample weights.
FEW_ROWS = 32

__all__ = ["TunableLinear", "linear_per_sample"]


def linear_per_sample(x: Tensor, coeffs: Tensor, weights: Tensor, bias: Optional[Tensor]) -> Tensor:
    """Each sample with its own mixture of K weights.

    x (B·k, *, in) — k rows per sample, contiguous, as window attention folds windows into the
    batch — coeffs (B, K), weights (K, out, in), bias (B, out) or None → (B·k, *, out).
    With few rows per sample, all K weights run as one matmul and the outputs are mixed per
    sample; otherwise each sample's mixed weight runs in one batched matmul.
    """
    if x.dim() < 2:
        raise ValueError("a per-sample λ needs a batched input (N, ..., in) for a linear layer")
    b, (k, out, d) = coeffs.shape[0], weights.shape
    expand_rows(coeffs[:, :1], x.shape[0])  # raises if rows do not fold evenly into samples
    xs = x.reshape(b, -1, d)
    if xs.shape[1] <= FEW_ROWS:
        y = (xs @ weights.reshape(k * out, d).t()).reshape(b, -1, k, out)
        y = torch.einsum("blko,bk->blo", y, coeffs.to(y.dtype))
        if bias is not None:
            y = y + bias[:, None, :]
    elif bias is None:
        y = torch.bmm(xs, mix(weights, coeffs).transpose(1, 2))
    else:  # the bias as the matmul's addend saves a pass over y
        y = torch.baddbmm(bias[:, None, :].expand(b, xs.shape[1], out), xs, mix(weights, coeffs).transpose(1, 2))
    return y.reshape(*x.shape[:-1], out)


class TunableLinear(TunableModuleLayer):
    """``nn.Linear`` with K kernels (K, out, in) and biases (K, out).

    forward(x (N, *, in), coeffs (K,) or (N, K)) → (N, *, out).
    """

    plain_type = nn.Linear

    def _plain_forward(self, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        return F.linear(x, weight, bias)

    def _run_per_sample(self, x: Tensor, coeffs: Tensor) -> Tensor:
        return linear_per_sample(x, coeffs, self.weights, self._mixed_bias(coeffs))
