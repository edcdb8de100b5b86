"""Loading and saving images as float32 (C, H, W) RGB tensors in [0, 1].

Sources for :func:`load_images`:

- ``"skimage"``: the colour photos that ship inside scikit-image and load offline
  (:data:`SKIMAGE_DEFAULT`), handy for tests, demos and smoke runs;
- ``"skimage:astronaut,coffee"``: named scikit-image images (gray ones get 3 channels);
- a folder: every png/jpg/jpeg/bmp/tif/tiff/webp file in it, sorted by name (not recursive);
- one file path, or a list of file paths.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from ._util import did_you_mean

__all__ = ["IMAGE_EXTENSIONS", "SKIMAGE_DEFAULT", "SKIMAGE_NAMES", "ImageSource", "list_images",
           "load_images", "read_array", "read_image", "save_image", "shrink"]

ImageSource = Union[str, "os.PathLike[str]", Sequence[Union[str, "os.PathLike[str]"]]]
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

# All are checked to load without a download on scikit-image 0.26. stereo_motorcycle
# returns (left, right, disparity); we keep the left view.
SKIMAGE_DEFAULT = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry",
                   "hubble_deep_field", "stereo_motorcycle", "retina")
# The rest of the bundled 2-D photos and drawings; others need a network download.
SKIMAGE_NAMES = SKIMAGE_DEFAULT + ("cat", "colorwheel", "camera", "brick", "grass", "gravel", "moon",
                                   "coins", "clock", "cell", "text", "page", "logo", "microaneurysms")


def _to_tensor(array: np.ndarray, what: str, keep_uint8: bool = False) -> Tensor:
    """HW / HWC array of any common dtype → float32 (3, H, W) in [0, 1]
    (or uint8 (3, H, W) when ``keep_uint8`` and the array is uint8)."""
    a = np.asarray(array)
    if keep_uint8 and a.dtype == np.uint8:
        pass
    elif a.dtype == np.bool_:
        a = a.astype(np.float32)
    elif a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    elif a.dtype == np.uint16:
        a = a.astype(np.float32) / 65535.0
    elif np.issubdtype(a.dtype, np.integer):
        # Pillow's 32-bit "I" mode does not say the bit depth; guess it from the values
        a = a.astype(np.float32) / (65535.0 if a.max() > 255 else 255.0)
    else:
        a = a.astype(np.float32)  # floats are taken to be in [0, 1] already, as skimage's are
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"{what}: expected an H×W or H×W×C image, got array shape {a.shape}")
    if a.shape[-1] in (2, 4):  # drop alpha
        a = a[..., :-1]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    t = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)
    return t.contiguous() if t.dtype == torch.uint8 else t.clamp(0, 1).contiguous()


def read_image(path: Union[str, "os.PathLike[str]"], keep_uint8: bool = False) -> Tensor:
    """One image file → float32 (3, H, W) in [0, 1]; 16-bit files keep their precision.

    ``keep_uint8`` returns 8-bit files as uint8 (3, H, W) instead (a quarter of the memory;
    divide by 255 for the float image). Raises FileNotFoundError for a missing file and
    ValueError naming the file when Pillow cannot decode it.
    """
    return _to_tensor(read_array(path), str(path), keep_uint8)


def read_array(path: Union[str, "os.PathLike[str]"]) -> np.ndarray:
    """One image file as Pillow decodes it: an H×W or H×W×C array of its own dtype."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such image file: {str(path)!r}")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):  # F stays float
                img = img.convert("RGBA" if "transparency" in img.info or img.mode == "PA" else "RGB")
            array = np.array(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"could not read image {str(path)!r}: {exc}") from None
    return array


def _skimage(name: str) -> Tensor:
    if name not in SKIMAGE_NAMES:
        raise ValueError(
            f"unknown scikit-image image {name!r}.{did_you_mean(name, SKIMAGE_NAMES)} "
            f"Offline images: {', '.join(SKIMAGE_NAMES)}"
        )
    try:
        import skimage.data
    except ImportError as exc:
        raise ImportError(f"images 'skimage:...' need scikit-image: pip install scikit-image ({exc})") from None
    try:
        image = getattr(skimage.data, name)()
    except Exception as exc:  # a newer skimage may move an image behind a download
        raise RuntimeError(f"scikit-image image {name!r} did not load offline: {exc}") from None
    if isinstance(image, tuple):
        image = image[0]
    return _to_tensor(image, f"skimage:{name}")


