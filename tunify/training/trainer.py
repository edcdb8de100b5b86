"""The fine-tuning loop: ``fit(tm, recipe)``.

Each step draws a batch and one λ per sample from a generator seeded by (seed, step, rank)
alone, so a run resumed from a checkpoint sees exactly the batches, λ and dropout masks the
uninterrupted run would have seen: the loss curve continues bit for bit. Runs under torchrun
with DistributedDataParallel (gloo on CPU, nccl on GPU), each rank drawing its own samples.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.distributed as dist
from torch import nn

from ..data import batch_generator, build_dataset
from ..lam import LamSpace, lam_grid
from ..layers import PER_OBJECTIVE_SUFFIXES
from ..objectives import ObjectiveSet, ParametricLoss
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, scan_checkpoints
from .ema import EMA
from .freeze import KernelFreeze, frozen_indices
from .guard import RecipeChangedError, recipe_changes
from .logs import MetricsLog, plot_losses, progress_bar
from .recipe import OptimSpec, Recipe
from .samplers import build_sampler
from .validate import lam_sweep

__all__ = ["fit", "FitResult", "NonFiniteLossError", "lr_factor", "distributed", "parametric_loss"]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


@dataclass
class FitResult:
    output_dir: Path
    step: int
    history: List[Dict[str, Any]] = field(default_factory=list)
    validation: List[Dict[str, Any]] = field(default_factory=list)
    checkpoint: Optional[Path] = None
    seconds: float = 0.0
    sec_per_step: float = 0.0
    val_batch: Dict[str, Any] = field(default_factory=dict)  # the fixed validation batch the sweeps use
    start: int = 0                             # the step this call started from (> 0 when resumed)
    stage: str = "fine-tune"                   # or "pretrain"

    @property
    def steps_run(self) -> int:
        """Optimizer steps this call ran (a resumed run counts only its own)."""
        return self.step - self.start


def parametric_loss(recipe: Recipe, reference: Optional[nn.Module] = None, strict: bool = True) -> ParametricLoss:
    """The recipe's parametric multi-loss L(λ): its objectives under its ``loss`` section.
    ``reference``: the network before tunify, whose output is the "original" target; with
    ``strict=False`` a missing one is left for the caller to set (``ploss.needs_reference``)."""
    ploss = ParametricLoss(ObjectiveSet.from_specs(recipe.objectives), recipe.loss.mode, recipe.loss.base,
                           recipe.loss.losses)
    if ploss.needs_reference and reference is None and strict:
        raise ValueError("the recipe's target 'original' (the pretrained network's own output) needs that network: "
                         "pass reference=model (the model before tunify); `tunify train` does it")
    return ploss.set_reference(reference if ploss.needs_reference else None)


def distributed() -> tuple:
    """(rank, world size, local rank); joins the process group torchrun describes."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))
    return 0, 1, 0


