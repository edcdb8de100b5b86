"""The shared machinery of layers that wrap a pretrained module (conv, linear).

The original module stays inside as ``base_layer``, stripped of its ``weight`` and ``bias``
(they live on as the stacks ``weights`` (K, *W) and ``biases`` (K, out)). Keeping it gives
three things for free: its hyper-parameters (stride, padding_mode, ...) are read from it,
``bake`` rebuilds exactly the original type, and subclasses with their own forward
(timm's Conv2dSame, StdConv2d, ...) run their own code on the mixed weight.
"""
from __future__ import annotations

import copy
import threading
from typing import Any, Optional

import torch
from torch import Tensor, nn

from .base import TunableLayer, current_coeffs, expand_rows, mix, split_by_rows, stack_kernels
from .cache import KernelMemo, cacheable
from .rows import RowsNotSeparable

__all__ = ["TunableModuleLayer", "own_forward"]

# Held while a layer with its own forward runs with a mixture in its base's weight slots. One
# lock for all: such layers are few, and a lock object per layer would make them uncopyable.
_SWAP_LOCK = threading.RLock()


def own_forward(module: nn.Module, plain_type: type, methods: tuple) -> bool:
    """Whether ``module`` (an instance of ``plain_type`` or a subclass) runs code of its own:
    its class, or the instance itself, replaces one of the plain type's ``methods``."""
    if not isinstance(module, plain_type):
        return True
    return any(getattr(type(module), m) is not getattr(plain_type, m) or m in vars(module) for m in methods)


