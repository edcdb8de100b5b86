"""Adversarial loss with its own discriminator, and a small discriminator registry.

No batch normalisation anywhere: it would make one sample's score depend on the others in
the batch, and tunify's losses must be per-sample. Spectral normalisation keeps the
discriminators Lipschitz-bounded instead (Miyato et al., 2018).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Dict, Literal, Optional, Type, Union

import torch.nn.functional as F
from torch import Tensor, nn

from .base import Loss, flat_mean
from .registry import register_loss
from .spec import check_kwargs, did_you_mean

__all__ = [
    "DISCRIMINATORS", "register_discriminator", "build_discriminator",
    "PatchDiscriminator", "GlobalDiscriminator", "GANLoss", "gan_logit_loss",
]

#: discriminator classes by name, for the ``discriminator`` spec of :class:`GANLoss`.
DISCRIMINATORS: Dict[str, Type[nn.Module]] = {}
GAN_TYPES = ("vanilla", "lsgan", "hinge")


def register_discriminator(cls: Type[nn.Module]) -> Type[nn.Module]:
    """Class decorator: register an nn.Module discriminator under its class name."""
    DISCRIMINATORS[cls.__name__] = cls
    return cls


def build_discriminator(spec: Mapping[str, Any]) -> nn.Module:
    """Build a discriminator from ``{"type": <name>, **keywords}`` (did-you-mean errors)."""
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise ValueError(f"a discriminator spec needs a 'type' key, e.g. {{'type': 'PatchDiscriminator'}}; "
                         f"got {spec!r}. Known: {', '.join(sorted(DISCRIMINATORS))}")
    kwargs = dict(spec)
    name = kwargs.pop("type")
    if name not in DISCRIMINATORS:
        raise ValueError(f"unknown discriminator type {name!r}.{did_you_mean(str(name), DISCRIMINATORS)} "
                         f"Known: {', '.join(sorted(DISCRIMINATORS))}")
    cls = DISCRIMINATORS[name]
    return cls(**check_kwargs(cls, kwargs, owner=name))


def _conv(cin: int, cout: int, k: int, s: int, p: int, sn: bool) -> nn.Module:
    conv = nn.Conv2d(cin, cout, k, s, p)
    return nn.utils.parametrizations.spectral_norm(conv) if sn else conv


@register_discriminator
class PatchDiscriminator(nn.Module):
    """PatchGAN-style discriminator: one real/fake logit per overlapping image patch.

    Four-by-four convolutions, ``n_layers`` of them with stride 2 (channels nf, 2nf, ...
    capped at 8nf), then two with stride 1; LeakyReLU(0.2) between them.

    Shapes: (B, in_ch, H, W), H, W ≥ 3·2^n_layers → (B, 1, h, w) logits, h ≈ H / 2^n_layers − 2.
    """

    def __init__(self, in_ch: int = 3, nf: int = 64, n_layers: int = 3, use_spectral_norm: bool = True) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"PatchDiscriminator: n_layers must be ≥ 1, got {n_layers}")
        self.n_layers = n_layers
        layers, cin = [], in_ch
        for i in range(n_layers):
            cout = nf * min(2 ** i, 8)
            layers += [_conv(cin, cout, 4, 2, 1, use_spectral_norm), nn.LeakyReLU(0.2)]
            cin = cout
        cout = nf * min(2 ** n_layers, 8)
        layers += [_conv(cin, cout, 4, 1, 1, use_spectral_norm), nn.LeakyReLU(0.2)]
        layers.append(_conv(cout, 1, 4, 1, 1, use_spectral_norm))
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_ch, H, W) → (B, 1, h, w) logits."""
        need = 3 * 2 ** self.n_layers
        if min(x.shape[-2:]) < need:
            raise ValueError(f"PatchDiscriminator(n_layers={self.n_layers}) needs inputs of at least "
                             f"{need}x{need}, got {tuple(x.shape[-2:])}; use larger crops or fewer layers")
        return self.body(x)


