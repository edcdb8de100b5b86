"""Perceptual, content and style losses on frozen VGG features.

Distances between deep features track perceived similarity better than pixel errors;
distances between their Gram matrices compare texture statistics regardless of where the
texture sits (Johnson et al., 2016; Gatys et al., 2016).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Dict, Literal, Optional

import torch
from torch import Tensor

from .base import Loss, flat_mean
from .registry import register_loss
from .spec import did_you_mean
from .vgg import get_vgg_features, vgg_layer_names

__all__ = ["PerceptualLoss", "ContentLoss", "StyleLoss", "gram_matrix"]

# ImageNet statistics the torchvision VGG weights were trained with
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def gram_matrix(feat: Tensor) -> Tensor:
    """(B, C, H, W) → (B, C, C): G = F Fᵀ / (C·H·W), F the features flattened to (C, H·W)."""
    b, c, h, w = feat.shape
    f = feat.reshape(b, c, h * w).float()  # fp32: the sums over H·W overflow half precision
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


class _VGGLoss(Loss):
    """Shared machinery: layer checks, input normalisation, the shared extractor."""

    DEFAULT_LAYERS: Dict[str, float] = {}
    CRITERIA: tuple = ()

    def __init__(
        self,
        layer_weights: Optional[Mapping[str, float]],
        vgg_type: str,
        use_input_norm: bool,
        range_norm: bool,
        criterion: str,
        pretrained: bool,
        weights_path: Optional[str],
        loss_weight: float,
    ) -> None:
        super().__init__(loss_weight)
        name = type(self).__name__
        layers = dict(self.DEFAULT_LAYERS if layer_weights is None else layer_weights)
        if not layers:
            raise ValueError(f"{name}: layer_weights is empty; give e.g. {self.DEFAULT_LAYERS}")
        names = vgg_layer_names(vgg_type)
        for layer in layers:
            if layer not in names:
                raise ValueError(f"{name}: {vgg_type} has no layer {layer!r}.{did_you_mean(str(layer), names)} "
                                 f"Layers: {', '.join(names)}")
        if criterion not in self.CRITERIA:
            raise ValueError(f"{name}: criterion must be one of {list(self.CRITERIA)}, got {criterion!r}."
                             f"{did_you_mean(str(criterion), self.CRITERIA)}")
        self.layer_weights = {k: float(v) for k, v in layers.items()}
        self.vgg_type, self.criterion = vgg_type, criterion
        self.use_input_norm, self.range_norm = bool(use_input_norm), bool(range_norm)
        last = max(self.layer_weights, key=names.index)
        self.vgg = get_vgg_features(vgg_type, last, pretrained=pretrained, weights_path=weights_path)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    def features(self, x: Tensor) -> Dict[str, Tensor]:
        """(B, C, H, W) image, C in {1, 3} → {layer: (B, C_l, H_l, W_l)}."""
        if x.shape[1] == 1:  # grayscale: VGG sees it as a gray RGB image
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise ValueError(f"{type(self).__name__}: VGG needs 1- or 3-channel images, got {x.shape[1]}")
        if self.range_norm:  # [-1, 1] → [0, 1]
            x = (x + 1) / 2
        if self.use_input_norm:
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return self.vgg(x, self.layer_weights)

    def distance(self, fp: Tensor, ft: Tensor) -> Tensor:
        """Per-sample distance of two feature maps (B, ...) → (B,)."""
        raise NotImplementedError

    def per_sample(self, pred: Tensor, target: Tensor) -> Tensor:
        feats_p = self.features(pred)
        with torch.no_grad():  # the target is a constant: no graph through the second pass
            feats_t = self.features(target.detach())
        total = pred.new_zeros(pred.shape[0], dtype=torch.float32)
        for layer, weight in self.layer_weights.items():
            total = total + weight * self.distance(feats_p[layer], feats_t[layer]).float()
        return total.to(pred.dtype)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, layer_weights={self.layer_weights}, vgg_type={self.vgg_type!r}, "
                f"criterion={self.criterion!r}, use_input_norm={self.use_input_norm}, range_norm={self.range_norm}")


@register_loss
class PerceptualLoss(_VGGLoss):
    """Weighted distance between VGG features of pred and target, per sample.

    Shapes: pred, target (B, C, H, W), C ∈ {1, 3} → (B,),
    loss_b = w · Σ_l λ_l d(φ_l(p), φ_l(t)), with φ_l the activation of layer l and d per
    sample: "l1" mean |·|, "l2" mean (·)², "fro" the Frobenius norm sqrt(Σ (·)²).

    Args:
        layer_weights: {layer: λ_l}; default {"conv5_4": 1.0}. Names as conv{b}_{i},
            relu{b}_{i}, pool{b} (see ``tunify.objectives.vgg.vgg_layer_names``).
        vgg_type: "vgg11", "vgg13", "vgg16" or "vgg19".
        use_input_norm: normalise inputs with the ImageNet mean/std (inputs in [0, 1]).
        range_norm: map inputs from [-1, 1] to [0, 1] first.
        criterion: "l1", "l2" or "fro".
        pretrained: ImageNet weights (default); False gives random weights, for tests only.
        weights_path: local .pth with the weights (see ``tunify.objectives.vgg``).
        loss_weight: w.
    """

    DEFAULT_LAYERS = {"conv5_4": 1.0}
    CRITERIA = ("l1", "l2", "fro")

    def __init__(
        self,
        layer_weights: Optional[Mapping[str, float]] = None,
        vgg_type: Literal["vgg11", "vgg13", "vgg16", "vgg19"] = "vgg19",
        use_input_norm: bool = True,
        range_norm: bool = False,
        criterion: Literal["l1", "l2", "fro"] = "l1",
        pretrained: bool = True,
        weights_path: Optional[str] = None,
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(layer_weights, vgg_type, use_input_norm, range_norm, criterion,
                         pretrained, weights_path, loss_weight)

    def distance(self, fp: Tensor, ft: Tensor) -> Tensor:
        diff = fp - ft
        if self.criterion == "l1":
            return flat_mean(diff.abs())
        if self.criterion == "l2":
            return flat_mean(diff.square())
        return diff.reshape(diff.shape[0], -1).norm(dim=1)


@register_loss
class ContentLoss(PerceptualLoss):
    """:class:`PerceptualLoss` with the classic content layer: layer_weights {"conv4_2": 1.0}.

    Shapes: pred, target (B, C, H, W) → (B,).
    """

    DEFAULT_LAYERS = {"conv4_2": 1.0}


@register_loss
class StyleLoss(_VGGLoss):
    """Weighted distance between Gram matrices of VGG features, per sample.

    Shapes: pred, target (B, C, H, W), C ∈ {1, 3} → (B,),
    loss_b = w · Σ_l λ_l d(G(φ_l(p)), G(φ_l(t))), G = F Fᵀ / (C_l·H_l·W_l) (see
    :func:`gram_matrix`), d per sample: "l1" mean |·| or "l2" mean (·)² over the C_l × C_l
    entries.

    Args: as :class:`PerceptualLoss`, with default layer_weights relu1_1 … relu5_1 at 1.0 and
    criterion "l1" or "l2".
    """

    DEFAULT_LAYERS = {"relu1_1": 1.0, "relu2_1": 1.0, "relu3_1": 1.0, "relu4_1": 1.0, "relu5_1": 1.0}
    CRITERIA = ("l1", "l2")

    def __init__(
        self,
        layer_weights: Optional[Mapping[str, float]] = None,
        vgg_type: Literal["vgg11", "vgg13", "vgg16", "vgg19"] = "vgg19",
        use_input_norm: bool = True,
        range_norm: bool = False,
        criterion: Literal["l1", "l2"] = "l1",
        pretrained: bool = True,
        weights_path: Optional[str] = None,
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(layer_weights, vgg_type, use_input_norm, range_norm, criterion,
                         pretrained, weights_path, loss_weight)

    def distance(self, fp: Tensor, ft: Tensor) -> Tensor:
        diff = gram_matrix(fp) - gram_matrix(ft)
        return flat_mean(diff.abs() if self.criterion == "l1" else diff.square())
