"""Symbolic tracing that finds, by itself, what cannot be traced.

``trace`` runs torch.fx; when tracing fails, the innermost module being traced at the
failure is kept whole (a leaf) and tracing starts again, until it succeeds or the failure
sits in the model's own forward (then the caller falls back to the module path). SwinIR's
``SwinTransformerBlock`` (``if self.input_resolution == x_size``) is found this way.

Forward arguments with defaults (``def forward(self, x, mode=None)``) are traced at their
default values (fx would otherwise pass a proxy, and ``if mode is None`` would take the wrong
branch); :func:`traced_signature` says which arguments a graph call may carry, and the model
runs calls that give the others on the module path.

A forward that branches on ``self.training`` (DropPath's ``drop_path(x, p, self.training)``
with p > 0, an ``if self.training:`` branch) is traced at one mode and keeps it: a model
converted in training mode would drop paths at random in eval. While tracing, every module's
flag is a probe that records the modules whose flag was actually consulted, and with what
value: the graph holds for those flags only (:func:`trace_modes` traces the other mode too). A
flag never consulted (``drop_path`` at p = 0) ties the graph to nothing.

Tracing runs a model's forward with proxies; forwards that assign attributes
(SwinIR's ``self.mean = self.mean.type_as(x)``) would leave proxies behind, so every
module's attributes are snapshotted and restored around each attempt.
"""
from __future__ import annotations

import inspect
from typing import Any, Dict, List, Set, Tuple

import torch.fx as fx
from torch import nn

from .hooks import has_hooks

__all__ = ["Modes", "TraceFailure", "trace", "trace_modes", "default_args", "traced_signature"]


class TraceFailure(RuntimeError):
    """The model's own forward does not trace."""


def _notrace_from_timm() -> Tuple[Tuple[type, ...], Tuple[Any, ...]]:
    try:  # timm marks modules and functions that must not be traced into
        from timm.layers import _fx as tfx
    except Exception:  # timm absent or reorganised: automatic leaf finding still works
        return (), ()
    return tuple(getattr(tfx, "_leaf_modules", ())), tuple(getattr(tfx, "_autowrap_functions", ()))


class _LeafFindingTracer(fx.Tracer):
    def __init__(self, leaf_ids: Set[int], leaf_types: Tuple[type, ...], autowrap: Tuple[Any, ...]):
        super().__init__(autowrap_functions=autowrap)
        self.leaf_ids, self.leaf_types = leaf_ids, leaf_types
        self.failed: Any = None

    def create_args_for_root(self, root_fn: Any, is_module: bool, concrete_args: Any = None) -> Any:
        # The root's arguments with defaults get their default, not a proxy: `if mode is None`
        # then takes the branch a plain call takes. Their placeholders stay (unused).
        root_fn, args = super().create_args_for_root(root_fn, is_module, concrete_args)
        defaults = default_args(self.root) if is_module else {}
        args = [
            defaults[a.node.target] if isinstance(a, fx.Proxy) and a.node.target in defaults else a
            for a in args
        ]
        return root_fn, args

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if id(m) in self.leaf_ids or (self.leaf_types and isinstance(m, self.leaf_types)):
            return True
        if has_hooks(m):  # inlined, its hooks (a feature tap on a block) would never run
            return True
        return super().is_leaf_module(m, qualname)

    def create_arg(self, a: Any) -> Any:
        if isinstance(a, _ModeProbe):  # F.dropout(x, p, training=self.training) handed to a graph node
            return bool(a)
        return super().create_arg(a)

    def call_module(self, m: nn.Module, forward: Any, args: Any, kwargs: Any) -> Any:
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed is None:  # the first handler to see it is the innermost module
                self.failed = m
            raise


class _ModeProbe:
    """A module's ``training`` flag while tracing: reads as the flag, and records the module
    whenever code asks for its truth (``if self.training``, ``F.dropout(..., training=...)``)."""

    __slots__ = ("module", "flag", "consulted")

    def __init__(self, module: nn.Module, flag: bool, consulted: Dict[int, nn.Module]):
        self.module, self.flag, self.consulted = module, flag, consulted

    def __bool__(self) -> bool:
        self.consulted[id(self.module)] = self.module
        return self.flag

    def __eq__(self, other: Any) -> bool:
        return bool(self) == other

    __hash__ = None  # type: ignore[assignment]


