"""Per-sample λ for the modules whose weight-like tensor cannot hold one value per sample.

SwinIR's ``WindowAttention`` indexes and reshapes its relative-position bias table
(``table[index].view(N, N, -1)``): a per-sample mixture (B, *S) of it has no meaning there.
Rather than run the whole model once per distinct λ row, only such a module (its *owner*,
whose tensors are marked ``per_sample="rows"``) is run once per distinct λ row, on the rows of
its input that belong to the samples sharing that row (``rows.run_by_rows``); everything else
keeps native per-sample kernels.

For the duration of one per-sample call the owner's ``forward`` is an instance attribute that
does this, removed afterwards (the type, the state dict, deepcopy and ``bake`` never see it).
Once by-rows is proved, three one-run forms are tried, each kept where it equals by-rows at the
call's per-sample λ: the owner's tensors with one value per sample on their leading axis of 1
(KBNet's (1, nset, c) tables feed a batched matmul inside a custom autograd function, which
vmap cannot enter); the tensors read as their K kernels, mixed where they meet the activation
(lazy_mix.py: SwinIR's indexed bias table); then ``torch.func.vmap`` over samples
(vmap_rows.py: each sample at its own λ).

That is exact only when the owner treats the rows of its input independently and only
row-aligned arguments are split (a (nW, N, N) mask goes whole since its leading axis is not
B·m). Both are proved on the real input the first time each kind of call is seen (same
arguments' layout, same row-aligned ones, same training mode): the owner run by rows must
equal the owner run whole at one shared λ. When it does not, or the leading axis is not a
multiple of B, :class:`RowsNotSeparable` is raised and the model falls back to running the
whole model once per distinct λ row, with that reason in its report. The proof holds for the
parameters at the time it ran: a row-mixing path whose weight is exactly zero then (a gate
initialised at 0) would pass it; ``tunify(..., example_inputs=...)`` checks routing with
perturbed kernels as well.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Dict, Iterator, List, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten, tree_unflatten

from .base import _COEFFS, coeff_scope, row_groups
from .parameter import TunableParameter, broadcast_scope, broadcastable, lazy_scope
from .rows import RowsNotSeparable, row_aligned, run_by_rows
from .vmap_rows import run_vmapped

__all__ = ["ROWS", "output_difference", "quiet", "random_draws", "row_owners", "row_tensors", "row_tolerance", "split_at_owners"]

ROWS = "rows"  # TunableParameter.per_sample of a tensor whose owner is run by rows

_LOCK = threading.RLock()
_INSTALLED: Dict[int, list] = {}   # id(owner) -> [per-sample calls in flight, its previous instance forward]
_NONE = object()
_LAST_GROUPS: Tuple[Any, Any] = (None, None)  # (coeffs, row_groups(coeffs)): one call, one grouping


def row_tensors(module: nn.Module) -> List[Tuple[str, TunableParameter]]:
    """(name, parametrization) of ``module``'s own weight-like tensors marked ``per_sample="rows"``."""
    plist = getattr(module, "parametrizations", None)
    if not isinstance(plist, nn.ModuleDict):
        return []
    return [(n, e[0]) for n, e in plist.items() if e and isinstance(e[0], TunableParameter) and e[0].per_sample == ROWS]


