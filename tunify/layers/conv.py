"""Tunable 2-D convolutions.

Shared λ: mix the K kernels once, then one ordinary convolution (the cost of the original).
Per-sample λ: every sample meets its own kernel in one call, in the form measured fastest
for the call's signature (:func:`conv2d_per_sample`, forms.py): a grouped convolution with
``groups = B·groups`` (the batch folded into the channels), a batched matmul for pointwise
kernels, or all K kernels at once with the outputs mixed per sample.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import expand_rows, mix
from .forms import choose_form, needs_backward
from .module_layer import TunableModuleLayer

__all__ = ["TunableConv2d", "TunableConvTranspose2d", "conv2d_per_sample"]


def _ones(stride) -> bool:
    return all(v == 1 for v in stride) if isinstance(stride, (tuple, list)) else stride == 1


# The static rule, where forms are not measured (forms.py): below this many input pixels a
# per-sample kernel costs more to build (B copies of the weight, and their gradients) than to
# skip, so all K kernels run and the K outputs are mixed per sample. Measured crossover on
# CPUs: 16-64 pixels. Dense convs only: a grouped conv (NAFNet's depthwise ones) made K times
# wider runs mkldnn's slow path, 1.4-14x a plain step at 2x2-8x8 (fwd+bwd, B=8), where the
# B·groups grouped form costs 0.95-1.5x.
FEW_PIXELS = 32


def _k_outputs(x: Tensor, coeffs: Tensor, weights: Tensor, bias: Optional[Tensor], stride, padding, dilation,
               groups: int) -> Tensor:
    """Σ_k ω_bk (W_k * x_b): no per-sample kernel is built, and the weight gradient is that of
    K plain convolutions. Dense convs run all K kernels as one conv K times wider; grouped ones
    run K plain convs (a K-times-wider grouped conv takes mkldnn's slow path). Elementwise
    mixing keeps the input's memory format (channels_last stays channels_last)."""
    k, out = weights.shape[:2]
    if groups == 1:
        y = F.conv2d(x, weights.reshape(k * out, *weights.shape[2:]), None, stride, padding, dilation)
        parts = [y[:, i * out:(i + 1) * out] for i in range(k)]
    else:
        parts = [F.conv2d(x, weights[i], None, stride, padding, dilation, groups) for i in range(k)]
    y = _mix_outputs(parts, coeffs.to(parts[0].dtype)[:, :, None, None, None], fresh=groups != 1)
    return y if bias is None else y.add_(bias[:, :, None, None])


def _mix_outputs(parts, c: Tensor, fresh: bool = False) -> Tensor:
    """Σ_k c[:, k] · parts[k]; c (B, K, 1, ...) broadcasts against each part. In place wherever
    autograd allows (no conv or matmul saves its output; ``fresh``: parts[0] is no view of a
    shared output, so it is overwritten too): every fresh feature map is an allocation, and on
    CPUs large ones cost page faults that rival the arithmetic."""
    y = parts[0].mul_(c[:, 0]) if fresh else parts[0] * c[:, 0]
    for i in range(1, len(parts)):
        y = y.addcmul_(parts[i], c[:, i])
    return y


def _pointwise(x: Tensor, coeffs: Tensor, weights: Tensor, bias: Optional[Tensor], *geometry) -> Tensor:
    """One batched matmul with each sample's mixed 1x1 kernel, which trains several times
    faster on CPUs than a grouped convolution with B groups (whose weight gradient is B small
    kernels). The bias goes in as the matmul's addend: a separate add is one more pass over y."""
    b, c, h, w = x.shape
    out = weights.shape[1]
    kern = mix(weights, coeffs).reshape(b, out, c)
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        # channels_last maps (timm's ConvNeXt MLP) are (B, H·W, C) in memory: multiply them
        # as they lie, and the output comes out channels_last too. NCHW's (B, C, H·W) view
        # would copy the input first, and the plain 1x1 conv runs NHWC there.
        xs = x.permute(0, 2, 3, 1).reshape(b, h * w, c)
        y = torch.bmm(xs, kern.transpose(1, 2)) if bias is None else \
            torch.baddbmm(bias[:, None, :].expand(b, h * w, out), xs, kern.transpose(1, 2))
        return y.reshape(b, h, w, out).permute(0, 3, 1, 2)
    xs = x.reshape(b, c, h * w)
    y = torch.bmm(kern, xs) if bias is None else torch.baddbmm(bias[:, :, None].expand(b, out, h * w), kern, xs)
    return y.reshape(b, out, h, w)


def _pointwise_k(x: Tensor, coeffs: Tensor, weights: Tensor, bias: Optional[Tensor], *geometry) -> Tensor:
    """The K outputs of a pointwise conv as one matmul with all K kernels, (K·out, C), mixed per
    sample: no per-sample kernel, and on few-pixel maps a matmul and its backward run 1.4-1.8x
    faster than oneDNN's 1x1 convolution (ConvNeXt-atto's MLP at 2x2 and 4x4, B=8)."""
    b, c, h, w = x.shape
    k, out = weights.shape[:2]
    kernels = weights.reshape(k * out, c)
    cw = coeffs.to(x.dtype)[:, :, None, None]
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        y = (x.permute(0, 2, 3, 1).reshape(b, h * w, c) @ kernels.t()).view(b, h * w, k, out)
        mixed = _mix_outputs(y.unbind(2), cw)  # (B, H·W, out)
        mixed = mixed if bias is None else mixed.add_(bias[:, None, :])
        return mixed.reshape(b, h, w, out).permute(0, 3, 1, 2)
    y = torch.matmul(kernels, x.reshape(b, c, h * w)).view(b, k, out, h * w)
    mixed = _mix_outputs(y.unbind(1), cw)  # (B, out, H·W)
    mixed = mixed if bias is None else mixed.add_(bias[:, :, None])
    return mixed.reshape(b, out, h, w)


def _grouped(x: Tensor, coeffs: Tensor, weights: Tensor, bias: Optional[Tensor], stride, padding, dilation,
             groups: int) -> Tensor:
    """The batch folded into the channels: one conv with B·groups groups, each sample's
    mixed kernel and bias on its own channels."""
    b, c, h, w = x.shape
    weight = mix(weights, coeffs)
    y = F.conv2d(x.reshape(1, b * c, h, w), weight.reshape(-1, *weight.shape[2:]),
                 None if bias is None else bias.reshape(-1), stride, padding, dilation, groups * b)
    return y.reshape(b, weights.shape[1], *y.shape[-2:])


def _each_sample(x: Tensor, coeffs: Tensor, weights: Tensor, bias: Optional[Tensor], stride, padding, dilation,
                 groups: int) -> Tensor:
    """One plain convolution per sample with its own mixed kernel, outputs concatenated: B calls,
    but each is the plain op on the input's own layout (channels_last maps stay channels_last,
    where oneDNN's kernels are fast and the folded form must copy to NCHW), and the weight
    gradients are B plain ones, not one B·groups grouped one."""
    weight = mix(weights, coeffs)
    return torch.cat([F.conv2d(x[i:i + 1], weight[i], None if bias is None else bias[i], stride, padding, dilation, groups)
                      for i in range(x.shape[0])])


_FORMS = {"k_outputs": _k_outputs, "each_sample": _each_sample, "grouped": _grouped, "pointwise": _pointwise,
          "pointwise_k": _pointwise_k}
# The candidates: (dense or pointwise kernels) x (whether one conv per sample is worth trying).
_NAMES = {(pointwise, each): ("k_outputs", "grouped") + ("pointwise", "pointwise_k") * pointwise + ("each_sample",) * each
          for pointwise in (False, True) for each in (False, True)}
_EACH_UP_TO = 16  # samples: beyond, B Python calls per layer are not worth a measurement


def conv2d_per_sample(
    x: Tensor, coeffs: Tensor, weights: Tensor, bias: Optional[Tensor], stride=1, padding=0, dilation=1,
    groups: int = 1,
) -> Tensor:
    """Each sample with its own mixture of K kernels.

    x (B, C, H, W), coeffs (B, K), weights (K, out, C/groups, kh, kw), bias (B, out) or None
    → (B, out, H', W'). Runs the fastest of its exact forms for this signature (forms.py):
    the K outputs mixed per sample (for pointwise kernels also as one matmul), one batched
    matmul with each sample's kernel (pointwise kernels), one grouped
    convolution with B·groups groups, or (B ≤ 16) one plain convolution per sample.
    """
    pointwise = (groups == 1 and weights.shape[-2:] == (1, 1) and _ones(stride)
                 and padding in (0, (0, 0), "valid", "same"))
    # Not while compiling: the static rule decides there (forms.py), and a dynamic batch size
    # is a symbol, no dictionary key
    names = () if torch.compiler.is_compiling() else _NAMES[pointwise, x.shape[0] <= _EACH_UP_TO]
    h, w = x.shape[-2:]
    static = "k_outputs" if h * w <= FEW_PIXELS and groups == 1 else "pointwise" if pointwise else "grouped"
    key = ("conv2d", needs_backward(x, weights, bias), x.shape, x.stride(), weights.shape, bias is None,
           x.dtype, x.device, stride, padding, dilation, groups)
    inputs = (x, coeffs, weights, bias, stride, padding, dilation, groups)
    return _FORMS[choose_form(key, _FORMS, names, inputs, static)](*inputs)


class TunableConv2d(TunableModuleLayer):
    """``nn.Conv2d`` with K kernels (K, out, in/groups, kh, kw) and biases (K, out).

    forward(x (B, C, H, W), coeffs (K,) or (B, K)) → (B, out, H', W'). Any stride, dilation,
    groups, ``padding='same'`` and padding modes zeros/reflect/replicate/circular.
    """

    plain_type = nn.Conv2d
    plain_methods = ("forward", "_conv_forward")

    def _plain_forward(self, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        return self._modules["base_layer"]._conv_forward(x, weight, bias)

    def _run_per_sample(self, x: Tensor, coeffs: Tensor) -> Tensor:
        base = self.base_layer
        coeffs = expand_rows(coeffs, x.shape[0])
        padding = base.padding
        if base.padding_mode != "zeros":
            x = F.pad(x, base._reversed_padding_repeated_twice, mode=base.padding_mode)
            padding = 0
        return conv2d_per_sample(x, coeffs, self.weights, self._mixed_bias(coeffs), base.stride, padding,
                                 base.dilation, base.groups)


class TunableConvTranspose2d(TunableModuleLayer):
    """``nn.ConvTranspose2d`` with K kernels (K, in, out/groups, kh, kw) and biases (K, out).

    forward(x (B, C, H, W), output_size=None, coeffs (K,) or (B, K)) → (B, out, H', W');
    output_padding and groups as in the original.
    """

    plain_type = nn.ConvTranspose2d
    plain_methods = ("forward", "_output_padding")

    def _plain_forward(
        self, x: Tensor, weight: Tensor, bias: Optional[Tensor], output_size: Optional[list] = None
    ) -> Tensor:
        base = self.base_layer
        output_padding = base._output_padding(
            x, output_size, base.stride, base.padding, base.kernel_size, 2, base.dilation
        )
        return F.conv_transpose2d(
            x, weight, bias, base.stride, base.padding, output_padding, base.groups, base.dilation
        )

    def _run_per_sample(self, x: Tensor, coeffs: Tensor, output_size: Optional[list] = None) -> Tensor:
        base = self.base_layer
        coeffs = expand_rows(coeffs, x.shape[0])
        weight, bias = mix(self.weights, coeffs), self._mixed_bias(coeffs)
        b, c, h, w = x.shape
        output_padding = base._output_padding(
            x, output_size, base.stride, base.padding, base.kernel_size, 2, base.dilation
        )
        # Transposed weights are (in, out/groups, kh, kw): the batch folds into `in`.
        y = F.conv_transpose2d(
            x.reshape(1, b * c, h, w),
            weight.reshape(b * weight.shape[1], *weight.shape[2:]),
            None,
            base.stride,
            base.padding,
            output_padding,
            base.groups * b,
            base.dilation,
        )
        y = y.reshape(b, -1, *y.shape[-2:])
        return y if bias is None else y + bias[:, :, None, None]
