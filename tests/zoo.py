"""The model zoo every surgery test runs over: toy models for each layer flavour, the
package's own architectures, basicsr's restoration nets and timm models (pretrained=False,
small inputs). Each entry builds a fresh eval-mode model and an input batch."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from tunify.archs import create_model


@dataclass
class Entry:
    name: str
    build: Callable[[], nn.Module]
    shape: Tuple[int, ...]
    # Extra expectations for the zoo suite.
    path: str = "fx"                       # "fx" or "module": which path auto must take
    leaves: Tuple[str, ...] = ()           # types that must be found untraceable
    kwargs: Dict = field(default_factory=dict)


# -- toy models, one per layer flavour ---------------------------------------------------------
class ConvFlavours(nn.Module):
    """Every Conv2d option the layers must honour."""

    def __init__(self) -> None:
        super().__init__()
        self.strided = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.dilated = nn.Conv2d(8, 8, 3, padding=2, dilation=2)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.depthwise = nn.Conv2d(8, 8, 5, padding=2, groups=8, bias=False)
        self.same = nn.Conv2d(8, 8, (3, 5), padding="same")
        self.reflect = nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect")
        self.replicate = nn.Conv2d(8, 8, 3, padding=2, padding_mode="replicate", dilation=2)
        self.circular = nn.Conv2d(8, 6, 3, padding=1, padding_mode="circular", bias=False)
        self.pointwise = nn.Conv2d(6, 4, 1)

    def forward(self, x):
        for layer in (self.strided, self.dilated, self.grouped, self.depthwise, self.same,
                      self.reflect, self.replicate, self.circular):
            x = torch.tanh(layer(x))
        return self.pointwise(x)


class TransposeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(8, 8, 3, stride=2, padding=1, output_padding=1, groups=2)
        self.up2 = nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1, bias=False, dilation=1)

    def forward(self, x):
        return self.up2(torch.relu(self.up(torch.relu(self.down(x)))))


class TokenMLP(nn.Module):
    """Linear layers on (B, N, C) tokens, one without bias."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(12, 24)
        self.fc2 = nn.Linear(24, 12, bias=False)
        self.head = nn.Linear(12, 5)

    def forward(self, x):
        return self.head(x + self.fc2(F.gelu(self.fc1(x))))


class FunctionalNet(nn.Module):
    """Calls F.conv2d / F.linear on its own parameters and reads a conv's weight directly
    (as re-parameterisable blocks do)."""

    def __init__(self) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.randn(8, 4, 3, 3) * 0.2)
        self.kb = nn.Parameter(torch.randn(8) * 0.1)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.w = nn.Parameter(torch.randn(4, 8) * 0.2)

    def forward(self, x):
        x = torch.relu(F.conv2d(x, self.k, self.kb, padding=1))
        x = x + F.conv2d(x, self.conv.weight, self.conv.bias, padding=1)
        return F.linear(x.mean((2, 3)), self.w)


class SharedConv(nn.Module):
    """One conv applied twice: its kernels must stay shared."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.out = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return self.out(self.conv(torch.relu(self.conv(x))))


class ScaleBlock(nn.Module):
    """Weight-like tensors: a broadcastable layer scale and a (C,) scale that is reshaped."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.beta = nn.Parameter(torch.zeros(1, 4, 1, 1))
        self.scale = nn.Parameter(torch.ones(4))
        self.norm = nn.GroupNorm(2, 4)

    def forward(self, x):
        y = x + self.conv(self.norm(x)) * self.beta
        return y * self.scale.reshape(1, -1, 1, 1)


