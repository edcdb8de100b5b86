"""The guard: the tunable model must equal the original at init, and per-sample λ must route.

``check_equal_at_init`` runs the original and the tunable model on example inputs at a random
shared λ and a random per-sample λ. At init every kernel is a copy, so any difference is a
conversion the rewriter got wrong: it raises, naming the first layer (in the original's call
order) whose output differs or that the tunable model never ran.

A forward that draws random numbers runs each λ row alone from then on (no split of the batch
draws what one run draws), and its per-sample output is compared with the original run the
same way.

``check_per_sample_routing`` then gives every kernel its own random offset for a moment and
compares a per-sample call with each row run alone on the shared path. A per-sample tensor
lined up with the wrong axis (sequence-first activations, a batch-like axis that is not the
batch) shows here; the model then runs rows separately (exact) and the report says why.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten, tree_map

from ..layers import PER_OBJECTIVE_SUFFIXES, random_draws, split_by_rows

__all__ = ["check_equal_at_init", "check_per_sample_routing", "ConversionMismatch", "original_by_rows"]


class ConversionMismatch(ValueError):
    """The tunable model does not equal the original at init."""


def _inputs(example_inputs: Any) -> tuple:
    return tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)


def _clone(args: tuple) -> tuple:  # some forwards change their input in place
    return tree_map(lambda a: a.clone() if isinstance(a, Tensor) else a, args)


def _batch(args: tuple) -> int:
    return next((a.shape[0] for a in tree_flatten(args)[0] if isinstance(a, Tensor) and a.dim()), 1)


def _sample(space: Any, n: int, g: torch.Generator) -> Tensor:
    """n random λ of the space (n, p): uniform on the simplex (Dirichlet(1)) or in the box."""
    u = torch.rand(n, space.p, generator=g).clamp_min(1e-6)
    if space.kind == "box":
        return u
    e = -u.log()
    return e / e.sum(1, keepdim=True)


def _differs(a: Any, b: Any, rel: float) -> float:
    """Largest difference relative to b's scale over matching tensor leaves (inf if unlike)."""
    la, lb = tree_flatten(a)[0], tree_flatten(b)[0]
    la = [t for t in la if isinstance(t, Tensor)]
    lb = [t for t in lb if isinstance(t, Tensor)]
    if len(la) != len(lb) or any(x.shape != y.shape for x, y in zip(la, lb)):
        return float("inf")
    worst = 0.0
    for x, y in zip(la, lb):
        if x.is_floating_point() or x.is_complex():
            scale = y.abs().max().item() + 1e-6 if y.numel() else 1.0
            worst = max(worst, ((x - y).abs().max().item() / scale) if y.numel() else 0.0)
        elif not torch.equal(x, y):
            return float("inf")
    return worst


def _record(model: nn.Module, strip: str = "") -> Tuple[List[Tuple[str, Any]], list]:
    calls: List[Tuple[str, Any]] = []
    handles = []
    for name, module in model.named_modules():
        if not name or ".base_layer" in name or name.endswith("base_layer"):
            continue
        key = name[len(strip):] if strip and name.startswith(strip) else name

        def hook(_m, _i, out, key=key):
            calls.append((key, tree_map(lambda t: t.detach().clone() if isinstance(t, Tensor) else t, out)))
        handles.append(module.register_forward_hook(hook))
    return calls, handles


def _first_difference(original: nn.Module, tm: nn.Module, args: tuple, lam: Tensor, rel: float) -> str:
    """Name of the first module of the original whose output the tunable model does not match."""
    ref_calls, h1 = _record(original)
    got_calls, h2 = _record(tm.model)
    try:
        original(*_clone(args))
        tm(*_clone(args), lam=lam)
    finally:
        for h in h1 + h2:
            h.remove()
    got: Dict[str, Any] = {}
    for key, out in got_calls:
        got.setdefault(key, out)
    present = {name for name, _ in tm.model.named_modules()}
    for key, out in ref_calls:
        if key not in present:  # inside a converted layer (a weight norm's parametrization)
            continue
        if key not in got:
            return f"{key} ({type(original.get_submodule(key)).__name__}): the tunable model never ran it"
        err = _differs(got[key], out, rel)
        if err > rel:
            return f"{key} ({type(original.get_submodule(key)).__name__}): output differs by {err:.2e} of its scale"
    return "no single layer (only the final output differs)"


