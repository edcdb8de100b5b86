"""Loss registry: build losses by name from BasicSR-style spec dicts.

    build_loss({"type": "CharbonnierLoss", "loss_weight": 1.0, "eps": 1e-3})

Names not defined by tunify fall back to basicsr's LOSS_REGISTRY when basicsr is installed,
wrapped so they return per-sample values like ours (see ``external.BasicsrLoss``). basicsr is
imported only then: importing its losses drags in its whole model zoo, which is slow.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Dict, List, Type, TypeVar

from .base import Loss
from .spec import check_kwargs, did_you_mean

__all__ = ["LOSSES", "register_loss", "build_loss", "loss_names"]

#: tunify's own losses by class name; filled by the @register_loss decorator.
LOSSES: Dict[str, Type[Loss]] = {}

L = TypeVar("L", bound=Type[Loss])


def register_loss(cls: L) -> L:
    """Class decorator: register a :class:`Loss` subclass under its class name."""
    if not (isinstance(cls, type) and issubclass(cls, Loss)):
        raise TypeError(f"register_loss expects a subclass of tunify.objectives.Loss, got {cls!r}")
    name = cls.__name__
    if name in LOSSES and LOSSES[name] is not cls:
        raise ValueError(
            f"a loss named {name!r} is already registered ({LOSSES[name].__module__}); "
            "give the new class another name"
        )
    LOSSES[name] = cls
    return cls


def loss_names() -> List[str]:
    """Sorted names of tunify's own losses (basicsr fallbacks not included)."""
    return sorted(LOSSES)


def build_loss(spec: Mapping[str, Any]) -> Loss:
    """Build a loss from ``{"type": <name>, **keywords}``; returns a :class:`Loss` giving (B,).

    Raises ValueError for a missing or unknown ``type`` (with a did-you-mean), an unknown
    keyword, or a value of the wrong type (naming the key).
    """
    if not isinstance(spec, Mapping):
        raise ValueError(f"a loss spec must be a mapping like {{'type': 'L1Loss'}}, got {spec!r}")
    kwargs = dict(spec)
    if "type" not in kwargs:
        raise ValueError(
            f"loss spec {kwargs!r} has no 'type' key; add one, e.g. {{'type': 'L1Loss', ...}}. "
            f"Known: {', '.join(loss_names())}"
        )
    name = kwargs.pop("type")
    if not isinstance(name, str):
        raise ValueError(f"loss spec 'type' must be a string naming a loss, got {name!r}")

    cls = LOSSES.get(name)
    if cls is not None:
        return cls(**check_kwargs(cls, kwargs, owner=name))

    from .external import BasicsrLoss, basicsr_losses  # lazy: only for names we lack

    foreign, reason = basicsr_losses()
    if name in foreign:
        return BasicsrLoss(name, **kwargs)
    known = ", ".join(loss_names())
    extra = f"; from basicsr: {', '.join(sorted(set(foreign) - set(LOSSES)))}" if foreign else ""
    note = f" (basicsr fallback unavailable: {reason})" if reason else ""
    hint = did_you_mean(name, list(LOSSES) + list(foreign))
    raise ValueError(f"unknown loss type {name!r}.{hint} Known: {known}{extra}{note}")
