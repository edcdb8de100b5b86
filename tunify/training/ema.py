"""Exponential moving average of a model's trainable tensors."""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """shadow ← d·shadow + (1 − d)·param after every step; ``swapped_in`` evaluates with it."""

    def __init__(self, model: nn.Module, decay: float):
        self.model, self.decay = model, decay
        self.shadow: Dict[str, torch.Tensor] = {
            n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad
        }

    @torch.no_grad()
    def update(self) -> None:
        for name, p in self.model.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(p.detach(), 1.0 - self.decay)

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        params = dict(self.model.named_parameters())
        saved = {n: params[n].detach().clone() for n in self.shadow}
        with torch.no_grad():
            for n, t in self.shadow.items():
                params[n].copy_(t)
        try:
            yield
        finally:
            with torch.no_grad():
                for n, t in saved.items():
                    params[n].copy_(t)

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) - set(state)
        if missing:
            raise KeyError(f"EMA state lacks {sorted(missing)[:5]}")
        for n in self.shadow:
            self.shadow[n].copy_(state[n])
