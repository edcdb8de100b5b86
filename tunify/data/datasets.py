"""Training and validation patches, handed out statelessly.

A dataset has no iterator state: ``ds.batch(batch_size, generator)`` is a pure function of
the generator, and :func:`batch_generator` derives that generator from (seed, step, rank)
alone. Resuming at step k therefore replays exactly the batches a run that never stopped
would have seen, on any machine and any number of workers.

- :class:`DegradedImages`: clean images + a synthetic :class:`~tunify.data.degrade.Degradation`.
- :class:`PairedFolders`: real (low-quality, ground-truth) pairs from two folders, like
  BasicSR's PairedImageDataset.

Both return ``{"lq": (B, 3, P / scale, P / scale), "gt": (B, 3, P, P)}`` float32 in [0, 1]
on the CPU (before noise, which may leave [0, 1]); ``fixed_batch`` gives the same
validation batch on every call.
"""
from __future__ import annotations

import hashlib
import operator
import os
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from PIL import Image
from torch import Tensor

from ._util import did_you_mean
from .degrade import Degradation, DegradationSpec, build_degradation
from .images import ImageSource, list_images, load_images, read_image

__all__ = ["DegradedImages", "PairedFolders", "batch_generator", "build_dataset", "pair_by_stem", "image_size"]

Batch = Dict[str, Tensor]


def batch_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """A CPU generator whose state depends only on (seed, step, rank).

    The 63-bit seed comes from BLAKE2b of the three integers: stable across Python runs,
    versions and machines, unlike the salted built-in hash(), and nearby triples give
    unrelated streams.
    """
    parts = []
    for name, value in (("seed", seed), ("step", step), ("rank", rank)):
        try:
            parts.append(operator.index(value))
        except TypeError:
            raise ValueError(f"batch_generator: {name} must be an integer, got {value!r}") from None
    digest = hashlib.blake2b(("tunify-batch:%d:%d:%d" % tuple(parts)).encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))


# --- patch sampling: crop positions and dihedral augmentation -----------------------------

def _random_offsets(lengths: Sequence[int], size: int, generator: torch.Generator) -> List[int]:
    """One uniform crop start in [0, length - size] per entry of ``lengths`` (all ≥ size)."""
    room = torch.tensor([int(n) - size + 1 for n in lengths], dtype=torch.float64)
    if (room < 1).any():
        raise ValueError(f"a crop of {size} pixels does not fit in lengths {list(lengths)}")
    u = torch.rand(len(room), generator=generator, dtype=torch.float64, device=generator.device).cpu()
    # u < 1, so floor(u · room) ≤ room - 1 and the crop always fits
    return (u * room).floor().long().tolist()


def _center_offset(length: int, size: int) -> int:
    """Start of the centred crop of ``size`` in ``length`` (rounded towards the top/left)."""
    return (int(length) - size) // 2


def _augment_dihedral(tensors: Sequence[Tensor], generator: torch.Generator) -> List[Tensor]:
    """Apply one random symmetry of the square per sample, the same to every tensor given.

    tensors: (B, C, S, S) batches with the same B (sizes may differ, e.g. an lq and its gt).
    Three fair coins per sample (horizontal flip, vertical flip, transpose) reach all 8
    flips/90° rotations. Returns the transformed batches in the same order.
    """
    b = tensors[0].shape[0]
    for t in tensors:
        if t.dim() != 4 or t.shape[0] != b or t.shape[-1] != t.shape[-2]:
            raise ValueError(f"augment needs square (B, C, S, S) batches of one B, got {tuple(t.shape)}")
    coins = torch.randint(0, 2, (3, b), generator=generator, device=generator.device).bool().cpu()
    out = []
    for t in tensors:
        hflip, vflip, swap = (c.to(t.device).view(-1, 1, 1, 1) for c in coins)
        # where() picks per sample; every branch is computed, which is cheap at patch size
        t = torch.where(hflip, t.flip(-1), t)
        t = torch.where(vflip, t.flip(-2), t)
        t = torch.where(swap, t.transpose(-1, -2), t)
        out.append(t.contiguous())
    return out


# --- datasets -------------------------------------------------------------------------------

def _check_patch(patch_size: Any, scale: int, who: str) -> int:
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
        raise ValueError(f"{who}: patch_size must be a positive integer, got {patch_size!r}")
    if patch_size % scale:
        low, high = patch_size - patch_size % scale, patch_size - patch_size % scale + scale
        raise ValueError(
            f"{who}: patch_size={patch_size} is not divisible by the scale {scale}; "
            f"use {low or high} or {high}"
        )
    return patch_size


