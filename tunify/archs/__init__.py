"""Architectures by registry name: ``create_model("nafnet", width=16)``.

Own definitions (NAFNet, U-Net) live here; SwinIR, EDSR, RRDBNet and SRVGGNetCompact come
from basicsr when it is installed; Real-ESRGAN's released networks are named in
:mod:`.realesrgan`; any timm model is ``"timm:<name>"`` (created without pretrained weights).
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Dict

from torch import nn

from .._text import did_you_mean
from .dncnn import DnCNN
from .nafnet import NAFNet
from .realesrgan import REALESRGAN_ARCHS
from .stylenet import StyleNet
from .unet import UNet

__all__ = ["ARCHS", "register_arch", "create_model", "NAFNet", "UNet", "DnCNN", "StyleNet"]


def _basicsr(module: str, cls: str, **defaults: Any) -> Callable[..., nn.Module]:
    def make(**kwargs: Any) -> nn.Module:
        try:
            mod = importlib.import_module(f"basicsr.archs.{module}")
        except ImportError as exc:
            raise ImportError(
                f"{cls} comes from basicsr, which is not importable ({exc}). Install it with "
                "`pip install --no-build-isolation --no-deps basicsr-fixed==1.4.2` (see README)."
            ) from exc
        return getattr(mod, cls)(**{**defaults, **kwargs})

    return make


ARCHS: Dict[str, Callable[..., nn.Module]] = {
    "nafnet": NAFNet,
    # The small NAFNet of the official SIDD width-32 recipe, and a light one for CPU work.
    "nafnet-width32": lambda **kw: NAFNet(**{"width": 32, "middle_blk_num": 12, "enc_blk_nums": (2, 2, 4, 8), "dec_blk_nums": (2, 2, 2, 2), **kw}),
    "nafnet-tiny": lambda **kw: NAFNet(**{"width": 16, "middle_blk_num": 1, "enc_blk_nums": (1, 1), "dec_blk_nums": (1, 1), **kw}),
    "unet": UNet,
    # DnCNN-S (17 layers, one noise level), the blind DnCNN-B (20 layers), a light one for CPU work.
    "dncnn": DnCNN,
    "dncnn-b": lambda **kw: DnCNN(**{"depth": 20, **kw}),
    "dncnn-tiny": lambda **kw: DnCNN(**{"features": 16, "depth": 6, **kw}),
    "stylenet": StyleNet,
    "swinir": _basicsr("swinir_arch", "SwinIR"),
    "swinir-light": _basicsr(
        "swinir_arch", "SwinIR", upscale=1, img_size=64, window_size=8, img_range=1.0, depths=[6, 6, 6, 6],
        embed_dim=60, num_heads=[6, 6, 6, 6], mlp_ratio=2, upsampler="", resi_connection="1conv",
    ),
    "edsr": _basicsr("edsr_arch", "EDSR", num_in_ch=3, num_out_ch=3),
    "rrdbnet": _basicsr("rrdbnet_arch", "RRDBNet", num_in_ch=3, num_out_ch=3),
    "srvgg-compact": _basicsr("srvgg_arch", "SRVGGNetCompact"),
    # Real-ESRGAN's released networks (official weights: ``weights: ncnn:<stem>`` offline, or the .pth URLs)
    **REALESRGAN_ARCHS,
}


def register_arch(name: str, factory: Callable[..., nn.Module]) -> None:
    """Make ``create_model(name, **kwargs)`` call ``factory(**kwargs)``."""
    ARCHS[name] = factory


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build an architecture by registry name, ``timm:<name>``, ``package.module:Class``, or a
    model file (``.pth``/``.pt``/``.ckpt``/``.safetensors``, architecture and weights from spandrel)."""
    from .model_file import is_model_file, load_model_file

    if is_model_file(name):
        if kwargs:
            raise ValueError(f"{name} is a model file, which brings its own architecture; drop the kwargs {sorted(kwargs)}")
        return load_model_file(name).model
    if name.startswith("timm:"):
        import timm

        return timm.create_model(name[5:], pretrained=False, **kwargs)
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"architecture {name!r}: cannot import {attr} from {module_name} ({exc})") from exc
        return factory(**kwargs)
    if name not in ARCHS:
        raise KeyError(f"unknown architecture {name!r}.{did_you_mean(name, ARCHS)} Known: {', '.join(sorted(ARCHS))}, or 'timm:<name>'.")
    return ARCHS[name](**kwargs)
