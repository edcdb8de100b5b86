"""Low-rank tunable layers: the pretrained weight stays frozen, each objective adds a delta.

``W(λ) = W_0 + Σ_i λ_i B_i A_i`` (PaLoRA's form, written here from the formula): ``W_0`` is the
pretrained weight, kept as a buffer (``base_weight``) that no optimizer sees; objective i owns
one rank-r factor pair, ``A_i`` starting random and ``B_i`` at zero, so the layer equals the
original at init for every λ. The factors are stored stacked on a leading axis of size p
(``lora_A``, ``lora_B``), one slice per objective in both λ spaces (there is no base slice: the
base is W_0). Layers receive the mixing coefficients ω every tunable layer gets, ω = λ on the
simplex and ω = (1, λ) in the box; the deltas take ω without its leading 1 in the box.

Bias: kept as a full tunable stack ``biases`` (K, out), mixed by ω like the full layers. It is
a few hundred numbers per layer, so a low-rank form would save nothing, and keeping it full
means a bias shift per objective (often what a restoration objective changes most) is free.

Shared λ: the deltas fold into one kernel ``W_0 + Σ λ_i B_i A_i`` and the plain op runs once;
under no-grad that kernel is cached like every mixed kernel (cache.py, all four inputs
checked). Per-sample λ: ``W_0 x + Σ_i λ_bi B_i (A_i x)``: every sample runs the same frozen
op, and λ scales the r-channel branch outputs per sample, so no per-sample kernel is ever built.

Shapes (linear): ``base_weight`` (out, in), ``lora_A`` (p, r, in), ``lora_B`` (p, out, r).
"""
from __future__ import annotations

import copy
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import TunableLayer, expand_rows, mix, stack_kernels
from .cache import KernelMemo, cacheable
from .module_layer import TunableModuleLayer, own_forward

__all__ = ["LowRankLayer", "LowRankLinear", "LOWRANK_SUFFIXES", "mixed_weight"]

# State-dict suffixes of the per-objective low-rank factors (leading axis p).
LOWRANK_SUFFIXES = (".lora_A", ".lora_B")


def mixed_weight(layer: "LowRankLayer", coeffs: Tensor) -> Tensor:
    """The folded weight of ``layer`` at shared coeffs (K,): what a graph reading ``conv.weight``
    gets (the fx rewriter splits per-sample calls by row for such reads)."""
    if coeffs.dim() != 1:
        raise RuntimeError("a low-rank layer's weight was read whole while λ is per sample; the tunified "
                           "model should have split the batch by λ. Call tm(x, lam=λ), or pass one λ.")
    return layer._shared_kernels(coeffs)[0]


