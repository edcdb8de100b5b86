"""The training loop: ``fit(tm, recipe)`` = ``setup.build_state``, then ``train_step`` per
step, with checkpoints, validation sweeps and logs between steps, for one ``Stage`` of a run
(the fine-tune, or the plain pretraining before tunify: stage.py).

Each step draws a batch and one λ per sample from a generator seeded by (seed, step, rank)
alone, so a run resumed from a checkpoint sees exactly the batches, λ and dropout masks the
uninterrupted run would have seen: the loss curve continues bit for bit. Runs under torchrun
with DistributedDataParallel (gloo on CPU, nccl on GPU), each rank drawing its own samples.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn

from ..data import batch_generator, build_dataset
from ..lam import lam_grid
from .checkpoint import load_checkpoint, save_checkpoint
from .logs import MetricsLog, plot_losses, progress_bar
from .recipe import Recipe
from .samplers import build_sampler
from .setup import TrainState, build_state, check_same_recipe, distributed, existing_checkpoint, lr_factor
from .stage import Stage
from .validate import lam_sweep

__all__ = ["fit", "train_step", "FitResult", "NonFiniteLossError", "lr_factor", "distributed", "Stage"]


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


def _step_seed(seed: int, step: int, rank: int) -> int:
    return int(batch_generator(seed + 7919, step, rank).initial_seed())


def train_step(st: TrainState, batch: Dict[str, torch.Tensor], lam: torch.Tensor, g: torch.Generator, *,
               tunable: bool, group_by_lam: bool) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """One optimizer step on ``batch`` (lq (B,C,h,w), gt, ...) at per-sample ``lam`` (B, p):
    forward, L(λ), backward, clip, step (frozen slices written back), schedule, EMA, then each
    discriminator's own step. Returns (loss, per-objective terms). When the loss is not finite
    on any rank, it returns at once with a non-finite loss and no weight moved."""
    with torch.autocast(st.device.type, dtype=st.amp_dtype, enabled=st.amp_dtype is not None):
        pred = st.net(batch["lq"], lam=lam, group_by_lam=group_by_lam) if tunable else st.net(batch["lq"])
    loss, terms = st.ploss(pred.float(), batch, lam, g)
    bad = torch.tensor([0.0 if torch.isfinite(loss) else 1.0], device=st.device)
    if st.world > 1:
        dist.all_reduce(bad)
    if bad.item():  # another rank's loss may be the bad one: every rank stops alike
        return (loss if not torch.isfinite(loss) else loss.new_tensor(float("nan"))), terms
    st.optimizer.zero_grad(set_to_none=True)
    (st.scaler.scale(loss) if st.scaler else loss).backward()
    if st.scaler:
        st.scaler.unscale_(st.optimizer)
    if st.clip:
        torch.nn.utils.clip_grad_norm_(st.params, st.clip)
    if st.scaler:
        st.scaler.step(st.optimizer)
        st.scaler.update()
    else:
        st.optimizer.step()
    if st.freeze is not None:
        st.freeze.restore()
    st.scheduler.step()
    if st.ema:
        st.ema.update()
    for (obj, adv), d_opt in zip(st.adversarial, st.d_optims):
        d_opt.zero_grad(set_to_none=True)
        adv.discriminator_loss(obj.target(batch, g), pred.float()).backward()
        if st.world > 1:  # the discriminator is not DDP-wrapped: average its gradients by hand
            for p in adv.discriminator.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= st.world
        d_opt.step()
    return loss, terms


def _non_finite(loss: torch.Tensor, terms: Dict[str, torch.Tensor], step: int, last_ckpt: Optional[Path],
                lr_key: str) -> NonFiniteLossError:
    return NonFiniteLossError(
        f"the loss became {loss.item()} at step {step} (terms: "
        f"{ {k: float(v.mean()) for k, v in terms.items()} }). Saved work is kept: the last good checkpoint is "
        f"{last_ckpt or 'none (no checkpoint was written yet)'}. Lower {lr_key}, set optim.grad_clip, or check "
        "the data; then --resume."
    )


def _logs(out: Path, names, rank: int, start: int, resume: bool, recipe: Recipe) -> Tuple[MetricsLog, MetricsLog]:
    """metrics.csv (one row per logged step) and val.csv (one row per λ of each sweep)."""
    keep = start if resume else None
    metrics = MetricsLog(out / "metrics.csv", ["step", "loss", *[f"L_{n}" for n in names], "lr", "sec_per_step"],
                         active=rank == 0, resume_step=keep, tensorboard=recipe.output.tensorboard)
    val_log = MetricsLog(out / "val.csv", ["step", "lam", "psnr", "ssim", *[f"loss_{n}" for n in names]],
                         active=rank == 0, resume_step=keep, tensorboard="off")
    return metrics, val_log


def _resume(st: TrainState, recipe: Recipe, ckpt: Path, allow_changed_recipe: bool, log: Callable[[str], None]) -> int:
    """Load checkpoint ``ckpt`` into the run (after checking it was trained with this recipe);
    returns its step."""
    start, mstate, state = load_checkpoint(ckpt)
    check_same_recipe(state, recipe, ckpt, allow_changed_recipe, log)
    st.load_state_dict(mstate, state)
    log(f"resumed {ckpt.parent.parent} at step {start}")
    return start


def _log_step(row: Dict[str, Any], result: FitResult, metrics: Optional[MetricsLog], bar, lam: Optional[torch.Tensor]) -> None:
    """Record a step's row (in metrics.csv when ``metrics`` is given) and show it on the bar;
    ``lam`` (B, p) of a tunable run shows its mean λ_0 (a plain model has no λ to show)."""
    if metrics is not None:
        metrics.add(row)
    result.history.append(row)
    bar.update(1)
    bar.set_postfix(loss=f"{row['loss']:.4g}", s_step=f"{row['sec_per_step']:.2f}",
                    **({"lam0": f"{float(lam[:, 0].mean()):.2f}"} if lam is not None else {}))


def _finish(st: TrainState, result: FitResult, steps: int, log: Callable[[str], None]) -> None:
    """After the last step: DDP ranks agree, and a finished model holds its EMA weights."""
    if st.world > 1:
        _check_in_sync(st.model, log)
    if st.ema is not None and result.step == steps:
        with torch.no_grad():  # the finished model is its EMA (the checkpoint keeps both)
            params = dict(st.model.named_parameters())
            for name, t in st.ema.shadow.items():
                params[name].copy_(t)
    if st.freeze is not None:
        st.freeze.remove()


class _Loop:
    """What fit's steps share: the TrainState, data, λ sampler, logs and the result so far."""

    def __init__(self, model: nn.Module, recipe: Recipe, stage: Stage, out: Path, existing: Optional[Path],
                 resume: bool, reference: Optional[nn.Module], allow_changed_recipe: bool, log: Callable[[str], None]):
        self.model, self.recipe, self.stage, self.out, self.log = model, recipe, stage, out, log
        self.st = st = build_state(model, stage, stage.parametric_loss(reference))
        self.sampler = None if stage.lam is None else build_sampler(st.ploss.objectives.p, st.space.kind, stage.lam)
        self.data = build_dataset(recipe.data.train)
        val_data = build_dataset(recipe.data.val) if recipe.data.val else self.data
        self.val_batch = {k: v.to(st.device) for k, v in
                          val_data.fixed_batch(recipe.data.val_images, recipe.data.val_patch, seed=recipe.seed).items()}
        start = _resume(st, recipe, existing, allow_changed_recipe, log) if resume else 0
        self.metrics, self.val_log = _logs(out, st.ploss.objectives.names, st.rank, start, resume, recipe)
        self.grid = (torch.tensor(recipe.validation.lams) if recipe.validation.lams
                     else lam_grid(st.space, recipe.validation.lam_points)).to(st.device)
        self.result = FitResult(out, start, val_batch=self.val_batch, start=start, stage=stage.name, checkpoint=existing)

    def checkpoint(self, step: int) -> None:
        if self.st.rank == 0:
            self.result.checkpoint = save_checkpoint(self.out / "checkpoints", step, self.model.state_dict(),
                                                     self.st.state_dict(self.recipe), self.recipe.output.keep_last)

    def validate(self, step: int) -> None:
        st = self.st
        if st.rank != 0 or self.stage.validate_every is None:
            return
        with st.ema.swapped_in() if st.ema else contextlib.nullcontext():
            self.result.validation = lam_sweep(self.model, self.val_batch, self.grid, st.ploss)
        for row in self.result.validation:
            self.val_log.add({"step": step, **row, "lam": " ".join(f"{v:g}" for v in row["lam"])})

    def step(self, step: int, bar) -> None:
        """Optimizer step ``step`` (its batch, λ and dropout drawn from (seed, step, rank)), logged;
        then a checkpoint or a sweep when one is due."""
        recipe, stage, st, size = self.recipe, self.stage, self.st, self.recipe.data.batch_size
        t0 = time.perf_counter()
        g = batch_generator(recipe.seed, step, st.rank)
        torch.manual_seed(_step_seed(recipe.seed, step, st.rank))  # dropout etc. follow the step too
        batch = {k: v.to(st.device) for k, v in self.data.batch(size, g).items()}
        lam = (stage.no_lam(size) if self.sampler is None else self.sampler.sample(size, g)).to(st.device)
        grouped = stage.lam is not None and stage.lam.distinct_per_batch is not None
        loss, terms = train_step(st, batch, lam, g, tunable=stage.tunable, group_by_lam=grouped)
        if not torch.isfinite(loss):
            raise _non_finite(loss, terms, step, self.result.checkpoint, stage.lr_key)
        self.result.step = done = step + 1
        row = {"step": done, "loss": loss.item(), "lr": st.scheduler.get_last_lr()[0],
               "sec_per_step": round(time.perf_counter() - t0, 4), **{f"L_{k}": float(v.mean()) for k, v in terms.items()}}
        logged = done % max(1, recipe.output.log_every) == 0 or done == stage.steps
        _log_step(row, self.result, self.metrics if logged else None, bar, lam if stage.tunable else None)
        if recipe.output.checkpoint_every and done % recipe.output.checkpoint_every == 0:
            self.checkpoint(done)
        if stage.validate_every and done % stage.validate_every == 0:
            self.validate(done)

    def close(self, resume: bool) -> None:
        """The last checkpoint and sweep unless just written, the EMA swapped in, logs closed, loss plot."""
        result, every, steps = self.result, self.recipe.output.checkpoint_every, self.stage.steps
        if result.step > result.start or resume:
            if not (every and result.step % every == 0):
                self.checkpoint(result.step)
            if not (self.stage.validate_every and result.step % self.stage.validate_every == 0) and result.step == steps:
                self.validate(result.step)
        _finish(self.st, result, steps, self.log)
        self.metrics.close()
        self.val_log.close()
        if self.st.rank == 0 and result.step > result.start:
            plot_losses(self.out / "metrics.csv", self.out / "loss.png", title=f"{self.recipe.name} {self.stage.name}",
                        log=self.log)


