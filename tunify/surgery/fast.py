"""The traced graph at a shared λ, with its convs and linears called as plain ops.

At a shared λ without autograd every tunable layer already reuses its mixed kernels
(layers/cache.py), but each call still goes through the layer's Python: the coefficient check,
the memo's validity checks, the dispatch to the plain op; a few µs a layer, which on a small
input (ConvNeXt-atto at 64², ~50 layers) is several percent of the forward. ``FastShared`` is a
copy of the rewritten graph in which every plain ``TunableConv2d`` / ``TunableLinear`` call is
``F.conv2d`` / ``F.linear`` on kernels mixed once per λ, as the baked model would run them.
Blocks the rewriter kept whole (fx could not see inside) are called as plain copies whose
kernels follow λ (baked_part.py); a network fx could not trace at all runs as one such copy
(``FastWhole``). The other nodes (functional calls, layers with their own forward) are the same
calls as in the graph, reusing their memos.

Used only where the memo would be: no autograd, a shared λ of plain tensors, not compiling or
tracing. Before each call it checks, for every layer it bypasses, that the kernel stacks are the
same objects at the same versions (no optimizer step, in-place edit or load since), that the
cache generation is the same (``.to()``, ``load_state_dict``), that the kernels it holds were
not written to, and that the layer has no hooks (a hook registered later must run: the layer
is then called as a module again). It is built on the second such call, so a model called once
per λ never pays for it; it is dropped by ``.to()`` and never copied or pickled.
"""
from __future__ import annotations

import operator
import threading
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import TunableConv2d, TunableLinear, mix_operand, mix_operand_reshaped, mix_parameter
from ..layers.cache import cache_generation, canonical_coeffs
from .baked_part import BakedPart, PartWatch, bakeable
from .graph import COEFFS_INPUT

__all__ = ["FastShared", "FastWhole", "fast_eligible", "fast_for"]


def fast_eligible(coeffs: Tensor) -> bool:
    """Whether a call at ``coeffs`` may take the fast graph (the kernel memo's conditions)."""
    return (coeffs.dim() == 1 and type(coeffs) is Tensor and not torch.is_grad_enabled()
            and not torch.compiler.is_compiling() and torch._C._get_tracing_state() is None)


def _plain_layer(module: nn.Module) -> bool:
    """A layer whose forward at a shared λ is exactly one F.conv2d / F.linear on its mixture."""
    if type(module) is TunableConv2d:
        return not module.custom_forward and module.base_layer.padding_mode == "zeros"
    return type(module) is TunableLinear and not module.custom_forward


def _lookup(gm: fx.GraphModule, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _hooked(module: nn.Module) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())


def _has_node(arg: Any) -> bool:
    found: List[fx.Node] = []
    fx.node.map_arg(arg, found.append)
    return bool(found)


def _foldable(node: fx.Node, coeffs: Optional[fx.Node]) -> bool:
    """A mixture of a weight-like tensor at the shared coefficients, λ-only there:
    ``mix_operand(stack, ω, other)`` (its other operand only matters per sample),
    ``mix_parameter(stack, ω, mode)``, or ``mix_operand_reshaped(stack, ω, shape, other)`` with
    a shape that does not depend on the input."""
    if node.op != "call_function" or node.target not in _FOLD or len(node.args) < 3 or node.kwargs:
        return False
    stack, c = node.args[0], node.args[1]
    if not (isinstance(stack, fx.Node) and stack.op == "get_attr" and c is coeffs):
        return False
    return node.target is mix_operand or not _has_node(node.args[2])


_FOLD = {mix_operand, mix_parameter, mix_operand_reshaped}


