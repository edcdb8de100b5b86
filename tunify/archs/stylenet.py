"""The image transformation network of fast style transfer (Johnson, Alahi and Fei-Fei,
"Perceptual Losses for Real-Time Style Transfer and Super-Resolution", ECCV 2016), written
for tunify with the two changes most re-implementations make: instance norm instead of
batch norm (Ulyanov et al. 2016) and nearest-neighbour upsampling followed by a conv instead
of transposed convolutions (Odena et al. 2016), which avoids checkerboard artefacts.

Layers and parameter names (``base`` = 32 by default; every conv pads by reflection)::

    encoder.0   conv 9x9, in_ch → base            + norm (InstanceNorm2d, affine) + act (ReLU)
    encoder.1   conv 3x3 stride 2, base → 2·base   + norm + act
    encoder.2   conv 3x3 stride 2, 2·base → 4·base + norm + act
    blocks.i    ResidualBlock(4·base): conv1, norm1, ReLU, conv2, norm2, plus the skip
    decoder.0   up (nearest ×2), conv 3x3, 4·base → 2·base, norm, act
    decoder.1   up (nearest ×2), conv 3x3, 2·base → base,   norm, act
    head        conv 9x9, base → out_ch (no norm)

so keys read ``encoder.0.conv.weight``, ``blocks.3.norm2.bias``, ``head.weight``.

Value ranges: the input is an image in [0, 1]; the output is ``sigmoid(head(...))``, so it
lies in (0, 1) without clamping (a clamp has zero gradient outside the range; the sigmoid
never does). The original network ends in a scaled tanh on 0–255 images; sigmoid(z) =
(tanh(z/2) + 1)/2, so this is the same mapping on [0, 1] images. Checkpoints of the
PyTorch examples' ``TransformerNet`` (0–255, no output squashing) do not fit this layout.

Sizes: any H, W of at least 5 (the 9x9 reflection padding needs it). The two stride-2 convs
want H and W divisible by 4; other sizes are padded on the bottom/right by reflection to
the next multiple of 4 and the output is cropped back, so the output is always (H, W).

Registry name: ``"stylenet"`` (``tunify.archs.create_model("stylenet", base=16)``).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["StyleNet", "ResidualBlock"]


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2d:
    # Reflection padding keeps the image borders free of the dark frame zero padding leaves.
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, padding_mode="reflect")


def _conv_norm_act(cin: int, cout: int, k: int, stride: int = 1, upsample: bool = False) -> nn.Sequential:
    layers: "OrderedDict[str, nn.Module]" = OrderedDict()
    if upsample:
        layers["up"] = nn.Upsample(scale_factor=2, mode="nearest")
    layers["conv"] = _conv(cin, cout, k, stride)
    layers["norm"] = nn.InstanceNorm2d(cout, affine=True)
    layers["act"] = nn.ReLU()
    return nn.Sequential(layers)


class ResidualBlock(nn.Module):
    """conv3x3 – IN – ReLU – conv3x3 – IN, plus the input: (B, C, H, W) → (B, C, H, W).

    No activation after the sum, as in Johnson et al.'s supplementary material.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv(channels, channels, 3)
        self.norm1 = nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = _conv(channels, channels, 3)
        self.norm2 = nn.InstanceNorm2d(channels, affine=True)
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.norm1(self.conv1(x)))
        return x + self.norm2(self.conv2(h))


class StyleNet(nn.Module):
    """Fast style transfer network: (B, in_ch, H, W) in [0, 1] → (B, out_ch, H, W) in (0, 1).

    Args:
        in_ch / out_ch: image channels.
        base: channels of the full-resolution layers; the residual blocks run at 4·base
            channels on a (H/4, W/4) grid.
        n_residual: number of residual blocks (5 in the paper).
    """

    def __init__(self, in_ch: int = 3, out_ch: int = 3, base: int = 32, n_residual: int = 5) -> None:
        super().__init__()
        if n_residual < 0:
            raise ValueError(f"n_residual must be >= 0, got {n_residual}")
        self.encoder = nn.Sequential(
            _conv_norm_act(in_ch, base, 9),
            _conv_norm_act(base, 2 * base, 3, stride=2),
            _conv_norm_act(2 * base, 4 * base, 3, stride=2),
        )
        self.blocks = nn.Sequential(*[ResidualBlock(4 * base) for _ in range(n_residual)])
        self.decoder = nn.Sequential(
            _conv_norm_act(4 * base, 2 * base, 3, upsample=True),
            _conv_norm_act(2 * base, base, 3, upsample=True),
        )
        self.head = _conv(base, out_ch, 9)

    @staticmethod
    def pad_to_multiple(x: Tensor, multiple: int = 4) -> Tensor:
        """Reflect-pad (B, C, H, W) on the bottom/right to H, W divisible by ``multiple``."""
        h, w = x.shape[-2:]
        pad_h = (multiple - h % multiple) % multiple
        pad_w = (multiple - w % multiple) % multiple
        return F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, in_ch, H, W) → (B, out_ch, H, W)."""
        h, w = x.shape[-2:]
        y = self.head(self.decoder(self.blocks(self.encoder(self.pad_to_multiple(x)))))
        return torch.sigmoid(y)[:, :, :h, :w]
