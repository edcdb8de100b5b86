"""Restoration data for fine-tuning: images, synthetic degradations and stateless datasets.

    from tunify.data import batch_generator, build_dataset
    ds = build_dataset({"type": "degraded", "images": "skimage", "patch_size": 64, "max_size": 512,
                        "degradation": [{"type": "gaussian_noise", "sigma": [5, 30]}]})
    batch = ds.batch(16, batch_generator(seed=0, step=step, rank=rank))   # {"lq", "gt"}
    val = ds.fixed_batch(4)                                                # same every call

Images are float32 RGB in [0, 1]: (C, H, W) alone, (B, C, H, W) in batches. All randomness
comes from an explicit ``torch.Generator``.
"""
from .datasets import DegradedImages, PairedFolders, batch_generator, build_dataset
from .degrade import (
    DEGRADATIONS,
    Degradation,
    DegradationSpec,
    bicubic_down,
    build_degradation,
    gaussian_blur,
    gaussian_noise,
    jpeg,
    motion_blur,
)
from .filters import filter2d, gaussian_kernel, motion_kernel
from .images import IMAGE_EXTENSIONS, SKIMAGE_DEFAULT, SKIMAGE_NAMES, list_images, load_images, read_image, save_image

__all__ = [
    # degradations
    "gaussian_noise",
    "gaussian_blur",
    "motion_blur",
    "bicubic_down",
    "jpeg",
    "DEGRADATIONS",
    "Degradation",
    "DegradationSpec",
    "build_degradation",
    "gaussian_kernel",
    "motion_kernel",
    "filter2d",
    # images
    "load_images",
    "save_image",
    "read_image",
    "list_images",
    "IMAGE_EXTENSIONS",
    "SKIMAGE_DEFAULT",
    "SKIMAGE_NAMES",
    # datasets
    "DegradedImages",
    "PairedFolders",
    "batch_generator",
    "build_dataset",
]