class FastShared:
    """A plain-op copy of a TunableModel's traced graph (see the module docstring)."""

    def __init__(self, gm: fx.GraphModule) -> None:
        graph = fx.Graph()
        env: Dict[fx.Node, fx.Node] = {}
        self.layers: List[nn.Module] = []  # the bypassed layers, slot i ↔ attributes _tunify_w{i}, _tunify_b{i}
        self.folds: List[Tuple[Any, str, tuple]] = []  # (fn, stack path, constant args) ↔ _tunify_c{j}
        self.parts: List[BakedPart] = []  # kept-whole blocks as plain copies ↔ submodules _tunify_m{k}
        self.part_watch = PartWatch(self.parts)
        part_of: Dict[int, str] = {}
        coeffs = next((n for n in gm.graph.nodes if n.op == "placeholder" and n.target == COEFFS_INPUT), None)
        for node in gm.graph.nodes:
            module = gm.get_submodule(node.target) if node.op == "call_module" else None
            if module is not None and _plain_layer(module) and len(node.args) == 1 and set(node.kwargs) == {"coeffs"}:
                env[node] = self._plain_call(graph, module, env[node.args[0]])
            elif module is not None and bakeable(module) and not _hooked(module):
                if id(module) not in part_of:  # a block called twice is one copy
                    part_of[id(module)] = f"_tunify_m{len(self.parts)}"
                    self.parts.append(BakedPart(module))
                env[node] = graph.call_module(part_of[id(module)], *fx.node.map_arg((node.args, node.kwargs), lambda n: env[n]))
            elif _foldable(node, coeffs):
                extra = (None,) if node.target is mix_operand else (node.args[2], None) \
                    if node.target is mix_operand_reshaped else (node.args[2],)
                self.folds.append((node.target, node.args[0].target, extra))
                env[node] = graph.get_attr(f"_tunify_c{len(self.folds) - 1}")
            else:
                env[node] = graph.node_copy(node, lambda n: env[n])
        self.slots = [f"_tunify_{x}{i}" for i in range(len(self.layers)) for x in "wb"]
        self.slots += [f"_tunify_c{j}" for j in range(len(self.folds))]
        root = {n.target: _lookup(gm, n.target) for n in graph.nodes if n.op in ("call_module", "get_attr")
                and not n.target.startswith("_tunify_")}
        root.update({name: torch.empty(0) for name in self.slots})
        root.update({f"_tunify_m{k}": part.module for k, part in enumerate(self.parts)})
        self.gm = fx.GraphModule(root, graph, class_name="FastShared")
        self.stacks = [_lookup(gm, path) for _, path, _ in self.folds]
        for name in self.slots:  # plain attributes, read by the generated code as self._tunify_...
            self.gm._buffers.pop(name, None)
            self.gm.__dict__[name] = None
        self.held = self.gm.__dict__  # where _refill puts the mixed kernels and folds
        self.canon: Optional[Tensor] = None  # set by _refill, with what _valid compares against
        self.lock = threading.Lock()  # held by the one thread running the fast graph

    def _plain_call(self, graph: fx.Graph, layer: nn.Module, x: fx.Node) -> fx.Node:
        i = len(self.layers)
        self.layers.append(layer)
        w, b = graph.get_attr(f"_tunify_w{i}"), graph.get_attr(f"_tunify_b{i}")
        if isinstance(layer, TunableConv2d):
            base = layer.base_layer
            return graph.call_function(F.conv2d, (x, w, b, base.stride, base.padding, base.dilation, base.groups))
        return graph.call_function(F.linear, (x, w, b))

    def _valid(self) -> bool:
        """Whether the held values still are what the layers and the graph would compute: the
        same cache generation, every stack the same object (a layer's ``weights``/``biases``) at
        the same version, the held values unwritten, and no hook on a bypassed layer; for the
        baked blocks, the same tensors in their slots, the same training flags and no hooks
        anywhere inside. Runs on every call: ≈35 µs for ConvNeXt-atto (190 tensors watched),
        0.4 % of its forward at 64²."""
        if self.gen != cache_generation():
            return False
        if not all(map(operator.is_, [d["weights"] for d in self.params], self.refs[0::2])) \
                or not all(map(operator.is_, [d.get("biases") for d in self.params], self.refs[1::2])):
            return False
        if [t._version for t in self.watch] != self.versions:
            return False
        if any(h for pair in self.hooks for h in pair):
            return False
        return not self.parts or self.part_watch.ok()

    def _refill(self, canon: Tensor) -> bool:
        """Mix every held value at ``canon`` with the very code the layers and the graph run
        (the layers' memos included); False when a bypassed layer has hooks."""
        held = self.held
        for i, layer in enumerate(self.layers):
            if layer._forward_hooks or layer._forward_pre_hooks:
                self.canon = None
                return False
            held[f"_tunify_w{i}"], held[f"_tunify_b{i}"] = layer.shared_kernels(canon)
        for j, ((fn, _, extra), stack) in enumerate(zip(self.folds, self.stacks)):
            held[f"_tunify_c{j}"] = fn(stack, canon, *extra)
        if self.parts and not self.part_watch.refill(canon):
            self.canon = None
            return False
        # What _valid compares against; the stacks are held here, so their identities stay theirs.
        self.params = [layer._parameters for layer in self.layers]
        self.refs = [t for d in self.params for t in (d["weights"], d.get("biases"))]
        self.hooks = [(layer._forward_hooks, layer._forward_pre_hooks) for layer in self.layers]
        self.watch = [t for t in self.refs + self.stacks + [held[n] for n in self.slots] if t is not None]
        self.versions = [t._version for t in self.watch]
        self.gen, self.canon = cache_generation(), canon
        return True

    def run(self, args: tuple, kwargs: dict, coeffs: Tensor, coeffs_input: str) -> Optional[Any]:
        """The output at shared ``coeffs``, or None when this call must take the layers.

        One thread at a time: the held kernels are one λ's for the whole forward, so a second
        thread calling meanwhile (at any λ) takes the layers, whose memos are thread-safe."""
        if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
            return None  # hooks meant for every module, the bypassed ones included
        if not self.lock.acquire(blocking=False):
            return None
        try:
            canon = canonical_coeffs(coeffs)
            if (canon is not self.canon or not self._valid()) and not self._refill(canon):
                return None
            return self._call(args, kwargs, coeffs, coeffs_input)
        finally:
            self.lock.release()

    def _call(self, args: tuple, kwargs: dict, coeffs: Tensor, coeffs_input: str) -> Any:
        # forward itself: the copy is private and hook-free, and Module.__call__ costs ~5 µs
        return self.gm.forward(*args, **kwargs, **{coeffs_input: coeffs})

    # Never copied or pickled: the held kernels belong to the original's stacks.
    def __deepcopy__(self, memo: dict) -> None:
        return None

    def __reduce__(self):
        return (type(None), ())


