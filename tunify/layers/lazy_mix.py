"""A weight-like tensor read per sample as its K kernels, moved together until they meet the batch.

SwinIR's window attention reads its bias table as
``table[index].view(N, N, -1).permute(2, 0, 1).contiguous().unsqueeze(0)`` and adds that to
scores of shape (B·nW, heads, N, N). Indexing, views and permutes are linear, so
``chain(Σ_k λ_k T_k) = Σ_k λ_k chain(T_k)``: a per-sample read can give a :class:`LazyMix`, the
stack (K, *S) with each such op applied to every kernel at once (on axes shifted by one), and
each sample's mixture is made only where it meets an activation in an elementwise op, once per
sample, met by that sample's rows (samples' rows contiguous, as windows fold into the batch). The owner then
runs once for the whole batch, with plain batched ops, instead of vmapped over samples or once
per λ row.

Any use outside those ops (``exp``, a matmul, ``repeat`` by the batch size) raises
:class:`RowsNotSeparable`, and the owner keeps its other forms. The form is tried only inside an
owner whose by-rows run was proved exact, and kept only where it equals that run at the call's
per-sample λ (owner_split.py); rows folded in another order than sample-major would differ there.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .operand import mix_operand
from .rows import RowsNotSeparable

__all__ = ["LazyMix"]

# torch functions and Tensor methods a LazyMix may meet an activation in, and the op each is
_BINARY = {torch.add: torch.add, Tensor.add: torch.add, Tensor.__add__: torch.add, Tensor.__radd__: torch.add,
           torch.mul: torch.mul, Tensor.mul: torch.mul, Tensor.__mul__: torch.mul, Tensor.__rmul__: torch.mul,
           torch.sub: torch.sub, Tensor.sub: torch.sub, Tensor.__sub__: torch.sub}


def _axis(d: int, ndim: int) -> int:
    """Axis ``d`` of a tensor of ``ndim`` dims, as an axis of the stack (one more in front)."""
    return (d % ndim if ndim else 0) + 1


class LazyMix:
    """stack (K, *S) mixed per sample by coeffs (N, K) where it meets an activation."""

    __slots__ = ("stack", "coeffs", "name")

    def __init__(self, stack: Tensor, coeffs: Tensor, name: str = "") -> None:
        self.stack, self.coeffs, self.name = stack, coeffs, name

    def _new(self, stack: Tensor) -> "LazyMix":
        return LazyMix(stack, self.coeffs, self.name)

    # what code may ask of a tensor before using it
    @property
    def shape(self) -> torch.Size:
        return self.stack.shape[1:]

    def size(self, d: Any = None) -> Any:
        return self.shape if d is None else self.shape[d]

    def dim(self) -> int:
        return self.stack.dim() - 1

    ndim = property(dim)
    dtype = property(lambda self: self.stack.dtype)
    device = property(lambda self: self.stack.device)

    def __len__(self) -> int:
        return self.shape[0]

    # linear ops: applied to every kernel
    def __getitem__(self, idx: Any) -> "LazyMix":
        idx = idx if isinstance(idx, tuple) else (idx,)
        return self._new(self.stack[(slice(None),) + idx])

    def view(self, *shape: Any) -> "LazyMix":
        if len(shape) == 1 and isinstance(shape[0], torch.dtype):
            return self._fail("view(dtype)")
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)) else shape
        return self._new(self.stack.reshape(self.stack.shape[0], *shape))

    reshape = view

    def permute(self, *dims: Any) -> "LazyMix":
        dims = tuple(dims[0]) if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
        return self._new(self.stack.permute(0, *(_axis(d, self.dim()) for d in dims)))

    def transpose(self, a: int, b: int) -> "LazyMix":
        return self._new(self.stack.transpose(_axis(a, self.dim()), _axis(b, self.dim())))

    def unsqueeze(self, d: int) -> "LazyMix":
        return self._new(self.stack.unsqueeze(_axis(d, self.dim() + 1)))

    def squeeze(self, d: Any = None) -> "LazyMix":
        if d is None:
            return self._new(self.stack.reshape(self.stack.shape[0], *[s for s in self.shape if s != 1]))
        return self._new(self.stack.squeeze(_axis(d, self.dim())))

    def flatten(self, start: int = 0, end: int = -1) -> "LazyMix":
        if not self.dim():
            return self._new(self.stack.reshape(-1, 1))
        return self._new(self.stack.flatten(_axis(start, self.dim()), _axis(end, self.dim())))

    def contiguous(self, *args: Any, **kwargs: Any) -> "LazyMix":
        return self._new(self.stack.contiguous(*args, **kwargs))

    def clone(self, *args: Any, **kwargs: Any) -> "LazyMix":
        return self._new(self.stack.clone(*args, **kwargs))

    # where it meets an activation: each sample's mixture, shaped against it
    def _meet(self, other: Any, op: Any, reflected: bool) -> Any:
        if isinstance(other, (int, float)) and not isinstance(other, bool) and op in (torch.mul, torch.div):
            return self._new(op(self.stack, other)) if not reflected or op is torch.mul else self._fail("x / table")
        if not isinstance(other, Tensor):
            return self._fail(f"{op.__name__} with {type(other).__name__}")
        n, rows = self.coeffs.shape[0], other.shape[0] if other.dim() else 0
        if rows == n or not rows or rows % n:  # rows are the samples (or no batch to fold): as any operand
            mixed = mix_operand(self.stack, self.coeffs, other)
            return op(other, mixed) if reflected else op(mixed, other)
        # m rows per sample (windows folded into the batch): each sample's mixture once, met by
        # its m rows through a broadcast axis, not repeated m times
        mixed = mix_operand(self.stack, self.coeffs, other[::rows // n]).unsqueeze(1)  # (n, 1, ...)
        grouped = other.reshape(n, rows // n, *other.shape[1:])
        out = op(grouped, mixed) if reflected else op(mixed, grouped)
        return out.reshape(rows, *out.shape[2:])

    __add__ = lambda self, o: self._meet(o, torch.add, False)  # noqa: E731
    __radd__ = lambda self, o: self._meet(o, torch.add, True)  # noqa: E731
    __sub__ = lambda self, o: self._meet(o, torch.sub, False)  # noqa: E731
    __rsub__ = lambda self, o: self._meet(o, torch.sub, True)  # noqa: E731
    __mul__ = lambda self, o: self._meet(o, torch.mul, False)  # noqa: E731
    __rmul__ = lambda self, o: self._meet(o, torch.mul, True)  # noqa: E731
    __truediv__ = lambda self, o: self._meet(o, torch.div, False)  # noqa: E731

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
        """torch.add(scores, table) and friends; anything else cannot take it."""
        op = _BINARY.get(func)
        if op is not None and len(args) == 2 and not kwargs:
            a, b = args
            if isinstance(a, LazyMix) and not isinstance(b, LazyMix):
                return a._meet(b, op, False)
            if isinstance(b, LazyMix) and not isinstance(a, LazyMix):
                return b._meet(a, op, True)
        lazy = next(a for a in args if isinstance(a, LazyMix))
        return lazy._fail(getattr(func, "__name__", str(func)))

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return self._fail(attr)

    def _fail(self, what: str) -> Any:
        raise RowsNotSeparable(f"{self.name or 'a weight-like tensor'} read per sample meets {what}, which "
                               "cannot take its kernels one at a time", tensor=self.name)


def _einops_backend() -> Any:
    """Let einops rearrange and repeat a LazyMix (Uformer's and SCUNet's tables go through
    ``repeat``/``rearrange``): its backends are found by subclass, for modules already imported.
    einops is not a dependency; where it is missing or its internals differ, those tables keep
    their other forms."""
    try:
        from einops._backends import AbstractBackend
    except Exception:  # noqa: BLE001 - no einops, or another layout of it
        return None

    class _LazyMixBackend(AbstractBackend):
        framework_name = __name__

        def is_appropriate_type(self, tensor: Any) -> bool:
            return isinstance(tensor, LazyMix)

        def shape(self, x: LazyMix) -> tuple:
            return tuple(x.shape)

        def reshape(self, x: LazyMix, shape: Any) -> LazyMix:
            return x.reshape(tuple(shape))

        def transpose(self, x: LazyMix, axes: Any) -> LazyMix:
            return x.permute(*axes)

        def add_axis(self, x: LazyMix, new_position: int) -> LazyMix:
            return x.unsqueeze(new_position)

        def tile(self, x: LazyMix, repeats: Any) -> LazyMix:  # copies: linear, unlike repeating by the batch
            return x._new(x.stack.repeat(1, *repeats))

        def is_float_type(self, x: LazyMix) -> bool:
            return x.dtype.is_floating_point

        def reduce(self, x: LazyMix, operation: str, axes: Any) -> LazyMix:
            if operation not in ("sum", "mean"):
                return x._fail(f"einops reduce {operation!r}")
            return x._new(getattr(x.stack, operation)(dim=tuple(_axis(a, x.dim()) for a in axes)))

    return _LazyMixBackend


# held here: einops finds backends through __subclasses__, which holds them only weakly
_EINOPS_BACKEND = _einops_backend()
