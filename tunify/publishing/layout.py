"""The names and version of a published folder's files, and the sha256 that checks them: what
every writer and reader of a folder shares (full saves, adapters, the zoo), in a module that
imports nothing of theirs."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Dict, Optional, Union

from ..files import FILE_MODE, atomic_write_text
from ..version import __version__

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "LEGACY_WEIGHTS", "FORMAT_VERSION", "sha256_file", "write_tensors",
           "write_recipe", "saved_config"]

CONFIG_NAME, WEIGHTS_NAME, LEGACY_WEIGHTS = "config.json", "model.safetensors", "pytorch_model.pth"
FORMAT_VERSION = 1


def sha256_file(path: Union[str, Path]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_tensors(path: Path, state: Dict[str, Any], fmt: str) -> Path:
    """``state`` as safetensors at ``path``, written beside it and renamed into place, so a
    crash never leaves a half-written checkpoint under the real name."""
    from safetensors.torch import save_file

    tmp = path.parent / f".{path.name}.tmp"
    save_file(state, str(tmp), metadata={"format": fmt, "format_version": str(FORMAT_VERSION)})
    os.chmod(tmp, FILE_MODE)
    tmp.replace(path)
    return path


def write_recipe(folder: Path, recipe: Any) -> Optional[str]:
    """The recipe that trained a model as ``folder``/recipe.yaml; returns its digest (None: no recipe)."""
    if recipe is None:
        return None
    import yaml

    atomic_write_text(folder / "recipe.yaml", yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    return recipe.digest()


def saved_config(tm: Any, name: Optional[str], recipe: Any, folder_name: str, **fields: Any) -> Dict[str, Any]:
    """config.json of ``tm``: its TunifyConfig with ``fields`` (arch, digests, metrics) laid over,
    the name (given, the recipe's, the model's, the folder's) and each corner's description
    (the recipe's, else the config's)."""
    config = tm.config
    descriptions = {o.name: o.description for o in recipe.objectives} if recipe is not None else None
    out = {"format": "tunify", "format_version": FORMAT_VERSION, **config.to_dict()}
    out.update(tunify_version=__version__, name=name or getattr(recipe, "name", None) or config.name or folder_name,
               p=tm.lam_space.p, num_kernels=tm.lam_space.num_kernels, converted=len(tm.tunify_report.converted),
               objectives=config.objective_list(descriptions))
    out.update(fields)
    return out
