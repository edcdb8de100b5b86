"""Running a function once per group of samples on the rows of its input those samples own.

A module inside the model often sees the batch folded: window attention's input is
(B·m, N, C), each sample's m windows contiguous. For a per-sample λ (B, K), the samples that
share a λ row own a known set of rows; :func:`run_by_rows` runs ``fn`` on exactly those rows
at that row's shared coefficients (every tunable layer inside takes its fast shared path) and
puts the outputs back in row order. Which arguments are row-aligned is the caller's decision
(``split``): a (nW, N, N) attention mask must go whole. Autograd flows through it.
"""
from __future__ import annotations

from typing import Any, Callable, List, Sequence, Union

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_unflatten

from .base import coeff_scope
from .cache import RowBank

__all__ = ["RowsNotSeparable", "row_aligned", "run_by_rows"]


class RowsNotSeparable(RuntimeError, ValueError):
    """A per-sample λ cannot be followed here. A ValueError, so the tunified model falls back
    to running the whole model once per distinct λ row (exact) and reports the reason; a
    RuntimeError as well, which weight-like tensors raised before this class existed.
    ``tensor``: the path of the weight-like tensor that could not follow, when one is known."""

    def __init__(self, message: str, tensor: str = "") -> None:
        super().__init__(message)
        self.tensor = tensor


def row_aligned(leaves: Sequence[Any], samples: int, who: str) -> tuple:
    """(rows R of the first tensor, per leaf: whether its leading axis is R). R must be a
    multiple of ``samples``: R = B·m, m rows per sample."""
    first = next((t for t in leaves if isinstance(t, Tensor) and t.dim()), None)
    if first is None or first.shape[0] % samples:
        got = "no batched tensor" if first is None else f"a leading axis of {first.shape[0]}"
        raise RowsNotSeparable(f"{who} got {got}, not a multiple of the {samples} samples of the per-sample λ")
    rows = first.shape[0]
    return rows, tuple(isinstance(t, Tensor) and t.dim() > 0 and t.shape[0] == rows for t in leaves)


def _blocks(samples: Tensor, per_sample: int) -> Tensor:
    """Row indices of ``samples`` in the given order, m = ``per_sample`` rows each."""
    return (samples[:, None] * per_sample + torch.arange(per_sample)).reshape(-1)


def _row_index(samples: Tensor, per_sample: int) -> Union[slice, Tensor]:
    """Rows owned by ``samples`` (sorted ascending): a slice (a view, no copy) when contiguous."""
    first, count = int(samples[0]), samples.numel()
    if int(samples[-1]) - first + 1 == count:
        return slice(first * per_sample, (first + count) * per_sample)
    return _blocks(samples, per_sample)


def _take(t: Any, index: Union[slice, Tensor]) -> Any:
    return t[index] if isinstance(index, slice) else t.index_select(0, index.to(t.device))


def run_by_rows(fn: Callable[..., Any], coeffs: Tensor, groups: List[Tensor], leaves: list, spec: Any,
                split: tuple, who: str = "a module") -> Any:
    """``fn(*args, **kwargs)`` (``(args, kwargs)`` flattened to ``leaves``/``spec``) once per
    group of samples, on their rows of the leaves marked in ``split``, at the coefficients
    ``coeffs[group[0]]`` (K,); outputs merged back into row order.

    coeffs (B, K); split leaves (B·m, ...) → every tensor output (B·m', ...), m' rows per sample.
    """
    b = coeffs.shape[0]
    rows = next(t.shape[0] for t, s in zip(leaves, split) if s)
    outs = []
    # Under no-grad, the layers inside mix their kernels at all the rows at once (cache.RowBank).
    bank = RowBank(coeffs.index_select(0, torch.tensor([int(g[0]) for g in groups], device=coeffs.device)))
    for g, samples in enumerate(groups):
        index = _row_index(samples, rows // b)
        args, kwargs = tree_unflatten([_take(t, index) if s else t for t, s in zip(leaves, split)], spec)
        with bank.at(g) as row, coeff_scope(row):
            outs.append(fn(*args, **kwargs))
    return _merge(outs, groups, b, who)


def _merge(outs: list, groups: List[Tensor], b: int, who: str) -> Any:
    """Concatenate each tensor output over the groups and restore sample order."""
    flat = [tree_flatten(o) for o in outs]
    spec = flat[0][1]
    order = torch.cat(groups)
    in_order = bool((order == torch.arange(b)).all())
    merged = []
    for i, first in enumerate(flat[0][0]):
        if not isinstance(first, Tensor):
            merged.append(first)
            continue
        parts = [leaves[i] for leaves, _ in flat]
        per = first.shape[0] // groups[0].numel() if first.dim() else 0
        if not per or any(p.dim() == 0 or p.shape[0] != per * g.numel() for p, g in zip(parts, groups)):
            raise RowsNotSeparable(f"{who} returned a tensor of shape {tuple(first.shape)} that does not follow "
                                   "its input rows, so per-group outputs cannot be put back together")
        out = torch.cat(parts, 0)
        if not in_order:
            out = _take(out, _blocks(torch.argsort(order), per))  # sample s's rows sit at block argsort(order)[s]
        merged.append(out)
    return tree_unflatten(merged, spec)
