"""λ sweeps on a fixed validation batch, as training reports them (val.csv, the end-of-run
sweep): rows of :func:`tunify.evaluation.sweep`, the one sweep, so a run's numbers are the
numbers ``tunify sweep`` and the model card show for the same model, images and λ."""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch import Tensor, nn

from ..evaluation import sweep

__all__ = ["lam_sweep", "sweep_batch"]


def sweep_batch(model: nn.Module, batch: Dict[str, Tensor], lams: Tensor, loss: Optional[nn.Module] = None,
                pictures: bool = False):
    """The :class:`~tunify.evaluation.SweepResult` of ``model`` on ``batch`` ({"lq", "gt", ...},
    (B, 3, h, w) / (B, 3, H, W)) at each λ row of ``lams`` (N, p): PSNR and SSIM, and each
    objective's loss when the ParametricLoss ``loss`` is given. Each image runs alone."""
    metrics = ("psnr", "ssim", "loss") if loss is not None else ("psnr", "ssim")
    return sweep(model, batch, lams=lams, loss=loss, metrics=metrics, max_size=None, progress=False,
                 pictures=pictures, grid_crop=None)


@torch.no_grad()
def lam_sweep(model: nn.Module, batch: Dict[str, Tensor], lams: Tensor, loss: Optional[nn.Module] = None,
              chunk: int = 8) -> List[Dict[str, object]]:
    """For each λ row of ``lams`` (N, p): mean PSNR/SSIM of ``model(lq, lam=λ)`` against the
    clean images, and (given the ParametricLoss ``loss``) each objective's mean loss.
    Returns one dict per λ (``chunk`` is kept for callers; images now run one at a time)."""
    return sweep_batch(model, batch, lams, loss).rows
