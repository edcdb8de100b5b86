"""Perceptual quality measures for λ sweeps: NIQE (no reference) and LPIPS (full reference).

Both are optional and never download anything:

- **NIQE** comes from BasicSR (``basicsr.metrics.niqe.calculate_niqe``, MATLAB-exact, the
  official pristine-model parameters shipped with BasicSR). It needs at least two 96×96
  blocks, so images smaller than 96×192 (or 192×96) get no NIQE value.
- **LPIPS** (``lpips`` package, AlexNet trunk, v0.1 linear layers shipped with the package)
  runs only when torchvision's ImageNet AlexNet weights are already in the torch hub cache,
  ``<torch.hub.get_dir()>/checkpoints/alexnet-owt-7be5be79.pth``. The trunk is built
  randomly initialised and loaded from that file by tunify itself, so no code path can
  reach the network.

``niqe_unavailable()`` / ``lpips_unavailable()`` return None when the measure can run, else
the reason it cannot (what a sweep reports as skipped).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "NIQE_BLOCK",
    "ALEXNET_FILE",
    "niqe_unavailable",
    "niqe_fits",
    "niqe",
    "lpips_weights_path",
    "lpips_unavailable",
    "lpips_distance",
]

NIQE_BLOCK = 96
"""NIQE's block side in pixels; an image needs at least two whole blocks."""

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
"""torchvision's ImageNet AlexNet weights file (the fallback when torchvision cannot say)."""

_LPIPS_CACHE: Dict[str, torch.nn.Module] = {}


# --- NIQE ---------------------------------------------------------------------------------

def niqe_unavailable() -> Optional[str]:
    """None when BasicSR's NIQE imports, else why NIQE is skipped."""
    try:
        from basicsr.metrics.niqe import calculate_niqe  # noqa: F401
    except Exception as exc:  # ImportError, or basicsr failing at import on a new torch
        return (f"NIQE skipped: basicsr.metrics.niqe does not import ({type(exc).__name__}: {exc}); "
                "install basicsr-fixed (scripts/setup.sh does) to enable it")
    return None


def niqe_fits(height: int, width: int) -> bool:
    """Whether an H×W image holds the two 96×96 blocks NIQE needs (one block gives no covariance)."""
    return (height // NIQE_BLOCK) * (width // NIQE_BLOCK) >= 2


def niqe(image: Tensor) -> float:
    """NIQE of one RGB image (lower is more natural).

    image: (3, H, W) or (1, 3, H, W) in [0, 1] (clamped), H×W large enough for
    :func:`niqe_fits`. It is handed to ``calculate_niqe`` as an H×W×3 BGR float array in
    0–255 with ``crop_border=0`` (BasicSR converts it to MATLAB's Y channel and rounds).
    """
    from basicsr.metrics.niqe import calculate_niqe

    x = image.detach()
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise ValueError(f"niqe takes one image, got a batch of shape {tuple(x.shape)}")
        x = x[0]
    if x.dim() != 3 or x.shape[0] != 3:
        raise ValueError(f"niqe expects a (3, H, W) RGB image, got shape {tuple(image.shape)}")
    if not niqe_fits(x.shape[1], x.shape[2]):
        raise ValueError(f"NIQE needs an image of at least {NIQE_BLOCK}×{2 * NIQE_BLOCK} pixels "
                         f"(two {NIQE_BLOCK}×{NIQE_BLOCK} blocks), got {x.shape[1]}×{x.shape[2]}")
    hwc = (x.float().clamp(0, 1) * 255.0).permute(1, 2, 0).cpu().numpy()
    bgr = np.ascontiguousarray(hwc[..., ::-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(calculate_niqe(bgr, crop_border=0, input_order="HWC", convert_to="y"))


# --- LPIPS --------------------------------------------------------------------------------

def _alexnet_file_name() -> str:
    try:
        from torchvision.models import AlexNet_Weights

        return os.path.basename(AlexNet_Weights.IMAGENET1K_V1.url)
    except Exception:
        return ALEXNET_FILE


def lpips_weights_path() -> Path:
    """Where LPIPS's AlexNet trunk weights must be: ``<torch hub dir>/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / _alexnet_file_name()


def lpips_unavailable() -> Optional[str]:
    """None when LPIPS can run offline, else why it is skipped (naming what to install or
    where to put the weights)."""
    try:
        import lpips  # noqa: F401
        import torchvision  # noqa: F401
    except Exception as exc:
        return (f"LPIPS skipped: the lpips package does not import ({type(exc).__name__}: {exc}); "
                "pip install lpips (or tunify[eval])")
    path = lpips_weights_path()
    if not path.is_file():
        return (f"LPIPS skipped: AlexNet weights not in {path}; put them there to enable it "
                f"(torchvision's {path.name}; tunify never downloads them)")
    return None


def _lpips_model(device: torch.device) -> torch.nn.Module:
    """LPIPS(net='alex', v0.1), trunk loaded from the hub cache file; cached per file and device."""
    path = lpips_weights_path()
    key = f"{path}|{device}"
    if key in _LPIPS_CACHE:
        return _LPIPS_CACHE[key]
    reason = lpips_unavailable()
    if reason is not None:
        raise FileNotFoundError(reason)
    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # pnet_rand: the trunk starts random, so torchvision is never asked for pretrained weights
        model = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"LPIPS: {path} cannot be read ({type(exc).__name__}: {exc}); replace it with "
                         "torchvision's AlexNet ImageNet weights") from exc
    # lpips slices keep torchvision's feature indices: slice2.3.weight is features.3.weight
    trunk = {}
    for name, _ in model.net.named_parameters():
        slice_name, index, kind = name.split(".")
        src = f"features.{index}.{kind}"
        if src not in state:
            raise ValueError(f"LPIPS: {path} lacks {src}: it is not torchvision's AlexNet state_dict")
        trunk[name] = state[src]
    model.net.load_state_dict(trunk, strict=True)
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    _LPIPS_CACHE[key] = model
    return model


@torch.no_grad()
def lpips_distance(pred: Tensor, target: Tensor) -> Tensor:
    """LPIPS (AlexNet, v0.1) per sample, lower is closer: (B, 3, H, W) × 2 in [0, 1] → (B,).

    Identical images give exactly 0. Raises FileNotFoundError with the reason when the
    AlexNet weights are not in the hub cache (see :func:`lpips_unavailable`).
    """
    if pred.dim() == 3:
        pred, target = pred[None], target[None]
    if pred.shape != target.shape or pred.dim() != 4 or pred.shape[1] != 3:
        raise ValueError(f"lpips_distance expects two (B, 3, H, W) batches of one shape, got "
                         f"{tuple(pred.shape)} and {tuple(target.shape)}")
    model = _lpips_model(pred.device)
    out = model(pred.float().clamp(0, 1), target.float().clamp(0, 1), normalize=True)
    return out.reshape(pred.shape[0])
