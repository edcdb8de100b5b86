"""Objectives whose kernels stay where they started: ``frozen: true`` in a recipe.

A tunable layer starts with every kernel a copy of the pretrained one. Marking an objective
frozen keeps its slice of every per-objective tensor at that starting value for the whole
run, and every tensor that is not per-objective (norms, PReLU slopes, anything shared by all
λ) too, since a shared tensor that trains would move the frozen corner as well. The corner
λ = e_i then *is* the pretrained network, bit for bit, however long the run: "keep the
original's look" holds by construction instead of being learnt back approximately.

How: a gradient hook zeroes the frozen slices (so they add nothing to the clipped gradient
norm), and after each optimizer step the slices are written back from a snapshot, because
AdamW's decoupled weight decay moves a tensor even where its gradient is zero. Only the
simplex has one kernel per objective; in the box, kernel 0 is a base every knob shares.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch
from torch import nn

from ..layers import PER_OBJECTIVE_SUFFIXES

__all__ = ["KernelFreeze", "frozen_indices"]


def frozen_indices(objectives: Sequence, lam_space: str) -> List[int]:
    """Kernel indices of the recipe's frozen objectives (on the simplex kernel i is objective i)."""
    idx = [i for i, o in enumerate(objectives) if getattr(o, "frozen", False)]
    if idx and lam_space != "simplex":
        raise ValueError("objectives[].frozen needs tunify.lam_space: simplex (in the box every knob shares "
                         "kernel 0, the base); drop `frozen` or use the simplex")
    if idx and len(idx) == len(objectives):
        raise ValueError("objectives[].frozen: every objective is frozen, so nothing would train; "
                         "leave at least one objective unfrozen")
    return idx


class KernelFreeze:
    """Keeps kernel slices ``indices`` of ``model``'s per-objective tensors at their values now,
    and stops every shared (not per-objective) parameter from training.

    ``model``: a TunableModel whose stacks hold K kernels on their leading axis (K, *S).
    Call ``restore()`` after every optimizer step; ``remove()`` drops the gradient hooks.
    """

    def __init__(self, model: nn.Module, indices: Sequence[int], num_kernels: int):
        self.indices = torch.tensor(sorted(set(int(i) for i in indices)), dtype=torch.long)
        self.snapshot: Dict[str, torch.Tensor] = {}
        self.params: Dict[str, nn.Parameter] = {}
        self._hooks = []
        for name, p in model.named_parameters():
            if not name.endswith(PER_OBJECTIVE_SUFFIXES):
                p.requires_grad_(False)  # shared by every λ: training it would move the frozen corner
                continue
            if p.dim() == 0 or p.shape[0] != num_kernels:
                raise ValueError(f"{name} has shape {tuple(p.shape)}, not a stack of {num_kernels} kernels")
            self.params[name] = p
            self.snapshot[name] = p.detach()[self.indices].clone()
            self._hooks.append(p.register_hook(self._zero_frozen))
        if not self.params:
            raise ValueError("objectives[].frozen: the model has no tunable tensors to freeze a slice of")

    def _zero_frozen(self, grad: torch.Tensor) -> torch.Tensor:
        return grad.index_fill(0, self.indices.to(grad.device), 0.0)

    @torch.no_grad()
    def restore(self) -> None:
        """Write the frozen slices back (undoes weight decay or any other drift)."""
        for name, p in self.params.items():
            p.index_copy_(0, self.indices.to(p.device), self.snapshot[name].to(p.device, p.dtype))

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
