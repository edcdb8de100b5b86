"""The common interface of every loss in tunify: one value per sample.

Parametric multi-loss training weights each sample by its own λ, L(λ) = Σ_i λ_i L_i, so a
loss that folds the batch into one scalar is useless to it: the trainer needs L_i for each
sample separately. Every loss here therefore returns shape (B,), reduced over all axes but
the batch axis, and already multiplied by its ``loss_weight``.
"""
from __future__ import annotations

import math
from typing import Optional

from torch import Tensor, nn

__all__ = ["Loss", "check_image_pair", "flat_mean"]


def check_image_pair(pred: Tensor, target: Optional[Tensor], name: str) -> None:
    """Raise ValueError unless pred is (B, C, H, W) and target (if given) has the same shape."""
    if not isinstance(pred, Tensor) or pred.dim() != 4:
        shape = tuple(pred.shape) if isinstance(pred, Tensor) else type(pred).__name__
        raise ValueError(f"{name}: pred must be a (B, C, H, W) tensor, got {shape}")
    if target is None:
        return
    if not isinstance(target, Tensor) or target.shape != pred.shape:
        shape = tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__
        raise ValueError(
            f"{name}: pred and target must have the same shape, got pred {tuple(pred.shape)} "
            f"and target {shape}"
        )


class Loss(nn.Module):
    """Base class of tunify's losses.

    Subclasses implement :meth:`per_sample` and inherit :meth:`forward`, which checks the
    shapes, applies ``loss_weight`` and makes sure the result is one value per sample.

    Args:
        loss_weight: factor applied to the per-sample loss (finite).

    Shapes:
        pred, target: (B, C, H, W) float images, nominally in [0, 1].
        output: (B,) = loss_weight · per_sample(pred, target).
    """

    #: whether ``forward`` needs a target (GAN generator losses do not).
    needs_target: bool = True

    def __init__(self, loss_weight: float = 1.0) -> None:
        super().__init__()
        weight = float(loss_weight)
        if not math.isfinite(weight):
            raise ValueError(f"{type(self).__name__}: loss_weight must be finite, got {loss_weight!r}")
        self.loss_weight = weight

    def per_sample(self, pred: Tensor, target: Tensor) -> Tensor:
        """The unweighted loss of each sample: (B, C, H, W) × 2 → (B,)."""
        raise NotImplementedError(f"{type(self).__name__} must implement per_sample(pred, target)")

    def forward(self, pred: Tensor, target: Optional[Tensor] = None) -> Tensor:
        """(B, C, H, W), (B, C, H, W) → (B,): the weighted loss of each sample."""
        name = type(self).__name__
        if target is None and self.needs_target:
            raise ValueError(f"{name} compares pred with a target; call it as loss(pred, target)")
        check_image_pair(pred, target, name)
        value = self.per_sample(pred, target)
        if value.shape != (pred.shape[0],):
            # a bug in the subclass, not in the caller's input
            raise RuntimeError(
                f"{name}.per_sample returned shape {tuple(value.shape)}; a per-sample loss of "
                f"shape ({pred.shape[0]},) is required"
            )
        return value * self.loss_weight

    def extra_repr(self) -> str:
        return f"loss_weight={self.loss_weight:g}"


def flat_mean(x: Tensor) -> Tensor:
    """Mean over every axis but the first: (B, ...) → (B,)."""
    return x.reshape(x.shape[0], -1).mean(dim=1)
