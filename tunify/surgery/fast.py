"""The traced graph at a shared λ, with its convs and linears called as plain ops.

At a shared λ without autograd every tunable layer already reuses its mixed kernels
(layers/cache.py), but each call still goes through the layer's Python: the coefficient check,
the memo's validity checks, the dispatch to the plain op; a few µs a layer, which on a small
input (ConvNeXt-atto at 64², ~50 layers) is several percent of the forward. ``FastShared`` is a
copy of the rewritten graph in which every plain ``TunableConv2d`` / ``TunableLinear`` call is
``F.conv2d`` / ``F.linear`` on kernels mixed once per λ, as the baked model would run them.
The other nodes (weight-like tensors, functional calls, layers with their own forward) are
the same calls as in the graph, reusing their memos.

Used only where the memo would be: no autograd, a shared λ of plain tensors, not compiling or
tracing. Before each call it checks, for every layer it bypasses, that the kernel stacks are the
same objects at the same versions (no optimizer step, in-place edit or load since), that the
cache generation is the same (``.to()``, ``load_state_dict``), that the kernels it holds were
not written to, and that the layer has no hooks (a hook registered later must run: the layer
is then called as a module again). It is built on the second such call, so a model called once
per λ never pays for it; it is dropped by ``.to()`` and never copied or pickled.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import TunableConv2d, TunableLinear
from ..layers.cache import cache_generation, canonical_coeffs

__all__ = ["FastShared", "fast_eligible"]


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


class FastShared:
    """A plain-op copy of a TunableModel's traced graph (see the module docstring)."""

    def __init__(self, gm: fx.GraphModule) -> None:
        graph = fx.Graph()
        env: Dict[fx.Node, fx.Node] = {}
        self.layers: List[nn.Module] = []  # the bypassed layers, slot i ↔ attributes _w{i}, _b{i}
        for node in gm.graph.nodes:
            module = gm.get_submodule(node.target) if node.op == "call_module" else None
            if module is not None and _plain_layer(module) and len(node.args) == 1 and set(node.kwargs) == {"coeffs"}:
                env[node] = self._plain_call(graph, module, env[node.args[0]])
            else:
                env[node] = graph.node_copy(node, lambda n: env[n])
        root = {n.target: _lookup(gm, n.target) for n in graph.nodes if n.op in ("call_module", "get_attr")
                and not n.target.startswith("_tunify_")}
        for i, layer in enumerate(self.layers):
            root[f"_tunify_w{i}"] = torch.empty(0)
            root[f"_tunify_b{i}"] = torch.empty(0)
        self.gm = fx.GraphModule(root, graph, class_name="FastShared")
        for i in range(len(self.layers)):  # plain attributes, read by the generated code as self._tunify_w{i}
            self.gm._buffers.pop(f"_tunify_w{i}", None)
            self.gm._buffers.pop(f"_tunify_b{i}", None)
            self.gm.__dict__[f"_tunify_w{i}"] = self.gm.__dict__[f"_tunify_b{i}"] = None
        self.canon: Optional[Tensor] = None
        self.refs: List[Optional[Tensor]] = []
        self.stamp: Tuple = ()

    def _plain_call(self, graph: fx.Graph, layer: nn.Module, x: fx.Node) -> fx.Node:
        i = len(self.layers)
        self.layers.append(layer)
        w, b = graph.get_attr(f"_tunify_w{i}"), graph.get_attr(f"_tunify_b{i}")
        if isinstance(layer, TunableConv2d):
            base = layer.base_layer
            return graph.call_function(F.conv2d, (x, w, b, base.stride, base.padding, base.dilation, base.groups))
        return graph.call_function(F.linear, (x, w, b))

    def _current(self) -> Tuple:
        """What the held kernels were mixed from (ids and versions of the stacks, the kernels' own
        versions, the cache generation, any hooks); equal to ``stamp`` means they are still valid.
        The stacks themselves are kept in ``self.refs`` while stamped, so their ids stay theirs."""
        held = self.gm.__dict__
        out: List[Any] = [cache_generation()]
        for i, layer in enumerate(self.layers):
            params = layer._parameters
            w, b, hw, hb = params["weights"], params.get("biases"), held[f"_tunify_w{i}"], held[f"_tunify_b{i}"]
            out += [id(w), w._version, id(b), -1 if b is None else b._version, hw._version,
                    -1 if hb is None else hb._version, bool(layer._forward_hooks or layer._forward_pre_hooks)]
        return tuple(out)

    def _refill(self, canon: Tensor) -> bool:
        """Mix every bypassed layer at ``canon`` (through its own memo); False when one has hooks."""
        held = self.gm.__dict__
        refs = []
        for i, layer in enumerate(self.layers):
            if layer._forward_hooks or layer._forward_pre_hooks:
                self.canon = None
                return False
            held[f"_tunify_w{i}"], held[f"_tunify_b{i}"] = layer._shared_kernels(canon)
            refs += [layer._parameters["weights"], layer._parameters.get("biases")]
        self.canon, self.refs, self.stamp = canon, refs, self._current()
        return True

    def run(self, args: tuple, kwargs: dict, coeffs: Tensor, coeffs_input: str) -> Optional[Any]:
        """The graph's output at shared ``coeffs``, or None when this call must take the layers."""
        if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
            return None  # hooks meant for every module, the bypassed ones included
        canon = canonical_coeffs(coeffs)
        if canon is not self.canon or self._current() != self.stamp:
            if not self._refill(canon):
                return None
        return self.gm(*args, **kwargs, **{coeffs_input: coeffs})

    # Never copied or pickled: the held kernels belong to the original's stacks.
    def __deepcopy__(self, memo: dict) -> None:
        return None

    def __reduce__(self):
        return (type(None), ())
