"""λ samplers for training: every sample of a batch gets its own λ.

Uniform coverage of the λ space is what makes every mixture of objectives trained and each
objective's effect land in its own kernel. On the simplex the natural default is
Dirichlet(1) (uniform); α < 1 pushes mass to the corners, α > 1 to the centre. In the box,
each λ_i is uniform in [0, 1]. ``vertex_fraction`` replaces that share of samples by exact
corners (one-hot on the simplex, {0,1}^p in the box), so the endpoints, which users reach
for most, are trained exactly. ``distinct`` draws only K distinct λ per batch, so the batch
can run as K sub-batches on the fast shared-λ path.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

__all__ = ["LamSampler", "build_sampler"]


class LamSampler:
    """Draws λ of shape (B, p) from an explicit generator."""

    def __init__(
        self,
        p: int,
        space: str = "simplex",
        alpha: float = 1.0,
        vertex_fraction: float = 0.0,
        distinct: Optional[int] = None,
        fixed: Optional[Sequence[float]] = None,
    ) -> None:
        if space not in ("simplex", "box"):
            raise ValueError(f"space must be 'simplex' or 'box', got {space!r}")
        self.p, self.space, self.alpha = p, space, float(alpha)
        self.vertex_fraction, self.distinct = float(vertex_fraction), distinct
        self.fixed = None if fixed is None else torch.as_tensor(fixed, dtype=torch.float32)
        if self.fixed is not None and self.fixed.shape != (p,):
            raise ValueError(f"fixed λ must have {p} entries, got {list(self.fixed.shape)}")

    def _continuous(self, n: int, g: torch.Generator) -> Tensor:
        if self.space == "box":
            return torch.rand(n, self.p, generator=g)
        # Dirichlet(α) as normalised Gamma(α) draws; torch's Gamma sampler takes no generator,
        # so use Marsaglia-Tsang through uniform/normal draws from ``g`` for reproducibility.
        gam = _gamma(torch.full((n, self.p), self.alpha), g)
        return gam / gam.sum(1, keepdim=True).clamp_min(1e-12)

    def _vertices(self, n: int, g: torch.Generator) -> Tensor:
        if self.space == "box":
            return torch.randint(0, 2, (n, self.p), generator=g).float()
        return torch.eye(self.p)[torch.randint(0, self.p, (n,), generator=g)]

    def sample(self, batch: int, generator: torch.Generator) -> Tensor:
        """λ of shape (batch, p); with ``distinct`` K, only K distinct rows, in K blocks."""
        if self.fixed is not None:
            return self.fixed.expand(batch, self.p).clone()
        n = min(self.distinct or batch, batch)
        lam = self._continuous(n, generator)
        corner = torch.rand(n, generator=generator) < self.vertex_fraction
        if corner.any():
            lam[corner] = self._vertices(int(corner.sum()), generator)
        if n < batch:
            lam = lam.repeat_interleave(-(-batch // n), dim=0)[:batch]
        return lam

    def __repr__(self) -> str:
        kind = "fixed" if self.fixed is not None else ("Dirichlet(%g)" % self.alpha if self.space == "simplex" else "uniform box")
        return f"LamSampler(p={self.p}, {kind}, vertex_fraction={self.vertex_fraction}, distinct={self.distinct})"


def _gamma(alpha: Tensor, g: torch.Generator) -> Tensor:
    """Gamma(α, 1) draws from generator ``g`` (Marsaglia & Tsang; α < 1 via the U^(1/α) boost)."""
    boost = alpha < 1
    a = torch.where(boost, alpha + 1, alpha)
    d = a - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    out = torch.empty_like(a)
    todo = torch.ones_like(a, dtype=torch.bool)
    while todo.any():
        x = torch.randn(a.shape, generator=g)
        v = (1 + c * x) ** 3
        u = torch.rand(a.shape, generator=g)
        ok = (v > 0) & (torch.log(u.clamp_min(1e-30)) < 0.5 * x * x + d - d * v + d * torch.log(v.clamp_min(1e-30)))
        take = ok & todo
        out[take] = (d * v)[take]
        todo &= ~ok
    if boost.any():
        u = torch.rand(a.shape, generator=g)
        out = torch.where(boost, out * u.clamp_min(1e-30) ** (1.0 / alpha), out)
    return out


def build_sampler(p: int, space: str, spec) -> LamSampler:
    """A sampler from a recipe's ``lam`` section (``LamSpec``)."""
    kind = spec.sampler
    if kind == "auto":
        kind = "dirichlet" if space == "simplex" else "box_uniform"
    if kind == "dirichlet" and space != "simplex":
        raise ValueError("lam.sampler 'dirichlet' draws on the simplex; with lam_space 'box' use 'box_uniform'")
    if kind == "box_uniform" and space != "box":
        raise ValueError("lam.sampler 'box_uniform' draws in the box; with lam_space 'simplex' use 'dirichlet'")
    return LamSampler(p, space, spec.alpha, spec.vertex_fraction, spec.distinct_per_batch,
                      spec.fixed if kind == "fixed" else None)