def _keep_large(sizes: Sequence[Tuple[int, int]], need: int, who: str, what: str) -> List[int]:
    """Indices of sizes with both sides ≥ need; warn about the rest, fail if none is left."""
    keep = [i for i, (h, w) in enumerate(sizes) if min(h, w) >= need]
    if not keep:
        h, w = max(sizes, key=min)
        raise ValueError(
            f"{who}: none of the {len(sizes)} {what} is at least {need}×{need} pixels (the largest "
            f"short side is {min(h, w)}, in a {h}×{w} one); lower patch_size or use larger images"
        )
    if len(keep) < len(sizes):
        warnings.warn(f"{who}: {len(sizes) - len(keep)} of {len(sizes)} {what} are smaller than "
                      f"{need}×{need} and are left out", stacklevel=3)
    return keep


def _check_count(n: Any, what: str) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{what} must be a positive integer, got {n!r}")


def _crop(image: Tensor, y: int, x: int, size: int) -> Tensor:
    """(3, H, W) → float32 (3, size, size) at (y, x); uint8 storage becomes [0, 1] floats."""
    patch = image[:, y : y + size, x : x + size]
    return patch.float() / 255.0 if patch.dtype == torch.uint8 else patch.float()


class DegradedImages:
    """Random patches of clean images, degraded on the fly.

    images: float (3, H, W) tensors in [0, 1]; those smaller than patch_size are left out
    (with a warning). Each sample picks an image uniformly (every photo counts the same,
    whatever its size), a uniform P×P crop, a random flip/transpose (one of the 8
    symmetries of the square) when ``augment``, and then ``lq = degradation(gt, generator)``.
    patch_size P must be divisible by ``degradation.scale``.
    """

    def __init__(
        self, images: Sequence[Tensor], patch_size: int, degradation: DegradationSpec, augment: bool = True,
        keep_stages: bool = False,
    ) -> None:
        self.degradation: Degradation = build_degradation(degradation)
        # keep_stages: batches also hold "stage0", "stage1", ... (the image after each step).
        self.keep_stages = bool(keep_stages)
        self.patch_size = _check_patch(patch_size, self.degradation.scale, "DegradedImages")
        self.augment = bool(augment)
        if isinstance(images, Tensor) or not images:
            raise ValueError("DegradedImages: images must be a non-empty list of (3, H, W) tensors")
        for i, im in enumerate(images):
            if not isinstance(im, Tensor) or im.dim() != 3 or im.shape[0] != 3 or not im.is_floating_point():
                got = f"{im.dtype} {tuple(im.shape)}" if isinstance(im, Tensor) else type(im).__name__
                raise ValueError(f"DegradedImages: image {i} must be a float (3, H, W) tensor, got {got}")
        keep = _keep_large([tuple(im.shape[-2:]) for im in images], self.patch_size, "DegradedImages", "images")
        self.images: List[Tensor] = [images[i].detach().float().cpu() for i in keep]

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return (f"DegradedImages({len(self.images)} images, patch_size={self.patch_size}, "
                f"augment={self.augment}, {self.degradation!r})")

    def batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        """{"lq": (B, 3, P/s, P/s), "gt": (B, 3, P, P)}, a pure function of ``generator``'s state."""
        _check_count(batch_size, "batch_size")
        n = len(self.images)
        p = self.patch_size
        idx = torch.randint(n, (batch_size,), generator=generator, device=generator.device).tolist()
        sizes = [self.images[i].shape[-2:] for i in idx]
        ys = _random_offsets([h for h, _ in sizes], p, generator)
        xs = _random_offsets([w for _, w in sizes], p, generator)
        gt = torch.stack([_crop(self.images[i], y, x, p) for i, y, x in zip(idx, ys, xs)])
        if self.augment:
            (gt,) = _augment_dihedral([gt], generator)
        return self._degrade(gt, generator)

    def _degrade(self, gt: Tensor, generator: torch.Generator) -> Batch:
        stages = self.degradation.stages(gt, generator)
        batch = {"lq": stages[-1], "gt": gt}
        if self.keep_stages:
            batch.update({f"stage{i}": t for i, t in enumerate(stages[:-1])})
        return batch

    def fixed_batch(self, n: int, patch_size: Optional[int] = None, seed: int = 0) -> Batch:
        """Centre crops of images 0..n-1 (cycling when n exceeds the image count, so repeats
        get other degradation draws), degraded with a generator seeded by ``seed``.
        The same on every call; patch_size None uses the dataset's."""
        _check_count(n, "fixed_batch: n")
        p = self.patch_size if patch_size is None else _check_patch(patch_size, self.degradation.scale, "fixed_batch")
        crops = []
        for i in range(n):
            im = self.images[i % len(self.images)]
            h, w = im.shape[-2:]
            if min(h, w) < p:
                raise ValueError(f"fixed_batch: image {i % len(self.images)} is {h}×{w}, smaller than patch_size={p}")
            crops.append(_crop(im, _center_offset(h, p), _center_offset(w, p), p))
        gt = torch.stack(crops)
        return self._degrade(gt, torch.Generator().manual_seed(seed))