def row_owners(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """(name, module) of each module holding a weight-like tensor marked ``per_sample="rows"``."""
    found, seen = [], set()
    for name, module in model.named_modules():
        if id(module) not in seen and row_tensors(module):
            seen.add(id(module))
            found.append((name, module))
    return found


def _groups(coeffs: Tensor) -> List[Tensor]:
    global _LAST_GROUPS
    last = _LAST_GROUPS
    if last[0] is coeffs:
        return last[1]
    groups = row_groups(coeffs)
    _LAST_GROUPS = (coeffs, groups)
    return groups


@contextlib.contextmanager
def split_at_owners(owners: Sequence[Tuple[str, nn.Module]], proofs: Dict[tuple, str]) -> Iterator[None]:
    """While inside, each owner called under a per-sample coefficient scope (B, K) runs on its
    own rows at each sample's λ (vmapped, or once per distinct row); ``proofs`` (kept by the
    caller) remembers what was proved for each kind of call."""
    with _LOCK:
        for who, owner in owners:
            slot = _INSTALLED.get(id(owner))
            if slot is None:
                slot = _INSTALLED[id(owner)] = [0, owner.__dict__.get("forward", _NONE)]
                owner.__dict__["forward"] = _by_rows(who or type(owner).__name__, owner, owner.forward, proofs)
            slot[0] += 1
    try:
        yield
    finally:
        with _LOCK:
            for _, owner in owners:
                slot = _INSTALLED[id(owner)]
                slot[0] -= 1
                if slot[0] == 0:
                    del _INSTALLED[id(owner)]
                    if slot[1] is _NONE:
                        owner.__dict__.pop("forward", None)
                    else:
                        owner.__dict__["forward"] = slot[1]


def _by_rows(who: str, owner: nn.Module, forward: Callable[..., Any], proofs: Dict[tuple, str]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        coeffs = _COEFFS.get()
        if coeffs is None or coeffs.dim() == 1:  # shared λ, or already inside one row's run
            return forward(*args, **kwargs)
        leaves, spec = tree_flatten((args, kwargs))
        _, split = row_aligned(leaves, coeffs.shape[0], who)
        groups = _groups(coeffs)
        key = (who, any(m.training for m in owner.modules()), str(spec), split)
        if key not in proofs:
            proofs[key] = prove_rows(forward, owner, coeffs, groups, leaves, spec, split, who)
        if proofs[key]:
            raise RowsNotSeparable(proofs[key])
        for name, form in _one_pass_forms(forward, owner, coeffs, spec, split):
            tried = (name,) + key
            if tried not in proofs:
                proofs[tried] = (name == "broadcast" and _no_broadcast(owner, coeffs, leaves)) or \
                    _equals_by_rows(form, forward, owner, coeffs, groups, leaves, spec, split, who)
            if proofs[tried] == "":
                return form(leaves)
        return run_by_rows(forward, coeffs, groups, leaves, spec, split, who)

    return run


def run_broadcast(forward: Callable[..., Any], owner: nn.Module, leaves: list, spec: Any) -> Any:
    """``forward`` once on the whole batch, the owner's tensors one value per sample on their
    leading axis of 1 ((1, *S) → (B, *S)): KBNet's (1, nset, c) tables meet a batched matmul."""
    args, kwargs = tree_unflatten(leaves, spec)
    with broadcast_scope(tp for _, tp in row_tensors(owner)):
        return forward(*args, **kwargs)


def _one_pass_forms(forward: Callable[..., Any], owner: nn.Module, coeffs: Tensor, spec: Any, split: tuple) -> tuple:
    """(name, leaves → output) of the owner's one-pass forms, in the order they are tried; each
    kept only where it equals by rows (already proved exact) at the call's per-sample λ."""
    return (("broadcast", lambda ls: run_broadcast(forward, owner, ls, spec)),
            ("lazy", lambda ls: run_lazy(forward, owner, ls, spec)),
            ("vmap", lambda ls: run_vmapped(forward, coeffs, ls, spec, split)))


def _no_broadcast(owner: nn.Module, coeffs: Tensor, leaves: list) -> str:
    """Why :func:`run_broadcast` is not tried ('' when it is): each of the owner's tensors needs
    a leading axis of 1, and the owner's rows must be the samples themselves (no windows folded in)."""
    tensors = [tp for _, tp in row_tensors(owner)]
    first = next((t for t in leaves if isinstance(t, Tensor) and t.dim()), None)
    if not tensors or not all(broadcastable(t.shape) for t in tensors) or first is None \
            or first.shape[0] != coeffs.shape[0]:
        return "its tensors or its rows cannot take one value per sample"
    return ""


def run_lazy(forward: Callable[..., Any], owner: nn.Module, leaves: list, spec: Any) -> Any:
    """``forward`` once on the whole batch, the owner's tensors read as their kernels, mixed per
    sample where they meet an activation (lazy_mix.py: SwinIR's indexed bias table)."""
    args, kwargs = tree_unflatten(leaves, spec)
    with lazy_scope(tp for _, tp in row_tensors(owner)):
        return forward(*args, **kwargs)


@torch.no_grad()
def _equals_by_rows(form: Callable[[list], Any], forward: Callable[..., Any], owner: nn.Module, coeffs: Tensor,
                    groups: List[Tensor], leaves: list, spec: Any, split: tuple, who: str) -> str:
    """'' when ``form(leaves)``, a one-pass run of the owner, equals it run by rows (already
    proved exact), each on its own copy of the inputs; else the reason."""
    copies = lambda: [t.clone() if isinstance(t, Tensor) else t for t in leaves]  # noqa: E731
    with quiet(owner, leaves):
        rows = run_by_rows(forward, coeffs, groups, copies(), spec, split, who)
    try:
        with quiet(owner, leaves):
            once = form(copies())
    except Exception as exc:  # noqa: BLE001 - a forward that cannot take this form: the next one
        return f"{type(exc).__name__}: {str(exc).strip()[:120]}"
    err = output_difference(once, rows)
    return "" if err <= row_tolerance(leaves) else f"differs from by rows by {err:.1e}"


def row_tolerance(leaves: list) -> float:
    dtype = next((t.dtype for t in leaves if isinstance(t, Tensor) and t.is_floating_point()), torch.float32)
    return 1e-4 if torch.finfo(dtype).bits >= 32 else 1e-2


@torch.no_grad()
def prove_rows(forward: Callable[..., Any], owner: nn.Module, coeffs: Tensor, groups: List[Tensor], leaves: list,
               spec: Any, split: tuple, who: str) -> str:
    """'' when ``forward`` run by rows equals it run whole at one shared λ on these inputs
    (cloned: some forwards write their input), else the reason. Dropout modules inside are
    switched off and the RNG reseeded for both runs, so only the splitting can differ."""
    shared = coeffs[:1].expand_as(coeffs)
    copies = lambda: [t.clone() if isinstance(t, Tensor) else t for t in leaves]  # noqa: E731
    with quiet(owner, leaves):
        whole = _at(forward, shared[0], copies(), spec)
    try:
        with quiet(owner, leaves):
            parts = run_by_rows(forward, shared, groups, copies(), spec, split, who)
    except Exception as exc:  # noqa: BLE001 - any failure means the rows cannot be run apart
        text = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        return f"{who} cannot run on part of its rows ({type(exc).__name__}: {text})"
    err = output_difference(parts, whole)
    if err <= row_tolerance(leaves):
        return ""
    drawn = random_draws(lambda: _at(forward, shared[0], copies(), spec), owner, leaves)
    if drawn:
        return f"{who} {drawn}"
    return (f"{who} does not treat the rows of its input independently: run on each λ row's rows it differs "
            f"from one run on all rows by {err:.1e} of the output's scale at one shared λ")


def _at(forward: Callable[..., Any], coeffs: Tensor, leaves: list, spec: Any) -> Any:
    args, kwargs = tree_unflatten(leaves, spec)
    with coeff_scope(coeffs):
        return forward(*args, **kwargs)


def random_draws(run: Callable[[], Any], module: nn.Module, leaves: list) -> str:
    """Why no split of the batch can match one run when ``run()`` (on ``module``, dropout off)
    gives other outputs at another RNG seed: it draws random numbers (GFPGAN's noise maps,
    drawn for the whole batch at once); '' when it does not."""
    outs = []
    for seed in (0, 1):
        with quiet(module, leaves, seed):
            outs.append(run())
    err = output_difference(outs[0], outs[1])
    if err <= row_tolerance(leaves):
        return ""
    return (f"draws random numbers (another RNG seed moves its output by {err:.1e}), and no split of the batch "
            "draws what one run draws; with its randomness off (GFPGAN: randomize_noise=False) per-sample "
            "kernels can be proved")


def _drops(module: nn.Module) -> bool:
    """Dropout, and stochastic depth (timm's, basicsr's and spandrel's DropPath keep ``drop_prob``):
    random per sample, so a batch and its parts would draw different masks."""
    return isinstance(module, nn.modules.dropout._DropoutNd) or (
        type(module).__name__.endswith("DropPath") or hasattr(module, "drop_prob"))


@contextlib.contextmanager
def quiet(owner: nn.Module, leaves: list, seed: int = 0) -> Iterator[None]:
    """Dropout and DropPath modules of ``owner`` off and the RNG at a fixed seed; in training, its buffers
    (BatchNorm's running statistics) put back after where they changed, so the proof leaves no
    trace (and an unchanged buffer an autograd graph saved keeps its version)."""
    dropouts = [m for m in owner.modules() if _drops(m) and m.training]
    saved = [(b, b.clone()) for b in owner.buffers()] if any(m.training for m in owner.modules()) else []
    device = next((t.device for t in leaves if isinstance(t, Tensor)), torch.device("cpu"))
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    try:
        for m in dropouts:
            m.training = False
        with torch.random.fork_rng(devices=cuda):
            torch.default_generator.manual_seed(seed)
            if cuda:
                torch.cuda.manual_seed(seed)
            yield
    finally:
        for m in dropouts:
            m.training = True
        for b, copy in saved:
            if not torch.equal(b, copy):  # only what changed: a write bumps the version autograd saved
                b.copy_(copy)


def output_difference(a: Any, b: Any) -> float:
    """Largest difference of matching tensor outputs relative to b's scale (inf when unlike)."""
    la = [t for t in tree_flatten(a)[0] if isinstance(t, Tensor)]
    lb = [t for t in tree_flatten(b)[0] if isinstance(t, Tensor)]
    if len(la) != len(lb) or any(x.shape != y.shape or x.dtype != y.dtype for x, y in zip(la, lb)):
        return float("inf")
    worst = 0.0
    for x, y in zip(la, lb):
        if not (x.is_floating_point() or x.is_complex()):
            worst = worst if torch.equal(x, y) else float("inf")
        elif y.numel():
            worst = max(worst, (x - y).abs().max().item() / (y.abs().max().item() + 1e-6))
    return worst
