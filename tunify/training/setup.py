"""Everything a run holds before its first step: ``build_state(model, stage, loss)``.

The optimizer and its schedule, EMA, the discriminators of adversarial objectives, mixed
precision, frozen objectives, DDP, and what a checkpoint stores of them (``state_dict`` /
``load_state_dict``, the same keys on save and on resume). ``trainer.fit`` runs the loop
over ``trainer.train_step``; neither needs to know how these pieces were made.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn

from ..lam import LamSpace
from ..layers import PER_OBJECTIVE_SUFFIXES, form_state, load_form_state
from ..objectives import ParametricLoss
from .checkpoint import latest_checkpoint, scan_checkpoints
from .ema import EMA
from .freeze import KernelFreeze, frozen_indices
from .guard import RecipeChangedError, recipe_changes
from .recipe import OptimSpec, Recipe
from .stage import Stage

__all__ = ["TrainState", "adamw", "build_state", "distributed", "leave_distributed", "lr_factor", "existing_checkpoint"]


def distributed() -> Tuple[int, int, int]:
    """(rank, world size, local rank); joins the process group torchrun describes."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))
    return 0, 1, 0


def leave_distributed(wait: bool = True) -> None:
    """Leave the process group (a torchrun worker, before it exits), after every rank got
    here when ``wait`` (a failed rank does not wait: the others may never arrive). Left to the
    interpreter's teardown, gloo's threads were still running when the group was destroyed
    and a rank aborted ("terminate called without an active exception")."""
    if dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


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


def _autocast(amp: str, device: torch.device):
    """(autocast dtype or None, GradScaler or None): bf16 where CUDA has it, fp16 with a scaler."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None, None
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    if amp == "auto" and not torch.cuda.is_bf16_supported():
        dtype = torch.float16
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    return dtype, scaler


def adamw(params: List[nn.Parameter], **kwargs: Any) -> torch.optim.AdamW:
    """AdamW, fused where torch has one kernel for all the parameters (floats on one CPU or
    CUDA device): on 2 CPU threads it steps NAFNet-width32's tunable stacks (58 M numbers) in
    0.041 s against 0.133 s for the per-tensor loop, which matters most to a tunable model,
    whose optimizer updates p times the parameters. Same rule; rounding differs at the 1e-7
    level, and a resumed run uses the same kernel as the run it continues."""
    fused = bool(params) and len({p.device for p in params}) == 1 and all(
        p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    if fused:
        try:
            return torch.optim.AdamW(params, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):  # a torch or dtype without the fused kernel
            pass
    return torch.optim.AdamW(params, **kwargs)


def existing_checkpoint(ckpt_root: Path, resume: bool, out: Path, log: Callable[[str], None]) -> Optional[Path]:
    """The checkpoint to resume from (the newest intact one, saying so when it skips any);
    refuses to start over a folder that holds a run unless resuming."""
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


def check_same_recipe(state: Dict[str, Any], recipe: Recipe, ckpt: Path, allow: bool, log: Callable[[str], None]) -> None:
    """Refuse to resume with a recipe other than the checkpoint's, naming what differs."""
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


@dataclass
class TrainState:
    """What one step needs and a checkpoint keeps. ``net`` is ``model`` or its DDP wrapper."""

    model: nn.Module
    net: nn.Module
    ploss: ParametricLoss
    space: LamSpace
    params: List[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    device: torch.device
    rank: int = 0
    world: int = 1
    ema: Optional[EMA] = None
    adversarial: List[Tuple[Any, nn.Module]] = field(default_factory=list)  # (objective, loss with a discriminator)
    d_optims: List[torch.optim.Optimizer] = field(default_factory=list)
    amp_dtype: Optional[torch.dtype] = None
    scaler: Optional[Any] = None
    freeze: Optional[KernelFreeze] = None
    clip: Optional[float] = None               # gradient-norm clip (optim.grad_clip)

    def state_dict(self, recipe: Recipe) -> Dict[str, Any]:
        """The training state a checkpoint stores beside the model's weights."""
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "ema": self.ema.state_dict() if self.ema else None,
                "scaler": self.scaler.state_dict() if self.scaler else None,
                "adversarial": [{"discriminator": l.discriminator.state_dict(), "optimizer": o.state_dict()}
                                for (_, l), o in zip(self.adversarial, self.d_optims)],
                "recipe_digest": recipe.digest(), "recipe": recipe.to_dict(), "world_size": self.world,
                # the per-sample forms this process measured: a resumed run must take the same ones
                "per_sample_forms": form_state()}

    def load_state_dict(self, mstate: Dict[str, torch.Tensor], state: Dict[str, Any]) -> None:
        """Back to a checkpoint: model weights ``mstate`` and ``state`` as ``state_dict`` wrote it."""
        self.model.load_state_dict(mstate)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        for (_, l), o, s in zip(self.adversarial, self.d_optims, state.get("adversarial", [])):
            l.discriminator.load_state_dict(s["discriminator"])
            o.load_state_dict(s["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        load_form_state(state.get("per_sample_forms", []))  # older checkpoints have none: measured anew


def _trainable(model: nn.Module, stage: Stage, space: LamSpace) -> Optional[KernelFreeze]:
    """Sets requires_grad as the stage says (freeze_non_tunable, frozen objectives); returns the
    freeze of frozen objectives' kernels, taken now, i.e. at the pretrained values."""
    if stage.optim.freeze_non_tunable and stage.tunable:
        for name, p in model.named_parameters():
            p.requires_grad_(name.endswith(PER_OBJECTIVE_SUFFIXES))
    frozen = frozen_indices(stage.objectives, space.kind) if stage.tunable else []
    return KernelFreeze(model, frozen, space.p) if frozen else None


def build_state(model: nn.Module, stage: Stage, ploss: ParametricLoss) -> TrainState:
    """The optimizer, schedule, EMA, discriminators, precision and freezes of a run of ``model``
    (moved to this process's device and put in train mode) in ``stage``."""
    rank, world, local_rank = distributed()
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    objectives = ploss.objectives
    # A TunableModel or a baseline with λ (FiLM, AdaFM) has a λ space; a plain network gets one objective's.
    space = getattr(model, "lam_space", None) or LamSpace("simplex", objectives.p, objectives.names)
    if stage.tunable and space.p != objectives.p:
        raise ValueError(f"the model has p={space.p} objectives {space.names} but the recipe lists {objectives.p}")
    opt = stage.optim
    model.to(device).train()
    ploss.to(device)
    freeze = _trainable(model, stage, space)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = adamw(params, lr=opt.lr, betas=tuple(opt.betas), weight_decay=opt.weight_decay)
    adversarial = objectives.adversarial()
    amp_dtype, scaler = _autocast(opt.amp, device)
    return TrainState(
        model=model, net=nn.parallel.DistributedDataParallel(model) if world > 1 else model, ploss=ploss,
        space=space, params=params, optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(opt)), device=device, rank=rank,
        world=world, ema=EMA(model, opt.ema_decay) if opt.ema_decay > 0 else None, adversarial=adversarial,
        d_optims=[adamw(list(l.discriminator.parameters()), lr=opt.disc_lr or opt.lr, betas=(0.9, 0.99))
                  for _, l in adversarial],
        amp_dtype=amp_dtype, scaler=scaler, freeze=freeze, clip=opt.grad_clip)