class LowRankLayer(TunableModuleLayer):
    """A pretrained weight/bias module with a frozen weight and p low-rank deltas.

    Subclasses give the factor shapes (:meth:`factor_shapes`), the fold (:meth:`fold_delta`) and
    the per-sample branch form (:meth:`_run_per_sample`). ``rank``: r per objective (per group
    for grouped convs).
    """

    def __init__(self, base_layer: nn.Module, num_kernels: int, zero_tail: bool = False, rank: int = 4,
                 generator: Optional[torch.Generator] = None) -> None:
        TunableLayer.__init__(self)
        self.num_kernels, self.zero_tail, self.rank = int(num_kernels), bool(zero_tail), int(rank)
        p = self.num_kernels - 1 if zero_tail else self.num_kernels
        weight = base_layer.weight.detach()
        bias = getattr(base_layer, "bias", None)
        # A copy, not the caller's tensor: conversion shares the original's weights with the
        # working copy (api._copy_except_kernels), and the base must not follow later edits of it.
        self.register_buffer("base_weight", weight.clone())
        a_shape, b_shape, fan_in = self.factor_shapes(base_layer)
        bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default init scale (kaiming_uniform, a=√5)
        a = torch.empty((p, *a_shape)).uniform_(-bound, bound, generator=generator)
        self.lora_A = nn.Parameter(a.to(weight.device, weight.dtype))
        self.lora_B = nn.Parameter(torch.zeros((p, *b_shape), dtype=weight.dtype, device=weight.device))
        self.biases = None if bias is None else nn.Parameter(stack_kernels(bias, self.num_kernels, zero_tail))
        base_layer._parameters["weight"] = None
        if "bias" in base_layer._parameters:
            base_layer._parameters["bias"] = None
        self.base_layer = base_layer
        self.custom_forward = own_forward(base_layer, self.plain_type, self.plain_methods)

    # -- what subclasses say ---------------------------------------------------------------
    @classmethod
    def saves(cls, module: nn.Module, rank: int) -> bool:
        """Whether rank-r deltas are smaller than a full delta for ``module`` (else it stays full)."""
        raise NotImplementedError

    def factor_shapes(self, base_layer: nn.Module) -> Tuple[tuple, tuple, int]:
        """(shape of one A_i, shape of one B_i, fan-in of A)."""
        raise NotImplementedError

    def fold_delta(self, a: Tensor, b: Tensor, dc: Tensor) -> Tensor:
        """Σ_i dc_i B_i A_i as a weight shaped like base_weight; a, b stacks, dc (p,)."""
        raise NotImplementedError

    @property
    def weight(self) -> Tensor:  # type: ignore[override]
        """The folded weight at the scope's shared λ (code that inspects ``layer.weight``)."""
        return self._mixed_read(self.base_weight, "weight")

    # -- mixing ------------------------------------------------------------------------------
    def delta_coeffs(self, coeffs: Tensor) -> Tensor:
        """The deltas' share of ω: (K,) → (p,), (N, K) → (N, p) (the box drops its base 1)."""
        coeffs = coeffs[..., 1:] if self.zero_tail else coeffs
        return coeffs.to(self.lora_B.dtype)

    def _fold(self, tensors: tuple, coeffs: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        w0, a, b, biases = tensors
        weight = w0 + self.fold_delta(a, b, self.delta_coeffs(coeffs))
        return weight, None if biases is None else mix(biases, coeffs)

    def _shared_kernels(self, coeffs: Tensor) -> tuple:
        """(weight, bias) at coeffs (K,); cached under no-grad while all four inputs are unchanged."""
        params = self._parameters
        tensors = (self._buffers["base_weight"], params["lora_A"], params["lora_B"], params.get("biases"))
        if cacheable(coeffs, *tensors):
            memo = self.__dict__.get("_kernel_memo")
            if memo is None:
                memo = self.__dict__["_kernel_memo"] = KernelMemo()
            return memo.get(tensors, coeffs, self._fold, joint=True)
        return self._fold(tensors, coeffs)

    def _per_sample_bias(self, coeffs: Tensor) -> Optional[Tensor]:
        return None if self.biases is None else mix(self.biases, coeffs)

    # -- folding a fixed λ back into the original module -------------------------------------
    @torch.no_grad()
    def to_plain(self, coeffs: Tensor) -> nn.Module:
        """The original module type holding ``W_0 + Σ λ_i B_i A_i`` at ``coeffs`` (K,)."""
        plain = copy.deepcopy(self.base_layer)
        weight, bias = self._fold((self.base_weight, self.lora_A, self.lora_B, self.biases), coeffs)
        plain.weight = nn.Parameter(weight.clone())
        if bias is not None:
            plain.bias = nn.Parameter(bias.clone())
        return plain

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, kernels={self.num_kernels}, {self._base_repr(self.base_weight)})"


class LowRankLinear(LowRankLayer):
    """``nn.Linear`` with a frozen weight (out, in) and deltas B_i A_i: lora_A (p, r, in),
    lora_B (p, out, r); biases (K, out).

    forward(x (N, *, in), coeffs (K,) or (N, K)) → (N, *, out); rows folded per sample (window
    attention's (B·nW, N, C)) follow their sample.
    """

    plain_type = nn.Linear

    @classmethod
    def saves(cls, module: nn.Module, rank: int) -> bool:
        out, d = module.weight.shape
        return rank * (out + d) < out * d

    def factor_shapes(self, base_layer: nn.Module) -> Tuple[tuple, tuple, int]:
        out, d = base_layer.weight.shape
        return (self.rank, d), (out, self.rank), d

    def fold_delta(self, a: Tensor, b: Tensor, dc: Tensor) -> Tensor:
        p, out, r = b.shape
        return (b * dc[:, None, None]).permute(1, 0, 2).reshape(out, p * r) @ a.reshape(p * r, -1)

    def _plain_forward(self, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        return F.linear(x, weight, bias)

    def _run_per_sample(self, x: Tensor, coeffs: Tensor) -> Tensor:
        if x.dim() < 2:
            raise ValueError("a per-sample λ needs a batched input (N, ..., in) for a linear layer")
        n, (p, out, r) = coeffs.shape[0], self.lora_B.shape
        expand_rows(coeffs[:, :1], x.shape[0])  # raises if rows do not fold evenly into samples
        xs = x.reshape(n, -1, x.shape[-1])                                  # (N, rows, in)
        y = F.linear(xs, self.base_weight)
        z = F.linear(xs, self.lora_A.reshape(p * r, -1)).unflatten(-1, (p, r))   # (N, rows, p, r)
        z = (z * self.delta_coeffs(coeffs)[:, None, :, None]).flatten(-2)
        y = y + F.linear(z, self.lora_B.permute(1, 0, 2).reshape(out, p * r))
        bias = self._per_sample_bias(coeffs)
        if bias is not None:
            y = y + bias[:, None, :]
        return y.reshape(*x.shape[:-1], out)

