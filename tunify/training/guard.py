"""What a run may do to its output folder, decided before anything is written.

A fresh run refuses a folder that holds checkpoints (of the fine-tune or of the pretraining);
``--resume`` refuses a folder with nothing to resume, and a recipe that differs from the one
the folder was trained with (``recipe.yaml``), naming each difference, unless the caller allows
it. A refused run leaves the folder exactly as it found it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from .checkpoint import scan_checkpoints

__all__ = ["RunExistsError", "RecipeChangedError", "recipe_changes", "check_run_dir", "IGNORED_KEYS"]

# Keys that say where or how visibly a run goes, not what it computes: a resume may change them.
IGNORED_KEYS = ("output.dir", "output.progress")


class RunExistsError(FileExistsError):
    """A fresh run was pointed at a folder that already holds a run."""

    def __init__(self, message: str, out: Path, step: Optional[int], total: int, stage: str = "fine-tune"):
        super().__init__(message)
        self.out, self.step, self.total, self.stage = out, step, total, stage


class RecipeChangedError(ValueError):
    """``--resume`` with a recipe that differs from the one the run was trained with."""


def _plain(data: Any) -> Any:
    return json.loads(json.dumps(data, sort_keys=True, default=str))


def _flat(data: Any, prefix: str = "") -> Dict[str, Any]:
    if isinstance(data, dict) and data:
        out: Dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: data}


def recipe_changes(old: Dict[str, Any], new: Dict[str, Any], ignore=IGNORED_KEYS) -> List[str]:
    """``["optim.lr: 0.0005 -> 0.001", ...]``: the dotted keys whose values differ."""
    a, b = _flat(_plain(old)), _flat(_plain(new))
    lines = []
    for key in sorted(set(a) | set(b)):
        if key in ignore or a.get(key, "<absent>") == b.get(key, "<absent>"):
            continue
        lines.append(f"{key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}")
    return lines


def _stored_recipe(out: Path) -> Optional[Dict[str, Any]]:
    path = out / "recipe.yaml"
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def _newest_step(root: Path) -> Optional[int]:
    ckpt, damaged = scan_checkpoints(root)
    found = [p for p, _ in damaged] + ([ckpt] if ckpt else [])
    return max((int(p.name.split("_")[1]) for p in found), default=None)


def check_run_dir(out: Path, recipe: Any, resume: bool, allow_changed_recipe: bool = False) -> List[str]:
    """Raise if the run may not start in ``out``; else the recipe changes a resume accepts."""
    out = Path(out)
    fine, pre = _newest_step(out / "checkpoints"), _newest_step(out / "pretrain" / "checkpoints")
    if not resume:
        if fine is not None or pre is not None:
            stage, step = ("fine-tune", fine) if fine is not None else ("pretraining", pre)
            total = recipe.optim.steps if fine is not None else recipe.pretrain.steps if recipe.pretrain else 0
            raise RunExistsError(f"{out} already holds a run ({stage} checkpoint at step {step} of {total}): pass "
                                 "--resume to continue it, or choose another output dir (--set output.dir=...)",
                                 out, step, total, stage)
        return []
    if fine is None and pre is None:
        raise FileNotFoundError(f"nothing to resume: {out} holds no checkpoint (neither {out / 'checkpoints'} nor "
                                f"{out / 'pretrain' / 'checkpoints'}); drop --resume to start the run")
    stored = _stored_recipe(out)
    if stored is None:
        return []  # nothing to compare with; the checkpoints' own recipe check still runs in fit
    changes = recipe_changes(stored, recipe.to_dict())
    if changes and not allow_changed_recipe:
        raise RecipeChangedError(
            f"the recipe differs from the one {out} was trained with ({out / 'recipe.yaml'}): {'; '.join(changes)}. "
            "Resume with the same recipe and --set values, pass --allow-changed-recipe to continue with the new one, "
            "or start a new run in another output dir")
    return changes
