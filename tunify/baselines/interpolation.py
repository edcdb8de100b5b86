"""Two baselines built from separately trained networks, one per objective.

DNI (deep network interpolation): fine-tune a copy of the network for each further
objective, then run with the weights interpolated, θ(λ) = Σ_i λ_i θ_i. Output blending:
run every network and mix the outputs, y(λ) = Σ_i λ_i f_i(x). Blending costs p forward
passes; it is the exact optimum when the objectives are MSE to different targets (the
optimum of Σ λ_i ‖f − t_i‖² is Σ λ_i t_i), so a benchmark without it flatters every method.
"""
from __future__ import annotations

import copy
from typing import Sequence, Union

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .base import ControlledModel, lam_rows

__all__ = ["DNI", "OutputBlend", "interpolate_state"]


def _check_nets(nets: Sequence[nn.Module], p: int) -> nn.ModuleList:
    nets = nn.ModuleList(nets)
    if len(nets) != p:
        raise ValueError(f"pass one network per objective: got {len(nets)} networks for p={p}")
    return nets


def interpolate_state(nets: Sequence[nn.Module], lam: Tensor) -> dict:
    """θ(λ) = Σ_i λ_i θ_i over parameters and floating buffers; integer buffers (BatchNorm's
    counters) come from the first network. lam: (p,)."""
    states = [dict(n.named_parameters(), **dict(n.named_buffers())) for n in nets]
    keys = states[0].keys()
    for i, s in enumerate(states[1:], 1):
        if s.keys() != keys or any(s[k].shape != states[0][k].shape for k in keys):
            raise ValueError(f"network {i} does not have the same parameters as network 0: DNI needs copies of one architecture")
    out = {}
    for k in keys:
        t0 = states[0][k]
        out[k] = sum(lam[i].to(t0.dtype) * s[k] for i, s in enumerate(states)) if t0.is_floating_point() else t0
    return out


class DNI(ControlledModel):
    """Weights interpolated between ``nets`` (one per objective, same architecture).

    Per-sample λ runs each distinct λ row as its own sub-batch."""

    method = "dni"

    def __init__(self, nets: Sequence[nn.Module], objectives: Union[int, Sequence[str]] = 2) -> None:
        super().__init__(objectives)
        self.nets = _check_nets(nets, self.p)

    def run(self, x: Tensor, lam: Tensor) -> Tensor:
        if lam.dim() == 1:
            return functional_call(self.nets[0], interpolate_state(self.nets, lam), (x,))
        uniq, inverse = torch.unique(lam, dim=0, return_inverse=True)
        parts = [functional_call(self.nets[0], interpolate_state(self.nets, row), (x[inverse == j],))
                 for j, row in enumerate(uniq)]
        out = parts[0].new_empty((x.shape[0],) + parts[0].shape[1:])
        for j, part in enumerate(parts):
            out[inverse == j] = part
        return out

    @torch.no_grad()
    def at(self, lam) -> nn.Module:
        """A plain copy of the network with λ's interpolated weights (zero overhead)."""
        ref = next(self.nets[0].parameters())
        lam = self.lam_space.validate(lam, device=ref.device, dtype=ref.dtype)
        if lam.dim() != 1:
            raise ValueError(f"at() takes one λ of shape ({self.p},)")
        plain = copy.deepcopy(self.nets[0])
        state = interpolate_state(self.nets, lam)
        plain.load_state_dict(state, strict=False)
        return plain


class OutputBlend(ControlledModel):
    """Outputs of ``nets`` (one per objective) mixed by λ: y = Σ_i λ_i f_i(x)."""

    method = "blend"

    def __init__(self, nets: Sequence[nn.Module], objectives: Union[int, Sequence[str]] = 2) -> None:
        super().__init__(objectives)
        self.nets = _check_nets(nets, self.p)

    def run(self, x: Tensor, lam: Tensor) -> Tensor:
        rows = lam_rows(lam, x.shape[0])
        out = 0
        for i, net in enumerate(self.nets):
            active = rows[:, i] != 0
            if not active.any():
                continue  # a network whose weight is zero for the whole batch is not run
            y = net(x)
            out = out + rows[:, i].view(-1, *([1] * (y.dim() - 1))).to(y.dtype) * y
        return out
