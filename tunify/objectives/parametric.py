"""Objectives and the parametric multi-loss.

An **objective** is a weighted sum of losses plus the **target** it pulls the output to. A
target is ``"clean"`` (the clean image), ``"input"`` (the degraded input: "keep the grain"),
``"original"`` (the frozen pretrained network's own output on the input: "keep the
original's look", computed once per batch by :meth:`ParametricLoss.set_reference`'s network),
any other batch entry by name (``"stage0"``: the clean image after the first degradation
step), a linear combination ``{sum: {gt: 1, lq: 1, stage0: -1}}``, a fixed image
``{image: "skimage:chelsea"}`` (a style), or a degradation of its own applied to the clean
image (a lighter noise level, a blur). A loss spec may carry its own ``target`` (a content
loss against the input inside a style objective).

Two ways to combine p objectives, per sample:
- ``sum`` (default): L(λ) = Σ_i λ_i L_i — trade-offs on the simplex;
- ``targets``: one loss against the interpolated target T(λ) = T_base + Σ_i λ_i (T_i − T_base)
  — independent knobs in the box: with base = the input, λ = 0 keeps the input, λ_i = 1
  undoes degradation i, and (1, 1) undoes both.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Loss
from .registry import build_loss

__all__ = ["Target", "Objective", "ObjectiveSet", "ParametricLoss", "ReferenceOutput", "MODES", "ORIGINAL"]

MODES = ("sum", "targets")
ORIGINAL = "original"   # batch entry (and target name) of the frozen pretrained network's output
_ALIASES = {"clean": "gt", "input": "lq"}


class ReferenceOutput(nn.Module):
    """The network before tunify, frozen: ``forward(lq (B,C,h,w)) -> (B,C,H,W)`` under no_grad,
    in eval mode, in fp32 (outside any autocast), ``chunk`` images at a time. A deep copy, so
    training the original afterwards cannot move the target."""

    def __init__(self, model: nn.Module, chunk: int = 8):
        super().__init__()
        import copy

        self.net = copy.deepcopy(model).eval().requires_grad_(False)
        self.chunk = chunk

    def train(self, mode: bool = True) -> "ReferenceOutput":
        return super().train(False)  # never leaves eval mode (dropout, norms stay as at inference)

    @torch.no_grad()
    def forward(self, lq: Tensor) -> Tensor:
        with torch.autocast(lq.device.type, enabled=False):
            return torch.cat([self.net(lq[i : i + self.chunk].float()) for i in range(0, lq.shape[0], self.chunk)])


class Target:
    """Resolves a target spec against a batch: ``target(batch, generator) -> (B, C, H, W)``."""

    def __init__(self, spec: Any, where: str):
        self.spec, self.where = spec, where
        self.degradation = None
        self._image: Optional[Tensor] = None
        if isinstance(spec, Mapping) and "sum" in spec:
            if not isinstance(spec["sum"], Mapping) or not spec["sum"]:
                raise ValueError(f"{where}: target {{sum: ...}} needs a mapping of batch entries to weights")
            self.parts = [(Target(k, where), float(w)) for k, w in spec["sum"].items()]
        elif isinstance(spec, Mapping) and "image" in spec:
            from ..data import load_images

            self._image = load_images(spec["image"])[0]
        elif isinstance(spec, (Mapping, list, tuple)):
            from ..data import build_degradation

            self.degradation = build_degradation(spec)
        elif not isinstance(spec, str):
            raise ValueError(f"{where}: a target is 'clean', 'input', a batch entry, {{sum: ...}}, {{image: ...}} "
                             f"or a degradation spec, got {spec!r}")

    def __call__(self, batch: Dict[str, Tensor], generator: Optional[torch.Generator] = None) -> Tensor:
        gt = batch["gt"]
        if isinstance(self.spec, str):
            key = _ALIASES.get(self.spec, self.spec)
            if key == ORIGINAL and key not in batch:
                raise ValueError(f"{self.where}: target 'original' is the pretrained network's own output, and the loss "
                                 "has no network to compute it: call ParametricLoss.set_reference(model) with the model "
                                 "before tunify (run_recipe and fit(..., reference=model) do it)")
            if key not in batch:
                hint = " (set keep_stages: true in the data spec for degradation stages)" if key.startswith("stage") else ""
                raise ValueError(f"{self.where}: target {self.spec!r} is not in the batch{hint}; "
                                 f"batch entries: {', '.join(sorted(batch))}")
            value = batch[key]
            if value.shape != gt.shape:
                raise ValueError(f"{self.where}: target {self.spec!r} needs an image the size of the output, "
                                 f"got {tuple(value.shape)} for output {tuple(gt.shape)}")
            return value
        if self.degradation is not None:
            key = f"target:{self.where}"
            if key not in batch:  # made once per batch, shared by every loss using it
                gen = generator if generator is not None else torch.Generator().manual_seed(0)
                batch[key] = self.degradation(gt, gen)
            return batch[key]
        if self._image is not None:
            img = self._image.to(gt)
            if img.shape[-2:] != gt.shape[-2:]:
                img = F.interpolate(img[None], size=gt.shape[-2:], mode="bilinear", antialias=True, align_corners=False)[0]
            return img.expand_as(gt)
        return sum(w * t(batch, generator) for t, w in self.parts)


class Objective(nn.Module):
    """One objective: ``forward(pred, batch, generator) -> (B,)`` = Σ_k loss_k(pred, target_k)."""

    def __init__(self, name: str, losses: Sequence[Union[Loss, Mapping[str, Any]]], target: Any = "clean",
                 description: str = ""):
        super().__init__()
        self.name, self.description = name, description
        self.target = Target(target, f"objective {name!r}")
        built, self.loss_targets = [], []
        for i, spec in enumerate(losses):
            own = None
            if isinstance(spec, Mapping) and "target" in spec:
                spec = dict(spec)
                own = Target(spec.pop("target"), f"objective {name!r} loss {i}")
            built.append(spec if isinstance(spec, nn.Module) else build_loss(spec))
            self.loss_targets.append(own)
        self.losses = nn.ModuleList(built)
        self.target_spec = target

    def forward(self, pred: Tensor, batch: Dict[str, Tensor], generator: Optional[torch.Generator] = None,
                losses: Optional[Sequence[nn.Module]] = None) -> Tensor:
        """Σ over this objective's losses (or ``losses``, shared ones) against its target(s)."""
        target = self.target(batch, generator)
        if losses is not None:
            return sum(loss(pred, target) for loss in losses)
        return sum(loss(pred, own(batch, generator) if own is not None else target)
                   for loss, own in zip(self.losses, self.loss_targets))

    def extra_repr(self) -> str:
        return f"name={self.name!r}, target={self.target_spec!r}"