class TunableModuleLayer(TunableLayer):
    """A pretrained ``weight``/``bias`` module made tunable; subclasses add the fast paths.

    ``plain_type`` is the torch type whose forward the subclass reimplements; a module of
    any other (sub)class keeps its own forward and is fed the mixed weight.
    """

    plain_type: type = nn.Module
    # The plain type's methods that its forward runs; a subclass that overrides none of them
    # (RCAN's MeanShift, EDSR-style init-only subclasses) computes exactly what the plain
    # type does and takes the fast paths.
    plain_methods: tuple = ("forward",)

    def __init__(self, base_layer: nn.Module, num_kernels: int, zero_tail: bool = False) -> None:
        super().__init__()
        self.num_kernels = int(num_kernels)
        weight = base_layer.weight
        bias = getattr(base_layer, "bias", None)
        self.weights = nn.Parameter(stack_kernels(weight, num_kernels, zero_tail))
        self.biases = None if bias is None else nn.Parameter(stack_kernels(bias, num_kernels, zero_tail))
        # The base keeps every other attribute; its weight and bias are slots we fill per call.
        base_layer._parameters["weight"] = None
        if "bias" in base_layer._parameters:
            base_layer._parameters["bias"] = None
        self.base_layer = base_layer
        self.custom_forward = own_forward(base_layer, self.plain_type, self.plain_methods)

    # -- reads of .weight / .bias keep working for code that inspects the layer -------------
    @property
    def weight(self) -> Tensor:  # type: ignore[override]
        return self._mixed_read(self.weights, "weight")

    @property
    def bias(self) -> Optional[Tensor]:  # type: ignore[override]
        return None if self.biases is None else self._mixed_read(self.biases, "bias")

    def _mixed_read(self, stack: Tensor, what: str) -> Tensor:
        coeffs = current_coeffs(f"reading {type(self).__name__}.{what}")
        if coeffs.dim() != 1:  # a ValueError too: the model then runs the reading module by rows
            raise RowsNotSeparable(
                f"code read `.{what}` of a tunable layer while λ is per sample; a single "
                f"{what} tensor cannot hold one kernel per sample. Exclude the layer that owns "
                "this read from `targets`, or call with one λ shared by the batch."
            )
        weight, bias = self._shared_kernels(coeffs)
        return weight if what == "weight" else bias

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_layer":
                raise
            # in_channels, kernel_size, stride, ... come from the wrapped module.
            return getattr(self.base_layer, name)

    # -- forward -------------------------------------------------------------------------------
    def forward(self, x: Tensor, *args: Any, coeffs: Optional[Tensor] = None, **kwargs: Any) -> Tensor:
        coeffs = self._coeffs(coeffs)
        if coeffs.dim() == 1:  # the hot path at a shared λ: as few Python calls as possible
            weight, bias = self._shared_kernels(coeffs)
            if self.custom_forward:
                return self._run(x, weight, bias, *args, **kwargs)
            return self._plain_forward(x, weight, bias, *args, **kwargs)
        if self.custom_forward:
            # Unknown forward: exact by running each distinct λ row on the shared path.
            return split_by_rows(self._forward_shared, expand_rows(coeffs, x.shape[0]), (x, *args), kwargs)
        return self._run_per_sample(x, coeffs, *args, **kwargs)

    def _forward_shared(self, x: Tensor, *args: Any, coeffs: Tensor, **kwargs: Any) -> Tensor:
        weight, bias = self._shared_kernels(coeffs)
        return self._run(x, weight, bias, *args, **kwargs)

    def shared_kernels(self, coeffs: Tensor) -> tuple:
        """(weight, bias) mixed at shared coeffs (K,), what the layer itself would run with (the
        kernel memo's, under no-grad); for callers that run the plain op themselves (surgery/fast.py)."""
        return self._shared_kernels(coeffs)

    def _shared_kernels(self, coeffs: Tensor) -> tuple:
        """(weight, bias) mixed at coeffs (K,); under no-grad reused while λ and the stacks are
        unchanged (cache.py). Reads _parameters directly: this runs on every call."""
        params = self._parameters
        weights, biases = params["weights"], params.get("biases")
        if cacheable(coeffs, weights, biases):
            memo = self.__dict__.get("_kernel_memo")
            if memo is None:
                memo = self.__dict__["_kernel_memo"] = KernelMemo()
            return memo.get((weights, biases), coeffs, mix)
        return mix(weights, coeffs), None if biases is None else mix(biases, coeffs)

    def _mixed_bias(self, coeffs: Tensor) -> Optional[Tensor]:
        """biases mixed at per-sample coeffs (B, K) → (B, out)."""
        return None if self.biases is None else mix(self.biases, coeffs)

    def _run(self, x: Tensor, weight: Tensor, bias: Optional[Tensor], *args: Any, **kwargs: Any) -> Tensor:
        if not self.custom_forward:
            return self._plain_forward(x, weight, bias, *args, **kwargs)
        base = self._modules["base_layer"]
        with _SWAP_LOCK:  # the slots are the module's: a second thread must not swap its λ in meanwhile
            base._parameters["weight"] = weight
            if "bias" in base._parameters:
                base._parameters["bias"] = bias
            try:
                return base(x, *args, **kwargs)
            finally:
                base._parameters["weight"] = None
                if "bias" in base._parameters:
                    base._parameters["bias"] = None

    def _plain_forward(self, x: Tensor, weight: Tensor, bias: Optional[Tensor], *args: Any, **kwargs: Any) -> Tensor:
        raise NotImplementedError

    def _run_per_sample(self, x: Tensor, coeffs: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        """One kernel mixture per sample: coeffs (B, K), x (B, ...) (or rows folded per sample)."""
        raise NotImplementedError

    # -- folding a fixed λ back into the original module -------------------------------------
    @torch.no_grad()
    def to_plain(self, coeffs: Tensor) -> nn.Module:
        """The original module type with the kernels mixed at ``coeffs`` (K,)."""
        plain = copy.deepcopy(self.base_layer)
        plain.weight = nn.Parameter(mix(self.weights, coeffs).clone())
        if self.biases is not None:
            plain.bias = nn.Parameter(mix(self.biases, coeffs).clone())
        return plain

    def _base_repr(self, weight: Tensor) -> str:
        """The original layer as it was, shown with ``weight`` (its slots are empty here, not absent)."""
        base = self.base_layer
        with _SWAP_LOCK:
            base._parameters["weight"] = weight
            if "bias" in base._parameters and self.biases is not None:
                base._parameters["bias"] = self.biases[0]
            try:
                inner = f"{type(base).__name__}({base.extra_repr()})"
            finally:
                base._parameters["weight"] = None
                if "bias" in base._parameters:
                    base._parameters["bias"] = None
        return inner + (", own forward" if self.custom_forward else "")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kernels={self.num_kernels}, {self._base_repr(self.weights[0])})"
