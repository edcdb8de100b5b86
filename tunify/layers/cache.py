"""Mixed kernels kept between calls at one λ, so a shared λ costs what the plain model costs.

Without it every call re-mixes ``Σ_j ω_j W_j`` for every layer; on small inputs that costs
as much as the convolutions themselves. A layer keeps the last mixtures it computed (a
:class:`KernelMemo`) and reuses them only when nothing they depend on can have changed:

* each stack is the same Python object with the same ``_version`` (every in-place write
  autograd can see bumps it: ``optimizer.step``, ``copy_`` in ``load_state_dict``,
  ``with torch.no_grad(): w.add_(...)``), the same storage pointer and shape;
* the coefficients are equal in value (a new λ tensor with the same numbers still hits);
* the cached results were not written to in place (their own ``_version``);
* no ``.to()``/``.half()``/``load_state_dict`` ran on a tunable layer and no optimizer
  stepped since (those bump a global generation: a dtype round trip can reuse a storage
  address with an unchanged version counter).

It only serves calls that build no autograd graph (``torch.no_grad``, ``inference_mode``,
or nothing requiring grad), and never while compiling, exporting or tracing (the mixture
then belongs in the graph). One blind spot: writes through ``tensor.data`` bypass version
counters by design; after such writes call :func:`clear_kernel_cache`.

Memory: one mixed kernel per stack, i.e. one plain model's worth of weights at most.
The hit path is a handful of attribute reads (≈1 µs), so a cached layer costs what the
plain layer costs; see benchmarks/overhead.py.
"""
from __future__ import annotations

import contextlib
import weakref
from contextvars import ContextVar
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_post_hook

__all__ = ["KernelMemo", "RowBank", "cached_mix", "clear_kernel_cache", "kernel_cache_size", "memo_off",
           "canonical_coeffs", "cache_generation", "cacheable"]

_PLAIN_TYPES = (Tensor, nn.Parameter)
_GEN = [0]  # bumped by clear_kernel_cache: every memo of an older generation misses
_MEMOS: "weakref.WeakSet[KernelMemo]" = weakref.WeakSet()
# Memos of stacks that have no owning layer (functional calls, parametrizations): id → memo.
_BY_STACK: Dict[int, "KernelMemo"] = {}
# The last coeffs object seen and the canonical copy it equals: one model call hands the
# same ω tensor to every layer, so only the first layer pays for the value comparison.
_LAST: list = [None, -1, None]
# Recent distinct λ values (canonical copies), newest last; memos keyed on older ones miss.
_CANONS: list = []
_MAX_CANONS = 4
_is_compiling = torch.compiler.is_compiling
# Set while a module runs once per λ row (rows.py): each layer inside is called once per row,
# so its kernels are mixed at every row in one go and each row's call takes its slice. The
# memos (one λ each) would only thrash there: a miss costs ~3x a plain mix, mostly bookkeeping.
_BANK: ContextVar[Optional["RowBank"]] = ContextVar("tunify_row_bank", default=None)


_MEMO_OFF: ContextVar[bool] = ContextVar("tunify_memo_off", default=False)


@contextlib.contextmanager
def memo_off() -> Iterator[None]:
    """No memo is read or written inside (vmap_rows.py: batched coefficients)."""
    token = _MEMO_OFF.set(True)
    try:
        yield
    finally:
        _MEMO_OFF.reset(token)


