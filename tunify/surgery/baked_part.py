"""A module the rewriter kept whole, as a plain copy whose kernels follow a shared λ.

fx cannot see inside some blocks (SwinIR's and HAT's attention blocks: every linear, and the
position-bias table read by indexing), so the rewriter keeps them whole on the module path:
their layers read λ from the scope on every call. At a shared λ that is the per-layer Python
of every linear and every parametrized read, ~10 % of SwinIR-light's forward at 16². The fast
graph (fast.py) calls a ``BakedPart`` there instead: a copy of the block in which

- every ``TunableConv2d`` / ``TunableConvTranspose2d`` / ``TunableLinear`` is its original
  module again (``to_plain``), and
- every tunable weight-like tensor (a parametrization holding a ``TunableParameter``) is a
  plain attribute,

whose weights ``refill(canon)`` points at the very mixtures the original block would use (the
layers' memos, the parametrizations' memos). Every other parameter and buffer *is* the
original's object (shared through the deepcopy memo), so an in-place change to a norm or a
running statistic is seen by both. The fast graph checks on every call that the copy still
stands for the original: the same tensors in every slot (no assignment since), the same training
flags, no hooks (a hook registered later must run), unchanged stacks and unwritten mixtures.
"""
from __future__ import annotations

import copy
import itertools
import operator
from typing import Any, Callable, Dict, List, Optional, Tuple

from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..layers import TunableConv2d, TunableConvTranspose2d, TunableLayer, TunableLinear, TunableParameter

__all__ = ["BakedPart", "PartWatch", "bakeable", "strip_tunable_parametrizations", "swap_children"]

# Layers whose plain form is their original module with one mixed weight and bias.
_ONE_WEIGHT = (TunableConv2d, TunableConvTranspose2d, TunableLinear)


def _tunable_parametrizations(module: nn.Module) -> List[Tuple[str, nn.Module]]:
    """(name, ParametrizationList) of ``module``'s own tensors that are tunable weight-like tensors."""
    plist = getattr(module, "parametrizations", None)
    if not isinstance(plist, nn.ModuleDict):
        return []
    return [(name, p) for name, p in plist.items() if any(isinstance(q, TunableParameter) for q in p)]


def bakeable(module: nn.Module) -> bool:
    """A module that is not a tunable layer itself, holds tunable layers, and whose tunable
    layers are all convs/linears or single-parametrization weight-like tensors (the kinds a
    refill can point at a memo's mixture)."""
    if isinstance(module, TunableLayer):
        return False
    found = False
    for m in module.modules():
        for _, plist in _tunable_parametrizations(m):
            if len(plist) != 1:
                return False
            found = True
        if type(m) in _ONE_WEIGHT:
            found = True
        elif isinstance(m, TunableLayer) and not isinstance(m, TunableParameter):
            return False  # low-rank, weight-normalised, ...: their plain form is not one weight
    return found


def strip_tunable_parametrizations(module: nn.Module, value: Any) -> None:
    """Replace ``module``'s tunable parametrizations by plain parameters ``value(name, stack)``.

    A deep copy shares the parametrized class with the original; removing a parametrization
    edits that class, so the module gets a class of its own first."""
    found = _tunable_parametrizations(module)
    if not found:
        return
    cls = type(module)
    module.__class__ = type(cls.__name__, cls.__bases__, {
        k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")
    })
    for name, plist in found:
        stack = plist.original
        parametrize.remove_parametrizations(module, name, leave_parametrized=False)
        setattr(module, name, nn.Parameter(value(name, stack), requires_grad=stack.requires_grad))


def swap_children(root: nn.Module, select: Callable[[nn.Module], bool],
                  make: Callable[[nn.Module], nn.Module]) -> List[Tuple[nn.Module, nn.Module]]:
    """Replace every module in ``root``'s tree for which ``select`` holds by ``make(module)``,
    once per distinct module (a layer called from two places stays one layer); the
    (old, new) pairs. ``root`` itself is not replaced."""
    done: Dict[int, Tuple[nn.Module, nn.Module]] = {}
    for parent in list(root.modules()):
        for slot, child in list(parent._modules.items()):
            if child is not None and select(child):
                if id(child) not in done:
                    done[id(child)] = (child, make(child))
                parent._modules[slot] = done[id(child)][1]
    return list(done.values())


