"""The ways others mix kernels, as drop-in convolutions for benchmarks/overhead.py.

* ``NaiveTunableConv2d``: the unofficial PyTorch port's way: re-mix the K kernels on every
  call (shared λ: one mix then one conv; per-sample λ: one grouped convolution with
  ``groups = B·groups``).
* ``CondConvAnchor``: timm's ``CondConv2d``: always per-sample routing weights (B, K) and
  one grouped convolution, even when every sample has the same λ.

Both read λ from ``ANCHOR_LAM[0]``: (K,) shared or (B, K) per sample. ``with_anchor``
replaces every plain ``nn.Conv2d`` (zero padding) of a copy of a model; linear layers stay
plain, so on transformer-style models the anchors are charged for their convs only (which
flatters them).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ANCHOR_LAM", "NaiveTunableConv2d", "CondConvAnchor", "with_anchor"]

ANCHOR_LAM: list = [None]


def _stack(t: Tensor, k: int) -> nn.Parameter:
    return nn.Parameter(t.detach().unsqueeze(0).repeat(k, *([1] * t.dim())) + 1e-3 * torch.randn(k, *t.shape))


class NaiveTunableConv2d(nn.Module):
    """Conv2d with K kernels (K, out, in/g, kh, kw), re-mixed on every call."""

    def __init__(self, conv: nn.Conv2d, k: int) -> None:
        super().__init__()
        self.weights = _stack(conv.weight, k)
        self.biases = None if conv.bias is None else _stack(conv.bias, k)
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups

    def forward(self, x: Tensor) -> Tensor:
        lam = ANCHOR_LAM[0]
        w = torch.tensordot(lam, self.weights, dims=1)
        b = None if self.biases is None else lam @ self.biases
        if lam.dim() == 1:
            return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)
        n, c, h, wd = x.shape
        y = F.conv2d(x.reshape(1, n * c, h, wd), w.reshape(-1, *w.shape[2:]), None, self.stride, self.padding,
                     self.dilation, self.groups * n)
        y = y.reshape(n, -1, *y.shape[-2:])
        return y if b is None else y + b[:, :, None, None]


class CondConvAnchor(nn.Module):
    """timm ``CondConv2d`` fed λ as its routing weights (B, K)."""

    def __init__(self, conv: nn.Conv2d, k: int) -> None:
        super().__init__()
        from timm.layers import CondConv2d

        self.cc = CondConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                             conv.dilation, conv.groups, conv.bias is not None, num_experts=k)

    def forward(self, x: Tensor) -> Tensor:
        lam = ANCHOR_LAM[0]
        routing = lam.expand(x.shape[0], -1) if lam.dim() == 1 else lam
        return self.cc(x, routing)


def with_anchor(model: nn.Module, cls: type, k: int) -> nn.Module:
    """A copy of ``model`` with every plain zero-padded ``nn.Conv2d`` replaced by ``cls(conv, k)``."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Conv2d and child.padding_mode == "zeros" and not isinstance(child.padding, str):
                setattr(parent, name, cls(child, k))
    return model
