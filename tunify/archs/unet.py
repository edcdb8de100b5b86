"""A plain U-Net for paired image-to-image tasks, with transposed-convolution upsampling."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

__all__ = ["UNet"]


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
    )


class UNet(nn.Module):
    """(B, in_ch, H, W) → (B, out_ch, H, W); H and W divisible by 2^(len(widths)-1).

    ``residual=True`` adds the input to the output (needs in_ch == out_ch), the usual choice
    for restoration.
    """

    def __init__(self, in_ch: int = 3, out_ch: int = 3, widths: Sequence[int] = (32, 64, 128), residual: bool = True):
        super().__init__()
        self.residual = residual and in_ch == out_ch
        self.inc = _double_conv(in_ch, widths[0])
        self.downs = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), _double_conv(a, b)) for a, b in zip(widths[:-1], widths[1:])
        )
        self.ups = nn.ModuleList(nn.ConvTranspose2d(b, a, 2, stride=2) for a, b in zip(widths[:-1], widths[1:]))
        self.dec = nn.ModuleList(_double_conv(2 * a, a) for a in widths[:-1])
        self.outc = nn.Conv2d(widths[0], out_ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        skips, h = [], self.inc(x)
        for down in self.downs:
            skips.append(h)
            h = down(h)
        for up, dec, skip in zip(reversed(self.ups), reversed(self.dec), reversed(skips)):
            h = dec(torch.cat([up(h), skip], dim=1))
        y = self.outc(h)
        return y + x if self.residual else y
