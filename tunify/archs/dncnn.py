"""DnCNN (Zhang et al., "Beyond a Gaussian Denoiser", IEEE TIP 2017), written for tunify.

The network is one ``nn.Sequential`` named ``body``, so parameter names are short, stable and
follow the layer order (``depth`` convolutions in all)::

    body.0        Conv2d(in_ch, features, 3)                 (bias)
    body.1        ReLU
    body.{3i+2}   Conv2d(features, features, 3)              (no bias when batch_norm)
    body.{3i+3}   BatchNorm2d(features)                      (only when batch_norm)
    body.{3i+4}   ReLU                                       for i = 0 .. depth-3
    body.{L-1}    Conv2d(features, out_ch, 3)                (bias), L = len(body)

Without batch norm the middle triples become pairs (conv, ReLU) and their convs keep a
bias. With ``residual=True`` (the paper's residual learning) ``body`` predicts the noise and
the network returns ``x - body(x)``; with ``residual=False`` it returns ``body(x)``.

Registry names (``tunify.archs.create_model``):

* ``"dncnn"``: the defaults, i.e. the paper's DnCNN-S (17 layers, 64 features, for one
  known noise level) for colour images; ``in_ch=1, out_ch=1`` gives the grey model.
* ``"dncnn-b"``: the paper's blind models DnCNN-B / CDnCNN-B (20 layers, 64 features).
* ``"dncnn-tiny"``: 16 features, 6 layers, for CPU experiments and tests.

Other PyTorch ports keep the same layer order in one flat Sequential, so their checkpoints
load after renaming its prefix to ``body.``: e.g. KAIR's released DnCNN weights (BN folded
into the convs, prefix ``model.``) fit ``DnCNN(in_ch=1, out_ch=1, batch_norm=False)``. KAIR's
unfolded DnCNN keeps a bias before each BatchNorm, which this one drops.
"""
from __future__ import annotations

from typing import List

from torch import Tensor, nn

__all__ = ["DnCNN"]


class DnCNN(nn.Module):
    """Plain denoising CNN: (B, in_ch, H, W) → (B, out_ch, H, W), any H and W.

    Args:
        in_ch / out_ch: image channels (3 colour, 1 grey); ``residual`` needs them equal.
        features: channels of every hidden layer.
        depth: number of convolutions (at least 2).
        batch_norm: BatchNorm2d after each middle conv (whose bias is then dropped: the
            norm's shift makes it redundant, as in the paper).
        residual: predict the noise and return ``x - noise``.
    """

    def __init__(
        self,
        in_ch: int = 3,
        out_ch: int = 3,
        features: int = 64,
        depth: int = 17,
        batch_norm: bool = True,
        residual: bool = True,
    ) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"DnCNN needs depth >= 2 (a first and a last conv), got {depth}")
        if residual and in_ch != out_ch:
            raise ValueError(f"residual=True subtracts the prediction from the input, so in_ch ({in_ch}) "
                             f"must equal out_ch ({out_ch})")
        self.residual = residual
        layers: List[nn.Module] = [nn.Conv2d(in_ch, features, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers.append(nn.Conv2d(features, features, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(features))
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Conv2d(features, out_ch, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, in_ch, H, W) → (B, out_ch, H, W)."""
        y = self.body(x)
        return x - y if self.residual else y
