"""tunify's loss library: per-sample losses for parametric multi-loss training.

Every loss maps pred, target of shape (B, C, H, W) to one value per sample, shape (B,), so
that a trainer can weight each sample by its own control vector λ. Build them by name:

    from tunify.objectives import build_loss
    loss = build_loss({"type": "CharbonnierLoss", "loss_weight": 1.0, "eps": 1e-3})
    per_sample = loss(pred, target)            # (B,)
"""
from .base import Loss
from .registry import LOSSES, build_loss, loss_names, register_loss

# importing the loss modules registers their classes
from .pixel import CharbonnierLoss, L1Loss, MSELoss, PSNRLoss
from .structural import SSIMLoss
from .frequency import FFTLoss, GradientLoss, SpectrumLoss
from .vgg import VGG_FILENAMES, VGG_URLS, VGGFeatures, vgg_layer_names
from .perceptual import ContentLoss, PerceptualLoss, StyleLoss
from .adversarial import (
    DISCRIMINATORS,
    GANLoss,
    GlobalDiscriminator,
    PatchDiscriminator,
    build_discriminator,
    register_discriminator,
)
from .external import BasicsrLoss

# objectives and L(λ) build on the losses above, so they come last
from .parametric import Objective, ObjectiveSet, ParametricLoss

__all__ = [
    # interface and registry
    "Loss",
    "LOSSES",
    "register_loss",
    "build_loss",
    "loss_names",
    # pixel, structural, frequency
    "L1Loss",
    "MSELoss",
    "CharbonnierLoss",
    "PSNRLoss",
    "SSIMLoss",
    "FFTLoss",
    "SpectrumLoss",
    "GradientLoss",
    # VGG-based
    "PerceptualLoss",
    "ContentLoss",
    "StyleLoss",
    "VGGFeatures",
    "VGG_URLS",
    "VGG_FILENAMES",
    "vgg_layer_names",
    # adversarial
    "GANLoss",
    "PatchDiscriminator",
    "GlobalDiscriminator",
    "DISCRIMINATORS",
    "register_discriminator",
    "build_discriminator",
    # basicsr fallback
    "BasicsrLoss",
    # objectives and the parametric multi-loss
    "Objective",
    "ObjectiveSet",
    "ParametricLoss",
]
