"""Adapter that lets basicsr's registered losses serve as per-sample tunify losses.

basicsr's losses reduce with ``reduction`` in {'none', 'mean', 'sum'}. The adapter asks for
'none' and takes the mean over every non-batch axis itself. Some losses only offer 'mean'
and 'sum' (they refuse 'none'); those are evaluated on one sample at a time with 'mean',
which is the per-sample mean by definition, at the price of B calls. A loss with no
``reduction`` argument at all only ever yields a batch scalar and is refused.
"""
from __future__ import annotations

import inspect
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from .base import Loss, flat_mean
from .spec import check_kwargs, coerce

__all__ = ["BasicsrLoss", "basicsr_losses"]

_TARGET_NAMES = ("target", "gt")


def basicsr_losses() -> Tuple[Dict[str, type], Optional[str]]:
    """basicsr's LOSS_REGISTRY as a dict, and None; or ({}, why) when it cannot be imported."""
    try:
        import basicsr.losses  # noqa: F401  (registers the losses)
        from basicsr.utils.registry import LOSS_REGISTRY
    except Exception as err:  # not installed, or broken by a missing optional dependency
        return {}, f"{type(err).__name__}: {err}"
    return {name: obj for name, obj in LOSS_REGISTRY}, None


def _takes_target(forward: Any) -> bool:
    """Whether forward(pred, <second>, ...) wants the target as its second argument."""
    params = [p for n, p in inspect.signature(forward).parameters.items() if n != "self"]
    if len(params) < 2:
        return False
    second = params[1]
    # forward(pred, weight=None) is a regulariser on pred (e.g. total variation): the target
    # must not be passed there, it would be taken as a weight map
    return second.name in _TARGET_NAMES or second.default is inspect.Parameter.empty


class BasicsrLoss(Loss):
    """A loss from basicsr's LOSS_REGISTRY, made per-sample.

    Args:
        loss_type: the name in basicsr's LOSS_REGISTRY, e.g. "WeightedTVLoss".
        loss_weight: applied here; the wrapped loss is built with loss_weight=1.
        **options: further keywords of the basicsr loss (checked against its signature).

    Shapes:
        pred, target: (B, C, H, W) → (B,): loss_weight · mean over non-batch axes of the
        unreduced basicsr loss (or its 'mean' value per sample, see the module docstring).
    """

    def __init__(self, loss_type: str, loss_weight: float = 1.0, **options: Any) -> None:
        super().__init__(coerce(loss_weight, float, "loss_weight", f"{loss_type} (basicsr)"))
        registry, reason = basicsr_losses()
        if loss_type not in registry:
            raise ValueError(f"basicsr has no loss named {loss_type!r}" + (f" ({reason})" if reason else ""))
        cls = registry[loss_type]
        owner = f"{loss_type} (basicsr)"
        if "reduction" in options:
            raise ValueError(
                f"{owner}: remove 'reduction' from the spec; tunify always needs one value per "
                "sample and sets the reduction itself"
            )
        options = check_kwargs(cls, options, owner=owner)
        accepted = inspect.signature(cls.__init__).parameters
        if "reduction" not in accepted:
            raise ValueError(
                f"{owner} has no 'reduction' argument, so it can only return one scalar for the "
                "whole batch; tunify needs a per-sample loss of shape (B,) to weight each sample "
                "by its own λ. Use one of tunify's losses (tunify.objectives.loss_names()) or "
                "write a tunify.objectives.Loss subclass."
            )
        if "loss_weight" in accepted:
            options["loss_weight"] = 1.0  # applied once, by us
        try:
            inner = cls(reduction="none", **options)
            self.per_sample_calls = False
        except ValueError:  # 'none' refused: fall back to 'mean', one sample at a time
            inner = cls(reduction="mean", **options)
            self.per_sample_calls = True
        self.inner: nn.Module = inner
        self.loss_type = loss_type
        self.needs_target = _takes_target(inner.forward)

    def _call(self, pred: Tensor, target: Optional[Tensor]) -> Tensor:
        return self.inner(pred, target) if self.needs_target else self.inner(pred)

    def per_sample(self, pred: Tensor, target: Optional[Tensor]) -> Tensor:
        """(B, C, H, W) → (B,)."""
        batch = pred.shape[0]
        if self.per_sample_calls:
            values = []
            for i in range(batch):
                value = self._call(pred[i:i + 1], None if target is None else target[i:i + 1])
                values.append(value.reshape(()))
            return torch.stack(values)
        value = self._call(pred, target)
        if value.dim() == 0 or value.shape[0] != batch:
            raise ValueError(
                f"basicsr's {self.loss_type} returned shape {tuple(value.shape)} with "
                f"reduction='none'; tunify needs a per-sample loss with a leading batch axis "
                f"of size {batch}. Use one of tunify's losses instead."
            )
        return flat_mean(value)

    def extra_repr(self) -> str:
        mode = "mean per sample" if self.per_sample_calls else "reduction='none'"
        return f"{self.loss_type}, {mode}, loss_weight={self.loss_weight:g}"
