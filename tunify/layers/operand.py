"""A weight-like tensor ``(1, *S')`` meeting an activation in one elementwise op, per sample.

NAFNet's ``x * self.beta`` with β (1, C, 1, 1) takes one β per sample by giving the mixed
tensor a leading sample axis. That is only right when the leading 1 lines up with the
activation's batch axis, i.e. when both have the same number of dimensions. A ``(1, 1, 1)``
temperature multiplied into ``(B, heads, N, N)`` attention lines its 1 up with the heads axis;
there the per-sample value must be ``(B, 1, 1, 1)``. :func:`mix_operand` looks at the other
operand at run time and shapes the mixture so that broadcasting gives each sample its own.
A tensor without a leading 1 (FDAT's ``scores * temp`` with temp (heads, 1, 1)) is right-aligned
by broadcasting, so when the other operand has more dimensions its sample axis goes in front.
"""
from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor

from .base import expand_rows, mix
from .cache import cached_mix

__all__ = ["mix_operand", "mix_operand_reshaped"]


def mix_operand(stack: Tensor, coeffs: Tensor, other: Any) -> Tensor:
    """stack (K, 1, *S') or (K, *S), coeffs (K,) or (N, K), other: the op's other operand.

    Shared coeffs → (1, *S') or (*S). Per sample, other (N·k, ...) with D ≥ 1 + len(S') dims →
    (N·k, 1, ..., 1, *S') with D dims, so that sample n meets its own mixture (rows folded per
    sample, as window attention folds windows, repeat each sample's row); a tensor without a
    leading 1 needs D > len(S) and gets its sample axis in front: (N·k, 1, ..., 1, *S).
    """
    if coeffs.dim() == 1:
        return cached_mix(stack, coeffs, mix)
    shape = tuple(stack.shape[1:])
    if (not shape or shape[0] != 1) and isinstance(other, Tensor) and other.dim() > len(shape):
        # No leading 1 of its own (FDAT's (heads, 1, 1) temperature times (B, heads, N, N)
        # scores): broadcasting right-aligns it, so the sample axis goes in front of it.
        return _per_sample(stack, coeffs, (1, *shape), other)
    if not shape or shape[0] != 1 or not isinstance(other, Tensor) or other.dim() < len(shape):
        raise ValueError(
            f"a per-sample λ cannot give each sample its own copy of a weight-like tensor of shape "
            f"{shape} here: the other operand leaves it no axis to meet the batch. "
            "Pass one λ shared by the batch, or exclude this tensor from `targets`."
        )
    return _per_sample(stack, coeffs, shape, other)


def _per_sample(stack: Tensor, coeffs: Tensor, shape: tuple, other: Tensor) -> Tensor:
    """Each sample's mixture of ``stack`` shaped (1, *T) as ``shape`` says, with its 1 turned
    into the sample axis and lined up with ``other``: (N·k, 1, ..., 1, *T) in other.dim() dims."""
    rows = expand_rows(coeffs, other.shape[0], "operand")
    mixed = mix(stack.reshape(stack.shape[0], -1), rows).reshape(rows.shape[0], *shape[1:])  # (N·k, *T)
    return mixed.reshape(mixed.shape[0], *([1] * (other.dim() - len(shape))), *shape[1:])


def mix_operand_reshaped(stack: Tensor, coeffs: Tensor, shape: Sequence[Any], other: Any) -> Tensor:
    """stack (K, *S) read as ``tensor.reshape(shape)`` before meeting ``other`` in one
    elementwise op, as ConvNeXt's ``x.mul(gamma.reshape(1, -1, 1, 1))`` with γ (C,).

    The reshape happens after mixing, so a per-sample λ works whenever the reshaped tensor has
    a leading 1 (its broadcast axis): each sample's mixture (S) is reshaped to ``shape`` with
    that 1 replaced by the sample, then lined up with ``other`` as :func:`mix_operand` does.
    Shared coeffs (K,) → ``mixture.reshape(shape)``, exactly the original read.
    """
    if coeffs.dim() == 1:
        return cached_mix(stack, coeffs, mix).reshape(*shape)
    target = tuple(stack[0].reshape(*shape).shape)
    if not target or target[0] != 1 or not isinstance(other, Tensor) or other.dim() < len(target):
        raise ValueError(
            f"a per-sample λ cannot give each sample its own copy of a weight-like tensor reshaped to "
            f"{target}: it has no leading broadcast axis that meets the batch. Pass one λ shared by the "
            "batch, or exclude this tensor from `targets`."
        )
    return _per_sample(stack, coeffs, target, other)
