"""How sweep metrics and λ are written in tables and plots: titles with which way is better,
number formats. Shared by the result tables and the plots, so neither imports the other."""
from __future__ import annotations

import math
from typing import List, Optional

__all__ = ["metric_label", "lam_text", "format_value", "LOWER_IS_BETTER"]

_LABELS = {"psnr": "PSNR (dB) ↑", "ssim": "SSIM ↑", "niqe": "NIQE ↓", "lpips": "LPIPS ↓"}
_FORMATS = {"psnr": "{:.2f}", "ssim": "{:.4f}", "niqe": "{:.3f}", "lpips": "{:.4f}"}
LOWER_IS_BETTER = ("niqe", "lpips")  # and every loss_<objective>


def metric_label(name: str) -> str:
    """How a metric column is titled in tables and plots, with which way is better."""
    if name.startswith("loss_"):
        return f"loss {name[5:]} ↓"
    return _LABELS.get(name, name)


def format_value(name: str, value: Optional[float]) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return _FORMATS.get(name, "{:.4g}").format(value)


def lam_text(lam: List[float]) -> str:
    return "(" + ", ".join(f"{v:.2f}" for v in lam) + ")"
