"""Synthetic degradations of clean (B, C, H, W) batches in [0, 1], and their config specs.

Each random parameter is a number or a ``[low, high]`` range drawn uniformly per image from
an explicit ``torch.Generator`` (never the global RNG), so a batch is a pure function of the
generator state. Draws happen on the generator's device, which keeps the numbers identical
whether the images sit on a CPU or a GPU.

A config names the steps in order::

    [{"type": "gaussian_blur", "sigma": [0.2, 2.0]},
     {"type": "bicubic_down", "scale": 4},
     {"type": "gaussian_noise", "sigma": [5, 30]},
     {"type": "jpeg", "quality": [30, 95]}]

and :func:`build_degradation` turns it into a :class:`Degradation`, checking every name and
value up front so that a typo fails before training starts.
"""
from __future__ import annotations

import copy
import inspect
import io
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ._util import ParamLike, check_param, did_you_mean, sample_param
from .filters import filter2d, gaussian_kernel, motion_kernel

__all__ = [
    "gaussian_noise",
    "gaussian_blur",
    "motion_blur",
    "bicubic_down",
    "jpeg",
    "DEGRADATIONS",
    "Degradation",
    "DegradationSpec",
    "build_degradation",
]

DegradationSpec = Union["Degradation", Mapping[str, Any], Sequence[Mapping[str, Any]]]


def _check_batch(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} expects a (B, C, H, W) tensor, got {shape}; add a batch axis with x[None]")


def _check_kernel_size(kernel_size: object, name: str) -> None:
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"{name}: kernel_size must be a positive odd integer, got {kernel_size!r}")


def _column(values: Tensor, x: Tensor) -> Tensor:
    """(B,) per-image values as a (B, 1, 1, 1) tensor that broadcasts against x."""
    return values.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


# --- parameter checks, shared by the functions and by build_degradation --------------------

def _check_noise(sigma: ParamLike, clip: bool = False) -> None:
    check_param(sigma, "gaussian_noise: sigma", low=0)
    if not isinstance(clip, bool):
        raise ValueError(f"gaussian_noise: clip must be true or false, got {clip!r}")


def _check_blur(sigma: ParamLike, kernel_size: int = 21) -> None:
    check_param(sigma, "gaussian_blur: sigma", low=0)
    _check_kernel_size(kernel_size, "gaussian_blur")


def _check_motion(length: ParamLike, angle: ParamLike, kernel_size: int = 21) -> None:
    _check_kernel_size(kernel_size, "motion_blur")
    try:
        check_param(length, "motion_blur: length", low=0, high=kernel_size)
    except ValueError as exc:
        if "above" in str(exc):
            raise ValueError(f"{exc} (the kernel_size); raise kernel_size or shorten the motion") from None
        raise
    check_param(angle, "motion_blur: angle")


def _check_down(scale: int) -> None:
    if isinstance(scale, float) and scale.is_integer():
        scale = int(scale)
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(
            f"bicubic_down: scale must be a whole number ≥ 1 (one factor for the whole batch, "
            f"so that the images keep one size), got {scale!r}"
        )


def _check_jpeg(quality: ParamLike) -> None:
    check_param(quality, "jpeg: quality", low=1, high=100)


# --- the degradations ------------------------------------------------------------------------

def gaussian_noise(x: Tensor, sigma: ParamLike, generator: torch.Generator, clip: bool = False) -> Tensor:
    """Add white Gaussian noise of standard deviation ``sigma``/255 (sigma in 0–255 units).

    x: (B, C, H, W) in [0, 1]. sigma: a number or a [low, high] range drawn per image.
    ``clip`` clamps the result to [0, 1]; off by default, like the usual AWGN benchmarks.
    Returns (B, C, H, W).
    """
    _check_batch(x, "gaussian_noise")
    _check_noise(sigma, clip)
    s = sample_param(sigma, x.shape[0], generator) / 255.0
    noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=torch.float32)
    y = x + noise.to(device=x.device, dtype=x.dtype) * _column(s, x)
    return y.clamp(0, 1) if clip else y


def gaussian_blur(x: Tensor, sigma: ParamLike, generator: torch.Generator, kernel_size: int = 21) -> Tensor:
    """Blur with an isotropic Gaussian of ``sigma`` pixels (0 leaves the image unchanged).

    x: (B, C, H, W) with H, W > kernel_size // 2. sigma: a number or a per-image range.
    The kernel is kernel_size² taps normalised to sum 1; borders are reflect-padded.
    Returns (B, C, H, W).
    """
    _check_batch(x, "gaussian_blur")
    _check_blur(sigma, kernel_size)
    s = sample_param(sigma, x.shape[0], generator)
    return filter2d(x, gaussian_kernel(s, kernel_size))