class RowBank:
    """Kernels mixed at all G λ rows of one by-rows run: per stack (K, *S) → (G, *S), once."""

    __slots__ = ("rows", "g", "current", "mixed")

    def __init__(self, rows: Tensor) -> None:
        self.rows, self.g, self.current = rows, 0, None  # rows (G, K); current: rows[g], in scope
        self.mixed: Dict[int, tuple] = {}

    @contextlib.contextmanager
    def at(self, g: int) -> Iterator[Tensor]:
        """Row g's coefficients (K,), served from the bank while inside."""
        self.g, self.current = g, self.rows[g]
        token = _BANK.set(self)
        try:
            yield self.current
        finally:
            _BANK.reset(token)
            self.current = None

    def get(self, stacks: Sequence[Optional[Tensor]], coeffs: Tensor, fn: Callable[..., Any]) -> Optional[Tuple]:
        """``fn(stack, rows)[g]`` per stack: ``fn`` must take coefficient rows (G, K), as ``mix``
        (every memo's function) does."""
        if coeffs is not self.current:  # explicit coefficients of some other λ: not ours
            return None
        out = []
        for s in stacks:
            if s is None:
                out.append(None)
                continue
            hit = self.mixed.get(id(s))
            if hit is None or hit[0] is not s or hit[1] != s._version:
                hit = self.mixed[id(s)] = (s, s._version, fn(s, self.rows))
            out.append(hit[2][self.g])
        return tuple(out)
_tracing_state = torch._C._get_tracing_state


_EMPTY = (-1, None, (), (), (), ())


class KernelMemo:
    """The mixtures one layer computed at one λ, and what they were computed from.

    All of it is one tuple, ``state = (gen, canon, stacks, stamps, values, versions)``, read
    once per call and replaced whole: a thread never sees one λ's key beside another λ's
    values (two threads calling a model at two λ values would, with attributes set one by one).
    """

    __slots__ = ("state", "__weakref__")

    def __init__(self) -> None:
        self.state = _EMPTY

    # Copies and pickles start empty: cached tensors belong to the original's stacks.
    def __deepcopy__(self, memo: dict) -> "KernelMemo":
        return KernelMemo()

    def __reduce__(self):
        return (KernelMemo, ())

    @property
    def gen(self) -> int:
        return self.state[0]

    def drop(self) -> None:
        self.state = _EMPTY

    def get(self, stacks: Sequence[Optional[Tensor]], coeffs: Tensor, fn: Callable[..., Any], joint: bool = False) -> Tuple:
        """``fn(stack, coeffs)`` for every stack (None stays None), reused when valid.

        stacks: tensors (K, *S) or None; coeffs (K,). ``joint``: ``fn(stacks, coeffs)`` makes
        all the values at once (a low-rank layer folds W_0 and its factors into one kernel);
        the validity checks are the same, over every input tensor. Inside a by-rows run
        (RowBank) ``fn`` also gets all the rows (G, K) at once, as ``mix`` takes them.
        """
        bank = _BANK.get()
        if bank is not None and not joint:
            values = bank.get(stacks, coeffs, fn)
            if values is not None:
                return values
        canon = _canonical(coeffs)
        gen, held_canon, refs, stamps, held, versions = self.state  # one snapshot
        if gen == _GEN[0] and held_canon is canon and len(stacks) == len(refs):
            if joint:  # values are not one per stack here: check the inputs and the outputs apart
                if _inputs_unchanged(stacks, refs, stamps) and all(
                        v is None or v._version == vv for v, vv in zip(held, versions)):
                    return held
            else:
                for s, ms, st, v, vv in zip(stacks, refs, stamps, held, versions):
                    if s is None:
                        if ms is not None:
                            break
                    elif ms is None or ms() is not s or s._version != st[0] or s.data_ptr() != st[1] \
                            or s.shape != st[2] or v._version != vv:
                        break
                else:
                    return held
        # Built outside inference mode, so results have version counters that catch writes.
        with torch.inference_mode(False), torch.no_grad():
            values = tuple(fn(tuple(stacks), canon)) if joint else tuple(None if s is None else fn(s, canon) for s in stacks)
        # Weak references: a memo must not keep a replaced or freed stack alive.
        self.state = (_GEN[0], canon, tuple(None if s is None else weakref.ref(s) for s in stacks),
                      tuple(None if s is None else (s._version, s.data_ptr(), s.shape) for s in stacks),
                      values, tuple(None if v is None else v._version for v in values))
        _MEMOS.add(self)
        return values


