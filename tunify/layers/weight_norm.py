"""Tunable weight-normalised convolutions (WDSR-style generators, old hooks and parametrizations).

A weight-normalised conv computes ``W = g · v / ‖v‖`` (the norm over every axis but ``dim``)
from two stored tensors. Its tunable form holds K copies of each, mixes ``g`` and ``v`` by ω,
then normalises, exactly as the original computes its weight; so it equals the original at
init and trains the same tensors the original trains. ``bake`` gives back the original kind of
module (the same hook or parametrization) holding the mixed ``g`` and ``v``.

Shapes: ``g`` (out, 1, 1, 1) for dim 0, ``v`` (out, in/groups, kh, kw); stacks (K, *shape).
"""
from __future__ import annotations

import copy
from typing import Any, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import TunableLayer, current_coeffs, expand_rows, mix, stack_kernels
from .conv import TunableConv2d

__all__ = ["TunableWeightNormConv2d", "weight_norm_of", "normalise"]


def weight_norm_of(module: nn.Module) -> Optional[Tuple[str, int, Tensor, Tensor]]:
    """("hook" | "parametrization", dim, g, v) when ``module.weight`` is weight-normalised."""
    for hook in module._forward_pre_hooks.values():
        if type(hook).__name__ == "WeightNorm" and getattr(hook, "name", None) == "weight":
            return "hook", hook.dim, module.weight_g, module.weight_v
    plist = getattr(module, "parametrizations", None)
    if plist is not None and "weight" in plist and len(plist["weight"]) == 1:
        p = plist["weight"][0]
        if type(p).__name__ == "_WeightNorm":
            return "parametrization", p.dim, plist["weight"].original0, plist["weight"].original1
    return None


def normalise(g: Tensor, v: Tensor, dim: int, batched: bool = False) -> Tensor:
    """``g · v / ‖v‖``, the norm over every axis of v but ``dim`` (dim -1: over all of v).

    batched: g and v carry a leading sample axis (N, *shape) and each sample is normalised alone.
    """
    if not batched:
        return torch._weight_norm(v, g, dim)
    keep = {0} if dim == -1 else {0, dim + 1}
    axes = tuple(a for a in range(v.dim()) if a not in keep)
    return v * (g / v.norm(2, dim=axes, keepdim=True))


def _plain_copy(module: nn.Module, kind: str) -> nn.Module:
    """The module without its weight norm (weight and bias emptied), for ``base_layer``."""
    # A shallow copy by hand: parametrized modules refuse copy.copy (they only pickle by state_dict).
    base = object.__new__(type(module).__bases__[0] if kind == "parametrization" else type(module))
    base.__dict__.update(module.__dict__)
    base._parameters, base._buffers, base._modules = dict(module._parameters), dict(module._buffers), dict(module._modules)
    base._forward_pre_hooks = type(module._forward_pre_hooks)()
    base._modules.pop("parametrizations", None)
    for name in ("weight_g", "weight_v"):
        base._parameters.pop(name, None)
    base.__dict__.pop("weight", None)
    base._parameters["weight"] = None
    if "bias" in base._parameters:
        base._parameters["bias"] = None
    return base


class TunableWeightNormConv2d(TunableConv2d):
    """``nn.Conv2d`` under weight norm with K copies of ``g`` and ``v`` (``weights_g``,
    ``weights_v``: (K, *g), (K, *v)) and biases (K, out); normalised after mixing.

    forward(x (B, C, H, W), coeffs (K,) or (B, K)) → (B, out, H', W').
    """

    def __init__(self, module: nn.Module, num_kernels: int, zero_tail: bool = False) -> None:
        TunableLayer.__init__(self)
        found = weight_norm_of(module)
        if found is None:
            raise TypeError(f"{type(module).__name__} is not weight-normalised")
        self.kind, self.dim, g, v = found
        self.num_kernels = int(num_kernels)
        self.zero_tail = zero_tail
        self.weights_g = nn.Parameter(stack_kernels(g, num_kernels, zero_tail))
        self.weights_v = nn.Parameter(stack_kernels(v, num_kernels, zero_tail))
        bias = module._parameters.get("bias")
        self.biases = None if bias is None else nn.Parameter(stack_kernels(bias, num_kernels, zero_tail))
        self.base_layer = _plain_copy(module, self.kind)
        self.custom_forward = False

    def _gv(self, coeffs: Tensor) -> Tuple[Tensor, Tensor]:
        return mix(self.weights_g, coeffs), mix(self.weights_v, coeffs)

    @property
    def weight(self) -> Tensor:  # type: ignore[override]
        coeffs = current_coeffs("reading TunableWeightNormConv2d.weight")
        if coeffs.dim() != 1:
            raise RuntimeError("code read `.weight` of a weight-normalised tunable conv while λ is per sample")
        return normalise(*self._gv(coeffs), self.dim)

    def forward(self, x: Tensor, *args: Any, coeffs: Optional[Tensor] = None, **kwargs: Any) -> Tensor:
        coeffs = self._coeffs(coeffs)
        if coeffs.dim() == 1:
            g, v = self._gv(coeffs)
            return self._plain_forward(x, normalise(g, v, self.dim), self._mixed_bias(coeffs))
        coeffs = expand_rows(coeffs, x.shape[0])
        g, v = self._gv(coeffs)
        weight = normalise(g, v, self.dim, batched=True)  # (B, out, in/groups, kh, kw)
        base = self.base_layer
        padding = base.padding
        if base.padding_mode != "zeros":
            x = F.pad(x, base._reversed_padding_repeated_twice, mode=base.padding_mode)
            padding = 0
        b, c, h, w = x.shape
        y = F.conv2d(x.reshape(1, b * c, h, w), weight.reshape(-1, *weight.shape[2:]), None, base.stride,
                     padding, base.dilation, base.groups * b)
        y = y.reshape(b, -1, *y.shape[-2:])
        bias = self._mixed_bias(coeffs)
        return y if bias is None else y + bias[:, :, None, None]

    @torch.no_grad()
    def to_plain(self, coeffs: Tensor) -> nn.Module:
        """The original kind of module (same weight-norm hook or parametrization) at ``coeffs``."""
        g, v = self._gv(coeffs)
        plain = copy.deepcopy(self.base_layer)
        plain.weight = nn.Parameter(normalise(g, v, self.dim).clone())
        if self.biases is not None:
            plain.bias = nn.Parameter(mix(self.biases, coeffs).clone())
        if self.kind == "hook":
            torch.nn.utils.weight_norm(plain, dim=self.dim)
            plain.weight_g.copy_(g)
            plain.weight_v.copy_(v)
        else:
            torch.nn.utils.parametrizations.weight_norm(plain, dim=self.dim)
            plain.parametrizations.weight.original0.copy_(g)
            plain.parametrizations.weight.original1.copy_(v)
        return plain

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(kernels={self.num_kernels}, {self.kind}, dim={self.dim}, "
                f"v={tuple(self.weights_v.shape[1:])})")
