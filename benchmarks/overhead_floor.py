"""The least a per-sample λ must cost on top of the plain network, measured (overhead.py).

A dense layer with K kernels and one mixture per sample, ``y_b = Σ_k ω_bk (W_k * x_b)``, can
be computed exactly from torch ops in two ways:

  mix   build each sample's kernel ``Σ_k ω_bk W_k``: B·|W| written and read back, K·|W| read.
        Memory-bound, so its cost does not shrink with the input: on few pixels it rivals
        the convolution itself.
  wide  run all K kernels and mix the outputs: the layer's work K times over, nothing built.

Every exact per-sample form pays at least the cheaper of the two at each layer (a fused
kernel that mixes while it multiplies would not, but torch has none). ``floor_model`` returns
the plain network with, at each layer the tunable model converted, exactly that extra work
added by a forward hook: the cheaper extra of the two, chosen per layer by timing both on the
layer's own input at the first call (in a training step each with its backward). Its time over
the plain network's is the floor that the per-sample ratio stands beside.
"""
from __future__ import annotations

import copy
import time
from typing import Callable, Dict

import torch
from torch import nn

from tunify.layers import TunableModuleLayer, mix

__all__ = ["floor_model"]


def _best_of(fn: Callable[[], object], n: int = 5) -> float:
    fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _extras(module: nn.Module, args: tuple, stack: torch.Tensor, coeffs: torch.Tensor, held: dict) -> dict:
    """The two extras at one layer; in a training step each with its backward, run on their
    own (detached) inputs so that nothing else gets a gradient from them. ``held`` keeps the
    layer's stand-in gradients from call to call: making them is no part of the cost."""
    k = stack.shape[0]
    if not (torch.is_grad_enabled() and module.training):
        return {"mix": lambda: mix(stack, coeffs), "wide": lambda: [module.forward(*args) for _ in range(k - 1)]}
    if "leaf" not in held:  # the per-sample kernels' gradients, as the layer's backward hands them over
        held["leaf"], held["grad_mixed"] = stack.detach().requires_grad_(), torch.randn(coeffs.shape[0], *stack.shape[1:])
    leaf, grad_mixed = held["leaf"], held["grad_mixed"]

    def mixed():  # forward B kernels, backward their B gradients into the K stacks
        torch.autograd.backward(mix(leaf, coeffs), grad_mixed)

    def wide():  # the layer's forward and backward (input and weight) K-1 more times
        for _ in range(k - 1):
            inputs = [a.detach().requires_grad_() if isinstance(a, torch.Tensor) else a for a in args]
            y = module.forward(*inputs)
            if held.get("grad_out") is None or held["grad_out"].shape != y.shape:
                held["grad_out"] = torch.randn_like(y)
            torch.autograd.backward(y, held["grad_out"])
    return {"mix": mixed, "wide": wide}


def floor_model(model: nn.Module, tm: nn.Module, batch: int) -> nn.Module:
    """A copy of the plain ``model`` whose tunable layers (as ``tm`` converted them) each do
    the cheaper extra of a per-sample λ at ``batch`` rows; ``.floor_choice`` says which."""
    floor = copy.deepcopy(model)
    layers: Dict[str, nn.Module] = dict(floor.named_modules())
    choice: Dict[str, str] = {}
    for name, layer in tm.model.named_modules():
        if not isinstance(layer, TunableModuleLayer) or name not in layers:
            continue
        stack = layer.weights.detach().clone()
        coeffs = torch.rand(batch, stack.shape[0], dtype=stack.dtype)

        def hook(module, args, out, name=name, stack=stack, coeffs=coeffs, held={}):
            extra = _extras(module, args, stack, coeffs, held)
            if name not in choice:  # the first call: time both on this layer's own input
                choice[name] = min(extra, key=lambda k: _best_of(extra[k]))
            extra[choice[name]]()
            return out

        layers[name].register_forward_hook(hook)
    floor.floor_choice = choice
    return floor
