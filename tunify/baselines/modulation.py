"""Three baselines that steer a backbone by modulating its feature maps with λ.

- :class:`FiLM` (loss-conditional training, "You Only Train Once"): a small MLP maps λ to a
  per-channel scale and shift at every site, h ↦ h·(1 + γ(λ)) + β(λ), trained on L(λ) with
  λ sampled like the tunable model's. Features are modulated, kernels are shared.
- :class:`AdaFM`: a depthwise k×k filter after every site, trained for objective i with the
  backbone frozen, and interpolated from the identity filter at test time:
  h ↦ h + λ_i (g_i(h) − h), which is exactly the filter (1−λ_i)·I + λ_i·g_i.
- :class:`DynamicNet`: a residual tuning block (conv–ReLU–conv) at every site, trained for
  objective i with the backbone frozen, and scaled by λ_i at test time: h ↦ h + λ_i T_i(h).

Objective 0 is the backbone's own (the network these methods start from); AdaFM and
Dynamic-Net add one set of modules per further objective. Everything added starts as the
identity, so at init each baseline equals its backbone at every λ.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .base import HookedModel

__all__ = ["FiLM", "AdaFM", "DynamicNet"]


def _weighted_branches(h: Tensor, lam: Tensor, branches: Sequence[nn.ModuleDict], key: str, delta) -> Tensor:
    """h + Σ_{i≥1} λ_i · delta(branch_i[key], h) for h (B, C, H, W), λ (B, p); a branch whose
    λ_i is zero for the whole batch is not run."""
    out = h
    for i, modules in enumerate(branches, start=1):
        t = lam[:, i]
        if (t != 0).any():
            out = out + t.view(-1, 1, 1, 1).to(h.dtype) * delta(modules[key], h)
    return out


class FiLM(HookedModel):
    """Feature-wise affine modulation from λ (hidden: width of the shared λ embedding)."""

    method = "film"

    def __init__(self, net: nn.Module, objectives: Union[int, Sequence[str]] = 2, sites: Optional[Sequence[str]] = None,
                 hidden: int = 64, image_channels: int = 3) -> None:
        super().__init__(net, objectives, sites, image_channels)
        self.embed = nn.Sequential(nn.Linear(self.p, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.heads = nn.ModuleDict({k: nn.Linear(hidden, 2 * c) for k, c in self.channels.items()})
        for head in self.heads.values():  # γ = β = 0 at init: the backbone unchanged
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def run(self, x: Tensor, lam: Tensor) -> Tensor:
        rows = lam if lam.dim() == 2 else lam.expand(x.shape[0], -1)
        self._z = self.embed(rows.to(x.dtype))  # (B, hidden), once per call, shared by the sites
        try:
            return super().run(x, lam)
        finally:
            del self._z

    def modulate(self, key: str, h: Tensor, lam: Tensor) -> Tensor:
        gamma, beta = self.heads[key](self._z).to(h.dtype).chunk(2, dim=1)  # (B, C) each
        return h * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]


class AdaFM(HookedModel):
    """Depthwise filters per site and per further objective, interpolated from identity."""

    method = "adafm"

    def __init__(self, net: nn.Module, objectives: Union[int, Sequence[str]] = 2, sites: Optional[Sequence[str]] = None,
                 kernel_size: int = 3, image_channels: int = 3) -> None:
        super().__init__(net, objectives, sites, image_channels)
        if kernel_size % 2 != 1:
            raise ValueError(f"AdaFM's kernel_size must be odd (a centred identity filter), got {kernel_size}")
        self.kernel_size = kernel_size
        self.filters = nn.ModuleList()
        for _ in range(self.p - 1):
            convs = nn.ModuleDict({k: nn.Conv2d(c, c, kernel_size, padding=kernel_size // 2, groups=c)
                                   for k, c in self.channels.items()})
            with torch.no_grad():
                for conv in convs.values():
                    conv.weight.zero_()
                    conv.weight[:, 0, kernel_size // 2, kernel_size // 2] = 1.0
                    conv.bias.zero_()
            self.filters.append(convs)

    def modulate(self, key: str, h: Tensor, lam: Tensor) -> Tensor:
        return _weighted_branches(h, lam, self.filters, key, lambda conv, x: conv(x) - x)


class DynamicNet(HookedModel):
    """Residual tuning blocks per site and per further objective, scaled by λ."""

    method = "dynamic"

    def __init__(self, net: nn.Module, objectives: Union[int, Sequence[str]] = 2, sites: Optional[Sequence[str]] = None,
                 image_channels: int = 3) -> None:
        super().__init__(net, objectives, sites, image_channels)
        self.blocks = nn.ModuleList()
        for _ in range(self.p - 1):
            blocks = nn.ModuleDict()
            for k, c in self.channels.items():
                block = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(c, c, 3, padding=1))
                nn.init.zeros_(block[2].weight)  # T_i(h) = 0 at init
                nn.init.zeros_(block[2].bias)
                blocks[k] = block
            self.blocks.append(blocks)

    def modulate(self, key: str, h: Tensor, lam: Tensor) -> Tensor:
        return _weighted_branches(h, lam, self.blocks, key, lambda block, x: block(x))
