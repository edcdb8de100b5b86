"""λ spaces: which control vectors are valid, and how λ becomes mixing coefficients.

``simplex``: λ ≥ 0 with Σλ = 1, for trade-offs between p objectives. The layers hold p
kernels and mix them with ω = λ; kernel i alone is objective i.

``box``: each λ_i in [0, 1] independently, for knobs that combine (denoise and deblur at
once, λ = (1, 1)). A plain Σλ_i W_i cannot equal the pretrained net for every box λ at once
(λ = 0 would give a zero kernel), so the layers hold p + 1 kernels: a base W_0 and one delta
per knob, mixed with ω = (1, λ_1, ..., λ_p). The deltas start at zero, so the tunified model
equals the original for every λ until it is fine-tuned.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

__all__ = ["LamSpace", "LamLike", "SPACES", "lam_grid"]

LamLike = Union[Tensor, Sequence[float], Sequence[Sequence[float]]]
SPACES = ("simplex", "box")
_SUM_TOL = 1e-4


@dataclass(frozen=True)
class LamSpace:
    """The λ space of a model with ``p`` objectives named ``names``."""

    kind: str
    p: int
    names: tuple = ()

    def __post_init__(self) -> None:
        if self.kind not in SPACES:
            raise ValueError(f"lam_space must be one of {SPACES}, got {self.kind!r}")
        if self.p < 1:
            raise ValueError(f"a tunable model needs at least one objective, got p={self.p}")

    @property
    def num_kernels(self) -> int:
        """Kernels per tunable layer: p on the simplex, p + 1 (base + deltas) in the box."""
        return self.p if self.kind == "simplex" else self.p + 1

    @property
    def zero_tail(self) -> bool:
        """Whether kernels 1.. start at zero (deltas) rather than as copies."""
        return self.kind == "box"

    def _expected(self) -> str:
        names = f" ({', '.join(map(repr, self.names))})" if self.names else ""
        rule = "entries ≥ 0 summing to 1" if self.kind == "simplex" else "each entry in [0, 1]"
        return f"shape (B, {self.p}) or ({self.p},) for p={self.p} objectives{names}, {rule}"

    def validate(self, lam: LamLike, batch: Optional[int] = None, device=None, dtype=None) -> Tensor:
        """Check λ and return it as a float tensor of shape (p,) (shared) or (B, p) (per sample).

        A (1, p) λ is shared by the batch. Raises ValueError naming what was expected.
        """
        if lam is None:
            raise ValueError(f"λ is missing: pass lam= with {self._expected()}")
        try:
            t = torch.as_tensor(lam, dtype=dtype or torch.float32, device=device)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"λ could not be read as numbers ({exc}); expected {self._expected()}") from None
        if t.dim() == 2 and t.shape[0] == 1:
            t = t[0]
        if t.dim() not in (1, 2) or t.shape[-1] != self.p:
            raise ValueError(f"λ has shape {tuple(t.shape)}; expected {self._expected()}")
        if t.dim() == 2 and batch is not None and t.shape[0] != batch:
            raise ValueError(
                f"λ has {t.shape[0]} rows but the batch has {batch} samples; pass one row per "
                f"sample, or a single λ of shape ({self.p},) for the whole batch"
            )
        if not torch.isfinite(t).all():
            raise ValueError(f"λ contains NaN or inf: {t.tolist()}; expected {self._expected()}")
        if (t < 0).any():
            raise ValueError(f"λ has negative entries: {t.tolist()}; expected {self._expected()}")
        if self.kind == "simplex":
            sums = t.sum(-1)
            if ((sums - 1).abs() > _SUM_TOL).any():
                raise ValueError(
                    f"λ rows must sum to 1 on the simplex, got sums {sums.reshape(-1).tolist()}; "
                    f"expected {self._expected()} (use lam_space='box' for independent knobs)"
                )
        elif (t > 1).any():
            raise ValueError(f"λ has entries above 1: {t.tolist()}; expected {self._expected()}")
        return t

    def coefficients(self, lam: Tensor) -> Tensor:
        """Mixing coefficients ω of a validated λ: (..., p) → (..., num_kernels)."""
        if self.kind == "simplex":
            return lam
        return torch.cat([torch.ones_like(lam[..., :1]), lam], dim=-1)

    def vertex(self, i: int) -> Tensor:
        """λ that selects objective i alone: the i-th one-hot vector (p,)."""
        v = torch.zeros(self.p)
        v[i] = 1.0
        return v


def lam_grid(space: LamSpace, points: int = 11) -> torch.Tensor:
    """An evaluation grid of λ, (N, p): ``points`` per axis.

    Simplex: for p=2 the segment (1, 0) → (0, 1); for p ≥ 3 every λ with entries in
    {0, 1/(points-1), ..., 1} summing to 1 (a triangular grid for p=3). Box: the full
    square/cube grid [0, 1]^p.
    """
    import itertools

    if points < 2:
        raise ValueError(f"a λ grid needs at least 2 points per axis, got {points}")
    n = points - 1
    if space.kind == "box":
        axis = [i / n for i in range(points)]
        return torch.tensor(list(itertools.product(axis, repeat=space.p)), dtype=torch.float32)
    rows = [c for c in itertools.product(range(points), repeat=space.p) if sum(c) == n]
    rows.sort(key=lambda c: [-v for v in c])
    return torch.tensor(rows, dtype=torch.float32) / n
