"""``sweep``: what λ does to a tuned model, as numbers, curves and pictures.

    from tunify import from_zoo
    from tunify.evaluation import sweep
    tm = from_zoo("nafnet-grain-s25")
    result = sweep(tm, "skimage:astronaut,camera", degradation=[{"type": "gaussian_noise", "sigma": 25}],
                   out_dir="runs/sweep-grain")
    print(result.table())

Each image is run through the model on its own (any size, no resizing beyond ``max_size``),
at every λ of the grid, and measured against its clean version: PSNR, SSIM, each objective's
loss, NIQE (BasicSR) and LPIPS (AlexNet), the last two only where they can run offline.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .._text import did_you_mean
from ..lam import LamSpace, lam_grid
from ..metrics import psnr, ssim
from ..console import progress_bar
from ..surgery import TunableModel
from . import plots, quality
from .inputs import Sample, is_paired_folder, prepare_inputs
from .result import SweepResult

__all__ = ["sweep", "METRICS", "check_metrics", "parse_lams", "sweep_lams", "MAX_GRID_COLUMNS"]

METRICS = ("psnr", "ssim", "loss", "niqe", "lpips")
"""Valid metric names: ``loss`` stands for one ``loss_<objective>`` column per objective."""
MAX_GRID_COLUMNS = 11


def check_metrics(metrics: Union[str, Sequence[str]]) -> Tuple[str, ...]:
    """Metric names from a list or a comma-separated string, checked against :data:`METRICS`."""
    names = [m.strip() for m in (metrics.split(",") if isinstance(metrics, str) else metrics) if m and m.strip()]
    if not names:
        raise ValueError(f"no metric given; valid metrics: {', '.join(METRICS)}")
    for m in names:
        if m not in METRICS:
            raise ValueError(f"unknown metric {m!r}.{did_you_mean(m, METRICS)} Valid metrics: {', '.join(METRICS)}")
    return tuple(m for m in METRICS if m in names)


def parse_lams(text: str) -> List[List[float]]:
    """``"1,0;0.5,0.5"`` → [[1.0, 0.0], [0.5, 0.5]] (rows by ';', entries by ',')."""
    rows = []
    for part in str(text).split(";"):
        if not part.strip():
            continue
        try:
            rows.append([float(v) for v in part.split(",")])
        except ValueError:
            raise ValueError(f"--lam {text!r}: {part.strip()!r} is not a comma-separated list of numbers; "
                             "write λ rows like \"1,0;0.5,0.5\"") from None
    if not rows:
        raise ValueError(f"--lam {text!r} holds no λ; write rows like \"1,0;0.5,0.5\"")
    return rows


def sweep_lams(space: LamSpace, lams: Any = None, points: int = 11) -> Tensor:
    """The λ to sweep, (N, p) float32: ``lams`` when given (each row checked against the
    space), else ``lam_grid(space, points)``. Entries are rounded to 6 decimals, so the λ
    written in the results is exactly the λ that ran."""
    if lams is None:
        grid = lam_grid(space, points)
    else:
        try:
            grid = torch.as_tensor(lams, dtype=torch.float32)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"lams could not be read as numbers ({exc}); give an (N, {space.p}) list") from None
        if grid.dim() == 1:
            grid = grid[None]
        if grid.dim() != 2 or grid.shape[0] == 0 or grid.shape[1] != space.p:
            names = f" ({', '.join(space.names)})" if space.names else ""
            raise ValueError(f"lams must have shape (N, {space.p}): one entry per objective{names}, "
                             f"got shape {tuple(grid.shape)}")
    grid = torch.tensor([[round(float(v), 6) for v in row] for row in grid], dtype=torch.float32)
    for i, row in enumerate(grid):
        try:
            space.validate(row)
        except ValueError as exc:
            raise ValueError(f"λ #{i + 1} ({', '.join(f'{v:g}' for v in row.tolist())}) is off the "
                             f"{space.kind}: {exc}") from None
    return grid


def _parametric_loss(objectives: Any, loss: Any, p: int):
    """A ParametricLoss from ``loss`` (one already) or from ``objectives`` + ``loss`` (a mode
    string, a mapping / LossSpec with mode, base, losses); None when neither is given."""
    from ..objectives import ObjectiveSet, ParametricLoss

    if isinstance(loss, ParametricLoss):
        built = loss
    elif objectives is None:
        if loss is not None:
            raise ValueError("loss= needs objectives= (the objective specs) unless it is a ParametricLoss")
        return None
    else:
        objs = objectives if isinstance(objectives, ObjectiveSet) else ObjectiveSet.from_specs(objectives)
        if isinstance(loss, str):
            loss = {"mode": loss}
        get = (loss.get if isinstance(loss, Mapping) else
               (lambda k, d=None: getattr(loss, k, d)) if loss is not None else (lambda k, d=None: d))
        built = ParametricLoss(objs, get("mode", "sum") or "sum", get("base", "input") or "input", get("losses", ()) or ())
    if built.objectives.p != p:
        raise ValueError(f"the loss has {built.objectives.p} objectives {list(built.objectives.names)} but the model "
                         f"has p={p}")
    return built.eval()


def _mean(values: List[Optional[float]]) -> Optional[float]:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def _grid_columns(n: int) -> List[int]:
    """Indices of at most MAX_GRID_COLUMNS λ, evenly spread, first and last included."""
    if n <= MAX_GRID_COLUMNS:
        return list(range(n))
    return sorted({round(i * (n - 1) / (MAX_GRID_COLUMNS - 1)) for i in range(MAX_GRID_COLUMNS)})


def _crop_box(h: int, w: int, size: Optional[int]) -> Tuple[int, int, int, int]:
    """(top, left, height, width) of the centred crop of at most size×size."""
    ch, cw = (min(h, size), min(w, size)) if size else (h, w)
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def _tile(x: Tensor, box: Tuple[int, int, int, int], scale: float = 1.0) -> Tensor:
    """(1, 3, h, w) → the (3, ch, cw) crop at box (given in gt pixels; lq scaled, nearest-upsampled)."""
    y, x0, ch, cw = box
    if scale != 1.0:
        y, x0, ch2, cw2 = int(y / scale), int(x0 / scale), max(1, int(ch / scale)), max(1, int(cw / scale))
        crop = x[..., y : y + ch2, x0 : x0 + cw2]
        crop = torch.nn.functional.interpolate(crop.float(), size=(ch, cw), mode="nearest")
        return crop[0].clamp(0, 1).cpu()
    return x[0, :, y : y + ch, x0 : x0 + cw].float().clamp(0, 1).cpu()


def _measure(out: Tensor, sample: Sample, use: Dict[str, bool], clamp: bool = True) -> Dict[str, Optional[float]]:
    """PSNR/SSIM/NIQE/LPIPS of one image (1, 3, H, W) against its clean version (when sizes
    match). ``clamp``: PSNR/SSIM of the image clamped to [0, 1] (outputs) or as it is (the
    input, as the training sweeps report it); NIQE and LPIPS always see it clamped."""
    row: Dict[str, Optional[float]] = {}
    gt = sample.gt.to(out.device)
    same = out.shape == gt.shape
    clamped = out.float().clamp(0, 1)
    fidelity = clamped if clamp else out.float()
    if use["psnr"]:
        row["psnr"] = float(psnr(fidelity, gt)[0]) if same else None
    if use["ssim"]:
        row["ssim"] = float(ssim(fidelity, gt)[0]) if same else None
    if use["niqe"]:
        row["niqe"] = quality.niqe(clamped) if quality.niqe_fits(*out.shape[-2:]) else None
    if use["lpips"]:
        row["lpips"] = float(quality.lpips_distance(clamped, gt)[0]) if same else None
    return {k: _finite(v) for k, v in row.items()}


def _usable(want: Tuple[str, ...], samples: List[Sample]) -> Tuple[Dict[str, bool], Dict[str, str]]:
    """Which image metrics run ({metric: bool}) and why the others cannot ({metric: reason})."""
    skipped: Dict[str, str] = {}
    use = {m: m in want for m in ("psnr", "ssim", "niqe", "lpips")}
    for metric, check in (("niqe", quality.niqe_unavailable), ("lpips", quality.lpips_unavailable)):
        reason = check() if use[metric] else None
        if reason:
            use[metric], skipped[metric] = False, reason
    if use["niqe"] and not any(quality.niqe_fits(*s.gt.shape[-2:]) for s in samples):
        largest = max(samples, key=lambda s: s.gt.shape[-2] * s.gt.shape[-1]).gt.shape[-2:]
        use["niqe"], skipped["niqe"] = False, (
            f"NIQE skipped: it needs images of at least {quality.NIQE_BLOCK}×{2 * quality.NIQE_BLOCK} px (two "
            f"{quality.NIQE_BLOCK}-px blocks); the largest here is {largest[0]}×{largest[1]}")
    return use, skipped


class _Run:
    """One pass over (λ, image): the per-image rows, the grid tiles, and the loss columns.

    Each sample's batch is moved to the device and prepared for the loss once (the
    "original" target is the pretrained network's output: one forward per image, not per λ)."""

    def __init__(self, tm: Any, samples: List[Sample], use: Dict[str, bool], ploss: Any, seed: int,
                 device: torch.device, forward: Any):
        self.tm, self.samples, self.use, self.ploss, self.seed = tm, samples, use, ploss, seed
        self.device, self.forward = device, forward
        self.per_image: List[Dict[str, Any]] = []
        self.loss_names: List[str] = []
        self.loss_failure: Optional[str] = None
        self.batches = [{k: v.to(device) for k, v in s.batch().items()} for s in samples] if ploss is not None else []
        for batch in self.batches:
            if hasattr(ploss, "prepare"):
                ploss.prepare(batch)

    def image(self, k: int, lam: Tensor) -> Tensor:
        """The output at λ for sample k (1, 3, H, W), and its row appended to per_image."""
        sample = self.samples[k]
        lq = sample.lq.to(self.device)
        out = self.forward(lq, lam.to(self.device)).float()
        if out.shape[1:] != sample.gt.shape[1:]:
            raise ValueError(f"the model maps image {sample.name!r} of {tuple(lq.shape)} to "
                             f"{tuple(out.shape)}, not to its clean size {tuple(sample.gt.shape)}")
        row = {"image": sample.name, "lam": [float(v) for v in lam], **_measure(out, sample, self.use)}
        if self.ploss is not None:
            try:
                _, terms = self.ploss(out, self.batches[k], lam.to(self.device).expand(1, -1),
                                      torch.Generator().manual_seed(self.seed))
            except (ValueError, KeyError, RuntimeError) as exc:
                self.loss_failure, self.ploss = f"objective losses skipped: {exc}", None
            else:
                self.loss_names = [f"loss_{n}" for n in terms]
                row.update({f"loss_{n}": _finite(float(t.reshape(-1)[0])) for n, t in terms.items()})
        self.per_image.append(row)
        return out


