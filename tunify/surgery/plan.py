"""Deciding what to convert (a plan), then swapping modules and tensors in place.

The default, as the paper's released models do: every Conv2d, ConvTranspose2d and Linear
(and registered types), plus every weight-like tensor a model's own code uses directly
(parameters of non-torch.nn modules: NAFNet's β/γ, SwinIR's position-bias tables, layer
scales); norms stay plain. Explicit ``targets`` can narrow this or widen it (naming a norm's
parameter makes it tunable).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..lam import LamSpace
from ..layers import (LowRankConv2d, LowRankLinear, TunableConv2d, TunableLayer, TunableLinear,
                      TunableModuleLayer, TunableParameter)
from .dispatch import is_norm, lookup_layer
from .hooks import move_hooks
from .report import Skipped
from .targets import TargetMatcher, TargetSpec

__all__ = ["Plan", "make_plan", "apply_plan", "list_targets"]


@dataclass
class Plan:
    layers: Dict[int, Tuple[List[str], nn.Module, type]] = field(default_factory=dict)  # id -> (names, module, tunable type)
    params: Dict[str, Tuple[nn.Module, str]] = field(default_factory=dict)              # "owner.beta" -> (owner, "beta")
    skipped: List[Skipped] = field(default_factory=list)


def _default_param(owner: nn.Module, layer_type) -> bool:
    return layer_type is None and not type(owner).__module__.startswith("torch.nn") and not is_norm(owner)


def make_plan(model: nn.Module, targets: TargetSpec = None, exclude: TargetSpec = None) -> Plan:
    """Walk ``model`` and decide which layers and weight-like tensors become tunable."""
    want, drop = TargetMatcher(targets, "targets"), TargetMatcher(exclude, "exclude")
    plan, candidates, seen_params = Plan(), [], {}
    for name, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, TunableLayer):
            raise ValueError(f"{name or 'the model'} is already tunable; tunify the original model instead")
        layer_type, refusal = lookup_layer(module)
        if layer_type or refusal:
            candidates.append(name)
            how = want.match(name, module) if want else "self"
            dropped = drop.match(name, module)  # always asked, so unused entries are caught
            if how and not dropped:
                if refusal:
                    plan.skipped.append(Skipped(name, type(module).__name__, refusal))
                elif id(module) in plan.layers:
                    plan.layers[id(module)][0].append(name)
                else:
                    plan.layers[id(module)] = ([name], module, layer_type)
            if layer_type:
                continue  # a converted layer's own weight and bias belong to the layer
        for pname, param in module._parameters.items():
            if param is None or not param.is_floating_point():
                continue
            full = f"{name}.{pname}" if name else pname
            candidates.append(full)
            how = want.match(full, module) if want else ("self" if _default_param(module, layer_type) else None)
            if how == "ancestor" and not _default_param(module, layer_type):
                how = None  # selecting a block keeps its norms plain; name a norm's tensor to tune it
            dropped = drop.match(full, module)
            if not how or dropped:
                continue
            if id(param) in seen_params:
                first, first_owner = seen_params[id(param)]
                if first_owner is not module:  # the same module under a second name is no tie
                    plan.skipped.append(Skipped(full, "Parameter", f"tied to {first}; tune it there"))
                continue
            seen_params[id(param)] = (full, module)
            plan.params[full] = (module, pname)
    name = type(model).__name__
    want.check_used(candidates, name)
    drop.check_used(candidates, name)
    return plan


def list_targets(model: nn.Module) -> Dict[str, str]:
    """Every name ``targets=`` can select, with what it is and whether it converts by default.

    Returns {name: description}, e.g. {"intro": "Conv2d (default)", "norm1.weight":
    "Parameter of LayerNorm2d (by name only)"}.
    """
    plan = make_plan(model)
    chosen = {n for names, _, _ in plan.layers.values() for n in names} | set(plan.params)
    refused = {s.name: s.reason for s in plan.skipped}
    out: Dict[str, str] = {}
    for name, module in model.named_modules():
        layer_type, refusal = lookup_layer(module)
        if layer_type or refusal:
            out[name] = f"{type(module).__name__} ({'default' if name in chosen else 'refused: ' + refused.get(name, str(refusal))})"
            if layer_type:
                continue
        for pname, param in module._parameters.items():
            if param is not None and param.is_floating_point():
                full = f"{name}.{pname}" if name else pname
                how = "default" if full in chosen else "by name only"
                out[full] = f"Parameter{tuple(param.shape)} of {type(module).__name__} ({how})"
    return out


# With rank=r, these full types become low rank (exact types: weight-normalised convs and
# transposed convs, and user-registered types, keep full kernels).
LOW_RANK_OF = {TunableConv2d: LowRankConv2d, TunableLinear: LowRankLinear}


def apply_plan(model: nn.Module, plan: Plan, space: LamSpace, rank: Optional[int] = None) -> nn.Module:
    """Swap planned layers for tunable ones and parametrize planned tensors, in place.

    ``rank``: conv/linear layers get a frozen weight plus p rank-r deltas where that is smaller
    than a full delta (a depthwise conv is not: it keeps full kernels, as do weight-like tensors).
    Returns the model (a new object only if the model itself was a planned layer).
    """
    k, zero_tail = space.num_kernels, space.zero_tail
    made: Dict[int, TunableModuleLayer] = {}
    # The factors' random init comes from its own seeded stream: conversion is deterministic
    # and leaves the global RNG (dropout masks, user code) untouched.
    gen = torch.Generator().manual_seed(0) if rank else None

    def tunable_for(module: nn.Module) -> TunableModuleLayer:
        if id(module) not in made:
            full = plan.layers[id(module)][2]
            low = LOW_RANK_OF.get(full) if rank else None
            if low is not None and low.saves(module, rank):
                made[id(module)] = low(module, k, zero_tail, rank=rank, generator=gen)
            else:
                made[id(module)] = full(module, k, zero_tail)
            move_hooks(module, made[id(module)])
        return made[id(module)]

    if id(model) in plan.layers:
        return tunable_for(model)
    # Collect every (parent, slot) first: swapping while walking would descend into the new
    # layers' base_layer. remove_duplicate=False finds every name of a shared layer.
    slots = [
        (parent, slot, child)
        for _, parent in model.named_modules(remove_duplicate=False)
        for slot, child in parent._modules.items()
        if child is not None and id(child) in plan.layers
    ]
    for parent, slot, child in slots:
        parent._modules[slot] = tunable_for(child)
    names = {id(m): n for n, m in model.named_modules()}
    for owner, pname in plan.params.values():
        shape = tuple(owner._parameters[pname].shape)
        # Read by code no graph sees (module path, kept-whole modules), a (1, C, 1, 1) scale meets
        # a (B, C, H, W) map; any other shape may line its leading 1 up with a non-batch axis.
        per_sample = "broadcast" if len(shape) == 4 and shape[0] == 1 else "split"
        name = f"{names[id(owner)]}.{pname}" if names.get(id(owner)) else pname
        parametrize.register_parametrization(owner, pname, TunableParameter(shape, k, zero_tail, per_sample, name),
                                             unsafe=True)
    return model
