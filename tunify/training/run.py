"""From a recipe to a tuned model and its λ sweep: build, (pre)train, tunify, fine-tune, report.

    result = run_recipe(load_recipe("recipes/quickstart.yaml"))

Writes into the run's output dir: ``recipe.yaml`` (resolved), ``metrics.csv`` and its
``loss.png``, ``val.csv``, ``checkpoints/`` (``pretrain/`` holds the same for the pretraining),
and at the end ``sweep.md`` / ``sweep.json`` (metrics per λ) and ``sweep.png`` (the input, the
output at each λ of the grid, and the clean image).

Before anything is written the whole recipe is built once (:func:`preflight`) and the output
dir checked (:func:`check_run_dir`): a refused run leaves the folder as it found it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
import yaml
from torch import nn

from ..data import save_image
from ..lam import lam_grid
from ..surgery import TunableModel
from .checkpoint import latest_checkpoint, load_checkpoint, scan_checkpoints
from .files import atomic_write_text
from .build import build_model, tunify_from_recipe  # here too: run's names since the start
from .guard import check_run_dir
from .preflight import preflight
from .recipe import Recipe
from .stage import Stage
from .trainer import FitResult, distributed, fit

__all__ = ["build_model", "tunify_from_recipe", "run_recipe", "RunResult", "write_sweep"]


@dataclass
class RunResult:
    output_dir: Path
    model: Optional[TunableModel]   # None when this call stopped during the pretraining
    fit: FitResult
    sweep: List[Dict[str, Any]] = field(default_factory=list)
    files: Dict[str, Path] = field(default_factory=dict)
    steps_run: Dict[str, int] = field(default_factory=dict)  # {"pretrain": n, "fine-tune": m}: this call's steps


def _pretrain(model: nn.Module, recipe: Recipe, out: Path, log: Callable[[str], None], stop_after: Optional[int],
              allow_changed_recipe: bool) -> Optional[FitResult]:
    """Plain training on one objective before tunify, checkpointed and resumed like the
    fine-tune. Returns its FitResult, or None when a finished pretraining was reused."""
    spec, root = recipe.pretrain, out / "pretrain"
    done = latest_checkpoint(root / "checkpoints", log=log) if (root / "checkpoints").is_dir() else None
    if done is not None:
        step, state, _ = load_checkpoint(done)
        if step >= spec.steps:
            model.load_state_dict(state)
            log(f"pretrained weights reused from {done}")
            return None
    log(f"pretraining the plain model for {spec.steps} steps" + (f", resuming at step {step}" if done else ""))
    return fit(model, recipe, stage=Stage.pretrain(recipe), out_dir=root, resume=done is not None, log=log,
               stop_after=stop_after, allow_changed_recipe=allow_changed_recipe)


def write_sweep(tm: TunableModel, batch: Dict[str, torch.Tensor], out: Path, points: int, index: int = 0,
                loss: Optional[nn.Module] = None) -> Dict[str, Any]:
    """The end-of-run sweep: metrics per λ of the grid in the one sweep format (sweep.json, read
    by ``tunify publish`` for the card; sweep.md) and an image strip (sweep.png): input | output
    at each λ | clean, for image ``index`` of ``batch``."""
    from .validate import sweep_batch

    device = next(tm.parameters()).device
    result = sweep_batch(tm, {k: v.to(device) for k, v in batch.items()}, lam_grid(tm.lam_space, points).to(device),
                         loss, pictures=True)
    same = batch["lq"].shape == batch["gt"].shape  # a super-resolution input is not shown beside its outputs
    tiles = result.tiles[index][0 if same else 1:]
    gap = torch.ones(3, tiles[-1].shape[1], 4)
    save_image(torch.cat([t for tile in tiles for t in (tile, gap)][:-1], dim=2), out / "sweep.png")
    result.to_json(out / "sweep.json")
    table = result.table()
    atomic_write_text(out / "sweep.md", table + "\n")
    shown = [result.rows[i]["lam"] for i in result.grid_columns]
    return {"rows": result.rows, "input_psnr": result.input_row.get("psnr"), "table": table, "result": result,
            "strip": f"{'input | ' if same else ''}outputs at λ {shown} | clean"}


def run_recipe(recipe: Recipe, *, resume: bool = False, stop_after: Optional[int] = None,
               log: Callable[[str], None] = print, allow_changed_recipe: bool = False) -> RunResult:
    """Build the recipe's model, pretrain if asked, tunify, fine-tune, and write the sweep.

    ``stop_after`` counts this call's steps, pretraining included; ``resume`` continues
    wherever the run stopped (in the pretraining or the fine-tune). A resume with a recipe
    that differs from the stored one is refused unless ``allow_changed_recipe``."""
    rank, _, _ = distributed()
    out = recipe.output_dir()
    changes = check_run_dir(out, recipe, resume, allow_changed_recipe)
    torch.manual_seed(recipe.seed)
    model = build_model(recipe.model)
    preflight(recipe, model)
    if rank == 0:
        if changes:
            log(f"resuming with a changed recipe (allowed): {'; '.join(changes)}")
        atomic_write_text(out / "recipe.yaml", yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    steps: Dict[str, int] = {}
    if recipe.pretrain is not None:
        pre = _pretrain(model, recipe, out, log, stop_after, allow_changed_recipe)
        steps["pretrain"] = pre.steps_run if pre else 0
        if pre is not None and pre.step < recipe.pretrain.steps:  # stopped during the pretraining
            return RunResult(out, None, pre, steps_run=steps)
        stop_after = None if stop_after is None else stop_after - steps["pretrain"]
        # Whether the pretraining just ran or was reused on resume, the fine-tune starts from one RNG
        # state (a discriminator's initial weights would otherwise depend on how the run was split).
        torch.manual_seed(recipe.seed + 1)
    tm = tunify_from_recipe(model, recipe)
    if rank == 0:
        log(tm.tunify_report.summary())
    found, damaged = scan_checkpoints(out / "checkpoints") if (out / "checkpoints").is_dir() else (None, [])
    fine_resume = resume and (found is not None or bool(damaged))  # else a resume stopped in the pretraining
    result = fit(tm, recipe, resume=fine_resume, stop_after=stop_after, log=log, reference=model,
                 allow_changed_recipe=allow_changed_recipe)
    run = RunResult(out, tm, result, steps_run={**steps, "fine-tune": result.steps_run})
    if rank == 0 and result.step == recipe.optim.steps:
        sweep = write_sweep(tm, result.val_batch, out, recipe.validation.lam_points)
        run.sweep = sweep["rows"]
        run.files = {k: out / f"sweep.{k}" for k in ("png", "md", "json")}
        log("λ sweep on the validation images:\n" + sweep["table"])
    return run
