"""λ sweeps on a fixed validation batch: what each λ does to PSNR, SSIM and each objective."""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch import Tensor, nn

from ..metrics import psnr, ssim

__all__ = ["lam_sweep"]


@torch.no_grad()
def lam_sweep(model: nn.Module, batch: Dict[str, Tensor], lams: Tensor, loss: Optional[nn.Module] = None,
              chunk: int = 8) -> List[Dict[str, object]]:
    """For each λ row of ``lams`` (N, p): mean PSNR/SSIM of ``model(lq, lam=λ)`` against the
    clean images, and (given the ParametricLoss ``loss``) each objective's mean loss.
    Returns one dict per λ."""
    was_training = model.training
    model.eval()
    rows = []
    if loss is not None and hasattr(loss, "prepare"):
        loss.prepare(batch)  # the "original" target once for the whole sweep
    lq, gt = batch["lq"], batch["gt"]
    for lam in lams:
        preds = torch.cat([model(lq[i : i + chunk], lam=lam) for i in range(0, lq.shape[0], chunk)])
        preds = preds.float()
        row: Dict[str, object] = {
            "lam": [round(float(v), 4) for v in lam],
            "psnr": float(psnr(preds.clamp(0, 1), gt).mean()),
            "ssim": float(ssim(preds.clamp(0, 1), gt).mean()),
        }
        if loss is not None:
            _, terms = loss(preds, dict(batch), lam.expand(preds.shape[0], -1), torch.Generator().manual_seed(0))
            row.update({f"loss_{name}": float(t.mean()) for name, t in terms.items()})
        rows.append(row)
    model.train(was_training)
    return rows