def pair_by_stem(lq_files: List[Path], gt_files: List[Path], scale: int, lq_dir: str, gt_dir: str) -> List[Tuple[Path, Path]]:
    """Match files by name without extension; an lq stem may also end in 'x{scale}' (DIV2K's
    0001x4.png for 0001.png)."""
    def by_stem(files: List[Path], where: str) -> Dict[str, Path]:
        out: Dict[str, Path] = {}
        for f in files:
            if f.stem in out:
                raise ValueError(f"{where} has two images named {f.stem!r}: {out[f.stem].name} and {f.name}")
            out[f.stem] = f
        return out

    gts, lqs = by_stem(gt_files, gt_dir), by_stem(lq_files, lq_dir)
    pairs, used, unmatched_lq = [], set(), []
    suffix = f"x{scale}"
    for stem, lq in lqs.items():
        key = stem if stem in gts else stem[: -len(suffix)] if stem.endswith(suffix) and stem[: -len(suffix)] in gts else None
        if key is None:
            unmatched_lq.append(lq.name)
        else:
            pairs.append((lq, gts[key]))
            used.add(key)
    unmatched_gt = [f.name for s, f in gts.items() if s not in used]
    if unmatched_lq or unmatched_gt:
        def show(names: List[str]) -> str:
            return ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        lines = ["PairedFolders: files are paired by name without extension, and some have no partner:"]
        if unmatched_lq:
            lines.append(f"  in lq {lq_dir!r} only: {show(unmatched_lq)}")
        if unmatched_gt:
            lines.append(f"  in gt {gt_dir!r} only: {show(unmatched_gt)}")
        raise ValueError("\n".join(lines))
    return sorted(pairs, key=lambda pair: pair[1].name)


