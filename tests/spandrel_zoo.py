"""Every architecture in spandrel's main registry, built small: (arch id, factory, input shape).

Each factory builds the architecture's own class with tiny hyper-parameters in the key layout
spandrel detects, so the test can save its state dict and load it back as a user's file.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch import nn

__all__ = ["SpandrelEntry", "SPANDREL_ZOO"]


@dataclass
class SpandrelEntry:
    arch: str                        # spandrel's architecture id
    cls: str                         # "ARCH.module:Class" under spandrel.architectures
    kwargs: Dict[str, Any]
    shape: Tuple[int, ...]           # input (B, C, H, W)
    slow: str = ""                   # why the file checks need TUNIFY_SLOW=1 (spandrel loads one size only)
    masked: bool = False             # inpainting: forward(image, mask (B, 1, H, W))
    small: Optional[Callable[[], nn.Module]] = None  # where slow: the architecture's own code built small
    small_shape: Tuple[int, ...] = ()                # its input (B, C, H, W)

    def build(self) -> nn.Module:
        module, _, name = self.cls.partition(":")
        return getattr(importlib.import_module(f"spandrel.architectures.{module}"), name)(**self.kwargs)

    def inputs(self, seed: int = 0, shape: Tuple[int, ...] = ()) -> Tuple[torch.Tensor, ...]:
        shape = shape or self.shape
        g = torch.Generator().manual_seed(seed)
        image = torch.rand(shape, generator=g)
        if not self.masked:
            return (image,)
        mask = (torch.rand((shape[0], 1, *shape[2:]), generator=g) > 0.7).float()
        return image, mask


class FixedNoise(nn.Module):
    """GFPGAN at its stored noise maps (``randomize_noise=False``): its default draws fresh noise
    in every forward, so no two runs, per-sample or not, could be compared row by row."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x, randomize_noise=False)


def _small_gfpgan() -> nn.Module:
    from spandrel.architectures.GFPGAN import GFPGAN

    # spandrel's own settings (input_is_latent, different_w, sft_half) at 32 px and 1/16 width
    return FixedNoise(GFPGAN(out_size=32, num_style_feat=16, channel_multiplier=1, narrow=1 / 16, num_mlp=2))


def _small_lama() -> nn.Module:
    from spandrel.architectures.LaMa import LaMa
    from spandrel.architectures.LaMa.__arch.LaMa import FFCResNetGenerator

    lama = LaMa(in_nc=4, out_nc=3)  # its masking forward around a generator of 8 features, 2 blocks
    lama.model = FFCResNetGenerator(4, 3, ngf=8, n_downsampling=2, n_blocks=2)
    return lama


def _e(arch: str, cls: str, shape=(2, 3, 16, 16), slow: str = "", masked: bool = False, small=None,
       small_shape=(2, 3, 32, 32), **kwargs: Any) -> SpandrelEntry:
    return SpandrelEntry(arch, cls, kwargs, shape, slow, masked, small, small_shape)


