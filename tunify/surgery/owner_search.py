"""Finding, at run time, a module to run by rows when a per-sample call fails inside it.

Some modules make weight-like tensors out of layers: DAT's and CRAFT's ``DynamicPosBias``
runs tunable linears on a (L, 2) grid of coordinates that has no batch axis, and its output is
indexed like a bias table; HVICIDNet reads a child's tensor in the parent's forward. Per-sample
kernels cannot follow those rows (the layer raises a ValueError), and before this the whole
model ran once per distinct λ row. Instead the failing call is run again with every module of
the model tracking which ones are executing; the innermost one that is neither a tunable layer
nor the root becomes an owner (``layers.owner_split``), or, when that is already an owner whose
input did not fold by samples, the next one out. Each new owner is then proved like any other;
after a few steps without success the model splits whole, as before.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

from torch import nn
from torch.nn.utils import parametrize

from ..layers import TunableLayer

__all__ = ["executing_at_failure", "next_owner"]


def executing_at_failure(model: nn.Module, run: Callable[[], object]) -> List[nn.Module]:
    """The modules of ``model`` still executing when ``run()`` raised, outermost first
    (empty when it did not raise). Hooks are on ``model``'s modules only, for the
    one call: other models and threads are not watched."""
    stack: List[nn.Module] = []

    def enter(module: nn.Module, args: tuple) -> None:
        stack.append(module)

    def leave(module: nn.Module, args: tuple, out: object) -> None:  # None: the output stays
        if stack and stack[-1] is module:
            stack.pop()

    handles = []
    for module in model.modules():
        handles.append(module.register_forward_pre_hook(enter))
        handles.append(module.register_forward_hook(leave))
    try:
        run()
    except Exception:  # a layer's ValueError, or a shape error in code fx could not see
        return list(stack)
    finally:
        for h in handles:
            h.remove()
    return []


def next_owner(model: nn.Module, owners: List[Tuple[str, nn.Module]], stack: List[nn.Module]) -> Optional[Tuple[str, nn.Module]]:
    """(name, module) to run by rows next, from the executing ``stack`` (outermost first), or
    None when there is nothing left to try but the whole model."""
    names = {id(m): n for n, m in model.named_modules()}
    owned = {id(m) for _, m in owners}
    # Not the root (by rows it is the whole-model split), not a tunable layer or anything in
    # one, not a parametrization (reading a tensor runs it).
    candidates = [m for m in stack if m is not model and id(m) in names
                  and not isinstance(m, (TunableLayer, parametrize.ParametrizationList))
                  and not any(isinstance(p, TunableLayer) for p in stack[: stack.index(m)])]
    if not candidates:
        return None
    inner = candidates[-1]
    if id(inner) in owned:  # its own by-rows run failed (input not folded by samples): one out
        outer = [m for m in candidates[:-1] if id(m) not in owned]
        if not outer:
            return None
        inner = outer[-1]
    return names[id(inner)], inner
