"""Which module types become which tunable layer: a table users extend.

``register_layer(MyConv, TunableConv2d)`` makes ``MyConv`` convertible. Subclasses of a
registered type are converted too; when they bring their own forward (timm's Conv2dSame,
StdConv2d, ScaledStdConv2d) the tunable layer keeps calling that forward with the mixed
weight, so their padding or weight standardisation is kept. Layers whose weight is computed
by something we cannot see (other hooks and parametrizations: spectral_norm) are refused
with the reason; weight-normalised ``nn.Conv2d`` (old hook or parametrization) converts to
``TunableWeightNormConv2d``, which mixes g and v and then normalises.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple, Type

from torch import nn
from torch.nn.utils import parametrize

from ..layers import (TunableConv2d, TunableConvTranspose2d, TunableLinear, TunableModuleLayer,
                      TunableWeightNormConv2d, weight_norm_of)

__all__ = ["LAYER_TYPES", "register_layer", "lookup_layer", "is_norm"]

LAYER_TYPES: Dict[Type[nn.Module], Type[TunableModuleLayer]] = {
    nn.Conv2d: TunableConv2d,
    nn.ConvTranspose2d: TunableConvTranspose2d,
    nn.Linear: TunableLinear,
}

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


def register_layer(module_type: Type[nn.Module], tunable_type: Type[TunableModuleLayer]) -> None:
    """Convert modules of ``module_type`` (and its subclasses) with ``tunable_type``."""
    if not (isinstance(tunable_type, type) and issubclass(tunable_type, TunableModuleLayer)):
        raise TypeError(f"tunable_type must subclass TunableModuleLayer, got {tunable_type!r}")
    LAYER_TYPES[module_type] = tunable_type


def is_norm(module: nn.Module) -> bool:
    """Norm layers stay plain: torch's norms and any class named like one (LayerNorm2d, RMSNorm)."""
    return isinstance(module, _NORM_TYPES) or "norm" in type(module).__name__.lower()


def lookup_layer(module: nn.Module) -> Tuple[Optional[Type[TunableModuleLayer]], Optional[str]]:
    """(tunable type, None) if ``module`` converts; (None, reason) if it is a layer we refuse;
    (None, None) if it is not a registered layer at all."""
    tunable = next((LAYER_TYPES[t] for t in type(module).__mro__ if t in LAYER_TYPES), None)
    if tunable is None:
        return None, None
    name = type(module).__name__
    if type(module) is nn.Conv2d or type(module).__bases__ == (nn.Conv2d,) and parametrize.is_parametrized(module):
        found = weight_norm_of(module)
        if found is not None and len(module._forward_pre_hooks) == (found[0] == "hook"):
            return TunableWeightNormConv2d, None
    if parametrize.is_parametrized(module):
        return None, f"{name}'s weight is computed by a parametrization (weight_norm/spectral_norm style)"
    if hasattr(module, "weight_orig") or hasattr(module, "weight_g") or module._forward_pre_hooks:
        return None, f"{name}'s weight is recomputed by a forward pre-hook (old-style spectral_norm/weight_norm)"
    if type(module).__name__ == "NonDynamicallyQuantizableLinear":
        return None, "output projection of nn.MultiheadAttention, whose fused kernel reads the weight itself"
    if not isinstance(getattr(module, "weight", None), nn.Parameter):
        return None, f"{name} has no weight parameter"
    if module.weight.numel() == 0:
        return None, f"{name} has an empty weight {tuple(module.weight.shape)}: nothing to tune"
    return tunable, None
