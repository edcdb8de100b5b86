"""Frozen VGG feature extractor for perceptual and style losses, and where its weights come from.

Layers are named by block and position: conv{b}_{i}, relu{b}_{i}, pool{b} (vgg19: conv1_1,
relu1_1, conv1_2, relu1_2, pool1, conv2_1, ..., relu5_4, pool5). The network is torchvision's
VGG convolutional trunk, cut after the deepest layer a loss asks for.

ImageNet weights (``pretrained=True``) are looked up, in order, at
  1. ``weights_path`` — a local .pth (full torchvision state dict, only ``features.*`` keys,
     or the trunk's keys without the ``features.`` prefix);
  2. the torch hub cache, ``<torch.hub.get_dir()>/checkpoints/<torchvision file name>``;
  3. ``VGG_URLS[vgg_type]``, downloaded into that cache.
Training machines are often offline, so failure says how to supply the file by hand.
"""
from __future__ import annotations

import os
import weakref
from collections.abc import Mapping
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
from torch import Tensor, nn

from .spec import did_you_mean

__all__ = [
    "VGG_URLS", "VGG_FILENAMES", "VGGFeatures", "vgg_layer_names", "hub_cache_path",
    "load_vgg_state_dict", "get_vgg_features",
]

#: torchvision's file names for the ImageNet weights of each VGG.
VGG_FILENAMES: Dict[str, str] = {
    "vgg11": "vgg11-8a719046.pth",
    "vgg13": "vgg13-19584684.pth",
    "vgg16": "vgg16-397923af.pth",
    "vgg19": "vgg19-dcbb9e9d.pth",
}
#: where step 3 downloads from; tests point it at file:// URLs.
VGG_URLS: Dict[str, str] = {k: f"https://download.pytorch.org/models/{f}" for k, f in VGG_FILENAMES.items()}

# torchvision's configuration letter of each VGG
_CONFIGS: Dict[str, str] = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}


def _plan(vgg_type: str) -> List[Any]:
    """Channel counts of the 3x3 convs in order, "M" for each 2x2 max-pool (torchvision's)."""
    from torchvision.models import vgg as tv_vgg  # lazy: torchvision is only needed here

    return list(tv_vgg.cfgs[_CONFIGS[vgg_type]])


def _check_type(vgg_type: str) -> None:
    if vgg_type not in _CONFIGS:
        raise ValueError(f"unknown vgg_type {vgg_type!r}.{did_you_mean(str(vgg_type), _CONFIGS)} "
                         f"Known: {', '.join(_CONFIGS)}")


def vgg_layer_names(vgg_type: str = "vgg19") -> List[str]:
    """Names of the trunk's modules in order, e.g. ['conv1_1', 'relu1_1', ..., 'pool5']."""
    _check_type(vgg_type)
    names, block, index = [], 1, 0
    for item in _plan(vgg_type):
        if item == "M":
            names.append(f"pool{block}")
            block, index = block + 1, 0
        else:
            index += 1
            names += [f"conv{block}_{index}", f"relu{block}_{index}"]
    return names


def _build_trunk(vgg_type: str, depth: int) -> nn.Sequential:
    """The first ``depth`` modules of torchvision's vgg*(weights=None).features, same indices.

    Built with torchvision's own layer factory rather than the whole model: the classifier
    head (~120M parameters) would cost seconds and half a gigabyte only to be thrown away.
    """
    from torchvision.models import vgg as tv_vgg

    layers = list(tv_vgg.make_layers(_plan(vgg_type), batch_norm=False))[:depth]
    for module in layers:
        if isinstance(module, nn.ReLU):
            # torchvision's ReLUs are in-place and would overwrite the conv outputs we return
            module.inplace = False
        elif isinstance(module, nn.Conv2d):
            # the initialisation vgg*(weights=None) applies, for pretrained=False
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)
    return nn.Sequential(*layers)


def hub_cache_path(vgg_type: str) -> str:
    """Where torch hub keeps torchvision's weights for ``vgg_type`` (step 2 of the lookup)."""
    _check_type(vgg_type)
    return os.path.join(torch.hub.get_dir(), "checkpoints", VGG_FILENAMES[vgg_type])


def _read(path: str) -> Dict[str, Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise RuntimeError(f"{path} is not a state dict of tensors (got {type(state).__name__})")
    return dict(state)


def load_vgg_state_dict(vgg_type: str, weights_path: Optional[str] = None) -> Dict[str, Tensor]:
    """ImageNet weights for ``vgg_type`` as a state dict, following the lookup order above.

    Raises FileNotFoundError for a missing ``weights_path`` and RuntimeError, with the three
    ways to supply the weights, when neither the cache nor the download has them.
    """
    _check_type(vgg_type)
    if weights_path is not None:
        path = os.path.expanduser(str(weights_path))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"weights_path {path!r} does not exist (VGG weights for {vgg_type})")
        return _read(path)
    cached = hub_cache_path(vgg_type)
    if os.path.isfile(cached):
        return _read(cached)
    url = VGG_URLS[vgg_type]
    try:
        return torch.hub.load_state_dict_from_url(
            url, model_dir=os.path.dirname(cached), map_location="cpu", progress=False,
            file_name=VGG_FILENAMES[vgg_type], weights_only=True,
        )
    except Exception as err:
        raise RuntimeError(
            f"could not get the ImageNet weights of {vgg_type}: there is no file at {cached} and "
            f"downloading {url} failed ({type(err).__name__}: {err}). Provide them in one of "
            f"these ways: (1) put torchvision's {VGG_FILENAMES[vgg_type]} at {cached}; "
            f"(2) set `weights_path: /path/to/{VGG_FILENAMES[vgg_type]}` in the loss spec; "
            "(3) set `pretrained: false` for random weights (for tests only: a loss on random "
            "features does not measure perceptual quality)."
        ) from err


