"""What every control baseline shares: λ handling as in TunableModel, and feature hooks.

The baselines answer "what else could give a network a knob?" so that a benchmark can put
tunable kernels side by side with the older ideas on the same backbone, trainer and data.
Every baseline is a :class:`ControlledModel`: ``model(x, lam=λ)`` with λ of shape (p,)
(shared) or (B, p) (one row per sample) on the simplex, exactly like a TunableModel, so
``tunify.training.fit`` and the evaluation sweeps drive them unchanged.

The feature-modulating baselines (FiLM, AdaFM, Dynamic-Net) act on the outputs of the
backbone's feature convolutions. They attach forward hooks for the length of one call only
(as PEFT passes per-sample adapter choices), so the backbone keeps its own parameter names,
``copy.deepcopy`` works, and the base weights load with a plain ``load_state_dict``.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..lam import LamLike, LamSpace
from ..surgery import objective_names

__all__ = ["ControlledModel", "HookedModel", "feature_convs", "lam_rows", "site_key"]


def lam_rows(lam: Tensor, batch: int) -> Tensor:
    """λ (p,) or (B, p) → (B, p), one row per sample."""
    return lam.expand(batch, -1) if lam.dim() == 1 else lam


def site_key(name: str) -> str:
    """A module path as a ModuleDict key ('body.0.conv' → 'body_0_conv')."""
    return name.replace(".", "_")


def feature_convs(net: nn.Module, image_channels: int = 3, exclude: Sequence[str] = ()) -> List[str]:
    """Paths of the Conv2d layers that compute features: every Conv2d except those that
    produce an image (``out_channels == image_channels``) and those named in ``exclude``."""
    sites = [name for name, m in net.named_modules()
             if isinstance(m, nn.Conv2d) and m.out_channels != image_channels and name not in exclude]
    if not sites:
        raise ValueError(f"{type(net).__name__} has no feature Conv2d to modulate (every Conv2d outputs "
                         f"{image_channels} channels or is excluded); pass sites=[...] explicitly")
    return sites


class ControlledModel(nn.Module):
    """A model steered by λ on the simplex over ``objectives`` (names, or their count)."""

    method = "controlled"

    def __init__(self, objectives: Union[int, Sequence[str]]) -> None:
        super().__init__()
        names = objective_names(objectives)
        self.lam_space = LamSpace("simplex", len(names), names)

    @property
    def objectives(self) -> tuple:
        return self.lam_space.names

    @property
    def p(self) -> int:
        return self.lam_space.p

    def forward(self, x: Tensor, lam: Optional[LamLike] = None, group_by_lam: bool = False) -> Tensor:
        """x (B, C, H, W) at λ (p,) or (B, p) → (B, C', H', W'). ``group_by_lam`` is accepted
        for the trainer's sake; every baseline here runs per-sample λ natively."""
        dtype = x.dtype if x.is_floating_point() and x.dtype != torch.float16 else torch.float32
        lam = self.lam_space.validate(lam, batch=x.shape[0], device=x.device, dtype=dtype)
        return self.run(x, lam)

    def run(self, x: Tensor, lam: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"method={self.method}, objectives={list(self.objectives)}"


class HookedModel(ControlledModel):
    """A backbone ``net`` whose feature maps at ``sites`` pass through ``self.modulate``.

    Subclasses define ``modulate(key, h, lam)``: h (B, C, H, W) feature map of site ``key``,
    lam (B, p) → the modulated map. ``base_parameters()`` are the backbone's own."""

    def __init__(self, net: nn.Module, objectives: Union[int, Sequence[str]], sites: Optional[Sequence[str]] = None,
                 image_channels: int = 3) -> None:
        super().__init__(objectives)
        self.net = net
        self.sites = list(sites) if sites is not None else feature_convs(net, image_channels)
        modules = dict(net.named_modules())
        unknown = [s for s in self.sites if s not in modules]
        if unknown:
            raise ValueError(f"sites {unknown} are not modules of {type(net).__name__}")
        self.channels: Dict[str, int] = {site_key(s): _out_channels(modules[s], s) for s in self.sites}

    def base_parameters(self) -> List[nn.Parameter]:
        """The backbone's parameters (frozen while a two-stage method trains its modulation)."""
        return list(self.net.parameters())

    def control_parameters(self) -> List[nn.Parameter]:
        """Everything the method adds to the backbone."""
        base = {id(p) for p in self.net.parameters()}
        return [p for p in self.parameters() if id(p) not in base]

    def modulate(self, key: str, h: Tensor, lam: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def run(self, x: Tensor, lam: Tensor) -> Tensor:
        rows = lam_rows(lam, x.shape[0])

        def hook_for(key: str) -> Callable:
            def hook(module: nn.Module, inputs: tuple, out: Tensor) -> Tensor:
                if out.shape[0] != rows.shape[0]:
                    raise ValueError(f"site {key} sees a batch of {out.shape[0]} but λ has {rows.shape[0]} rows: "
                                     "modulate only layers that keep the input's batch")
                return self.modulate(key, out, rows)
            return hook

        handles = [self.net.get_submodule(s).register_forward_hook(hook_for(site_key(s))) for s in self.sites]
        try:
            return self.net(x)
        finally:
            for h in handles:
                h.remove()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, sites={len(self.sites)}"


def _out_channels(module: nn.Module, name: str) -> int:
    for attr in ("out_channels", "out_features", "num_features"):
        if isinstance(getattr(module, attr, None), int):
            return getattr(module, attr)
    raise ValueError(f"cannot tell how many channels {name} ({type(module).__name__}) outputs; use Conv2d sites")
