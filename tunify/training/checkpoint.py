"""Checkpoints that survive a crash at any instant, and resume a run exactly.

A checkpoint is a folder ``step_00000100/`` holding ``model.safetensors`` (the tunable model's
state_dict), ``state.safetensors`` (every other tensor: optimizer moments, EMA, RNG states,
discriminators) and ``state.json`` (the rest: step, scheduler, recipe digest, where each
tensor goes) and ``manifest.json`` (size and sha256 of those three). It is written under a
temporary name and renamed into place, and ``latest`` (a small JSON file) is replaced atomically
afterwards, so a run killed mid-write keeps its previous checkpoint intact. A checkpoint damaged
later (a full disk, a truncated copy, a flipped bit) fails its manifest: :func:`latest_checkpoint`
then falls back to the newest intact one and says so. Nothing is pickled; files are 0644,
folders 0755.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from safetensors.torch import load_file, save_file

from .files import DIR_MODE, FILE_MODE, atomic_write_text

__all__ = ["flatten_state", "unflatten_state", "save_checkpoint", "load_checkpoint", "latest_checkpoint",
           "scan_checkpoints", "verify_checkpoint", "CheckpointError", "atomic_write_text"]

FILES = ("model.safetensors", "state.safetensors", "state.json")
MANIFEST = "manifest.json"
STEP_DIR = re.compile(r"^step_\d{8}$")


class CheckpointError(ValueError):
    """A checkpoint folder is incomplete, truncated or corrupted."""


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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
        manifest = {name: {"size": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)} for name in FILES}
        (tmp / MANIFEST).write_text(json.dumps({"step": step, "files": manifest}, indent=1))
        for name in (*FILES, MANIFEST):
            os.chmod(tmp / name, FILE_MODE)
        os.chmod(tmp, DIR_MODE)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(root / "latest", json.dumps({"step": step, "dir": final.name}))
    done = sorted(p for p in root.iterdir() if STEP_DIR.match(p.name) and p.is_dir())
    for old in done[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def verify_checkpoint(path: Path) -> Optional[str]:
    """None when checkpoint ``path`` is intact, else what is wrong with it (one phrase).
    Checks sizes and sha256 against its manifest; a checkpoint from before manifests is
    loaded instead (which catches truncation, not every flipped bit)."""
    path = Path(path)
    for name in FILES:
        if not (path / name).is_file():
            return f"{name} is missing"
    if not (path / MANIFEST).is_file():
        try:
            load_checkpoint(path)
        except CheckpointError as exc:
            return str(exc)
        return None
    try:
        manifest = json.loads((path / MANIFEST).read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return f"{MANIFEST} is unreadable"
    for name in FILES:
        want = manifest.get(name) or {}
        size = (path / name).stat().st_size
        if size != want.get("size"):
            return f"{name} has {size:,} bytes, its manifest says {want.get('size')} (truncated?)"
        if _sha256(path / name) != want.get("sha256"):
            return f"{name} does not match the sha256 in its manifest (corrupted)"
    return None


def _candidates(root: Path) -> List[Path]:
    """Checkpoint folders under ``root``, newest first (the ``latest`` pointer's first)."""
    found = sorted((p for p in root.iterdir() if STEP_DIR.match(p.name) and p.is_dir()), reverse=True) if root.is_dir() else []
    try:
        pointed = root / json.loads((root / "latest").read_text())["dir"]
    except (OSError, ValueError, KeyError, TypeError):  # no pointer, or a damaged one: the folders decide
        return found
    return [pointed] + [p for p in found if p != pointed] if pointed in found else found


def scan_checkpoints(root: Path) -> Tuple[Optional[Path], List[Tuple[Path, str]]]:
    """(the newest intact checkpoint or None, [(damaged newer checkpoint, why)...])."""
    damaged: List[Tuple[Path, str]] = []
    for ckpt in _candidates(Path(root)):
        reason = verify_checkpoint(ckpt)
        if reason is None:
            return ckpt, damaged
        damaged.append((ckpt, reason))
    return None, damaged


def _warn(message: str) -> None:
    print(f"tunify: warning: {message}", file=sys.stderr)


def latest_checkpoint(root: Path, log: Callable[[str], None] = _warn) -> Optional[Path]:
    """The newest intact checkpoint under ``root`` (None if there is none). Damaged newer
    ones are skipped, and ``log`` says which and why; when every one is damaged it raises
    :class:`CheckpointError` (resuming from scratch silently would lose the run)."""
    ckpt, damaged = scan_checkpoints(Path(root))
    if damaged:
        what = "; ".join(f"{p.name}: {why}" for p, why in damaged)
        if ckpt is None:
            raise CheckpointError(f"every checkpoint under {root} is damaged ({what}); restore one from a copy, "
                                  "or start the run over in a fresh output dir")
        log(f"skipped damaged checkpoint{'s' if len(damaged) > 1 else ''} under {root} ({what}); "
            f"using the newest intact one, {ckpt.name}")
    return ckpt


def load_checkpoint(path: Path) -> Tuple[int, Dict[str, torch.Tensor], Dict[str, Any]]:
    """(step, model state_dict, trainer state) of a checkpoint folder."""
    path = Path(path)
    for name in FILES:
        if not (path / name).is_file():
            raise CheckpointError(f"checkpoint {path} is incomplete: {name} is missing")
    try:
        meta = json.loads((path / "state.json").read_text())
        tensors = load_file(str(path / "state.safetensors"))
        model = load_file(str(path / "model.safetensors"))
        return meta["step"], model, unflatten_state(meta["state"], tensors)
    except Exception as exc:  # json, safetensors (its SafetensorError is a bare Exception), a bad layout
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}): it is truncated "
                              "or corrupted") from exc
