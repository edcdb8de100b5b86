"""Module hooks through conversion: a hook must run wherever the module it was put on runs.

Three places could lose one without a word. A converted layer's hooks would stay on its
``base_layer``, which the plain path never calls (:func:`move_hooks` takes them to the tunable
layer, and ``bake`` back to the plain one); a block fx inlines has no call of its own in the
graph (the tracer keeps a hooked module whole: :func:`has_hooks`; a hook added after tracing
sends calls to the module path: :func:`inlined_hook_dicts`); and old-style weight_norm hooks
keep a computed weight that deepcopy refuses (:func:`hook_memo`).
"""
from __future__ import annotations

from typing import Any, Optional

from torch import Tensor, nn

__all__ = ["HOOK_DICTS", "has_hooks", "hook_memo", "inlined_hook_dicts", "move_hooks"]

HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def has_hooks(module: nn.Module) -> bool:
    """Whether ``module`` has forward or backward hooks of its own: a graph that inlines it
    cannot run them, so it is kept whole (called as a module)."""
    return any(getattr(module, d, None) for d in HOOK_DICTS)


_MOVED = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
          "_backward_hooks", "_backward_pre_hooks")


def move_hooks(source: nn.Module, target: nn.Module) -> nn.Module:
    """Forward and backward hooks of ``source`` move to ``target``; returns ``target``.

    A hook on an original layer (a feature tap, a gradient monitor) must move to the tunable
    layer, which is what the network calls now: left on ``base_layer``, which the plain path
    never calls, it would be dropped silently; ``bake`` moves it back to the plain layer.
    (Pre-hooks are refused before: lookup_layer.)"""
    for attr in _MOVED:
        hooks = getattr(source, attr, None)
        if hooks:
            getattr(target, attr).update(hooks)
            hooks.clear()
    if getattr(source, "_is_full_backward_hook", None) is not None:
        target._is_full_backward_hook = source._is_full_backward_hook
        source._is_full_backward_hook = None
    return target


def hook_memo(model: nn.Module, memo: Optional[dict] = None) -> dict:
    """A deepcopy memo for ``model``: old-style weight_norm/spectral_norm keep a computed
    (non-leaf) weight as a plain attribute, which deepcopy refuses; the copy gets a detached
    clone, which its hook recomputes on the next forward anyway."""
    memo = {} if memo is None else memo
    for module in model.modules():
        for hook in module._forward_pre_hooks.values():
            tensor = module.__dict__.get(getattr(hook, "name", None) or "")
            if isinstance(tensor, Tensor) and id(tensor) not in memo:
                memo[id(tensor)] = tensor.detach().clone()
    return memo


def inlined_hook_dicts(gm: Any, model: nn.Module) -> list:
    """The hook dicts of the modules ``gm`` inlined (the root and every module not inside one
    it calls): the tracer kept modules hooked at conversion whole, so any entry in these was
    registered after tracing and the graph would skip it."""
    called = {n.target for n in gm.graph.nodes if n.op == "call_module"}
    inlined = [m for name, m in model.named_modules()
               if not any(name == t or name.startswith(t + ".") for t in called)]
    return [getattr(m, d) for m in inlined for d in HOOK_DICTS if hasattr(m, d)]
