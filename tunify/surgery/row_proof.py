"""Per-sample λ where fx could not look, checked once against each λ row run alone.

On the traced graph the rewriter sees every tunable call and what it runs on (graph.py makes a
call on a tensor that depends on no input split the batch). Inside a kept-whole block or an
untraced network a layer sees only its input's shape: a layer on rows that are not samples (a
table through a linear, then broadcast over the batch) whose row count divides by B would mix
those rows across samples without raising. So on such a model the first per-sample call of
each kind (batch size, the inputs' shapes and dtypes) is checked: the native per-sample output
against each distinct λ row run alone on its own samples, both without autograd, in the
model's own mode with dropout off and the RNG at one seed, buffers put back after (training
with BatchNorm is not checked: batch statistics differ on part of a batch anyway). When the
two differ, the model runs each λ row alone from then on, with the reason in its report. It
costs 1 + G forwards (G distinct λ rows), once per kind of call.
"""
from __future__ import annotations

from typing import Any, Callable, List

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten

from ..layers import output_difference, quiet, random_draws, row_tolerance

__all__ = ["call_kind", "prove_native"]


def call_kind(args: tuple, kwargs: dict, coeffs: Tensor) -> tuple:
    """What a proof holds for: the batch, and each input's shape and dtype (and the rest's layout)."""
    leaves, spec = tree_flatten((args, kwargs))
    shapes = tuple((tuple(t.shape), t.dtype) if isinstance(t, Tensor) else type(t).__name__ for t in leaves)
    return coeffs.shape[0], shapes, str(spec)


@torch.no_grad()
def prove_native(model: nn.Module, native: Callable[[], Any], by_rows: Callable[[], Any], leaves: List[Any]) -> str:
    """'' when ``native()`` (per-sample kernels) equals ``by_rows()`` (each λ row alone) on
    ``model`` in its own mode, dropout off and the RNG at one seed (buffers put back after),
    else the reason. Both callables run on their own copies of the input. Not checked while a
    BatchNorm is in training mode: its batch statistics differ on part of a batch anyway."""
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules()):
        return ""
    outs = []
    for run in (native, by_rows):
        with quiet(model, leaves):
            outs.append(run())
    err = output_difference(outs[0], outs[1])
    if err <= row_tolerance(leaves):
        return ""
    drawn = random_draws(by_rows, model, leaves)
    if drawn:
        return f"the model {drawn}"
    return (f"per-sample kernels differ from running each λ row alone by {err:.1e} of the output's scale "
            "(a layer inside a kept-whole block or an untraced network runs on rows that are not samples)")
