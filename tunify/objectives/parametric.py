"""Objectives and the parametric multi-loss L(λ) = Σ_i λ_i L_i.

An **objective** is a weighted sum of losses plus the **target** it pulls the output to:
the clean image (``"clean"``), the degraded input itself (``"input"``: "keep the grain"), or
the clean image put through a degradation of its own (a lighter noise level, a blur). An
**objective set** holds the p objectives of a tunable model, in λ order.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .base import Loss
from .registry import build_loss

__all__ = ["Objective", "ObjectiveSet", "ParametricLoss"]


class Objective(nn.Module):
    """One objective: ``forward(pred, batch, generator) -> (B,)`` = Σ_k loss_k(pred, target)."""

    def __init__(self, name: str, losses: Sequence[Union[Loss, Mapping[str, Any]]], target: Any = "clean", description: str = ""):
        super().__init__()
        self.name, self.description = name, description
        self.losses = nn.ModuleList(l if isinstance(l, nn.Module) else build_loss(l) for l in losses)
        self.target_spec = target
        self.degradation = None
        if not isinstance(target, str):
            from ..data import build_degradation

            self.degradation = build_degradation(target)
        elif target not in ("clean", "input"):
            raise ValueError(f"objective {name!r}: target must be 'clean', 'input' or a degradation spec, got {target!r}")

    def target(self, batch: Mapping[str, Tensor], generator: Optional[torch.Generator] = None) -> Tensor:
        """The image this objective pulls the output towards, (B, C, H, W)."""
        if self.target_spec == "clean":
            return batch["gt"]
        if self.target_spec == "input":
            if batch["lq"].shape != batch["gt"].shape:
                raise ValueError(
                    f"objective {self.name!r}: target 'input' needs an input the size of the output, "
                    f"got input {tuple(batch['lq'].shape)} and output {tuple(batch['gt'].shape)}"
                )
            return batch["lq"]
        key = f"target:{self.name}"
        if key not in batch:  # made once per batch, shared by every loss of this objective
            gen = generator if generator is not None else torch.Generator().manual_seed(0)
            batch[key] = self.degradation(batch["gt"], gen)  # type: ignore[index]
        return batch[key]

    def forward(self, pred: Tensor, batch: Mapping[str, Tensor], generator: Optional[torch.Generator] = None) -> Tensor:
        target = self.target(batch, generator)
        return sum(loss(pred, target) for loss in self.losses)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, target={self.target_spec!r}"


class ObjectiveSet(nn.Module):
    """The p objectives of a tunable model, in λ order."""

    def __init__(self, objectives: Sequence[Objective]):
        super().__init__()
        names = [o.name for o in objectives]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"an objective set needs p ≥ 1 objectives with unique names, got {names}")
        self.objectives = nn.ModuleList(objectives)

    @classmethod
    def from_specs(cls, specs: Sequence[Any]) -> "ObjectiveSet":
        """From recipe entries (ObjectiveSpec or dicts with name, losses, target, description)."""
        out = []
        for s in specs:
            get = s.get if isinstance(s, Mapping) else lambda k, d=None, s=s: getattr(s, k, d)
            out.append(Objective(get("name"), get("losses"), get("target", "clean"), get("description", "") or ""))
        return cls(out)

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(o.name for o in self.objectives)

    @property
    def p(self) -> int:
        return len(self.objectives)

    def adversarial(self) -> List[Tuple[Objective, nn.Module]]:
        """(objective, loss) for losses that train a discriminator alongside: the objective's
        target is what the discriminator learns to call real."""
        return [(o, l) for o in self.objectives for l in o.losses if hasattr(l, "discriminator")]


class ParametricLoss(nn.Module):
    """L(λ) = Σ_i λ_i L_i per sample, averaged over the batch.

    ``forward(pred (B,C,H,W), batch {"lq", "gt"}, lam (B, p) or (p,), generator)`` returns
    (scalar loss, {objective name: per-sample L_i (B,)}) — the terms are for logging.
    """

    def __init__(self, objectives: ObjectiveSet):
        super().__init__()
        self.objectives = objectives

    def forward(self, pred: Tensor, batch: Dict[str, Tensor], lam: Tensor,
                generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Dict[str, Tensor]]:
        terms = torch.stack([o(pred, batch, generator) for o in self.objectives.objectives], dim=1)  # (B, p)
        lam = lam.to(terms)
        if lam.dim() == 1:
            lam = lam.expand_as(terms)
        if lam.shape != terms.shape:
            raise ValueError(f"λ has shape {tuple(lam.shape)} but the loss terms are {tuple(terms.shape)} (B, p)")
        loss = (lam * terms).sum(1).mean()
        return loss, {name: terms[:, i].detach() for i, name in enumerate(self.objectives.names)}
