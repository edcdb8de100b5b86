"""Tunable fully connected layer.

Per-sample λ runs as one batched matmul with each sample's mixed weight, or as one matmul
against all K weights with the outputs mixed per sample, whichever measures faster (forms.py). Inputs
whose batch axis folds several rows per sample (window attention's (B·nW, N, C)) keep each
sample's rows together, so the weight is never copied per window.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import expand_rows, mix
from .forms import choose_form, needs_backward
from .module_layer import TunableModuleLayer

# The static rule, where forms are not measured (forms.py): rows per sample below which
# running all K weights beats building per-sample weights.
FEW_ROWS = 32

__all__ = ["TunableLinear", "linear_per_sample"]


def _k_outputs(xs: Tensor, coeffs: Tensor, weights: Tensor, bias: Optional[Tensor]) -> Tensor:
    """All K weights as one matmul, the K outputs mixed per sample: xs (B, L, in) → (B, L, out)."""
    b, (k, out, d) = coeffs.shape[0], weights.shape
    y = (xs @ weights.reshape(k * out, d).t()).reshape(b, -1, k, out)
    y = torch.einsum("blko,bk->blo", y, coeffs.to(y.dtype))
    return y if bias is None else y + bias[:, None, :]


def _batched(xs: Tensor, coeffs: Tensor, weights: Tensor, bias: Optional[Tensor]) -> Tensor:
    """Each sample's mixed weight in one batched matmul, the bias as its addend (a separate
    add is one more pass over y): xs (B, L, in) → (B, L, out)."""
    kern = mix(weights, coeffs).transpose(1, 2)
    if bias is None:
        return torch.bmm(xs, kern)
    return torch.baddbmm(bias[:, None, :].expand(xs.shape[0], xs.shape[1], kern.shape[2]), xs, kern)


_FORMS = {"k_outputs": _k_outputs, "batched": _batched}
_NAMES = ("k_outputs", "batched")


def linear_per_sample(x: Tensor, coeffs: Tensor, weights: Tensor, bias: Optional[Tensor]) -> Tensor:
    """Each sample with its own mixture of K weights.

    x (B·k, *, in) — k rows per sample, contiguous, as window attention folds windows into the
    batch — coeffs (B, K), weights (K, out, in), bias (B, out) or None → (B·k, *, out).
    Runs the faster of two exact forms for this signature (forms.py): all K weights as one
    matmul with the outputs mixed per sample, or each sample's mixed weight in one batched
    matmul (the static rule: the first below FEW_ROWS rows per sample).
    """
    if x.dim() < 2:
        raise ValueError("a per-sample λ needs a batched input (N, ..., in) for a linear layer")
    b, d = coeffs.shape[0], weights.shape[2]
    expand_rows(coeffs[:, :1], x.shape[0])  # raises if rows do not fold evenly into samples
    xs = x.reshape(b, -1, d)
    static = "k_outputs" if xs.shape[1] <= FEW_ROWS else "batched"
    key = ("linear", needs_backward(x, weights, bias), xs.shape, xs.stride(), weights.shape, bias is None,
           x.dtype, x.device)
    inputs = (xs, coeffs, weights, bias)
    y = _FORMS[choose_form(key, _FORMS, _NAMES, inputs, static)](*inputs)
    return y.reshape(*x.shape[:-1], weights.shape[1])


class TunableLinear(TunableModuleLayer):
    """``nn.Linear`` with K kernels (K, out, in) and biases (K, out).

    forward(x (N, *, in), coeffs (K,) or (N, K)) → (N, *, out).
    """

    plain_type = nn.Linear

    def _plain_forward(self, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        return F.linear(x, weight, bias)

    def _run_per_sample(self, x: Tensor, coeffs: Tensor) -> Tensor:
        return linear_per_sample(x, coeffs, self.weights, self._mixed_bias(coeffs))
