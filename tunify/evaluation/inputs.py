"""What a λ sweep runs on: (degraded input, clean image) pairs, one image at a time.

Sources accepted by :func:`prepare_inputs`:

- clean images, anything :func:`tunify.data.load_images` takes (a folder, a file, a list of
  files, ``"skimage:astronaut,coffee"``) or (3, H, W) tensors / a (B, 3, H, W) batch; they
  are shrunk to ``max_size`` and degraded with ``degradation``;
- a folder with ``lq/`` and ``gt/`` subfolders (real pairs, matched by file name as in
  :class:`tunify.data.PairedFolders`); large pairs are centre-cropped (aligned) to
  ``max_size``, never resized, since resizing would change the degradation itself;
- a mapping with ``"lq"`` and ``"gt"`` tensors ((B, 3, h, w) / (B, 3, H, W), or lists of
  (3, H, W)), e.g. a validation batch; other tensor entries (degradation stages) are kept.

Clean images are degraded in order with one CPU ``torch.Generator`` seeded by ``seed``:
image i gets ``degradation(gt_i[None], generator)`` after images 0..i-1, so the inputs are
the same on every call and every machine.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..data import SKIMAGE_DEFAULT, build_degradation, list_images, load_images, read_image
from ..data.datasets import image_size, pair_by_stem
from ..data.images import shrink

__all__ = ["Sample", "prepare_inputs", "is_paired_folder", "IMAGES_HELP"]

IMAGES_HELP = ("images are a folder of clean images (degraded with the model recipe's degradation or "
               "--degradation / degradation=), a folder with lq/ and gt/ subfolders, files, or 'skimage:name1,name2'")


@dataclass
class Sample:
    """One evaluation image: ``lq`` (1, 3, h, w) goes into the model, ``gt`` (1, 3, H, W) is
    the clean reference; ``extra`` holds other batch entries (``stage0``...) of shape (1, ...)."""

    name: str
    lq: Tensor
    gt: Tensor
    extra: Dict[str, Tensor] = field(default_factory=dict)

    def batch(self) -> Dict[str, Tensor]:
        """The dict objectives read: {"lq", "gt", "stage0", ...}, all (1, ...)."""
        return {"lq": self.lq, "gt": self.gt, **self.extra}


def is_paired_folder(source: Any) -> bool:
    """Whether ``source`` is a folder holding ``lq/`` and ``gt/`` subfolders."""
    if not isinstance(source, (str, os.PathLike)):
        return False
    path = Path(source)
    return path.is_dir() and (path / "lq").is_dir() and (path / "gt").is_dir()


def _names(source: Any, n: int) -> List[str]:
    """A name per loaded image, in load_images' order (file stems, skimage names)."""
    names: List[str] = []
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if text == "skimage":
            names = list(SKIMAGE_DEFAULT)
        elif text.startswith("skimage:"):
            names = [s.strip() for s in text[8:].split(",") if s.strip()]
        elif Path(text).is_dir():
            names = [p.stem for p in list_images(text)]
        else:
            names = [Path(text).stem]
    elif isinstance(source, (list, tuple)) and all(isinstance(s, (str, os.PathLike)) for s in source):
        names = [Path(s).stem for s in source]
    return names if len(names) == n else [f"image{i}" for i in range(n)]


def _tensor_list(value: Any, what: str) -> List[Tensor]:
    """(B, C, H, W), (C, H, W) or a list of (C, H, W) tensors → list of float (C, H, W)."""
    if isinstance(value, Tensor):
        if value.dim() == 3:
            value = value[None]
        if value.dim() != 4:
            raise ValueError(f"{what} must be (B, 3, H, W) or (3, H, W), got shape {tuple(value.shape)}")
        return [v.float() for v in value]
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, Tensor) and v.dim() == 3 for v in value):
        return [v.float() for v in value]
    raise ValueError(f"{what} must be a (B, 3, H, W) tensor or a list of (3, H, W) tensors, got {type(value).__name__}")


def _clean(images: Any, max_size: Optional[int]) -> Tuple[List[str], List[Tensor]]:
    if isinstance(images, Tensor) or (isinstance(images, (list, tuple)) and images and isinstance(images[0], Tensor)):
        tensors = _tensor_list(images, "images")
        out = [shrink(t.clamp(0, 1), max_size) if max_size else t for t in tensors]
        return [f"image{i}" for i in range(len(out))], out
    try:
        out = load_images(images, max_size)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{exc}. {IMAGES_HELP}") from None
    except ValueError as exc:
        raise ValueError(f"{exc}. {IMAGES_HELP}") from None
    return _names(images, len(out)), out