def original_by_rows(original: nn.Module, tm: nn.Module, lam: Tensor, args: tuple) -> Any:
    """``original`` run once per distinct row of ``lam`` (B, p) on that row's samples, in the
    order ``tm`` runs them where it splits by rows (a model that draws random numbers draws
    them per run, so this is what such a ``tm`` equals)."""
    return split_by_rows(lambda *a, coeffs, **k: original(*a, **k), tm.coefficients(lam, _batch(args)), _clone(args), {})


@torch.no_grad()
def check_equal_at_init(original: nn.Module, tm: nn.Module, example_inputs: Any, rel: float = 1e-4,
                        seed: int = 0) -> None:
    """Raise ConversionMismatch unless ``tm`` equals ``original`` at a random shared and a random
    per-sample λ on ``example_inputs`` (a tensor or a tuple of forward arguments)."""
    args = _inputs(example_inputs)
    g = torch.Generator().manual_seed(seed)
    space = tm.lam_space
    lams = [_sample(space, 1, g)[0], _sample(space, max(_batch(args), 2), g)[: _batch(args)]]
    # A forward that draws random numbers (GFPGAN's noise maps) draws them for the whole batch at
    # once: no per-sample form can draw what one run draws, so such a model runs each λ row alone
    # from the start, and its per-sample output is checked against the original run so too.
    drawn = random_draws(lambda: original(*_clone(args)), original, tree_flatten(args)[0]) if _batch(args) > 1 else ""
    for lam in lams:
        if lam.dim() == 2 and drawn and not tm.split_reasons:
            tm._split_from_now(f"the model {drawn}")
        torch.manual_seed(seed)
        ref = original(*_clone(args)) if lam.dim() == 1 or not drawn else original_by_rows(original, tm, lam, args)
        torch.manual_seed(seed)
        out = tm(*_clone(args), lam=lam)
        err = _differs(out, ref, rel)
        if err > rel:
            where = _first_difference(original, tm, args, lam, rel)
            raise ConversionMismatch(
                f"the tunified {type(original).__name__} differs from the original at init "
                f"(λ {'per sample' if lam.dim() == 2 else 'shared'}, error {err:.2e} of the output's scale); "
                f"first differing layer: {where}. Exclude it with `exclude=[...]`, try mode='module', "
                "or report the model."
            )


@torch.no_grad()
def check_per_sample_routing(tm: nn.Module, example_inputs: Any, rel: float = 1e-4, seed: int = 0) -> str:
    """'' if a per-sample call equals running each row alone; else the reason, after which
    ``tm`` runs rows separately. Kernels are perturbed during the check and restored after."""
    args = _inputs(example_inputs)
    n = _batch(args)
    if n < 2 or tm.split_reasons:
        return ""
    g = torch.Generator().manual_seed(seed + 1)
    lam = _sample(tm.lam_space, n, g)
    stacks = [p for name, p in tm.named_parameters() if name.endswith(PER_OBJECTIVE_SUFFIXES)]
    saved = [p.detach().clone() for p in stacks]
    try:
        for p in stacks:
            step = p[0].abs().mean().item() * 0.2 + 1e-3 if p[0].numel() else 0.0
            p.add_(torch.randn(p.shape, generator=g) * step)
        torch.manual_seed(seed)
        native = tm(*_clone(args), lam=lam)
        torch.manual_seed(seed)
        rows = tm(*_clone(args), lam=lam, group_by_lam=True)
    finally:
        for p, s in zip(stacks, saved):
            p.copy_(s)
    err = _differs(native, rows, rel)
    if err <= rel:
        return ""
    reason = f"a per-sample call differed from running each λ row alone by {err:.2e} (checked on the example inputs)"
    tm.split_reasons.append(reason)
    return reason


def example_batch(args: Sequence[Any]) -> int:
    """The batch size of example inputs (the leading axis of the first tensor)."""
    return _batch(tuple(args))
