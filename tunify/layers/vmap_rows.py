"""An owner run once for all samples under ``torch.func.vmap``, instead of once per λ row.

By rows (rows.py), SwinIR's window attention runs G times on a G-th of its windows: G times
the Python of its forward, smaller matmuls. Under ``vmap`` over samples it runs once: each
sample's rows (m of them) and its own coefficients (K,) are one vmapped slice, so the bias
table read inside mixes to one table per sample and the qkv/proj layers to one weight per
sample, all as batched ops. On the tiny SwinIR's attention: 0.8 ms against 2.0 ms by rows
(0.4 ms for the whole batch at one shared λ).

Not every forward vmaps (``.item()``, in-place writes of batched values into buffers,
tensor-valued Python numbers): the owner wrapper (owner_split.py) tries it only after by-rows was
proved exact, and keeps it only where it matches by-rows at the call's own per-sample λ;
otherwise by-rows stays. Kernel memos are off inside (their value checks cannot run on
batched coefficients).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_unflatten

from .base import coeff_scope
from .cache import memo_off

__all__ = ["run_vmapped"]

_TENSOR = object()  # where a tensor output goes back


def run_vmapped(fn: Callable[..., Any], coeffs: Tensor, leaves: list, spec: Any, split: tuple) -> Any:
    """``fn(*args, **kwargs)`` per sample under vmap; coeffs (B, K); split leaves (B·m, ...)
    → every tensor output (B·m', ...); anything else in the output (None, a number) as the
    one traced run gave it."""
    b = coeffs.shape[0]
    picked = [t.reshape(b, t.shape[0] // b, *t.shape[1:]) for t, s in zip(leaves, split) if s]

    seen: dict = {}  # what vmap cannot return (GFPGAN's decoder gives (image, None)), from its one trace

    def one(c: Tensor, *rows: Tensor) -> tuple:
        it = iter(rows)
        args, kwargs = tree_unflatten([next(it) if s else t for t, s in zip(leaves, split)], spec)
        with coeff_scope(c), memo_off():
            flat, seen["spec"] = tree_flatten(fn(*args, **kwargs))
        seen["flat"] = [_TENSOR if isinstance(t, Tensor) else t for t in flat]
        return tuple(t for t in flat if isinstance(t, Tensor))

    tensors = iter(torch.func.vmap(one, randomness="different")(coeffs, *picked))
    flat = [_samples_to_rows(next(tensors)) if t is _TENSOR else t for t in seen["flat"]]
    return tree_unflatten(flat, seen["spec"])


def _samples_to_rows(t: Tensor) -> Tensor:
    """(B, m', ...) → (B·m', ...)."""
    return t.reshape(-1, *t.shape[2:])
