"""Mixed kernels kept between calls at one λ, so a shared λ costs what the plain model costs.

Without it every call re-mixes ``Σ_j ω_j W_j`` for every layer; on small inputs that costs
as much as the convolutions themselves. The cache holds, per kernel stack, the last mixture
it computed and reuses it only when nothing it depends on can have changed:

* the stack is the same Python object with the same ``_version`` (every in-place write
  under autograd's eyes bumps it: ``optimizer.step``, ``copy_`` in ``load_state_dict``,
  ``with torch.no_grad(): w.add_(...)``), the same storage pointer, dtype, device and shape;
* the coefficients are equal in value (a new λ tensor with the same numbers still hits);
* the cached result itself was not written to in place (its own ``_version``);
* no ``.to()``/``.half()``/``load_state_dict`` ran on a tunable layer and no optimizer
  stepped since (those clear the whole cache: a dtype round trip can reuse a storage
  address with an unchanged version counter).

It only serves calls that build no autograd graph (``torch.no_grad``, ``inference_mode``,
or nothing requiring grad), and never while compiling, exporting or tracing (the mixture
then belongs in the graph). One blind spot: writes through ``tensor.data`` bypass version
counters by design; after such writes call :func:`clear_kernel_cache`.

Memory: one mixed kernel per stack, i.e. one plain model's worth of weights at most.
"""
from __future__ import annotations

import weakref
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_post_hook

__all__ = ["cached_mix", "clear_kernel_cache", "kernel_cache_size"]

_PLAIN_TYPES = (Tensor, nn.Parameter)
# id(stack) -> (weakref to stack, stamp of stack, canonical coeffs, mixed value, value's _version)
_ENTRIES: Dict[int, tuple] = {}
# The last coeffs object seen and the canonical copy it equals: one model call hands the
# same ω tensor to every layer, so only the first layer pays for the value comparison.
_LAST: list = [None, -1, None]
# Recent distinct λ values (canonical copies), newest last; entries keyed on older ones miss.
_CANONS: list = []
_MAX_CANONS = 4


def clear_kernel_cache() -> None:
    """Forget every cached mixture (needed only after writes through ``tensor.data``)."""
    _ENTRIES.clear()
    _CANONS.clear()
    _LAST[:] = [None, -1, None]


def kernel_cache_size() -> int:
    """How many mixtures are held (for tests and memory accounting)."""
    return len(_ENTRIES)


def _on_optimizer_step(optimizer, args, kwargs) -> None:
    # Version counters already catch optimizer updates; this is a second, independent guard
    # (fused or foreign optimizers that write storage directly).
    if _ENTRIES:
        clear_kernel_cache()


register_optimizer_step_post_hook(_on_optimizer_step)


def _cacheable(stack: Tensor, coeffs: Tensor) -> bool:
    if type(stack) not in _PLAIN_TYPES or type(coeffs) is not Tensor:
        return False  # fake, functional or proxy tensors: compiling, exporting
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    if torch.is_grad_enabled() and (stack.requires_grad or coeffs.requires_grad):
        return False  # the mixture must be part of this call's autograd graph
    return True


def _stamp(stack: Tensor) -> Tuple:
    return (stack._version, stack.data_ptr(), stack.dtype, stack.device, stack.shape)


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
    """``fn(stack, coeffs)``, reused while neither changes (see the module docstring).

    stack (K, *S), coeffs (K,) — the shared-λ path; anything else is computed afresh.
    """
    if coeffs.dim() != 1 or not _cacheable(stack, coeffs):
        return fn(stack, coeffs)
    canon = _canonical(coeffs)
    key = id(stack)
    entry: Optional[tuple] = _ENTRIES.get(key)
    stamp = _stamp(stack)
    if entry is not None and entry[0]() is stack and entry[1] == stamp and entry[2] is canon \
            and entry[3]._version == entry[4]:
        return entry[3]
    # Built outside inference mode, so it has a version counter that catches writes into it.
    with torch.inference_mode(False), torch.no_grad():
        value = fn(stack, canon)
    _ENTRIES[key] = (weakref.ref(stack, lambda _, k=key: _ENTRIES.pop(k, None)), stamp, canon, value, value._version)
    return value
