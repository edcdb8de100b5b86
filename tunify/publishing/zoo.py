"""The zoo: published tuned checkpoints listed in ``zoo/index.json``, checked by sha256.

Each entry: name, arch, recipe, path (a folder in the repo) or hub (a hub id), sha256 and
size of its model.safetensors, what λ does, headline metrics. ``from_zoo(name)`` refuses a
file whose sha256 differs from the index.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from ..evaluation import SweepResult
from ..shipped import shipped_dir
from ..surgery import TunableModel
from ..training.files import atomic_write_text
from .hub import download
from .layout import WEIGHTS_NAME, sha256_file
from .pretrained import from_pretrained

__all__ = ["ZOO_DIR", "zoo_index", "list_zoo", "zoo_entry", "from_zoo", "add_to_zoo", "zoo_folder"]

ZOO_DIR = shipped_dir("zoo")  # the repository's zoo/, or package data in an installed wheel


def zoo_index(index: Optional[Union[str, Path]] = None) -> Dict[str, Any]:
    path = Path(index) if index else ZOO_DIR / "index.json"
    if not path.is_file():
        return {"models": []}
    return json.loads(path.read_text())


def list_zoo(index: Optional[Union[str, Path]] = None) -> List[str]:
    """Names of the published checkpoints."""
    return [m["name"] for m in zoo_index(index)["models"]]


def zoo_entry(name: str, index: Optional[Union[str, Path]] = None) -> Dict[str, Any]:
    entries = {m["name"]: m for m in zoo_index(index)["models"]}
    if name not in entries:
        from .._text import did_you_mean

        raise KeyError(f"no zoo model {name!r}.{did_you_mean(name, entries)} Published: {', '.join(entries) or 'none'}")
    return entries[name]


def zoo_folder(entry: Dict[str, Any], index: Optional[Union[str, Path]] = None) -> Path:
    """The folder of a zoo entry: its path in the repo, or its hub snapshot."""
    base = Path(index).resolve().parent.parent if index else ZOO_DIR.parent
    return (base / entry["path"]) if entry.get("path") else download(entry["hub"], entry.get("revision"))


def from_zoo(name: str, index: Optional[Union[str, Path]] = None) -> TunableModel:
    """Load a published checkpoint by name, after checking its sha256 against the index."""
    entry = zoo_entry(name, index)
    folder = zoo_folder(entry, index)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"zoo model {name!r}: {weights} is missing")
    got = sha256_file(weights)
    if got != entry["sha256"]:
        raise ValueError(
            f"zoo model {name!r}: {weights} has sha256 {got[:16]}…, the index says {entry['sha256'][:16]}…; the file "
            "is corrupted or was changed. Restore it (git checkout -- zoo/) or download it again."
        )
    return from_pretrained(folder)


def add_to_zoo(folder: Union[str, Path], index: Optional[Union[str, Path]] = None, recipe: Optional[str] = None) -> Dict[str, Any]:
    """Add (or replace) the entry of a published folder in the index; returns the entry."""
    folder = Path(folder).resolve()
    index_path = Path(index) if index else ZOO_DIR / "index.json"
    config = json.loads((folder / "config.json").read_text())
    weights = folder / WEIGHTS_NAME
    root = index_path.resolve().parent.parent
    try:
        rel = str(folder.relative_to(root))
    except ValueError:
        rel = str(folder)
    sweep = SweepResult.from_dict(config.get("metrics") or {}, [o["name"] for o in config["objectives"]],
                                  config["lam_space"])
    entry = {
        "name": config["name"],
        "arch": config["arch"],
        "recipe": recipe,
        "path": rel,
        "sha256": sha256_file(weights),
        "size": weights.stat().st_size,
        "lam": {o["name"]: o.get("description", "") for o in config["objectives"]},
        "lam_space": config["lam_space"],
        "metrics": {"psnr_by_lam": {" ".join(f"{v:g}" for v in r["lam"]): round(r["psnr"], 2)
                                    for r in sweep.rows if r.get("psnr") is not None},
                    "input_psnr": sweep.input_row.get("psnr")},
    }
    data = zoo_index(index_path)
    data["models"] = [m for m in data["models"] if m["name"] != entry["name"]] + [entry]
    index_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(index_path, json.dumps(data, indent=2) + "\n")
    return entry