class ObjectiveSet(nn.Module):
    """The p objectives of a tunable model, in λ order."""

    def __init__(self, objectives: Sequence[Objective]):
        super().__init__()
        names = [o.name for o in objectives]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"an objective set needs p ≥ 1 objectives with unique names, got {names}")
        self.objectives = nn.ModuleList(objectives)

    @classmethod
    def from_specs(cls, specs: Sequence[Any]) -> "ObjectiveSet":
        """From recipe entries (ObjectiveSpec or dicts with name, losses, target, description)."""
        out = []
        for s in specs:
            get = s.get if isinstance(s, Mapping) else lambda k, d=None, s=s: getattr(s, k, d)
            out.append(Objective(get("name"), get("losses") or [], get("target", "clean"), get("description", "") or ""))
        return cls(out)

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(o.name for o in self.objectives)

    @property
    def p(self) -> int:
        return len(self.objectives)

    def adversarial(self) -> List[Tuple[Objective, nn.Module]]:
        """(objective, loss) for losses that train a discriminator alongside: the objective's
        target is what the discriminator learns to call real."""
        return [(o, l) for o in self.objectives for l in o.losses if hasattr(l, "discriminator")]


class ParametricLoss(nn.Module):
    """The loss at λ, per sample, averaged over the batch (see the module docstring for modes).

    ``forward(pred (B,C,H,W), batch {"lq", "gt", ...}, lam (B, p) or (p,), generator)``
    returns (scalar loss, {objective name: its per-sample loss L_i (B,)}) — terms for logging.
    """

    def __init__(self, objectives: ObjectiveSet, mode: str = "sum", base: Any = "input",
                 losses: Sequence[Union[Loss, Mapping[str, Any]]] = ()):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"loss mode must be one of {MODES}, got {mode!r}")
        self.objectives, self.mode = objectives, mode
        self.shared = nn.ModuleList(l if isinstance(l, nn.Module) else build_loss(l) for l in losses)
        if mode == "targets" and not len(self.shared):
            raise ValueError("loss mode 'targets' needs `loss.losses`: the loss applied against the interpolated target")
        if mode == "sum":
            empty = [o.name for o in objectives.objectives if not len(o.losses)]
            if empty:
                raise ValueError(f"objectives {empty} have no losses (needed in loss mode 'sum')")
        self.base = Target(base, "loss.base")
        self.reference: Optional[ReferenceOutput] = None
        used = [t for t in self._targets() if t.spec == ORIGINAL]  # targets are fixed: decide once, not per step
        self._needs_reference = bool(used) and (mode == "targets" or any(t is not self.base for t in used))

    @classmethod
    def from_recipe(cls, recipe: Any, reference: Optional[nn.Module] = None, strict: bool = True) -> "ParametricLoss":
        """A recipe's L(λ): its ``objectives`` under its ``loss`` section (mode, base, losses).
        ``reference``: the network before tunify, whose output is the "original" target; with
        ``strict=False`` a missing one is left for the caller to set (``needs_reference``)."""
        ploss = cls(ObjectiveSet.from_specs(recipe.objectives), recipe.loss.mode, recipe.loss.base, recipe.loss.losses)
        if ploss.needs_reference and reference is None and strict:
            raise ValueError("the recipe's target 'original' (the pretrained network's own output) needs that network: "
                             "pass reference=model (the model before tunify); `tunify train` does it")
        return ploss.set_reference(reference if ploss.needs_reference else None)

    def _targets(self) -> List[Target]:
        out = [self.base]
        for o in self.objectives.objectives:
            out += [o.target, *[t for t in o.loss_targets if t is not None]]
        stack = list(out)
        while stack:  # {sum: ...} targets hold parts
            t = stack.pop()
            for part, _ in getattr(t, "parts", []):
                out.append(part)
                stack.append(part)
        return out

    @property
    def needs_reference(self) -> bool:
        """Whether some target is the pretrained network's output ("original")."""
        return self._needs_reference

    def set_reference(self, model: Optional[nn.Module]) -> "ParametricLoss":
        """The frozen network whose output is the "original" target (a copy is kept)."""
        self.reference = None if model is None else ReferenceOutput(model)
        return self

    def prepare(self, batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Fill ``batch["original"]`` once per batch when a target needs it."""
        if ORIGINAL not in batch and self.reference is not None and self.needs_reference:
            batch[ORIGINAL] = self.reference(batch["lq"])
        return batch

    def forward(self, pred: Tensor, batch: Dict[str, Tensor], lam: Tensor,
                generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Dict[str, Tensor]]:
        objs = self.objectives.objectives
        self.prepare(batch)
        lam = lam.to(pred.dtype)
        if lam.dim() == 1:
            lam = lam.expand(pred.shape[0], -1)
        if lam.shape != (pred.shape[0], len(objs)):
            raise ValueError(f"λ has shape {tuple(lam.shape)} but the loss expects ({pred.shape[0]}, {len(objs)})")
        if self.mode == "sum":
            terms = torch.stack([o(pred, batch, generator) for o in objs], dim=1)  # (B, p)
            loss = (lam * terms).sum(1).mean()
        else:
            base = self.base(batch, generator)
            target = base + sum(lam[:, i, None, None, None] * (o.target(batch, generator) - base) for i, o in enumerate(objs))
            loss = sum(l(pred, target) for l in self.shared).mean()
            with torch.no_grad():
                terms = torch.stack([o(pred, batch, generator, losses=self.shared) for o in objs], dim=1)
        return loss, {name: terms[:, i].detach() for i, name in enumerate(self.objectives.names)}