def lr_factor(optim: OptimSpec) -> Callable[[int], float]:
    """Multiplier of the base lr after ``step`` optimizer steps: linear warmup, then
    cosine (to min_lr_ratio), multistep (×gamma at each milestone) or constant."""
    def factor(step: int) -> float:
        if optim.warmup_steps and step < optim.warmup_steps:
            return (step + 1) / optim.warmup_steps
        if optim.schedule == "constant":
            return 1.0
        if optim.schedule == "multistep":
            return optim.gamma ** sum(step >= m for m in optim.milestones)
        t = min(1.0, (step - optim.warmup_steps) / max(1, optim.steps - optim.warmup_steps))
        return optim.min_lr_ratio + (1 - optim.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    return factor


def _step_seed(seed: int, step: int, rank: int) -> int:
    return int(batch_generator(seed + 7919, step, rank).initial_seed())


def _autocast(amp: str, device: torch.device):
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None, None
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    if amp == "auto" and not torch.cuda.is_bf16_supported():
        dtype = torch.float16
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    return dtype, scaler


def _existing_checkpoint(ckpt_root: Path, resume: bool, out: Path, log: Callable[[str], None]) -> Optional[Path]:
    """The checkpoint to resume from (the newest intact one, saying so when it skips any)."""
    found, damaged = scan_checkpoints(ckpt_root) if ckpt_root.is_dir() else (None, [])
    if not resume and (found is not None or damaged):
        name = (found or damaged[0][0]).name
        raise FileExistsError(f"{out} already holds checkpoints of a run ({name}): pass --resume to continue "
                              "it, or choose another output dir (--set output.dir=...)")
    if not resume:
        return None
    if found is None and not damaged:
        raise FileNotFoundError(f"nothing to resume: {ckpt_root} holds no checkpoint")
    return latest_checkpoint(ckpt_root, log=log)


def _check_same_recipe(state: Dict[str, Any], recipe: Recipe, ckpt: Path, allow: bool, log: Callable[[str], None]) -> None:
    stored = state.get("recipe")
    if stored is None:  # a checkpoint from before recipes were stored: nothing to compare with
        return
    changes = recipe_changes(stored, recipe.to_dict())
    if changes and not allow:
        raise RecipeChangedError(f"the recipe differs from the one checkpoint {ckpt} was trained with: "
                                 f"{'; '.join(changes)}. Resume with the same recipe, or pass "
                                 "allow_changed_recipe=True (--allow-changed-recipe) to continue with the new one")
    if changes:
        log(f"resuming with a changed recipe (allowed): {'; '.join(changes)}")


def fit(model: nn.Module, recipe: Recipe, *, resume: bool = False, stop_after: Optional[int] = None,
        out_dir: Optional[Path] = None, tunable: bool = True, log: Callable[[str], None] = print,
        reference: Optional[nn.Module] = None, stage: str = "fine-tune", allow_changed_recipe: bool = False) -> FitResult:
    """Fine-tune ``model`` (a TunableModel, or a plain model with ``tunable=False`` and one
    objective) as ``recipe`` says. Writes metrics.csv (and loss.png), val.csv and checkpoints
    under the output dir. ``stop_after`` ends this call after that many steps (the run can be
    resumed). ``reference``: the frozen network before tunify, for "original" targets.
    ``stage`` names the run in progress bars and errors ("pretrain": lr is ``pretrain.lr``).
    Resuming refuses a checkpoint trained with a different recipe unless ``allow_changed_recipe``."""
    rank, world, local_rank = distributed()
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    out = Path(out_dir or recipe.output_dir())
    ckpt_root = out / "checkpoints"
    existing = _existing_checkpoint(ckpt_root, resume, out, log)
    opt_spec = recipe.optim
    ploss = parametric_loss(recipe, reference).to(device)
    objectives = ploss.objectives
    space = getattr(model, "lam_space", None) or LamSpace("simplex", objectives.p, objectives.names)
    if tunable and space.p != objectives.p:
        raise ValueError(f"the model has p={space.p} objectives {space.names} but the recipe lists {objectives.p}")
    sampler = build_sampler(objectives.p, space.kind, recipe.lam)
    data = build_dataset(recipe.data.train)
    val_data = build_dataset(recipe.data.val) if recipe.data.val else data
    val_batch = {k: v.to(device) for k, v in val_data.fixed_batch(recipe.data.val_images, recipe.data.val_patch, seed=recipe.seed).items()}
    model.to(device).train()
    if opt_spec.freeze_non_tunable and tunable:
        for name, p in model.named_parameters():
            p.requires_grad_(name.endswith(PER_OBJECTIVE_SUFFIXES))
    frozen = frozen_indices(recipe.objectives, space.kind) if tunable else []
    freeze = KernelFreeze(model, frozen, objectives.p) if frozen else None  # before resume: the pretrained values
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=opt_spec.lr, betas=tuple(opt_spec.betas), weight_decay=opt_spec.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(opt_spec))
    ema = EMA(model, opt_spec.ema_decay) if opt_spec.ema_decay > 0 else None
    adversarial = objectives.adversarial()
    d_optims = [torch.optim.AdamW(l.discriminator.parameters(), lr=opt_spec.disc_lr or opt_spec.lr, betas=(0.9, 0.99))
                for _, l in adversarial]
    amp_dtype, scaler = _autocast(opt_spec.amp, device)
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    start = 0
    if resume:
        start, mstate, state = load_checkpoint(existing)
        _check_same_recipe(state, recipe, existing, allow_changed_recipe, log)
        model.load_state_dict(mstate)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        for (_, l), o, s in zip(adversarial, d_optims, state.get("adversarial", [])):
            l.discriminator.load_state_dict(s["discriminator"])
            o.load_state_dict(s["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        log(f"resumed {out} at step {start}")
    columns = ["step", "loss", *[f"L_{n}" for n in objectives.names], "lr", "sec_per_step"]
    metrics = MetricsLog(out / "metrics.csv", columns, active=rank == 0, resume_step=start if resume else None,
                         tensorboard=recipe.output.tensorboard)
    val_log = MetricsLog(out / "val.csv", ["step", "lam", "psnr", "ssim", *[f"loss_{n}" for n in objectives.names]],
                         active=rank == 0, resume_step=start if resume else None, tensorboard="off")
    grid = torch.tensor(recipe.validation.lams) if recipe.validation.lams else lam_grid(space, recipe.validation.lam_points)
    bar = progress_bar(opt_spec.steps, start, recipe.output.progress and rank == 0, f"{recipe.name} {stage}")
    result = FitResult(out, start, val_batch=val_batch, start=start, stage=stage)
    lr_key = "pretrain.lr" if stage == "pretrain" else "optim.lr"
    last_ckpt: Optional[Path] = existing
    t_run = time.perf_counter()
    batch_size = recipe.data.batch_size

    def checkpoint(step: int) -> None:
        nonlocal last_ckpt
        if rank != 0:
            return
        state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "ema": ema.state_dict() if ema else None, "scaler": scaler.state_dict() if scaler else None,
                 "adversarial": [{"discriminator": l.discriminator.state_dict(), "optimizer": o.state_dict()}
                                 for (_, l), o in zip(adversarial, d_optims)],
                 "recipe_digest": recipe.digest(), "recipe": recipe.to_dict(), "world_size": world}
        last_ckpt = save_checkpoint(ckpt_root, step, model.state_dict(), state, recipe.output.keep_last)

    def validate(step: int) -> None:
        if rank != 0 or not tunable:
            return
        ctx = ema.swapped_in() if ema else contextlib.nullcontext()
        with ctx:
            rows = lam_sweep(model, val_batch, grid.to(device), ploss)
        for row in rows:
            val_log.add({"step": step, **row, "lam": " ".join(f"{v:g}" for v in row["lam"])})
        result.validation = rows

    step = start
    for step in range(start, opt_spec.steps):
        if stop_after is not None and step - start >= stop_after:
            break
        t0 = time.perf_counter()
        g = batch_generator(recipe.seed, step, rank)
        torch.manual_seed(_step_seed(recipe.seed, step, rank))  # dropout etc. follow the step too
        batch = {k: v.to(device) for k, v in data.batch(batch_size, g).items()}
        lam = sampler.sample(batch_size, g).to(device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            if tunable:
                pred = net(batch["lq"], lam=lam, group_by_lam=recipe.lam.distinct_per_batch is not None)
            else:
                pred = net(batch["lq"])
        loss, terms = ploss(pred.float(), batch, lam, g)
        bad = torch.tensor([0.0 if torch.isfinite(loss) else 1.0], device=device)
        if world > 1:
            dist.all_reduce(bad)
        if bad.item():
            raise NonFiniteLossError(
                f"the loss became {loss.item()} at step {step} (terms: "
                f"{ {k: float(v.mean()) for k, v in terms.items()} }). Saved work is kept: the last good checkpoint is "
                f"{last_ckpt or 'none (no checkpoint was written yet)'}. Lower {lr_key}, set optim.grad_clip, or check "
                "the data; then --resume."
            )
        optimizer.zero_grad(set_to_none=True)
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.unscale_(optimizer)
        if opt_spec.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, opt_spec.grad_clip)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if freeze is not None:
            freeze.restore()
        scheduler.step()
        if ema:
            ema.update()
        for (obj, adv), d_opt in zip(adversarial, d_optims):
            d_opt.zero_grad(set_to_none=True)
            adv.discriminator_loss(obj.target(batch, g), pred.float()).backward()
            if world > 1:  # the discriminator is not DDP-wrapped: average its gradients by hand
                for p in adv.discriminator.parameters():
                    if p.grad is not None:
                        dist.all_reduce(p.grad)
                        p.grad /= world
            d_opt.step()
        dt = time.perf_counter() - t0
        done = step + 1
        row = {"step": done, "loss": loss.item(), "lr": scheduler.get_last_lr()[0], "sec_per_step": round(dt, 4),
               **{f"L_{k}": float(v.mean()) for k, v in terms.items()}}
        if done % max(1, recipe.output.log_every) == 0 or done == opt_spec.steps:
            metrics.add(row)
        result.history.append(row)
        bar.update(1)
        if tunable:
            bar.set_postfix(loss=f"{row['loss']:.4g}", lam0=f"{float(lam[:, 0].mean()):.2f}", s_step=f"{dt:.2f}")
        else:  # a plain model trains at one fixed λ: showing it would only confuse
            bar.set_postfix(loss=f"{row['loss']:.4g}", s_step=f"{dt:.2f}")
        if recipe.output.checkpoint_every and done % recipe.output.checkpoint_every == 0:
            checkpoint(done)
        if recipe.validation.every and done % recipe.validation.every == 0:
            validate(done)
        result.step = done
    bar.close()
    finished = result.step
    if finished > start or resume:
        if not (recipe.output.checkpoint_every and finished % recipe.output.checkpoint_every == 0):
            checkpoint(finished)
        if not (recipe.validation.every and finished % recipe.validation.every == 0) and finished == opt_spec.steps:
            validate(finished)
    if world > 1:
        _check_in_sync(model, log)
    if ema is not None and result.step == opt_spec.steps:
        with torch.no_grad():  # the finished model is its EMA (the checkpoint keeps both)
            params = dict(model.named_parameters())
            for name, t in ema.shadow.items():
                params[name].copy_(t)
    metrics.close()
    val_log.close()
    if rank == 0 and result.step > start:
        plot_losses(out / "metrics.csv", out / "loss.png", title=f"{recipe.name} {stage}", log=log)
    if freeze is not None:
        freeze.remove()
    result.checkpoint = last_ckpt
    result.seconds = time.perf_counter() - t_run
    timed = [r["sec_per_step"] for r in result.history[1:]] or [r["sec_per_step"] for r in result.history]
    result.sec_per_step = sum(timed) / max(1, len(timed))
    return result


def _check_in_sync(model: nn.Module, log: Callable[[str], None]) -> None:
    """DDP must leave every rank with the same weights; say so (or fail loudly)."""
    total = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
    lo, hi = total.clone(), total.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    if lo.item() != hi.item():
        raise RuntimeError(f"ranks diverged: parameter checksums range {lo.item()}..{hi.item()}")
    if dist.get_rank() == 0:
        log(f"ranks in sync: {dist.get_world_size()} processes hold identical weights (checksum {total.item():.6g})")
