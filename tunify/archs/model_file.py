"""A model file is a model: any ``.pth``/``.pt``/``.ckpt``/``.safetensors`` that spandrel knows.

spandrel (PyPI ``spandrel``, the loader chaiNNer and ComfyUI use) detects about 40 restoration
architectures and their hyper-parameters from a state dict alone. Here the file is read with
``weights_only=True`` (or safetensors), so nothing in it runs; spandrel only sees tensors.

What rebuilds the network without the file is small: spandrel's architecture id and the
name and shape of every tensor in the canonical state dict (spandrel reads hyper-parameters
from shapes and key names), see :func:`model_file_config` / :func:`model_from_config`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from torch import nn

from ..surgery import register_source
from .weights import read_state_dict

__all__ = [
    "MODEL_FILE_SUFFIXES",
    "is_model_file",
    "load_model_file",
    "descriptor_from_state_dict",
    "model_file_config",
    "model_from_config",
    "describe",
    "fit_size",
    "example_inputs",
]

MODEL_FILE_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")
SMALL = 64  # tensors up to this many values (integer ones up to SMALL_INT) are recorded by value
SMALL_INT = 65536


def is_model_file(name: Any) -> bool:
    """Whether ``name`` looks like a path to a model file (by its suffix)."""
    return isinstance(name, (str, Path)) and Path(str(name)).suffix.lower() in MODEL_FILE_SUFFIXES


def _spandrel():
    try:
        import spandrel
    except ImportError as exc:
        raise ImportError(
            f"reading model files needs spandrel ({exc}); install it with "
            "`pip install spandrel spandrel-extra-arches einops`"
        ) from exc
    return spandrel


def descriptor_from_state_dict(state_dict: Dict[str, torch.Tensor], source: str = "the state dict"):
    """spandrel's ModelDescriptor for ``state_dict``; ValueError naming what to try if unknown."""
    spandrel = _spandrel()
    state_dict = spandrel.canonicalize_state_dict(dict(state_dict))
    try:
        return spandrel.ModelLoader().load_from_state_dict(state_dict)
    except spandrel.UnsupportedModelError as exc:
        keys = ", ".join(list(state_dict)[:5])
        raise ValueError(
            f"{source}: spandrel does not recognise this architecture (first keys: {keys}). Name the "
            "architecture in the recipe (`model: {arch: ..., weights: ...}`) instead."
        ) from exc


def load_model_file(path: Union[str, Path]):
    """The spandrel ModelDescriptor of a model file (``.model``, ``.scale``, ``.size_requirements``).

    Read with ``weights_only=True`` / safetensors: a file that needs code to unpickle is refused.
    """
    path = Path(str(path)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    state_dict = read_state_dict(str(path), key="none")
    return descriptor_from_state_dict(state_dict, str(path))


def model_file_config(descriptor) -> Dict[str, Any]:
    """JSON-able record that rebuilds ``descriptor``'s network without the original file:
    spandrel's architecture id, every tensor's name and shape, scale and size requirements."""
    req = descriptor.size_requirements
    state = descriptor.model.state_dict()
    return {
        "spandrel_arch": str(descriptor.architecture.id),
        "state_dict_shapes": {k: list(v.shape) for k, v in state.items()},
        # spandrel reads a few hyper-parameters from values (IPT's rgb range from sub_mean.bias)
        "small_tensors": {k: v.flatten().tolist() for k, v in state.items()
                          if v.numel() <= (SMALL if v.is_floating_point() else SMALL_INT)},
        "hyperparameters": _jsonable(getattr(descriptor.model, "hyperparameters", {})),
        "scale": int(descriptor.scale),
        "input_channels": int(descriptor.input_channels),
        "output_channels": int(descriptor.output_channels),
        "size_requirements": {"minimum": req.minimum, "multiple_of": req.multiple_of, "square": req.square},
        "tiling": getattr(descriptor.tiling, "name", str(descriptor.tiling)),  # SUPPORTED, DISCOURAGED or INTERNAL
        "purpose": str(descriptor.purpose),
    }


def _jsonable(values: Dict[str, Any]) -> Dict[str, Any]:
    """The hyper-parameters spandrel detected, those JSON can hold (classes are left out)."""
    out = {}
    for key, value in dict(values).items():
        if isinstance(value, (bool, int, float, str, type(None))):
            out[key] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (bool, int, float, str, type(None))) for v in value):
            out[key] = list(value)
    return out


def model_from_config(config: Dict[str, Any]) -> nn.Module:
    """Rebuild the network a :func:`model_file_config` describes (weights are placeholders:
    load the real ones with ``load_state_dict``). Raises if spandrel detects another architecture."""
    shapes, small = config["state_dict_shapes"], config.get("small_tensors", {})
    state_dict = {k: torch.tensor(small[k]).reshape(v) if k in small else torch.ones(v) for k, v in shapes.items()}
    # (placeholder values: spandrel reads hyper-parameters from shapes, key names and the recorded values)
    descriptor = descriptor_from_state_dict(state_dict, "the recorded model")
    if str(descriptor.architecture.id) != config["spandrel_arch"]:
        raise ValueError(
            f"the recorded shapes rebuild {descriptor.architecture.id}, not {config['spandrel_arch']}; "
            "was the record written by another spandrel version?"
        )
    return descriptor.model


def describe(descriptor, path: Optional[str] = None) -> str:
    """One line saying what spandrel found in a file."""
    req = descriptor.size_requirements
    need = []
    if req.minimum > 1:
        need.append(f"min {req.minimum} px")
    if req.multiple_of > 1:
        need.append(f"multiple of {req.multiple_of}")
    if req.square:
        need.append("square")
    where = f"{path}: " if path else ""
    return (f"{where}{descriptor.architecture.id} ({descriptor.purpose}, x{descriptor.scale}, "
            f"{descriptor.input_channels}->{descriptor.output_channels} channels"
            + (f", input {', '.join(need)}" if need else "") + ")")


def fit_size(descriptor, size: int) -> int:
    """The nearest side length ≥ ``size`` that the model's size requirements accept; ``descriptor``
    is spandrel's, or the ``size_requirements`` mapping of a :func:`model_file_config` record."""
    req = descriptor if isinstance(descriptor, dict) else descriptor.size_requirements
    get = req.get if isinstance(req, dict) else (lambda k: getattr(req, k))
    side = max(int(size), int(get("minimum") or 1))
    step = max(int(get("multiple_of") or 1), 1)
    return -(-side // step) * step


def example_inputs(descriptor, size: int = 64, batch: int = 2, seed: int = 0) -> tuple:
    """Forward arguments for ``descriptor.model``: images (B, C, S, S) in [0, 1] with S the
    size the model accepts, plus a binary mask (B, 1, S, S) for inpainting models."""
    g = torch.Generator().manual_seed(seed)
    side = fit_size(descriptor, size)
    image = torch.rand(batch, int(descriptor.input_channels), side, side, generator=g)
    if str(descriptor.purpose) != "Inpainting":
        return (image,)
    return image, (torch.rand(batch, 1, side, side, generator=g) > 0.7).float()


def _descriptor_source(obj: Any):
    """tunify()'s source hook: a spandrel ModelDescriptor is its network plus the record that
    rebuilds it (surgery knows nothing of spandrel; this module tells it)."""
    if isinstance(obj, nn.Module) or not isinstance(getattr(obj, "model", None), nn.Module):
        return None
    return obj.model, model_file_config(obj)


register_source(_descriptor_source)