class BakedPart:
    """A plain copy of a kept-whole ``module`` (see the module docstring)."""

    def __init__(self, module: nn.Module) -> None:
        # Every tensor is shared; the layers' stacks too, since to_plain mixes them anew.
        plain = copy.deepcopy(module, {id(t): t for t in itertools.chain(module.parameters(), module.buffers())})
        pairs = list(zip(module.modules(), plain.modules()))  # the same tree, before any swap
        self.pairs = pairs
        original_of = {id(c): o for o, c in pairs}
        uniform = lambda layer: layer.to_plain(layer.weights.new_full((layer.num_kernels,), 1 / layer.num_kernels))  # noqa: E731
        # (plain conv/linear, tunable original); refill points the plain ones at the originals' mixtures
        self.layers = [(new, original_of[id(old)]) for old, new in swap_children(plain, lambda c: type(c) in _ONE_WEIGHT, uniform)]
        self.params: List[Tuple[nn.Module, str, nn.Module]] = []  # (plain owner, name, original owner)
        for parent in list(plain.modules()):
            names = [n for n, _ in _tunable_parametrizations(parent)]
            if names:
                strip_tunable_parametrizations(parent, lambda n, stack: stack[0].detach().clone())
                self.params += [(parent, n, original_of[id(parent)]) for n in names]
        self.module = plain
        # What the fast graph checks on every call, kept short: the copy's modules that survived
        # the swaps (and their originals), the originals' tunable layers for hooks, every shared
        # tensor on the original side and, where it is still part of the copy, on the copy's.
        kept = {id(m) for m in plain.modules()}
        live = [(o, c) for o, c in pairs if id(c) in kept]
        self.originals = [o for o, _ in live] + [layer for _, layer in self.layers]
        self.shared = [(d, k, t) for o, c in pairs for od, cd in ((o._parameters, c._parameters), (o._buffers, c._buffers))
                       for k, t in od.items() if t is not None and cd.get(k) is t
                       for d in ((od, cd) if id(c) in kept else (od,))]
        self.held: List[Tensor] = []

    def refill(self, canon: Tensor) -> bool:
        """Point the plain copy at the mixtures at ``canon`` that the original would use, and
        give it the original's training flags; False when no refill can make it stand for the
        original (a tensor assigned since, or a hook)."""
        if not self._same_tensors() or self._hooked():
            return False
        for o, c in self.pairs:
            c.training = o.training
        held = []
        for plain, layer in self.layers:
            weight, bias = layer.shared_kernels(canon)
            plain._parameters["weight"] = weight
            if layer.biases is not None:
                plain._parameters["bias"] = bias
            held += [weight] + ([bias] if bias is not None else [])
        for plain, name, owner in self.params:  # read in the caller's λ scope: the parametrization's memo
            value = getattr(owner, name)
            plain._parameters[name] = value
            held.append(value)
        self.held = held
        return True

    def _same_tensors(self) -> bool:
        return all(d.get(k) is t for d, k, t in self.shared)

    def _hooked(self) -> bool:
        return any(o._forward_hooks or o._forward_pre_hooks for o in self.originals)

    def watched(self) -> List[Tensor]:
        """What the caller checks on every call, as the fast graph checks its own layers: the
        versions of these tensors (the originals' stacks, the held mixtures), and with
        ``self.shared`` (identity), ``self.originals`` (training flags, no hooks)."""
        out = []
        for _, layer in self.layers:
            out += [layer._parameters["weights"]] + ([layer._parameters["biases"]] if layer.biases is not None else [])
        for _, name, owner in self.params:
            out.append(owner.parametrizations[name].original)
        return out + self.held


class PartWatch:
    """The per-call check over a set of ``BakedPart``: flat lists taken at each refill, so a
    check is a few list passes (≈100 µs for SwinIR-light's 24 blocks, 0.3 % of its forward
    at 16²) rather than a Python loop per module."""

    def __init__(self, parts: List[BakedPart]) -> None:
        self.parts = parts
        self.versions: Optional[List[int]] = None

    def refill(self, canon: Tensor) -> bool:
        """Refill every part at ``canon`` (see BakedPart.refill) and take the lists ``ok`` compares."""
        if not all(part.refill(canon) for part in self.parts):
            self.versions = None
            return False
        self.modules = [m for part in self.parts for m in part.originals]
        self.flags = [m.training for m in self.modules]
        self.hooks = [d for m in self.modules for d in (m._forward_hooks, m._forward_pre_hooks)]
        shared = [entry for part in self.parts for entry in part.shared]
        self.dicts, self.keys, self.tensors = ([e[i] for e in shared] for i in range(3))
        self.watch = [t for part in self.parts for t in part.watched()]
        self.versions = [t._version for t in self.watch]
        return True

    def ok(self) -> bool:
        """Whether every part still stands for its original since the last refill."""
        return (self.versions is not None and [t._version for t in self.watch] == self.versions
                and [m.training for m in self.modules] == self.flags and not any(map(bool, self.hooks))
                and all(map(operator.is_, map(dict.get, self.dicts, self.keys), self.tensors)))
