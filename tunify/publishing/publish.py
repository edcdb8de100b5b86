"""From a training run to a published folder, and checking a card's numbers."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import torch

from ..data import build_dataset
from ..surgery import TunableModel
from ..training import build_model, latest_checkpoint, load_checkpoint, load_recipe, tunify_from_recipe
from ..training.validate import lam_sweep
from .pretrained import save_pretrained

__all__ = ["publish_run", "verify_card", "load_run", "is_run_dir"]


def is_run_dir(folder: Union[str, Path]) -> bool:
    """Whether ``folder`` is a ``tunify train`` output (recipe.yaml and checkpoints/), not a
    published folder (config.json)."""
    folder = Path(folder)
    return (folder / "recipe.yaml").is_file() and (folder / "checkpoints").is_dir() and not (folder / "config.json").is_file()


def load_run(run_dir: Union[str, Path], finished: bool = True, base_weights: bool = False) -> TunableModel:
    """The tunable model of a training run's latest checkpoint (its EMA weights when the run
    kept an EMA). ``finished``: refuse a checkpoint short of the recipe's last step.
    ``base_weights``: build the base from the recipe's weights before loading the checkpoint, so
    the model's base record (sha256) names the real base (needed for adapter-only saves).
    ``tm.config`` holds the recipe and the checkpoint's step."""
    run_dir = Path(run_dir)
    recipe_file = run_dir / "recipe.yaml"
    if not recipe_file.is_file():
        raise FileNotFoundError(f"{run_dir} is not a training run: it has no recipe.yaml")
    recipe = load_recipe(recipe_file)
    ckpt = latest_checkpoint(run_dir / "checkpoints") if (run_dir / "checkpoints").is_dir() else None
    if ckpt is None:
        raise FileNotFoundError(f"{run_dir / 'checkpoints'} holds no checkpoint")
    step, state, trainer_state = load_checkpoint(ckpt)
    if finished and step < recipe.optim.steps:
        raise ValueError(f"{ckpt} is at step {step} of {recipe.optim.steps}: finish the run (tunify train ... --resume) first")
    # The checkpoint holds every weight; a model file is still read, since its tensors are what
    # tells spandrel the architecture.
    spec = recipe.model if recipe.model.arch is None or base_weights else dataclasses.replace(recipe.model, weights=None)
    tm = tunify_from_recipe(build_model(spec), recipe)
    tm.model.load_state_dict({k[len("model."):]: v for k, v in state.items()} if all(k.startswith("model.") for k in state) else state)
    if trainer_state.get("ema"):
        params = dict(tm.named_parameters())
        with torch.no_grad():
            for key, value in trainer_state["ema"].items():
                params[key].copy_(value)
    tm.eval()
    tm.config.step = step
    return tm


def publish_run(run_dir: Union[str, Path], to: Union[str, Path], name: Optional[str] = None,
                adapter_only: bool = False) -> Path:
    """Publish the final checkpoint of a ``tunify train`` run (its EMA weights when the run
    kept an EMA) with the run's recipe, λ sweep and image strip; a ``card_notes.md`` in the
    run folder (e.g. a benchmark's results) is appended to the model card. ``adapter_only``:
    a low-rank run (``tunify.rank``) is written without its base weights (see
    ``save_pretrained``); the recipe must name the weights, so the base can be found again."""
    run_dir = Path(run_dir)
    if adapter_only and not load_recipe(Path(run_dir) / "recipe.yaml").model.weights:
        raise ValueError(f"{run_dir}: an adapter-only save names its base's weights, but the recipe's model has no "
                         "`weights`; publish it in full (drop --adapter-only)")
    tm = load_run(run_dir, base_weights=adapter_only)  # its config names the recipe, architecture and weights
    metrics = None
    if (run_dir / "sweep.json").is_file():
        metrics = json.loads((run_dir / "sweep.json").read_text())  # the card holds the run's sweep as it is
    notes = run_dir / "card_notes.md"
    return save_pretrained(tm, to, metrics=metrics, strip=run_dir / "sweep.png", name=name, adapter_only=adapter_only,
                           notes=notes.read_text() if notes.is_file() else None)


def verify_card(tm: TunableModel, folder: Union[str, Path]) -> List[Dict[str, Any]]:
    """Re-measure the card's λ sweep on the recipe's validation images; rows with the
    published and measured PSNR and their difference."""
    folder = Path(folder)
    metrics = tm.config.metrics
    if not metrics or not (folder / "recipe.yaml").is_file():
        raise ValueError(f"{folder} has no measured sweep or recipe to verify against")
    recipe = load_recipe(folder / "recipe.yaml")
    val = build_dataset(recipe.data.val or recipe.data.train)
    batch = val.fixed_batch(recipe.data.val_images, recipe.data.val_patch, seed=recipe.seed)
    lams = torch.tensor([r["lam"] for r in metrics["rows"]], dtype=torch.float32)
    rows = lam_sweep(tm, batch, lams)
    return [{"lam": r["lam"], "published": p["psnr"], "measured": r["psnr"], "delta": r["psnr"] - p["psnr"]}
            for r, p in zip(rows, metrics["rows"])]