def _means(grid: Tensor, per_image: List[Dict[str, Any]], measured: List[str], n: int) -> List[Dict[str, Any]]:
    """One row per λ: the mean of each measured column over the n images."""
    rows = []
    for j, lam in enumerate(grid):
        chunk = per_image[j * n : (j + 1) * n]
        rows.append({"lam": [float(v) for v in lam], **{m: _mean([r.get(m) for r in chunk]) for m in measured}})
    return rows


@torch.no_grad()
def sweep(tm: TunableModel, images: Any, *, lams: Any = None, points: int = 11, degradation: Any = None,
          objectives: Any = None, loss: Any = None, metrics: Union[str, Sequence[str]] = METRICS,
          max_size: Optional[int] = 512, seed: int = 0, out_dir: Optional[Union[str, Path]] = None,
          progress: bool = True, grid_crop: Optional[int] = 128, name: Optional[str] = None,
          pictures: bool = True, forward: Any = None) -> SweepResult:
    """Run ``tm`` at each λ on each image and measure what λ does: the one λ sweep behind
    ``tunify sweep``, validation during training, the end-of-run sweep and the model card.

    images: clean images (a folder, files, ``"skimage:a,b"``, (3, H, W) tensors) degraded with
    ``degradation`` (recipe-style step list) by a generator seeded with ``seed``; or a folder
    with lq/ and gt/ subfolders; or a mapping {"lq": (B, 3, h, w), "gt": (B, 3, H, W)}.
    lams: explicit (N, p) λ, else ``lam_grid(tm.lam_space, points)``. objectives / loss:
    objective specs (or an ObjectiveSet) and the loss mode/spec, or a ParametricLoss, for
    the ``loss_<objective>`` columns. metrics: any of :data:`METRICS`; one that cannot run
    is reported in ``result.skipped`` with the reason. out_dir: also write sweep.csv,
    sweep.json, sweep.md, sweep_metrics.png, perception_distortion.png and grid.png
    (centre crops of ``grid_crop`` px; None for whole images). pictures: keep the grid's
    tiles (off for validation during training). forward: ``(lq (1, 3, h, w), λ (p,)) ->
    output`` instead of ``tm(lq, lam=λ)`` (the size rules of a model file: pad, crop, tile).

    Every image runs alone, so a row does not depend on which other images were swept with it.
    PSNR and SSIM are measured on outputs clamped to [0, 1] and on the input as it is; losses
    on the raw output.
    """
    want = check_metrics(metrics)
    if out_dir is not None:
        plots.require_matplotlib()  # fail before the work, not after it
    space = tm.lam_space
    grid = sweep_lams(space, lams, points)
    samples = prepare_inputs(images, degradation, max_size, seed)
    use, skipped = _usable(want, samples)
    ploss = _parametric_loss(objectives, loss, space.p) if "loss" in want else None
    if "loss" in want and ploss is None:
        skipped["loss"] = ("objective losses skipped: no objectives given (pass objectives= and loss=, or sweep a "
                           "model folder whose recipe.yaml lists them)")
    device = next((p.device for p in tm.parameters()), torch.device("cpu"))
    run = _Run(tm, samples, use, ploss, seed, device, forward or (lambda x, lam: tm(x, lam=lam)))
    columns = _grid_columns(len(grid)) if pictures else []
    boxes = [_crop_box(*s.gt.shape[-2:], grid_crop) for s in samples]
    tiles: List[List[Tensor]] = ([[_tile(s.lq, b, s.gt.shape[-1] / s.lq.shape[-1])] for s, b in zip(samples, boxes)]
                                 if pictures else [])
    start = time.perf_counter()
    _run_grid(tm, run, grid, columns, boxes, tiles, progress)
    for k, s in enumerate(samples if pictures else []):
        tiles[k].append(_tile(s.gt, boxes[k]))
    measured = _measured(run, use, skipped)
    input_per_image = [{"image": s.name, **_measure(s.lq.to(device), s, use, clamp=False)} for s in samples]
    input_row = {m: _mean([r.get(m) for r in input_per_image]) for m in measured if m in ("psnr", "ssim", "niqe", "lpips")}
    result = SweepResult(space=space, objectives=tuple(space.names), metrics=measured,
                         rows=_means(grid, run.per_image, measured, len(samples)), per_image=run.per_image,
                         input_row=input_row, input_per_image=input_per_image, images=[s.name for s in samples],
                         skipped=skipped, tiles=tiles, grid_columns=columns,
                         settings=_settings(tm, images, degradation, lams, use, samples, dict(
                             name=name, seed=seed, max_size=max_size, points=points, grid_crop=grid_crop,
                             seconds=round(time.perf_counter() - start, 3), device=str(device))))
    if out_dir is not None:
        result.save(out_dir)
    return result