def motion_blur(
    x: Tensor, length: ParamLike, angle: ParamLike, generator: torch.Generator, kernel_size: int = 21
) -> Tensor:
    """Blur along a straight line of ``length`` pixels at ``angle`` degrees (0 = horizontal,
    90 = vertical, counter-clockwise on screen).

    x: (B, C, H, W). length (≤ kernel_size) and angle: numbers or per-image ranges.
    The kernel is normalised to sum 1; borders are reflect-padded. Returns (B, C, H, W).
    """
    _check_batch(x, "motion_blur")
    _check_motion(length, angle, kernel_size)
    n = x.shape[0]
    lengths = sample_param(length, n, generator)
    angles = sample_param(angle, n, generator)
    return filter2d(x, motion_kernel(lengths, angles, kernel_size))


def bicubic_down(x: Tensor, scale: int) -> Tensor:
    """Downscale by an integer factor with antialiased bicubic interpolation.

    x: (B, C, H, W); H and W are first cropped (bottom/right) to multiples of ``scale``.
    Returns (B, C, H // scale, W // scale), clamped to [0, 1]: bicubic overshoots at edges,
    and a real low-quality image, stored in 8 bits, cannot hold values outside [0, 1].
    """
    _check_batch(x, "bicubic_down")
    _check_down(scale)
    s = int(scale)
    if s == 1:
        return x
    h, w = x.shape[-2] // s, x.shape[-1] // s
    if h == 0 or w == 0:
        raise ValueError(f"bicubic_down: a {x.shape[-2]}×{x.shape[-1]} image is smaller than scale={s}")
    x = x[..., : h * s, : w * s]
    y = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False, antialias=True)
    return y.clamp(0, 1)


