"""Small helpers shared by the data modules: did-you-mean hints and per-image parameters.

A degradation parameter is either one number (every image gets it) or a ``[low, high]``
range sampled uniformly per image. :func:`check_param` validates such a value once, when a
spec is built, so that a typo fails before training starts; :func:`sample_param` draws the
(B,) per-image values from an explicit generator at call time.
"""
from __future__ import annotations

import numbers
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from .._text import did_you_mean

__all__ = ["did_you_mean", "ParamLike", "check_param", "sample_param"]

ParamLike = Union[float, int, Sequence[float]]


def _is_number(value: object) -> bool:
    # bool is an int subclass; `sigma: true` in a YAML file is a mistake, not 1.0
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_param(
    value: object,
    name: str,
    low: Optional[float] = None,
    high: Optional[float] = None,
    allow_range: bool = True,
) -> None:
    """Raise ValueError unless ``value`` is a number or ``[low, high]`` within [low, high] bounds.

    ``name`` prefixes the message (e.g. ``"gaussian_noise: sigma"``).
    """
    if _is_number(value):
        values = [float(value)]  # type: ignore[arg-type]
    elif allow_range and isinstance(value, (list, tuple)) and len(value) == 2 and all(map(_is_number, value)):
        values = [float(v) for v in value]
        if values[0] > values[1]:
            raise ValueError(
                f"{name}={list(value)} is [high, low]; write the range as "
                f"[{value[1]}, {value[0]}] (low first)"
            )
    else:
        kinds = "a number or a [low, high] range" if allow_range else "a single number (no range)"
        raise ValueError(f"{name} must be {kinds}, got {value!r}")
    for v in values:
        if v != v or v in (float("inf"), float("-inf")):
            raise ValueError(f"{name}={value!r} is not finite")
        if low is not None and v < low:
            raise ValueError(f"{name}={value!r} is below {low:g}; it must be ≥ {low:g}")
        if high is not None and v > high:
            raise ValueError(f"{name}={value!r} is above {high:g}; it must be ≤ {high:g}")


def sample_param(value: ParamLike, n: int, generator: torch.Generator, integer: bool = False) -> Tensor:
    """(n,) float64 per-image values: ``value`` repeated, or uniform draws from ``[low, high]``.

    ``integer`` draws whole numbers uniformly from the inclusive range (JPEG quality).
    Draws happen on the generator's device (CPU in practice) so the stream, and hence the
    batch, does not depend on where the images live.
    """
    dev = generator.device
    if _is_number(value):
        return torch.full((n,), float(value), dtype=torch.float64, device=dev)  # type: ignore[arg-type]
    lo, hi = (float(v) for v in value)  # type: ignore[union-attr]
    if integer:
        return torch.randint(int(round(lo)), int(round(hi)) + 1, (n,), generator=generator, device=dev).double()
    return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64, device=dev)