def _trunk_state(state: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Accept a full VGG state dict, a features-only one, or trunk keys without prefix."""
    prefix = "features."
    if any(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return dict(state)


class VGGFeatures(nn.Module):
    """Frozen VGG trunk (always eval, requires_grad False) returning named activations.

    Args:
        vgg_type: "vgg11", "vgg13", "vgg16" or "vgg19".
        last_layer: deepest layer kept, e.g. "conv5_4"; the rest of the trunk is not built.
        pretrained: load ImageNet weights (see module docstring); False draws random weights
            from the caller's torch RNG.
        weights_path: local .pth to load instead of the torch hub cache / download.

    Shapes:
        forward(x (B, 3, H, W) normalised input, layers) → {name: (B, C_l, H_l, W_l)}.
    """

    def __init__(
        self,
        vgg_type: str = "vgg19",
        last_layer: str = "conv5_4",
        pretrained: bool = True,
        weights_path: Optional[str] = None,
    ) -> None:
        super().__init__()
        names = vgg_layer_names(vgg_type)
        if last_layer not in names:
            raise ValueError(f"{vgg_type} has no layer {last_layer!r}.{did_you_mean(last_layer, names)} "
                             f"Layers: {', '.join(names)}")
        if weights_path is not None and not pretrained:
            raise ValueError("weights_path is set but pretrained is false; drop one of them")
        depth = names.index(last_layer) + 1
        self.vgg_type, self.layer_names = vgg_type, names[:depth]
        self.features = _build_trunk(vgg_type, depth)
        if pretrained:
            source = weights_path if weights_path is not None else hub_cache_path(vgg_type)
            state = _trunk_state(load_vgg_state_dict(vgg_type, weights_path))
            wanted = self.features.state_dict()
            missing = [k for k in wanted if k not in state]
            if missing:
                raise RuntimeError(f"VGG weights from {source} lack {missing} needed up to {last_layer}; "
                                   f"is it a {vgg_type} state dict?")
            bad = [k for k in wanted if state[k].shape != wanted[k].shape]
            if bad:
                raise RuntimeError(f"VGG weights from {source} have the wrong shapes for {bad}; "
                                   f"is it a {vgg_type} state dict?")
            self.features.load_state_dict({k: state[k] for k in wanted})
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "VGGFeatures":
        """Stays in eval mode: the extractor is a fixed measuring device, never trained."""
        return super().train(False)

    def forward(self, x: Tensor, layers: Iterable[str]) -> Dict[str, Tensor]:
        """(B, 3, H, W) → {name: activation} for each requested layer name."""
        wanted = set(layers)
        unknown = wanted - set(self.layer_names)
        if unknown:
            raise ValueError(f"layers {sorted(unknown)} are not in this extractor "
                             f"(it stops at {self.layer_names[-1]})")
        out: Dict[str, Tensor] = {}
        for name, module in zip(self.layer_names, self.features):
            x = module(x)
            if name in wanted:
                out[name] = x
                if len(out) == len(wanted):
                    break  # no need to run deeper layers
        return out


# Shared extractors: several losses on one VGG load it once. Weak values, so an extractor no
# loss uses any more is freed. Random (pretrained=False) extractors are never shared: each
# draws its own weights from the caller's RNG.
_CACHE: "weakref.WeakValueDictionary[Tuple[Any, ...], VGGFeatures]" = weakref.WeakValueDictionary()


def get_vgg_features(
    vgg_type: str = "vgg19",
    last_layer: str = "conv5_4",
    pretrained: bool = True,
    weights_path: Optional[str] = None,
) -> VGGFeatures:
    """A :class:`VGGFeatures`, shared per (vgg_type, weights source, last_layer)."""
    if not pretrained:
        return VGGFeatures(vgg_type, last_layer, pretrained=False, weights_path=weights_path)
    if weights_path is not None:
        source: Tuple[str, ...] = ("file", os.path.abspath(os.path.expanduser(str(weights_path))))
    else:
        _check_type(vgg_type)
        source = ("hub", hub_cache_path(vgg_type), VGG_URLS[vgg_type])
    key = (vgg_type, source, last_layer)
    extractor = _CACHE.get(key)
    if extractor is None:
        extractor = VGGFeatures(vgg_type, last_layer, pretrained=True, weights_path=weights_path)
        _CACHE[key] = extractor
    return extractor