def image_size(path: Path) -> Tuple[int, int]:
    """(H, W) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as img:
            w, h = img.size
    except Exception as exc:
        raise ValueError(f"could not read image {str(path)!r}: {exc}") from None
    return h, w


class PairedFolders:
    """Aligned random patches from a folder of low-quality images and one of ground truths.

    Files pair up by name without extension (``lq/0001x4.png`` also pairs with
    ``gt/0001.png`` when scale is 4); every gt must be exactly ``scale`` × its lq. Each
    sample picks a pair uniformly, a (P/scale)² lq crop at (y, x) and the P² gt crop at
    (y·scale, x·scale), and the same flip/transpose for both when ``augment``. Pairs whose
    lq is smaller than P/scale are left out (with a warning). ``in_memory`` keeps the
    decoded images (8-bit files as uint8); False re-reads the files for each batch.
    """

    def __init__(
        self,
        lq_dir: Union[str, "os.PathLike[str]"],
        gt_dir: Union[str, "os.PathLike[str]"],
        patch_size: int,
        scale: int = 1,
        augment: bool = True,
        in_memory: bool = True,
    ) -> None:
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
            raise ValueError(f"PairedFolders: scale must be a positive integer, got {scale!r}")
        self.scale = scale
        self.patch_size = _check_patch(patch_size, scale, "PairedFolders")
        self.augment, self.in_memory = bool(augment), bool(in_memory)
        self.lq_dir, self.gt_dir = os.fspath(lq_dir), os.fspath(gt_dir)
        pairs = pair_by_stem(list_images(lq_dir), list_images(gt_dir), scale, self.lq_dir, self.gt_dir)
        sizes = []
        for lq, gt in pairs:
            (h, w), (gh, gw) = image_size(lq), image_size(gt)
            if (gh, gw) != (h * scale, w * scale):
                raise ValueError(
                    f"PairedFolders: {gt.name} is {gh}×{gw} but its lq {lq.name} is {h}×{w}; with scale={scale} "
                    f"the gt must be {h * scale}×{w * scale} (check scale or crop the gt to a multiple of it)"
                )
            sizes.append((h, w))
        keep = _keep_large(sizes, self.patch_size // scale, "PairedFolders", "lq images")
        self.pairs: List[Tuple[Path, Path]] = [pairs[i] for i in keep]
        self.lq_sizes: List[Tuple[int, int]] = [sizes[i] for i in keep]
        self._cache: Optional[List[Tuple[Tensor, Tensor]]] = None
        if self.in_memory:
            self._cache = [self._read(i) for i in range(len(self.pairs))]

    def _read(self, i: int) -> Tuple[Tensor, Tensor]:
        lq, gt = self.pairs[i]
        return read_image(lq, keep_uint8=True), read_image(gt, keep_uint8=True)

    def _get(self, i: int) -> Tuple[Tensor, Tensor]:
        return self._cache[i] if self._cache is not None else self._read(i)

    def __len__(self) -> int:
        return len(self.pairs)

    def __repr__(self) -> str:
        return (f"PairedFolders({len(self.pairs)} pairs, lq={self.lq_dir!r}, gt={self.gt_dir!r}, "
                f"patch_size={self.patch_size}, scale={self.scale}, augment={self.augment})")

    def _crops(self, idx: Sequence[int], ys: Sequence[int], xs: Sequence[int], p: int) -> Batch:
        s = self.scale
        lqs, gts = [], []
        for i, y, x in zip(idx, ys, xs):
            lq, gt = self._get(i)
            lqs.append(_crop(lq, y, x, p // s))
            gts.append(_crop(gt, y * s, x * s, p))
        return {"lq": torch.stack(lqs), "gt": torch.stack(gts)}

    def batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        """{"lq": (B, 3, P/s, P/s), "gt": (B, 3, P, P)}, aligned, a pure function of ``generator``."""
        _check_count(batch_size, "batch_size")
        p = self.patch_size
        idx = torch.randint(len(self.pairs), (batch_size,), generator=generator, device=generator.device).tolist()
        ys = _random_offsets([self.lq_sizes[i][0] for i in idx], p // self.scale, generator)
        xs = _random_offsets([self.lq_sizes[i][1] for i in idx], p // self.scale, generator)
        out = self._crops(idx, ys, xs, p)
        if self.augment:
            out["lq"], out["gt"] = _augment_dihedral([out["lq"], out["gt"]], generator)
        return out

    def fixed_batch(self, n: int, patch_size: Optional[int] = None, seed: int = 0) -> Batch:
        """Aligned centre crops of pairs 0..n-1 (sorted by gt name); the same on every call.
        ``seed`` is unused (real pairs carry their own degradation) and kept for a shared
        signature with :meth:`DegradedImages.fixed_batch`."""
        _check_count(n, "fixed_batch: n")
        p = self.patch_size if patch_size is None else _check_patch(patch_size, self.scale, "fixed_batch")
        if n > len(self.pairs):
            raise ValueError(f"fixed_batch: asked for {n} images but the folders hold {len(self.pairs)} usable pairs")
        q = p // self.scale
        for i in range(n):
            h, w = self.lq_sizes[i]
            if min(h, w) < q:
                raise ValueError(f"fixed_batch: lq {self.pairs[i][0].name} is {h}×{w}, smaller than {q}×{q}")
        idx = list(range(n))
        ys = [_center_offset(self.lq_sizes[i][0], q) for i in idx]
        xs = [_center_offset(self.lq_sizes[i][1], q) for i in idx]
        return self._crops(idx, ys, xs, p)


_DATASET_KEYS: Dict[str, Tuple[Tuple[str, ...], Tuple[str, ...]]] = {
    # type: (required keys, optional keys)
    "degraded": (("images", "patch_size", "degradation"), ("max_size", "augment", "keep_stages")),
    "paired": (("lq", "gt", "patch_size"), ("scale", "augment", "in_memory")),
}


def build_dataset(spec: Mapping[str, Any]) -> Union[DegradedImages, PairedFolders]:
    """A dataset from a config mapping::

        {"type": "degraded", "images": "skimage", "patch_size": 64,
         "degradation": [...], "max_size": 512, "augment": true, "keep_stages": false}
        {"type": "paired", "lq": "path/lq", "gt": "path/gt", "patch_size": 96, "scale": 4}

    Unknown types or keys fail with a did-you-mean and the valid choices.
    """
    if not isinstance(spec, Mapping):
        raise ValueError(f"a dataset spec is a mapping with a 'type', got {spec!r}")
    types = ", ".join(_DATASET_KEYS)
    kind = spec.get("type")
    if kind is None:
        raise ValueError(f"dataset spec: missing 'type'; valid types: {types}")
    if kind not in _DATASET_KEYS:
        raise ValueError(f"dataset spec: unknown type {kind!r}.{did_you_mean(str(kind), _DATASET_KEYS)} Valid types: {types}")
    required, optional = _DATASET_KEYS[kind]
    keys = ("type",) + required + optional
    for key in spec:
        if key not in keys:
            raise ValueError(
                f"dataset spec ({kind}): unknown key {key!r}.{did_you_mean(str(key), keys)} Valid keys: {', '.join(keys)}"
            )
    missing = [k for k in required if k not in spec]
    if missing:
        raise ValueError(f"dataset spec ({kind}): missing {', '.join(repr(k) for k in missing)}")
    augment = spec.get("augment", True)
    if kind == "degraded":
        images: ImageSource = spec["images"]
        return DegradedImages(load_images(images, spec.get("max_size")), spec["patch_size"],
                              spec["degradation"], augment=augment, keep_stages=spec.get("keep_stages", False))
    return PairedFolders(spec["lq"], spec["gt"], spec["patch_size"], scale=spec.get("scale", 1),
                         augment=augment, in_memory=spec.get("in_memory", True))
