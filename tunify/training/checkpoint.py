"""Checkpoints that survive a crash at any instant, and resume a run exactly.

A checkpoint is a folder ``step_00000100/`` holding ``model.safetensors`` (the tunable model's
state_dict), ``state.safetensors`` (every other tensor: optimizer moments, EMA, RNG states,
discriminators) and ``state.json`` (the rest: step, scheduler, recipe digest, where each
tensor goes). It is written under a temporary name and renamed into place, and ``latest``
(a small JSON file) is replaced atomically afterwards, so a run killed mid-write keeps its
previous checkpoint intact. Nothing is pickled.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from safetensors.torch import load_file, save_file

__all__ = ["flatten_state", "unflatten_state", "save_checkpoint", "load_checkpoint", "latest_checkpoint", "atomic_write_text"]


def flatten_state(obj: Any, tensors: Dict[str, torch.Tensor], prefix: str = "") -> Any:
    """Replace every tensor in a nested dict/list by {"__tensor__": key}, collecting tensors."""
    if isinstance(obj, torch.Tensor):
        key = prefix or "root"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        keys = list(obj.keys())
        out = {"__dict__": [[_key(k), flatten_state(obj[k], tensors, f"{prefix}.{k}" if prefix else str(k))] for k in keys]}
        return out
    if isinstance(obj, (list, tuple)):
        return {"__list__": [flatten_state(v, tensors, f"{prefix}.{i}" if prefix else str(i)) for i, v in enumerate(obj)],
                "tuple": isinstance(obj, tuple)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix!r} in a checkpoint")


def _key(k: Any) -> Any:
    if isinstance(k, (str, int)) and not isinstance(k, bool):
        return {"int": k} if isinstance(k, int) else k
    raise TypeError(f"checkpoint dict keys must be str or int, got {k!r}")


def unflatten_state(obj: Any, tensors: Dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {(k["int"] if isinstance(k, dict) else k): unflatten_state(v, tensors) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            items = [unflatten_state(v, tensors) for v in obj["__list__"]]
            return tuple(items) if obj.get("tuple") else items
    return obj


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so a reader sees the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(root: Path, step: int, model_state: Dict[str, torch.Tensor], state: Dict[str, Any], keep_last: int = 2) -> Path:
    """Write checkpoint ``root/step_<step>`` atomically; keep the ``keep_last`` newest."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".step_{step:08d}."))
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in model_state.items()}, str(tmp / "model.safetensors"))
        tensors: Dict[str, torch.Tensor] = {}
        meta = flatten_state(state, tensors)
        save_file(tensors, str(tmp / "state.safetensors"))
        (tmp / "state.json").write_text(json.dumps({"step": step, "state": meta}, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(root / "latest", json.dumps({"step": step, "dir": final.name}))
    done = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in done[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: Path) -> Optional[Path]:
    """The newest complete checkpoint under ``root`` (None if there is none)."""
    pointer = Path(root) / "latest"
    if pointer.is_file():
        ckpt = Path(root) / json.loads(pointer.read_text())["dir"]
        if (ckpt / "state.json").is_file():
            return ckpt
    done = sorted(p for p in Path(root).glob("step_*") if (p / "state.json").is_file())
    return done[-1] if done else None


def load_checkpoint(path: Path) -> Tuple[int, Dict[str, torch.Tensor], Dict[str, Any]]:
    """(step, model state_dict, trainer state) of a checkpoint folder."""
    path = Path(path)
    for name in ("model.safetensors", "state.safetensors", "state.json"):
        if not (path / name).is_file():
            raise FileNotFoundError(f"checkpoint {path} is incomplete: {name} is missing")
    meta = json.loads((path / "state.json").read_text())
    tensors = load_file(str(path / "state.safetensors"))
    return meta["step"], load_file(str(path / "model.safetensors")), unflatten_state(meta["state"], tensors)