@register_discriminator
class GlobalDiscriminator(nn.Module):
    """VGG-style discriminator giving one logit per image, for any input size.

    Stages of (3×3 conv, 4×4 stride-2 conv) with LeakyReLU(0.2), doubling the channels from
    nf up to 8nf; then adaptive average pooling to 4×4 and a two-layer MLP head.

    Args:
        in_ch, nf: input and base channels.
        input_size: typical training crop side; sets the number of stride-2 stages so the map
            reaching the pooling is about 4×4 (1 to 5 stages; None → 5, suited to 128 px).
            Other sizes still work thanks to the adaptive pooling.
        use_spectral_norm: spectral normalisation on every conv and linear layer.

    Shapes: (B, in_ch, H, W), H, W ≥ 2^stages → (B, 1) logits.
    """

    def __init__(self, in_ch: int = 3, nf: int = 32, input_size: Optional[int] = None,
                 use_spectral_norm: bool = True) -> None:
        super().__init__()
        stages = 5 if input_size is None else max(1, min(5, int(math.log2(max(input_size, 8) / 4))))
        self.stages = stages
        sn = use_spectral_norm
        layers, cin = [], in_ch
        for i in range(stages):
            cout = nf * min(2 ** i, 8)
            layers += [_conv(cin, cout, 3, 1, 1, sn), nn.LeakyReLU(0.2),
                       _conv(cout, cout, 4, 2, 1, sn), nn.LeakyReLU(0.2)]
            cin = cout
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4))
        lin1, lin2 = nn.Linear(cin * 16, 100), nn.Linear(100, 1)
        if sn:
            lin1, lin2 = (nn.utils.parametrizations.spectral_norm(m) for m in (lin1, lin2))
        self.head = nn.Sequential(nn.Flatten(), lin1, nn.LeakyReLU(0.2), lin2)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_ch, H, W) → (B, 1) logits."""
        if min(x.shape[-2:]) < 2 ** self.stages:
            raise ValueError(f"GlobalDiscriminator with {self.stages} stages needs inputs of at least "
                             f"{2 ** self.stages} px, got {tuple(x.shape[-2:])}; set input_size smaller")
        return self.head(self.body(x))


def gan_logit_loss(logits: Tensor, gan_type: str, real: bool, for_discriminator: bool) -> Tensor:
    """Elementwise GAN loss of discriminator logits x, same shape as x.

    vanilla: real → softplus(−x) = −log σ(x), fake → softplus(x) = −log(1 − σ(x)).
    lsgan:   real → (x − 1)², fake → x².
    hinge:   discriminator: real → relu(1 − x), fake → relu(1 + x); generator (real) → −x.
    The generator always asks for ``real=True`` on its fakes.
    """
    if gan_type == "vanilla":
        return F.softplus(-logits) if real else F.softplus(logits)
    if gan_type == "lsgan":
        return (logits - 1).square() if real else logits.square()
    if gan_type == "hinge":
        if not for_discriminator:
            return -logits
        return F.relu(1 - logits) if real else F.relu(1 + logits)
    raise ValueError(f"unknown gan_type {gan_type!r}; use one of {list(GAN_TYPES)}")


@register_loss
class GANLoss(Loss):
    """Adversarial loss: the generator's loss per sample, and a discriminator to train.

    Protocol: a trainer finds losses with a ``discriminator`` attribute, gives the
    discriminator its own optimizer, and after each generator step calls
    ``discriminator_loss(real, fake)``, back-propagates it and steps that optimizer. The
    discriminator is not scaled by ``loss_weight``: the weight balances the generator's
    objective only.

    Args:
        gan_type: "vanilla" (non-saturating, BCE on logits), "lsgan" or "hinge"; see
            :func:`gan_logit_loss`.
        discriminator: a spec dict for :func:`build_discriminator` (default
            {"type": "PatchDiscriminator"}) or a ready nn.Module.
        loss_weight: w.

    Shapes:
        forward(pred (B, C, H, W), target ignored) → (B,): w · mean over the discriminator's
        output positions of gan_logit_loss(D(pred), real=True).
        discriminator_loss(real, fake (B, C, H, W)) → scalar.
    """

    needs_target = False

    def __init__(
        self,
        gan_type: Literal["vanilla", "lsgan", "hinge"] = "vanilla",
        discriminator: Optional[Union[Mapping[str, Any], nn.Module]] = None,
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(loss_weight)
        if gan_type not in GAN_TYPES:
            raise ValueError(f"GANLoss: gan_type must be one of {list(GAN_TYPES)}, got {gan_type!r}."
                             f"{did_you_mean(str(gan_type), GAN_TYPES)}")
        self.gan_type = gan_type
        if discriminator is None:
            discriminator = {"type": "PatchDiscriminator"}
        self.discriminator = (discriminator if isinstance(discriminator, nn.Module)
                              else build_discriminator(discriminator))

    def per_sample(self, pred: Tensor, target: Optional[Tensor]) -> Tensor:
        # Freeze D while scoring the generator: its weights are not the generator's to train,
        # and gradients left on them would leak into the discriminator's next step.
        params = list(self.discriminator.parameters())
        flags = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(False)
        try:
            logits = self.discriminator(pred)
        finally:
            for p, flag in zip(params, flags):
                p.requires_grad_(flag)
        return flat_mean(gan_logit_loss(logits, self.gan_type, real=True, for_discriminator=False))

    def discriminator_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        """Scalar loss of the discriminator: mean loss on real images + on detached fakes.

        real, fake: (B, C, H, W). ``fake`` is detached here, so this never trains the generator.
        """
        loss_real = gan_logit_loss(self.discriminator(real), self.gan_type, True, True).mean()
        loss_fake = gan_logit_loss(self.discriminator(fake.detach()), self.gan_type, False, True).mean()
        return loss_real + loss_fake

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, gan_type={self.gan_type!r}"

