"""From a recipe to a tuned model and its λ sweep: build, (pre)train, tunify, fine-tune, report.

    result = run_recipe(load_recipe("recipes/quickstart.yaml"))

Writes into the run's output dir: ``recipe.yaml`` (resolved), ``metrics.csv``, ``val.csv``,
``checkpoints/``, and at the end ``sweep.md`` / ``sweep.json`` (metrics per λ) and
``sweep.png`` (the input, the output at each λ of the grid, and the clean image).
"""
from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
import yaml
from torch import nn

from ..archs import create_model
from ..archs.weights import load_pretrained
from ..data import save_image
from ..lam import lam_grid
from ..surgery import TunableModel, tunify
from .checkpoint import latest_checkpoint, load_checkpoint
from .recipe import ModelSpec, ObjectiveSpec, Recipe
from .trainer import FitResult, distributed, fit

__all__ = ["build_model", "tunify_from_recipe", "run_recipe", "RunResult", "write_sweep"]


@dataclass
class RunResult:
    output_dir: Path
    model: TunableModel
    fit: FitResult
    sweep: List[Dict[str, Any]] = field(default_factory=list)
    files: Dict[str, Path] = field(default_factory=dict)


def build_model(spec: ModelSpec) -> nn.Module:
    """The plain network of a recipe: registry name, ``timm:<name>`` or ``package.module:Class``,
    with pretrained weights from a local path or URL when given."""
    model = create_model(spec.arch, **spec.kwargs)
    if spec.weights:
        load_pretrained(model, spec.weights, spec.weights_key, spec.strict)
    return model


def tunify_from_recipe(model: nn.Module, recipe: Recipe) -> TunableModel:
    t = recipe.tunify
    tm = tunify(model, [o.name for o in recipe.objectives], targets=t.targets, exclude=t.exclude,
                lam_space=t.lam_space, mode=t.mode)
    tm.arch_source = {"arch": recipe.model.arch, "kwargs": dict(recipe.model.kwargs)}
    return tm


def _pretrain(model: nn.Module, recipe: Recipe, out: Path, log: Callable[[str], None]) -> None:
    """Plain training on one objective before tunify (deterministic; reused on resume)."""
    spec = recipe.pretrain
    pre = copy.deepcopy(recipe)
    pre.objectives = [ObjectiveSpec(name="pretrain", losses=spec.losses, target=spec.target)]
    pre.optim = dataclasses.replace(recipe.optim, steps=spec.steps, lr=spec.lr, ema_decay=0.0, warmup_steps=0,
                                    freeze_non_tunable=False)
    pre.lam = dataclasses.replace(recipe.lam, sampler="fixed", fixed=[1.0], distinct_per_batch=None)
    pre.validation = dataclasses.replace(recipe.validation, every=0)
    pre.output = dataclasses.replace(recipe.output, checkpoint_every=0, keep_last=1)
    root = out / "pretrain"
    done = latest_checkpoint(root / "checkpoints") if (root / "checkpoints").is_dir() else None
    if done is not None and load_checkpoint(done)[0] >= spec.steps:
        model.load_state_dict(load_checkpoint(done)[1])
        log(f"pretrained weights reused from {done}")
        return
    log(f"pretraining the plain model for {spec.steps} steps")
    fit(model, pre, out_dir=root, tunable=False, resume=done is not None, log=log)


def write_sweep(tm: TunableModel, batch: Dict[str, torch.Tensor], out: Path, points: int, index: int = 0) -> Dict[str, Any]:
    """Metrics per λ of the grid (sweep.md, sweep.json) and an image strip (sweep.png):
    input | output at each λ | clean, for image ``index`` of ``batch``."""
    from .validate import lam_sweep

    grid = lam_grid(tm.lam_space, points)
    device = next(tm.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    rows = lam_sweep(tm, batch, grid.to(device))
    with torch.no_grad():
        lq = batch["lq"][index : index + 1]
        outs = [tm(lq, lam=lam.to(device))[0].clamp(0, 1).cpu() for lam in grid]
    gt = batch["gt"][index].cpu()
    tiles = ([batch["lq"][index].cpu()] if batch["lq"].shape == batch["gt"].shape else []) + outs + [gt]
    gap = torch.ones(3, gt.shape[1], 4)
    strip = torch.cat([t for tile in tiles for t in (tile, gap)][:-1], dim=2)
    save_image(strip, out / "sweep.png")
    noisy = None
    if batch["lq"].shape == batch["gt"].shape:
        from ..metrics import psnr
        noisy = float(psnr(batch["lq"], batch["gt"]).mean())
    names = tm.objectives
    lines = [f"| λ ({', '.join(names)}) | PSNR (dB) | SSIM |", "|---|---|---|"]
    lines += [f"| ({', '.join(f'{v:.2f}' for v in r['lam'])}) | {r['psnr']:.2f} | {r['ssim']:.4f} |" for r in rows]
    if noisy is not None:
        lines.append(f"| input | {noisy:.2f} | |")
    (out / "sweep.md").write_text("\n".join(lines) + "\n")
    (out / "sweep.json").write_text(json.dumps({"objectives": names, "rows": rows, "input_psnr": noisy}, indent=1))
    strip_note = "input | " if batch["lq"].shape == batch["gt"].shape else ""
    return {"rows": rows, "input_psnr": noisy, "table": "\n".join(lines),
            "strip": f"{strip_note}outputs at λ {[r['lam'] for r in rows]} | clean"}


def run_recipe(recipe: Recipe, *, resume: bool = False, stop_after: Optional[int] = None,
               log: Callable[[str], None] = print) -> RunResult:
    """Build the recipe's model, pretrain if asked, tunify, fine-tune, and write the sweep."""
    rank, _, _ = distributed()
    out = recipe.output_dir()
    torch.manual_seed(recipe.seed)
    model = build_model(recipe.model)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    if recipe.pretrain is not None:
        _pretrain(model, recipe, out, log)
    tm = tunify_from_recipe(model, recipe)
    if rank == 0:
        log(tm.tunify_report.summary())
    result = fit(tm, recipe, resume=resume, stop_after=stop_after, log=log, reference=model)
    run = RunResult(out, tm, result)
    if rank == 0 and result.step == recipe.optim.steps:
        sweep = write_sweep(tm, result.val_batch, out, recipe.validation.lam_points)
        run.sweep = sweep["rows"]
        run.files = {k: out / f"sweep.{k}" for k in ("png", "md", "json")}
        log("λ sweep on the validation images:\n" + sweep["table"])
    return run