def fit(model: nn.Module, recipe: Recipe, *, resume: bool = False, stop_after: Optional[int] = None,
        out_dir: Optional[Path] = None, tunable: bool = True, log: Callable[[str], None] = print,
        reference: Optional[nn.Module] = None, stage: Optional[Stage] = None,
        allow_changed_recipe: bool = False) -> FitResult:
    """Train ``model`` in one stage of ``recipe``: by default its fine-tune
    (``Stage.fine_tune(recipe, tunable)``: a TunableModel, or a plain model with
    ``tunable=False``), or ``stage=Stage.pretrain(recipe)``. Writes metrics.csv (and loss.png),
    val.csv and checkpoints under the output dir. ``stop_after`` ends this call after that many
    steps (the run can be resumed). ``reference``: the frozen network before tunify, for
    "original" targets. Resuming refuses a checkpoint trained with a different recipe unless
    ``allow_changed_recipe``."""
    stage = stage or Stage.fine_tune(recipe, tunable)
    out = Path(out_dir or recipe.output_dir())
    existing = existing_checkpoint(out / "checkpoints", resume, out, log)
    loop = _Loop(model, recipe, stage, out, existing, resume, reference, allow_changed_recipe, log)
    result = loop.result
    bar = progress_bar(stage.steps, result.start, recipe.output.progress and loop.st.rank == 0,
                       f"{recipe.name} {stage.name}")
    t_run = time.perf_counter()
    for step in range(result.start, stage.steps):
        if stop_after is not None and step - result.start >= stop_after:
            break
        loop.step(step, bar)
    bar.close()
    loop.close(resume)
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