def _run_grid(tm: Any, run: "_Run", grid: Tensor, columns: List[int], boxes: list, tiles: List[List[Tensor]],
              progress: bool) -> None:
    """Every image at every λ of ``grid`` (N, p), in eval mode (the model's own mode after);
    the λ in ``columns`` add a tile per image to ``tiles``."""
    was_training, bar = tm.training, progress_bar(len(grid), 0, progress, "λ sweep")
    tm.eval()
    try:
        for j, lam in enumerate(grid):
            for k in range(len(run.samples)):
                out = run.image(k, lam)
                if j in columns:
                    tiles[k].append(_tile(out, boxes[k]))
            bar.update(1)
    finally:
        bar.close()
        tm.train(was_training)


def _measured(run: "_Run", use: Dict[str, bool], skipped: Dict[str, str]) -> List[str]:
    """The metric columns that were measured for every row; a loss that failed on some image is
    reported in ``skipped`` and its partial columns are dropped from the per-image rows."""
    if run.loss_failure:
        skipped["loss"] = run.loss_failure
    measured = [m for m in ("psnr", "ssim") if use[m]] + ([] if "loss" in skipped else run.loss_names)
    measured += [m for m in ("niqe", "lpips") if use[m]]
    for r in run.per_image:
        for key in [key for key in r if key.startswith("loss_") and key not in measured]:
            del r[key]
    return measured


