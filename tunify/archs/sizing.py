"""Running a network at any image size when its architecture has size rules (issue 12).

A model file's record (``tm.config.model_file``, from spandrel: :func:`..model_file.model_file_config`)
says what input sizes the network accepts (a minimum side, a multiple of some step, square)
and whether it may be run tile by tile. :func:`sized_forward` wraps ``tm(x, lam=λ)`` so that
the sweep and the demo run any image:

- pad the input (replicating its border) up to the nearest size the rules accept, run, and
  crop the output back to ``scale ×`` the input's size;
- when tiling is ``SUPPORTED`` and the image is larger than ``tile`` px, run overlapping tiles
  (each padded as above) and keep each tile's centre; with an overlap wider than the network's
  receptive field the stitched image equals the whole-image run. ``DISCOURAGED`` / ``INTERNAL``
  models always run whole.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..surgery import TunableModel

__all__ = ["size_rules", "padded_size", "run_padded", "run_tiled", "sized_forward", "TILE", "OVERLAP"]

TILE, OVERLAP = 512, 32
Forward = Callable[[Tensor, Tensor], Tensor]


def size_rules(tm: Any) -> Optional[Dict[str, Any]]:
    """{"minimum", "multiple_of", "square", "scale", "tiling"} from the model's model-file record,
    or None for a model that has none (any size runs as it is)."""
    record = tm.config.model_file if isinstance(tm, TunableModel) else None  # baselines have no config
    if not record:
        return None
    req = record.get("size_requirements") or {}
    return {"minimum": int(req.get("minimum") or 1), "multiple_of": max(1, int(req.get("multiple_of") or 1)),
            "square": bool(req.get("square")), "scale": int(record.get("scale") or 1),
            "tiling": str(record.get("tiling") or "SUPPORTED")}


def padded_size(h: int, w: int, rules: Dict[str, Any]) -> tuple:
    """The smallest (H, W) ≥ (h, w) the rules accept."""
    step = rules["multiple_of"]
    up = lambda n: -(-max(n, rules["minimum"]) // step) * step  # noqa: E731
    hh, ww = up(h), up(w)
    if rules["square"]:
        hh = ww = max(hh, ww)
    return hh, ww


def run_padded(forward: Forward, x: Tensor, lam: Tensor, rules: Dict[str, Any]) -> Tensor:
    """``forward`` on ``x`` (B, C, h, w) padded to an accepted size, cropped back to scale·(h, w)."""
    h, w = x.shape[-2:]
    hh, ww = padded_size(h, w, rules)
    if (hh, ww) != (h, w):
        x = F.pad(x, (0, ww - w, 0, hh - h), mode="replicate")
    out = forward(x, lam)
    s = rules["scale"]
    return out[..., : h * s, : w * s]


def run_tiled(forward: Forward, x: Tensor, lam: Tensor, rules: Dict[str, Any], tile: int = TILE,
              overlap: int = OVERLAP) -> Tensor:
    """``forward`` over tiles of at most ``tile`` px with ``overlap`` px of context on each side;
    each tile's centre is kept. (B, C, h, w) -> (B, C', scale·h, scale·w)."""
    h, w = x.shape[-2:]
    s, out = rules["scale"], None
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            ya, xa, yb, xb = max(0, y0 - overlap), max(0, x0 - overlap), min(h, y1 + overlap), min(w, x1 + overlap)
            piece = run_padded(forward, x[..., ya:yb, xa:xb], lam, rules)
            if out is None:
                out = piece.new_zeros(*piece.shape[:-2], h * s, w * s)
            out[..., y0 * s : y1 * s, x0 * s : x1 * s] = piece[..., (y0 - ya) * s : (y1 - ya) * s,
                                                               (x0 - xa) * s : (x1 - xa) * s]
    return out


def sized_forward(tm: Any, tile: int = TILE, overlap: int = OVERLAP) -> Optional[Forward]:
    """``(x, λ) -> output`` that honours the model's size rules (pad and crop; tiles for large
    images when its tiling is SUPPORTED), or None when the model has no rules."""
    rules = size_rules(tm)
    if rules is None:
        return None

    def plain(x: Tensor, lam: Tensor) -> Tensor:
        return tm(x, lam=lam)

    def forward(x: Tensor, lam: Tensor) -> Tensor:
        with torch.no_grad():
            if rules["tiling"] == "SUPPORTED" and max(x.shape[-2:]) > tile:
                return run_tiled(plain, x, lam, rules, tile, overlap)
            return run_padded(plain, x, lam, rules)

    return forward
