"""Weight-like tensors a forward uses directly (NAFNet's β/γ, SwinIR's position-bias tables).

The tensor becomes a torch parametrization: ``owner.beta`` keeps reading like a tensor, while
the stored parameter is the stack ``owner.parametrizations.beta.original`` (K, *S). Mixing
follows the same rule as every layer. Per-sample λ works when the tensor has a leading axis
of 1 that broadcasts against the batch (β of shape (1, C, 1, 1) becomes (B, C, 1, 1));
anything else (a table that is indexed and reshaped) cannot: it is marked ``per_sample="rows"``
when the module owning it can run once per distinct λ row on its own rows of the batch
(owner_split.py), or ``"split"``, and then the model runs each distinct λ row whole.
"""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Any, Iterable, Iterator, Optional

from torch import Tensor

from .base import TunableLayer, current_coeffs, mix, stack_kernels
from .cache import KernelMemo, cacheable, cached_mix
from .lazy_mix import LazyMix
from .rows import RowsNotSeparable

__all__ = ["TunableParameter", "mix_parameter", "broadcastable", "broadcast_scope", "lazy_scope"]

# Tensors marked "rows" that their owner is trying in one pass (owner_split.py proves each form
# against by-rows first): with one value per sample on the leading axis (broadcast), or read as
# their K kernels (lazy_mix.py). Context variables, so a second thread's call of the same owner
# is not affected.
_BROADCAST: ContextVar[frozenset] = ContextVar("tunify_broadcast", default=frozenset())
_LAZY: ContextVar[frozenset] = ContextVar("tunify_lazy", default=frozenset())


@contextlib.contextmanager
def _scope(var: ContextVar, params: Iterable["TunableParameter"]) -> Iterator[None]:
    token = var.set(var.get() | {id(p) for p in params})
    try:
        yield
    finally:
        var.reset(token)


def broadcast_scope(params: Iterable["TunableParameter"]) -> Any:
    """Inside, the given tensors mix per sample into (B, *S[1:]) as if marked "broadcast"."""
    return _scope(_BROADCAST, params)


def lazy_scope(params: Iterable["TunableParameter"]) -> Any:
    """Inside, the given tensors read per sample as a :class:`LazyMix` (their K kernels)."""
    return _scope(_LAZY, params)


def broadcastable(shape: tuple) -> bool:
    """Whether a tensor of ``shape`` can carry a per-sample mixture in its leading axis."""
    return len(shape) >= 2 and shape[0] == 1


def mix_parameter(stack: Tensor, coeffs: Tensor, per_sample: str, name: str = "") -> Tensor:
    """stack (K, *S); coeffs (K,) → (*S); coeffs (N, K) → (N, *S[1:]) when S[0] == 1.
    ``name``: the tensor's path in the model, for the error."""
    if coeffs.dim() == 1:
        return cached_mix(stack, coeffs, mix)
    if per_sample != "broadcast":  # a ValueError too: the model then runs each λ row whole
        raise RowsNotSeparable(
            (f"{name}, " if name else "") + "a weight-like tensor of shape "
            f"{tuple(stack.shape[1:])}, cannot hold one value per sample"
            + (" and was read outside the module that owns it" if per_sample == "rows" else "")
            + "; the tunified model should have split the batch by λ. Call the model itself "
            "(tm(x, lam=λ)), or pass one λ shared by the batch.",
            tensor=name,
        )
    return mix(stack.squeeze(1), coeffs)


class TunableParameter(TunableLayer):
    """Parametrization holding K copies of a tensor; reading it gives their mixture.

    Registered with ``torch.nn.utils.parametrize.register_parametrization(..., unsafe=True)``;
    its original is the stack (K, *S).
    """

    def __init__(self, shape: tuple, num_kernels: int, zero_tail: bool = False, per_sample: Optional[str] = None,
                 name: str = ""):
        super().__init__()
        self.name = name  # its path in the model ("trans.density_k"), named in errors
        self.num_kernels = int(num_kernels)
        self.shape = tuple(shape)
        self.zero_tail = zero_tail
        self.per_sample = per_sample or ("broadcast" if broadcastable(self.shape) else "split")

    def forward(self, stack: Tensor) -> Tensor:
        coeffs = self._coeffs(current_coeffs("a tunable weight-like tensor"))
        if cacheable(coeffs, stack):  # no-grad at a shared λ: reuse the last mixture (cache.py)
            memo = self.__dict__.get("_kernel_memo")
            if memo is None:
                memo = self.__dict__["_kernel_memo"] = KernelMemo()
            return memo.get((stack,), coeffs, mix)[0]
        if coeffs.dim() == 2 and id(self) in _LAZY.get():  # its owner's one-pass try (lazy_mix.py)
            return LazyMix(stack, coeffs, self.name)
        per_sample = "broadcast" if self.per_sample == "rows" and id(self) in _BROADCAST.get() else self.per_sample
        return mix_parameter(stack, coeffs, per_sample, self.name)

    def right_inverse(self, tensor: Tensor) -> Tensor:
        if tensor.shape == (self.num_kernels, *self.shape):  # already a stack (load_state_dict)
            return tensor
        return stack_kernels(tensor, self.num_kernels, self.zero_tail)

    def extra_repr(self) -> str:
        return f"kernels={self.num_kernels}, shape={self.shape}, per_sample={self.per_sample}"
