"""Activations whose leading axis is not the batch: sequence-first attention.

``nn.MultiheadAttention`` and ``nn.Transformer*Layer`` without ``batch_first`` take and give
``(L, B, C)``; a tunable linear beside them (a transformer block's feed-forward) sees the
sequence, not the batch, in its leading axis, and per-sample kernels would follow the wrong
axis (silently, when L is a multiple of B). Such models run each distinct λ row on the shared
path instead, which is exact whatever the layout.
"""
from __future__ import annotations

from typing import List

from torch import nn

__all__ = ["sequence_first_reasons"]

_SEQUENCE_FIRST = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer, nn.Transformer)


def _is_sequence_first(module: nn.Module) -> bool:
    if not isinstance(module, _SEQUENCE_FIRST):
        return False
    if isinstance(module, nn.MultiheadAttention):
        return not module.batch_first
    attn = getattr(module, "self_attn", None)
    return attn is not None and not attn.batch_first


def sequence_first_reasons(model: nn.Module) -> List[str]:
    """One reason per module that owns a sequence-first attention (empty: none found)."""
    reasons = []
    for name, module in model.named_modules():
        if any(_is_sequence_first(child) for child in module.children()) and not _is_sequence_first(module):
            kind = next(type(c).__name__ for c in module.children() if _is_sequence_first(c))
            reasons.append(f"{name or type(model).__name__} runs a sequence-first {kind} ((L, B, C) activations)")
    return reasons