def _degrade(names: List[str], images: List[Tensor], degradation: Any, seed: int) -> List[Sample]:
    if degradation is None:
        raise ValueError(
            "these are clean images and no degradation is known: pass --degradation (e.g. "
            "\"[{type: gaussian_noise, sigma: 25}]\") or degradation=[...], use a model folder whose "
            "recipe.yaml has one, or give a paired folder with lq/ and gt/ subfolders"
        )
    deg = build_degradation(degradation)
    scale = deg.scale
    generator = torch.Generator().manual_seed(int(seed))
    samples = []
    for name, image in zip(names, images):
        h, w = image.shape[-2:]
        if h < scale or w < scale:
            raise ValueError(f"image {name!r} is {h}×{w}, smaller than the degradation's scale {scale}")
        gt = image[:, : h // scale * scale, : w // scale * scale][None].contiguous()
        stages = deg.stages(gt, generator)
        samples.append(Sample(name, stages[-1], gt, {f"stage{i}": t for i, t in enumerate(stages[:-1])}))
    return samples


def _paired_folder(root: Path, max_size: Optional[int]) -> List[Sample]:
    lq_dir, gt_dir = root / "lq", root / "gt"
    lq_files, gt_files = list_images(lq_dir), list_images(gt_dir)
    (h, w), (gh, gw) = image_size(lq_files[0]), image_size(gt_files[0])
    scale = gh // h if gh % h == 0 and gw % w == 0 and gh // h == gw // w and gh >= h else 1
    samples = []
    for lq_path, gt_path in pair_by_stem(lq_files, gt_files, scale, str(lq_dir), str(gt_dir)):
        lq, gt = read_image(lq_path), read_image(gt_path)
        (h, w), (gh, gw) = lq.shape[-2:], gt.shape[-2:]
        if (gh, gw) != (h * scale, w * scale):
            raise ValueError(f"{gt_path.name} is {gh}×{gw} but its lq {lq_path.name} is {h}×{w}; every gt must be "
                             f"{scale}× its lq (the scale read from the first pair)")
        if max_size and max(gh, gw) > max_size:  # aligned centre crop, never a resize
            ch, cw = min(gh, max_size) // scale, min(gw, max_size) // scale
            y, x = (h - ch) // 2, (w - cw) // 2
            lq = lq[:, y : y + ch, x : x + cw]
            gt = gt[:, y * scale : (y + ch) * scale, x * scale : (x + cw) * scale]
        samples.append(Sample(gt_path.stem, lq[None].contiguous(), gt[None].contiguous()))
    return samples


def _mapping(batch: Mapping[str, Any]) -> List[Sample]:
    lqs, gts = _tensor_list(batch["lq"], "images['lq']"), _tensor_list(batch["gt"], "images['gt']")
    if len(lqs) != len(gts):
        raise ValueError(f"images['lq'] holds {len(lqs)} images but images['gt'] holds {len(gts)}")
    names = list(batch.get("names") or [f"image{i}" for i in range(len(gts))])
    extra = {k: v for k, v in batch.items() if k not in ("lq", "gt", "names") and isinstance(v, Tensor)
             and v.dim() == 4 and v.shape[0] == len(gts)}
    return [Sample(str(names[i]), lqs[i][None], gts[i][None], {k: v[i : i + 1].float() for k, v in extra.items()})
            for i in range(len(gts))]


def prepare_inputs(images: Union[str, "os.PathLike[str]", Sequence[Any], Tensor, Mapping[str, Any]],
                   degradation: Any = None, max_size: Optional[int] = 512, seed: int = 0) -> List[Sample]:
    """The (lq, gt) pairs of a sweep, one :class:`Sample` per image (see the module docstring).

    Raises FileNotFoundError / ValueError naming the fix: a missing or empty folder, clean
    images without a degradation, lq/gt files that do not pair up.
    """
    if isinstance(images, Mapping):
        if "lq" not in images or "gt" not in images:
            raise ValueError(f"a batch of images needs 'lq' and 'gt' entries, got keys {sorted(images)}")
        return _mapping(images)
    if is_paired_folder(images):
        return _paired_folder(Path(images), max_size)
    names, clean = _clean(images, max_size)
    return _degrade(names, clean, degradation, seed)
