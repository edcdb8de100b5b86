"""A run's training loops, named: ``Stage.fine_tune(recipe)`` and ``Stage.pretrain(recipe)``.

``fit`` reads a recipe's ``optim``, ``objectives``, ``loss``, ``lam`` and ``validation``
sections only through a Stage, so the plain pretraining before tunify is its own stage, not a
made-up recipe sent down the fine-tune path: it trains the plain network on ``pretrain.losses``
against ``pretrain.target`` with ``pretrain.steps`` and ``pretrain.lr``, no λ (the one
objective's weight is 1), no EMA, no warmup, no sweeps. Both stages checkpoint the whole real
recipe, so a resume compares it the same way in either; errors name the stage's own keys
(``pretrain.lr`` or ``optim.lr``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import List, Optional

import torch
from torch import nn

from ..objectives import ParametricLoss
from .recipe import LamSpec, LossSpec, ObjectiveSpec, OptimSpec, Recipe

__all__ = ["Stage"]


@dataclass(frozen=True)
class Stage:
    """One training loop of a run.

    ``name``: "fine-tune" or "pretrain" (progress bars, plots, errors); ``tunable``: the model
    takes λ; ``optim``: its optimizer and schedule; ``objectives`` and ``loss`` (mode, base,
    shared losses) make L(λ); ``lam``: how λ is drawn (None: no λ, one objective of weight 1);
    ``validate_every``: steps between λ sweeps (0: at the end only; None: never); ``lr_key``:
    where the recipe sets this stage's learning rate.
    """

    name: str
    tunable: bool
    optim: OptimSpec
    objectives: List[ObjectiveSpec]
    loss_spec: LossSpec
    lam: Optional[LamSpec]
    validate_every: Optional[int]
    lr_key: str

    @classmethod
    def fine_tune(cls, recipe: Recipe, tunable: bool = True) -> "Stage":
        """The recipe's fine-tune (``tunable=False``: a plain network on the recipe's objectives,
        as the fidelity benchmark's per-λ oracles train)."""
        return cls("fine-tune", tunable, recipe.optim, list(recipe.objectives), recipe.loss, recipe.lam,
                   recipe.validation.every if tunable else None, "optim.lr")

    @classmethod
    def pretrain(cls, recipe: Recipe) -> "Stage":
        """The plain training before tunify that a recipe's ``pretrain:`` section asks for."""
        spec = recipe.pretrain
        if spec is None:
            raise ValueError("the recipe has no `pretrain:` section")
        optim = dataclasses.replace(recipe.optim, steps=spec.steps, lr=spec.lr, ema_decay=0.0, warmup_steps=0,
                                    freeze_non_tunable=False)
        objective = ObjectiveSpec(name="pretrain", losses=spec.losses, target=spec.target)
        return cls("pretrain", False, optim, [objective], LossSpec(), None, None, "pretrain.lr")

    @property
    def steps(self) -> int:
        return self.optim.steps

    @property
    def loss(self) -> LossSpec:  # with ``objectives``, what ParametricLoss.from_recipe reads
        return self.loss_spec

    def parametric_loss(self, reference: Optional[nn.Module] = None, strict: bool = True) -> ParametricLoss:
        """L(λ) of this stage; ``reference``: the network before tunify (the "original" target)."""
        return ParametricLoss.from_recipe(self, reference, strict)

    def no_lam(self, batch: int) -> torch.Tensor:
        """The loss weights of a stage without λ: (B, 1) ones, the single objective at full weight."""
        return torch.ones(batch, 1)