def _inputs_unchanged(stacks: Sequence[Optional[Tensor]], refs: Tuple, stamps: Tuple) -> bool:
    for s, ms, st in zip(stacks, refs, stamps):
        if s is None:
            if ms is not None:
                return False
        elif ms is None or ms() is not s or s._version != st[0] or s.data_ptr() != st[1] or s.shape != st[2]:
            return False
    return True


def clear_kernel_cache() -> None:
    """Forget every cached mixture (needed by hand only after writes through ``tensor.data``)."""
    _GEN[0] += 1
    for memo in list(_MEMOS):
        memo.drop()
    _MEMOS.clear()
    _CANONS.clear()
    _LAST[:] = [None, -1, None]


def kernel_cache_size() -> int:
    """How many layers hold cached mixtures (for tests and memory accounting)."""
    return sum(1 for m in _MEMOS if m.gen == _GEN[0])


def _on_optimizer_step(optimizer, args, kwargs) -> None:
    # Version counters already catch optimizer updates; this is a second, independent guard
    # (fused or foreign optimizers that write storage directly).
    if _MEMOS:
        clear_kernel_cache()


register_optimizer_step_post_hook(_on_optimizer_step)


def cacheable(coeffs: Tensor, *stacks: Optional[Tensor]) -> bool:
    """Whether a call at ``coeffs`` may use cached mixtures of ``stacks``."""
    if coeffs.dim() != 1 or type(coeffs) is not Tensor or _MEMO_OFF.get() or _is_compiling() or _tracing_state() is not None:
        return False  # per-sample, or fake/functional/proxy tensors: compiling, exporting
    grad = torch.is_grad_enabled()
    for s in stacks:
        if s is not None and (type(s) not in _PLAIN_TYPES or (grad and s.requires_grad)):
            return False  # a mixture that needs grad must be part of this call's graph
    return not (grad and coeffs.requires_grad)


def _canonical(coeffs: Tensor) -> Tensor:
    """A cached tensor equal in value to ``coeffs``: the same object for equal λ."""
    ref, version, canon = _LAST
    tracked = not coeffs.is_inference()  # inference tensors have no version counter
    if tracked and ref is not None and ref() is coeffs and version == coeffs._version:
        return canon
    for c in reversed(_CANONS):
        if c.shape == coeffs.shape and c.dtype == coeffs.dtype and c.device == coeffs.device and torch.equal(c, coeffs):
            canon = c
            break
    else:
        with torch.inference_mode(False):
            canon = coeffs.detach().clone()
        _CANONS.append(canon)
        del _CANONS[:-_MAX_CANONS]
    _LAST[:] = [weakref.ref(coeffs), coeffs._version, canon] if tracked else [None, -1, None]
    return canon


def cached_mix(stack: Tensor, coeffs: Tensor, fn: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """``fn(stack, coeffs)`` for a stack without an owning layer, reused while valid.

    stack (K, *S), coeffs (K,) — the shared-λ path; anything else is computed afresh.
    """
    if not cacheable(coeffs, stack):
        return fn(stack, coeffs)
    key = id(stack)
    memo = _BY_STACK.get(key)
    if memo is None:
        memo = _BY_STACK[key] = KernelMemo()
        weakref.finalize(stack, _BY_STACK.pop, key, None)
    return memo.get((stack,), coeffs, fn)[0]


def canonical_coeffs(coeffs: Tensor) -> Tensor:
    """The canonical copy of shared coefficients (K,): the same object for every equal λ, so a
    cache keyed on it (the model's fast graph, surgery/fast.py) compares by identity."""
    return _canonical(coeffs)


def cache_generation() -> int:
    """Bumped by everything that can change a tensor behind its version counter's back
    (``.to()``, ``load_state_dict``, an optimizer step, :func:`clear_kernel_cache`)."""
    return _GEN[0]