SPANDREL_ZOO = [
    _e("Compact", "Compact.__arch.SRVGG:SRVGGNetCompact", num_feat=8, num_conv=2, upscale=2),
    _e("SwiftSRGAN", "SwiftSRGAN.__arch.SwiftSRGAN:Generator", num_channels=8, num_blocks=1, upscale_factor=2),
    _e("HAT", "HAT:HAT", img_size=16, embed_dim=12, depths=(1,), num_heads=(2,), window_size=4, compress_ratio=3,
       squeeze_factor=4, num_feat=8, upscale=2, mlp_ratio=2.0),
    _e("GRL", "GRL:GRL", img_size=16, embed_dim=12, depths=[1], num_heads_window=[2], num_heads_stripe=[2],
       window_size=4, stripe_size=[4, 4], upscale=2, upsampler="pixelshuffledirect", mlp_ratio=2.0),
    _e("Swin2SR", "Swin2SR:Swin2SR", img_size=16, embed_dim=12, depths=[1], num_heads=[2], window_size=4, upscale=2,
       upsampler="pixelshuffledirect", mlp_ratio=2.0),
    _e("SwinIR", "SwinIR:SwinIR", img_size=16, embed_dim=12, depths=[1], num_heads=[2], window_size=4, upscale=2,
       upsampler="pixelshuffledirect", mlp_ratio=2.0),
    _e("GFPGAN", "GFPGAN.__arch.gfpganv1_clean_arch:GFPGANv1Clean", (1, 3, 512, 512),
       slow="spandrel builds GFPGAN only at its official size (512 px, 86 M parameters, ~17 s a forward here)",
       small=_small_gfpgan),
    _e("RestoreFormer", "RestoreFormer:RestoreFormer", (2, 3, 64, 64), n_embed=16, embed_dim=32, ch=32, ch_mult=(1, 1, 1, 1, 1, 1),
       num_res_blocks=1, z_channels=32),
    _e("LaMa", "LaMa:LaMa", (2, 3, 32, 32), masked=True, in_nc=4,
       slow="spandrel's LaMa has one fixed size (51 M parameters; 2 min of this suite on 2 cores)", small=_small_lama),
    _e("OmniSR", "OmniSR:OmniSR", num_feat=8, block_num=1, window_size=4, res_num=1, up_scale=2),
    _e("SCUNet", "SCUNet:SCUNet", (2, 3, 64, 64), config=[1, 1, 1, 1, 1, 1, 1], dim=64, input_resolution=64),
    _e("FBCNN", "FBCNN:FBCNN", (2, 3, 16, 16), nc=[8, 16, 32, 512], nb=2),
    _e("Uformer", "Uformer:Uformer", (2, 3, 64, 64), img_size=64, embed_dim=8, depths=[1] * 9,
       num_heads=[1, 1, 1, 1, 1, 1, 1, 1, 1], win_size=4, mlp_ratio=2.0),
    _e("RGT", "RGT:RGT", img_size=16, embed_dim=32, depth=[1], num_heads=[2], split_size=[4, 4], upscale=2, mlp_ratio=2.0),
    _e("DAT", "DAT:DAT", img_size=16, embed_dim=32, depth=[1], num_heads=[2], split_size=[2, 4], upscale=2,
       expansion_factor=2.0),
    _e("CRAFT", "CRAFT:CRAFT", window_size=4, embed_dim=32, depths=[1], num_heads=[2], split_size_0=2, split_size_1=4,
       upscale=2),
    _e("KBNet", "KBNet:KBNet_s", (2, 3, 16, 16), width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1]),
    _e("DITN", "DITN.__arch.DITN_Real:DITN_Real", dim=12, ITL_blocks=1, SAL_blocks=1, UFONE_blocks=1, patch_size=4, upscale=2),
    _e("MMRealSR", "MMRealSR.__arch.mmrealsr_arch:MMRRDBNet_test", (2, 3, 16, 16), num_in_ch=3, num_out_ch=3, scale=4, num_feat=8, num_block=1,
       num_grow_ch=4, num_feats=[8, 8, 8, 8], num_blocks=[1, 1, 1, 1]),
    _e("SPAN", "SPAN:SPAN", num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2),
    _e("RealCUGAN", "RealCUGAN:UpCunet2x", (2, 3, 40, 40)),
    _e("SAFMN", "SAFMN:SAFMN", dim=8, n_blocks=1, upscaling_factor=2),
    _e("SAFMNBCIE", "SAFMNBCIE.__arch.safmn_bcie:SAFMN_BCIE", dim=8, n_blocks=1, num_layers=1, upscaling_factor=2),
    _e("DCTLSA", "DCTLSA:DCTLSA", nf=10, num_modules=6, upscale=2, num_head=2),
    _e("FFTformer", "FFTformer:FFTformer", (2, 3, 32, 32), dim=8, num_blocks=[1, 1, 1], num_refinement_blocks=1),
    _e("NAFNet", "NAFNet:NAFNet", (2, 3, 16, 16), width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1]),
    _e("ATD", "ATD:ATD", img_size=16, embed_dim=12, depths=(2,), num_heads=(2,), window_size=4, category_size=16,
       num_tokens=8, reducted_dim=4, upscale=2, upsampler="pixelshuffledirect"),
    _e("MixDehazeNet", "MixDehazeNet:MixDehazeNet", (2, 3, 64, 64), embed_dims=[8, 16, 32, 16, 8], depths=[1, 1, 1, 1, 1]),
    _e("DRUNet", "DRUNet:DRUNet", (2, 4, 16, 16), in_nc=4, out_nc=3, nc=[8, 16, 32, 512], nb=2),
    _e("DnCNN", "DnCNN:DnCNN", (2, 1, 16, 16), nc=8, nb=4),
    _e("IPT", "IPT:IPT", (1, 3, 8, 8), patch_size=8, patch_dim=2, n_feats=12, num_heads=12, num_layers=1),
    _e("DRCT", "DRCT:DRCT", img_size=16, embed_dim=12, depths=(1,), num_heads=(2,), window_size=4, upscale=2,
       upsampler="pixelshuffle", gc=4),
    _e("ESRGAN", "ESRGAN.__arch.RRDB:RRDBNet", num_filters=8, num_blocks=1, scale=2),
    _e("PLKSR", "PLKSR:PLKSR", dim=8, n_blocks=1, upscaling_factor=2, kernel_size=5, split_ratio=0.25),
    _e("RetinexFormer", "RetinexFormer:RetinexFormer", (2, 3, 16, 16), n_feat=8, stage=1, num_blocks=[1, 1, 1]),
    _e("HVICIDNet", "HVICIDNet.__arch.cidnet:CIDNet", (2, 3, 16, 16), channels=[8, 8, 16, 32], heads=[1, 1, 2, 2]),
    _e("SeemoRe", "SeemoRe:SeemoRe", (1, 3, 16, 16), scale=2, num_experts=2, num_layers=1, embedding_dim=32, global_kernel_size=5, recursive=1),
    _e("MoSR", "MoSR:MoSR", upscale=2, n_block=1, dim=8),
    _e("MoESR", "MoESR:MoESR", scale=2, dim=8, n_blocks=1, n_block=1, upsample_dim=8),
    _e("RCAN", "RCAN:RCAN", scale=2, n_resgroups=1, n_resblocks=1, n_feats=8, reduction=4),
    _e("FDAT", "FDAT:FDAT", scale=2, embed_dim=12, num_groups=1, depth_per_group=2, num_heads=2, window_size=4, mid_dim=8),
    _e("AuraSR", "AuraSR.__arch.aura_sr:UnetUpsampler", (1, 3, 16, 16), dim=8, image_size=64, input_image_size=16,
       style_network={"dim_in": 8, "dim_out": 16, "depth": 1}, up_dim_mults=(1, 1, 1, 1, 1),
       down_dim_mults=(1, 1, 1), attn_depths=(1, 1, 1, 1, 1), mid_attn_depth=1, self_attn_dim_head=4, num_conv_kernels=2),
]