def jpeg(x: Tensor, quality: ParamLike, generator: torch.Generator) -> Tensor:
    """JPEG-compress each image with Pillow at an integer quality in 1–100.

    x: (B, C, H, W) with C = 1 or 3, values in [0, 1] (clamped and rounded to 8 bits first,
    as any JPEG encoder would). quality: a number or an inclusive [low, high] integer range
    drawn per image. Returns (B, C, H, W) on x's device, multiples of 1/255.
    """
    _check_batch(x, "jpeg")
    _check_jpeg(quality)
    if x.shape[1] not in (1, 3):
        raise ValueError(f"jpeg: images need 1 or 3 channels, got {x.shape[1]}")
    q = sample_param(quality, x.shape[0], generator, integer=True).round().long().tolist()
    pixels = (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = []
    for img, quality_i in zip(pixels, q):
        buf = io.BytesIO()
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(buf, format="JPEG", quality=int(quality_i))
        decoded = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
        out.append(decoded.reshape(img.shape))
    y = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(device=x.device, dtype=x.dtype)
    return y / 255.0


DEGRADATIONS: Dict[str, Callable[..., Tensor]] = {
    "gaussian_noise": gaussian_noise,
    "gaussian_blur": gaussian_blur,
    "motion_blur": motion_blur,
    "bicubic_down": bicubic_down,
    "jpeg": jpeg,
}
"""Degradation type → function ``fn(x, <params>, [generator])``. A function added here is
usable from configs; its keyword parameters become the spec keys."""

_CHECKS: Dict[str, Callable[..., None]] = {
    "gaussian_noise": _check_noise,
    "gaussian_blur": _check_blur,
    "motion_blur": _check_motion,
    "bicubic_down": _check_down,
    "jpeg": _check_jpeg,
}


def _params_of(fn: Callable[..., Tensor]) -> Tuple[List[str], List[str], bool]:
    """(all parameter names, the required ones, whether fn takes a generator)."""
    sig = inspect.signature(fn)
    names = [n for n in list(sig.parameters)[1:] if n != "generator"]
    required = [n for n in names if sig.parameters[n].default is inspect.Parameter.empty]
    return names, required, "generator" in sig.parameters


def _parse_step(step: Any, where: str) -> Tuple[str, Dict[str, Any]]:
    valid = ", ".join(DEGRADATIONS)
    if not isinstance(step, Mapping):
        raise ValueError(f"{where}: expected a mapping like {{'type': 'gaussian_noise', 'sigma': 25}}, got {step!r}")
    if "type" not in step:
        raise ValueError(f"{where}: missing 'type'; valid types: {valid}")
    kind = step["type"]
    if not isinstance(kind, str) or kind not in DEGRADATIONS:
        raise ValueError(
            f"{where}: unknown degradation type {kind!r}.{did_you_mean(str(kind), DEGRADATIONS)} Valid types: {valid}"
        )
    names, required, _ = _params_of(DEGRADATIONS[kind])
    params = {k: copy.deepcopy(v) for k, v in step.items() if k != "type"}
    for key in params:
        if key not in names:
            raise ValueError(
                f"{where}: {kind} has no parameter {key!r}.{did_you_mean(key, names)} "
                f"Its parameters: {', '.join(names)}"
            )
    missing = [n for n in required if n not in params]
    if missing:
        raise ValueError(f"{where}: {kind} needs {', '.join(repr(m) for m in missing)}")
    if kind in _CHECKS:
        try:
            _CHECKS[kind](**params)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    return kind, {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}


class Degradation:
    """A validated chain of degradation steps, applied in order.

    ``deg(x, generator)`` maps a clean (B, C, H, W) batch (or one (C, H, W) image) to its
    degraded version of shape (B, C, H / scale, W / scale), always a new tensor.
    ``Degradation([step, ...])`` or :func:`build_degradation` builds one from step mappings
    like ``{"type": "jpeg", "quality": [30, 95]}``. An empty chain is the identity (a copy).
    """

    def __init__(self, steps: Sequence[Mapping[str, Any]] = ()) -> None:
        self.steps: List[Tuple[str, Dict[str, Any]]] = [
            _parse_step(step, f"degradation[{i}]") for i, step in enumerate(steps)
        ]

    @property
    def scale(self) -> int:
        """Total downscale factor: the product of the steps' ``scale`` (1 when none has one)."""
        total = 1
        for _, params in self.steps:
            total *= int(params.get("scale", 1))
        return total

    @property
    def spec(self) -> List[Dict[str, Any]]:
        """The config that rebuilds this chain (for checkpoints and logs)."""
        return [{"type": kind, **copy.deepcopy(params)} for kind, params in self.steps]

    @property
    def random(self) -> bool:
        """Whether any step draws from the generator."""
        return any(_params_of(DEGRADATIONS[kind])[2] for kind, _ in self.steps)

    def __call__(self, x: Tensor, generator: Optional[torch.Generator]) -> Tensor:
        return self.stages(x, generator)[-1]

    def stages(self, x: Tensor, generator: Optional[torch.Generator]) -> List[Tensor]:
        """The image after each step, in order (the last is the degraded image).

        Objectives whose target undoes only some of the steps (deblurred but still noisy)
        are built from these intermediates, with the same random draws as the input.
        """
        single = isinstance(x, Tensor) and x.dim() == 3
        y = x[None] if single else x
        if generator is None and self.random:
            raise ValueError(
                f"{self!r} draws random parameters: pass generator=torch.Generator().manual_seed(seed)"
            )
        out = []
        for kind, params in self.steps:
            fn = DEGRADATIONS[kind]
            y = fn(y, **params, generator=generator) if _params_of(fn)[2] else fn(y, **params)
            out.append(y)
        if not out or out[-1].data_ptr() == x.data_ptr():
            out.append(y.clone())  # never hand back the caller's tensor as lq: in-place edits would hit gt
        return [t[0] for t in out] if single else out

    def __len__(self) -> int:
        return len(self.steps)

    def __repr__(self) -> str:
        def show(kind: str, params: Mapping[str, Any]) -> str:
            return f"{kind}({', '.join(f'{k}={v!r}' for k, v in params.items())})"

        return f"Degradation({' -> '.join(show(k, p) for k, p in self.steps) or 'identity'})"


def build_degradation(spec: DegradationSpec) -> Degradation:
    """A :class:`Degradation` from one step ``{"type": ..., <params>}``, a list of steps
    applied in order, or an existing Degradation (returned as is).

    Raises ValueError naming the step, with a did-you-mean, for an unknown type or
    parameter, a missing parameter, a range written [high, low], or an out-of-range value.
    """
    if isinstance(spec, Degradation):
        return spec
    if isinstance(spec, Mapping):
        spec = [spec]
    if not isinstance(spec, (list, tuple)):
        raise ValueError(
            f"a degradation spec is a mapping {{'type': ..., ...}} or a list of them, got {spec!r}"
        )
    return Degradation(spec)