class Untraceable(nn.Module):
    """Branches on data in its own forward: only the module path can convert it."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(4, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        y = self.a(x)
        if bool(y.mean() > -100):  # always true, but fx cannot know
            y = self.b(torch.relu(y))
        return y


def _resnetv2_std():
    from timm.layers import GroupNormAct, StdConv2d
    from timm.models.resnetv2 import ResNetV2

    return ResNetV2(layers=(1, 1, 1, 1), num_classes=10, stem_type="fixed",
                    conv_layer=partial(StdConv2d, eps=1e-8), norm_layer=partial(GroupNormAct, num_groups=8))


def _timm(name: str, **kw):
    return lambda: create_model(f"timm:{name}", num_classes=10, **kw)


SWINIR_TINY = dict(upscale=2, img_size=16, window_size=4, depths=[2, 2], embed_dim=24, num_heads=[2, 2],
                   mlp_ratio=2, upsampler="pixelshuffledirect")

ZOO = [
    Entry("conv_flavours", ConvFlavours, (3, 4, 20, 20)),
    Entry("conv_transpose", TransposeNet, (3, 4, 12, 12)),
    Entry("token_mlp", TokenMLP, (3, 7, 12)),
    Entry("functional", FunctionalNet, (3, 4, 10, 10)),
    Entry("shared_conv", SharedConv, (3, 4, 10, 10)),
    Entry("scale_block", ScaleBlock, (3, 4, 10, 10)),
    Entry("untraceable", Untraceable, (3, 4, 10, 10), path="module"),
    Entry("nafnet", lambda: create_model("nafnet", width=8, middle_blk_num=1, enc_blk_nums=(1, 1), dec_blk_nums=(1, 1)), (3, 3, 20, 20)),
    Entry("unet", lambda: create_model("unet", widths=(8, 16, 32)), (3, 3, 16, 16)),
    Entry("swinir", lambda: create_model("swinir", **SWINIR_TINY), (3, 3, 16, 16), leaves=("SwinTransformerBlock",)),
    Entry("edsr", lambda: create_model("edsr", num_feat=16, num_block=2, upscale=2), (3, 3, 12, 12)),
    Entry("rrdbnet_x2", lambda: create_model("rrdbnet", num_feat=16, num_block=1, num_grow_ch=8, scale=2), (3, 3, 12, 12), path="module"),
    Entry("rrdbnet_x4", lambda: create_model("rrdbnet", num_feat=16, num_block=1, num_grow_ch=8, scale=4), (3, 3, 12, 12)),
    Entry("timm_resnet10t", _timm("resnet10t"), (3, 3, 32, 32)),
    Entry("timm_tf_efficientnet_b0", _timm("tf_efficientnet_b0"), (3, 3, 33, 33)),  # Conv2dSame
    Entry("timm_convnext_atto", _timm("convnext_atto"), (3, 3, 32, 32)),
    Entry("timm_vit_tiny", _timm("vit_tiny_patch16_224", img_size=32), (3, 3, 32, 32)),
    Entry("timm_swin", _timm("swin_tiny_patch4_window7_224", img_size=56, depths=(1, 1), num_heads=(1, 2), embed_dim=24), (3, 3, 56, 56)),
    Entry("timm_nf_regnet_b0", _timm("nf_regnet_b0"), (3, 3, 32, 32)),  # ScaledStdConv2d
    Entry("timm_resnetv2_stdconv", _resnetv2_std, (3, 3, 32, 32)),   # StdConv2d
    Entry("timm_mobilenetv3", _timm("mobilenetv3_small_050"), (3, 3, 32, 32)),
    Entry("timm_regnetx_002", _timm("regnetx_002"), (3, 3, 32, 32)),
    Entry("timm_edgenext", _timm("edgenext_xx_small"), (3, 3, 64, 64)),
    Entry("timm_levit", _timm("levit_128s", img_size=128), (3, 3, 128, 128)),  # 1x1 last stage has no softmax gradient
    Entry("timm_mixer", _timm("mixer_s16_224", img_size=32), (3, 3, 32, 32)),
    Entry("timm_mobilevit", _timm("mobilevit_xxs"), (3, 3, 64, 64)),
    Entry("timm_coat_lite", _timm("coat_lite_tiny", img_size=64), (3, 3, 64, 64)),
]