def _probe_modes(model: nn.Module, consulted: Dict[int, nn.Module]) -> None:
    for m in model.modules():  # put back by _restore, as every attribute a trace touches
        m.__dict__["training"] = _ModeProbe(m, bool(m.__dict__.get("training", True)), consulted)


def _snapshot(model: nn.Module) -> List[Tuple[nn.Module, Dict[str, Any], Dict, Dict, Dict]]:
    return [
        (m, dict(m.__dict__), dict(m._parameters), dict(m._buffers), dict(m._modules)) for m in model.modules()
    ]


def _restore(snap: List[Tuple[nn.Module, Dict[str, Any], Dict, Dict, Dict]]) -> None:
    for m, attrs, params, buffers, modules in snap:
        for key in list(m.__dict__):
            if key not in attrs and isinstance(m.__dict__[key], (fx.Proxy, _ModeProbe)):
                del m.__dict__[key]
        for key, value in attrs.items():
            if m.__dict__.get(key) is not value and key not in ("_parameters", "_buffers", "_modules"):
                m.__dict__[key] = value
        for live, saved in ((m._parameters, params), (m._buffers, buffers), (m._modules, modules)):
            live.update(saved)


def default_args(model: nn.Module) -> Dict[str, Any]:
    """{name: default} of the forward's arguments that have a default (not *args/**kwargs)."""
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {
        p.name: p.default
        for p in params
        if p.default is not inspect.Parameter.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def traced_signature(model: nn.Module) -> Tuple[str, ...]:
    """Names of the arguments a traced graph takes as inputs, in order (those with defaults
    were fixed at their defaults while tracing; a call that gives them must not use the graph)."""
    fixed = default_args(model)
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return ()
    return tuple(p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in fixed)


Modes = Tuple[Tuple[nn.Module, bool], ...]  # the training flags a graph was traced at (consulted ones only)


def trace(model: nn.Module, leaf_ids: Set[int], max_attempts: int = 32) -> Tuple[fx.Graph, List[Tuple[str, str]], Modes]:
    """Trace ``model``, keeping modules in ``leaf_ids`` (the layers to convert) as calls.

    Returns the graph, the (type, reason) of each module type found untraceable, and the
    training flags the forward consulted (the graph is valid while they hold).
    Raises TraceFailure when the model's own forward cannot be traced.
    """
    timm_leaves, autowrap = _notrace_from_timm()
    leaf_types: List[type] = list(timm_leaves)
    found: List[Tuple[str, str]] = []
    snap = _snapshot(model)
    for _ in range(max_attempts):
        tracer = _LeafFindingTracer(leaf_ids, tuple(leaf_types), autowrap)
        consulted: Dict[int, nn.Module] = {}
        try:
            _probe_modes(model, consulted)
            graph = tracer.trace(model)
            return graph, found, tuple((m, m.__dict__["training"].flag) for m in consulted.values())
        except Exception as exc:
            culprit = tracer.failed
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if culprit is None or type(culprit) in leaf_types:
                raise TraceFailure(f"{type(model).__name__}.forward: {type(exc).__name__}: {message}") from exc
            leaf_types.append(type(culprit))
            found.append((type(culprit).__name__, f"{type(exc).__name__}: {message[:120]}"))
        finally:
            _restore(snap)
    raise TraceFailure(f"gave up after {max_attempts} attempts; last untraceable: {found[-1][0]}")


def trace_modes(model: nn.Module, leaf_ids: Set[int]) -> Tuple[List[Tuple[fx.Graph, Modes]], List[Tuple[str, str]]]:
    """One graph per mode the forward distinguishes: traced as the model is, and again with
    the consulted flags flipped when there were any. Returns [(graph, modes)] and the leaves."""
    graph, found, modes = trace(model, leaf_ids)
    graphs = [(graph, modes)]
    if modes:
        try:
            for m, flag in modes:
                m.training = not flag
            other, _, other_modes = trace(model, leaf_ids)
            graphs.append((other, other_modes))
        except TraceFailure:  # that mode runs the module path
            pass
        finally:
            for m, flag in modes:
                m.training = flag
    return graphs, found