def list_images(folder: Union[str, "os.PathLike[str]"]) -> List[Path]:
    """The image files directly inside ``folder``, sorted by name.

    Raises FileNotFoundError when the folder does not exist, ValueError when it holds no image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        hint = " (it is a file; pass it alone or in a list)" if folder.exists() else ""
        raise FileNotFoundError(f"no such folder: {str(folder)!r}{hint}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"folder {str(folder)!r} has no images (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return files


def shrink(image: Tensor, max_size: int) -> Tensor:
    """(C, H, W) → longer side at most max_size, antialiased bicubic, aspect kept."""
    h, w = image.shape[-2:]
    if max(h, w) <= max_size:
        return image
    ratio = max_size / max(h, w)
    size = (max(1, round(h * ratio)), max(1, round(w * ratio)))
    out = F.interpolate(image[None], size=size, mode="bicubic", align_corners=False, antialias=True)
    return out[0].clamp(0, 1)


def load_images(source: ImageSource, max_size: Optional[int] = None) -> List[Tensor]:
    """Load images as a list of float32 (3, H, W) RGB tensors in [0, 1].

    source: ``"skimage"``, ``"skimage:name1,name2"``, a folder, a file, or a list of files
    (see the module docstring). max_size: shrink (antialiased) so the longer side is at
    most this many pixels; smaller images are left alone.
    """
    if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1):
        raise ValueError(f"max_size must be a positive integer or None, got {max_size!r}")
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if text == "skimage" or text.startswith("skimage:"):
            names = SKIMAGE_DEFAULT if text == "skimage" else [n.strip() for n in text[8:].split(",") if n.strip()]
            if not names:
                raise ValueError("'skimage:' names no image; write e.g. 'skimage:astronaut,coffee'")
            images = [_skimage(n) for n in names]
        elif Path(text).is_file():
            images = [read_image(text)]
        elif Path(text).is_dir():
            images = [read_image(p) for p in list_images(text)]
        else:
            raise FileNotFoundError(
                f"no such folder or file: {text!r}; an image source is a folder, a file, a list of "
                f"files, 'skimage' or 'skimage:name1,name2'"
            )
    elif isinstance(source, (list, tuple)):
        if not source:
            raise ValueError("the list of image files is empty")
        images = [read_image(p) for p in source]
    else:
        raise ValueError(f"an image source is a folder, a file or a list of files, got {source!r}")
    return [shrink(im, max_size) for im in images] if max_size else images


def save_image(image: Tensor, path: Union[str, "os.PathLike[str]"], quality: int = 95) -> None:
    """Write one image in [0, 1] to ``path`` (format from the suffix: png, jpg, bmp, tif, webp).

    image: (C, H, W) with C in {1, 3}, (H, W), or (1, C, H, W). Values are clamped to [0, 1]
    and rounded to 8 bits; parent folders are created. ``quality`` applies to JPEG/WebP.
    """
    if not isinstance(image, Tensor):
        raise ValueError(f"save_image expects a torch.Tensor, got {type(image).__name__}")
    x = image.detach()
    if x.dim() == 4 and x.shape[0] == 1:
        x = x[0]
    if x.dim() == 2:
        x = x[None]
    if x.dim() != 3 or x.shape[0] not in (1, 3):
        hint = "; it looks like (H, W, C): pass image.permute(2, 0, 1)" if x.dim() == 3 and x.shape[-1] in (1, 3) else ""
        raise ValueError(f"save_image expects (C, H, W) with C = 1 or 3, got shape {tuple(image.shape)}{hint}")
    path = Path(path)
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise ValueError(f"cannot tell the format of {str(path)!r}; use one of {', '.join(IMAGE_EXTENSIONS)}")
    pixels = (torch.nan_to_num(x.float()).clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    lossy = path.suffix.lower() in (".jpg", ".jpeg", ".webp")
    img.save(path, **({"quality": int(quality)} if lossy else {}))