def _settings(tm: Any, images: Any, degradation: Any, lams: Any, use: Dict[str, bool], samples: List[Sample],
              given: Dict[str, Any]) -> Dict[str, Any]:
    """How the sweep was made (settings in sweep.json), and notes on partial metrics."""
    n, notes = len(samples), []
    small = [s.name for s in samples if not quality.niqe_fits(*s.gt.shape[-2:])]
    if use["niqe"] and small:
        notes.append(f"NIQE is the mean over {n - len(small)} of {n} images; {', '.join(small)} are smaller than "
                     f"{quality.NIQE_BLOCK}×{2 * quality.NIQE_BLOCK} px")
    return {
        "model": given["name"] or _model_name(tm),
        "source": images if isinstance(images, (str, Path)) else type(images).__name__,
        "degradation": _spec(degradation) if not isinstance(images, Mapping) and not is_paired_folder(images) else None,
        "seed": given["seed"], "max_size": given["max_size"], "points": None if lams is not None else given["points"],
        "grid_crop": given["grid_crop"], "seconds": given["seconds"], "device": given["device"], "notes": notes,
    }


def _model_name(tm: Any) -> str:
    """The name a tunable model's config gives, else its network's class (baselines have no config)."""
    config = tm.config if isinstance(tm, TunableModel) else None
    return (config.name if config is not None else None) or type(getattr(tm, "model", tm)).__name__


def _spec(degradation: Any) -> Any:
    """The degradation as plain JSON data."""
    from ..data import build_degradation

    return None if degradation is None else json.loads(json.dumps(build_degradation(degradation).spec, default=str))


def _finite(value: Optional[float]) -> Optional[float]:
    return None if value is None or not math.isfinite(value) else value