class FastWhole(FastShared):
    """For a network fx could not trace at all (the module path throughout): the whole network
    as one ``BakedPart``, checked and refilled as the fast graph checks its blocks."""

    def __init__(self, model: nn.Module) -> None:  # noqa: super().__init__ builds a graph; none here
        self.parts = [BakedPart(model)]
        self.part_watch = PartWatch(self.parts)
        # No bypassed layers or folds: FastShared's checks and refill run over empty lists.
        self.layers, self.folds, self.stacks, self.slots, self.held = [], [], [], [], {}
        self.canon: Optional[Tensor] = None
        self.lock = threading.Lock()

    def _call(self, args: tuple, kwargs: dict, coeffs: Tensor, coeffs_input: str) -> Any:
        return self.parts[0].module.forward(*args, **kwargs)  # private and hook-free, as above


def fast_for(graph: Optional[fx.GraphModule], model: nn.Module) -> Optional[FastShared]:
    """The fast path of a model at a shared λ: its traced graph's (FastShared), or for an
    untraced network the whole network baked (FastWhole); None when there is nothing to gain."""
    if graph is not None:
        fast = FastShared(graph)
        return fast if fast.layers or fast.folds or fast.parts else None
    return FastWhole(model) if bakeable(model) and not _hooked(model) else None
