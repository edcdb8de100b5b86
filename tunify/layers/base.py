"""What every tunable layer shares: the base class, the mixing rule and the λ scope.

A tunable layer stores K kernels stacked on a leading axis and runs with their mixture
``W(ω) = Σ_j ω_j W_j``. The layer never sees λ itself: the model turns λ into mixing
coefficients ω once per call (ω = λ on the simplex, ω = (1, λ) in the box, where kernel 0 is
the base and the others are deltas) and hands ω down. Layers called from code that fx could
not trace (kept-whole submodules, the module path) read ω from a context scope instead.

Shapes used throughout: ``coeffs`` is ``(K,)`` (one mixture for the whole batch: the fast
path) or ``(N, K)`` (one mixture per sample).
"""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Any, Callable, Iterator, List, Optional

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

__all__ = [
    "TunableLayer",
    "coeff_scope",
    "current_coeffs",
    "mix",
    "expand_rows",
    "row_groups",
    "scope_reads",
    "split_by_rows",
    "stack_kernels",
]

_COEFFS: ContextVar[Optional[Tensor]] = ContextVar("tunify_coeffs", default=None)
_READS: ContextVar[Optional[List[str]]] = ContextVar("tunify_scope_reads", default=None)


@contextlib.contextmanager
def coeff_scope(coeffs: Optional[Tensor]) -> Iterator[None]:
    """Make ``coeffs`` ((K,) or (N, K)) the mixing coefficients of every tunable layer
    called inside the block without explicit coefficients."""
    token = _COEFFS.set(coeffs)
    try:
        yield
    finally:
        _COEFFS.reset(token)


@contextlib.contextmanager
def scope_reads() -> Iterator[List[str]]:
    """Inside, the first read of the scope (:func:`current_coeffs`) puts its reader in the list
    yielded: an empty list after a run means every coefficient came in as an argument."""
    reads: List[str] = []
    token = _READS.set(reads)
    try:
        yield reads
    finally:
        _READS.reset(token)


def current_coeffs(who: str = "a tunable layer") -> Tensor:
    """The coefficients of the innermost :func:`coeff_scope`; raises if there is none."""
    coeffs = _COEFFS.get()
    reads = _READS.get()
    if reads is not None and not reads:  # one reader answers the question; the rest are hot-path calls
        reads.append(who)
    if coeffs is None:
        raise RuntimeError(
            f"{who} ran without a control vector λ. Call the tunified model as "
            "tm(x, lam=λ), or wrap direct calls of its submodules or methods in "
            "`with tm.lam_scope(λ): ...`."
        )
    return coeffs


def mix(stack: Tensor, coeffs: Tensor) -> Tensor:
    """Mix a stack of K kernels.

    stack: (K, *S). coeffs: (K,) → returns (*S); (N, K) → returns (N, *S).
    """
    # A weighted sum over the leading axis; tensordot keeps it one BLAS call either way.
    return torch.tensordot(coeffs.to(dtype=stack.dtype), stack, dims=1)


def expand_rows(coeffs: Tensor, rows: int, what: str = "input") -> Tensor:
    """Follow samples folded into the batch axis.

    Window attention reshapes (B, ...) into (B·nW, ...), keeping each sample's windows
    contiguous, so a per-sample ``coeffs`` (B, K) becomes (B·nW, K) by repeating each row.
    """
    n = coeffs.shape[0]
    if rows == n:
        return coeffs
    if rows % n:
        raise ValueError(
            f"per-sample λ has {n} rows but the {what} of this layer has a leading axis of "
            f"{rows}, which is not a multiple of {n}: the layer cannot tell which sample each "
            "row belongs to. Pass one λ shared by the batch, or exclude this layer."
        )
    return coeffs.repeat_interleave(rows // n, dim=0)


def stack_kernels(tensor: Tensor, num_kernels: int, zero_tail: bool) -> Tensor:
    """K copies of a pretrained tensor: (*S) → (K, *S).

    ``zero_tail`` keeps copy 0 and zeroes the others (the box space: base + deltas), so the
    mixture equals the pretrained tensor for every valid λ either way.
    """
    tensor = tensor.detach()
    stack = torch.empty((num_kernels, *tensor.shape), dtype=tensor.dtype, device=tensor.device)
    if zero_tail:
        stack[0].copy_(tensor)
        stack[1:].zero_()
    else:
        stack.copy_(tensor.expand_as(stack))  # one pass over memory; this dominates conversion time
    return stack


def row_groups(coeffs: Tensor) -> List[Tensor]:
    """Sample indices (CPU int64) sharing each distinct row of ``coeffs`` (B, K), groups in
    order of their first sample (so all-distinct rows give [[0], [1], ...])."""
    # One host copy and a dict: torch.unique(dim=0) costs ~0.7 ms here, a small model's forward.
    found: dict = {}
    for i, row in enumerate(coeffs.detach().cpu().tolist()):
        found.setdefault(tuple(row), []).append(i)
    return [torch.tensor(idx) for idx in found.values()]


def split_by_rows(fn: Callable[..., Any], coeffs: Tensor, args: tuple, kwargs: dict) -> Any:
    """Run ``fn(*args, coeffs=row, **kwargs)`` once per distinct row of ``coeffs`` (N, K),
    on the samples that share that row, and put the outputs back in sample order.

    Tensors in args/kwargs whose leading axis is N are split; everything else is passed
    whole. This is the exact fallback for code that cannot take a per-sample kernel (a
    weight-like tensor indexed or reshaped in the forward): each group runs on the fast
    shared path. Autograd flows through it.
    """
    n = coeffs.shape[0]

    def take(idx: Tensor) -> Callable[[Any], Any]:
        return lambda a: a.index_select(0, idx.to(a.device)) if isinstance(a, Tensor) and a.dim() and a.shape[0] == n else a

    outs, order = [], []
    for idx in row_groups(coeffs):
        pick = take(idx)
        outs.append(fn(*tree_map(pick, args), coeffs=coeffs[int(idx[0])], **tree_map(pick, kwargs)))
        order.append(idx)
    if len(outs) == 1:
        return outs[0]
    restore = torch.argsort(torch.cat(order))
    leaves = [tree_flatten(o)[0] for o in outs]
    spec = tree_flatten(outs[0])[1]
    merged = []
    for parts in zip(*leaves):
        if isinstance(parts[0], Tensor) and parts[0].dim():
            merged.append(torch.cat(parts, 0).index_select(0, restore.to(parts[0].device)))
        else:
            merged.append(parts[0])
    return tree_unflatten(merged, spec)


class TunableLayer(nn.Module):
    """Base class of every tunable layer: K stacked kernels mixed by coefficients ω."""

    num_kernels: int

    # .to()/.half()/.cuda() and load_state_dict reach every tunable layer: drop cached
    # mixtures (cache.py) rather than trust storage addresses that a conversion may reuse.
    def _apply(self, fn, recurse: bool = True):
        from .cache import clear_kernel_cache

        clear_kernel_cache()
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        from .cache import clear_kernel_cache

        clear_kernel_cache()
        super()._load_from_state_dict(*args, **kwargs)

    def _coeffs(self, coeffs: Optional[Tensor]) -> Tensor:
        if coeffs is None:
            coeffs = current_coeffs(type(self).__name__)
        if coeffs.shape[-1] != self.num_kernels:
            raise ValueError(
                f"{type(self).__name__} holds {self.num_kernels} kernels but got mixing "
                f"coefficients of shape {tuple(coeffs.shape)}"
            )
        return coeffs
