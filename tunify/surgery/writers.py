"""Forwards that write a layer's weight (re-parameterised blocks in eval mode).

SPAN's ``Conv3XC`` computes ``eval_conv.weight.data = ...`` from its other kernels on every
eval forward. A traced graph loses such writes, and a tunable layer's ``weight`` is a mixture
made per call, so a write into it is lost too: the output would be silently wrong. The write's
target therefore stays a plain layer (skipped with the reason), the writing module is kept whole
(its forward runs as written, reading its other layers' mixed kernels), and a per-sample λ runs
each distinct row on the shared path (one written weight cannot hold one kernel per sample).

Found by reading the source of each module class (methods other than ``__init__`` and
``*init*`` helpers): assignments to ``self.<path>.weight`` / ``.bias`` / ``.data`` and in-place
calls (``copy_``, ``mul_``, ...) on them.
"""
from __future__ import annotations

import ast
import inspect
import textwrap
from typing import Dict, List, Optional, Tuple

from torch import nn

__all__ = ["WeightWrite", "find_weight_writes"]

_INPLACE = {"copy_", "set_", "fill_", "zero_", "mul_", "add_", "sub_", "div_", "clamp_", "normal_", "uniform_"}
_TENSOR_ATTRS = {"weight", "bias", "data"}

WeightWrite = Tuple[str, str, str]  # (writer module name, written layer name, "Class.method")


def _chain(node: ast.AST) -> Optional[List[str]]:
    """``self.conv[0].weight.data`` → ["conv", "0", "weight", "data"]; None if not on self."""
    parts: List[str] = []
    while True:
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            parts.append(str(node.slice.value))
            node = node.value
        elif isinstance(node, ast.Name) and node.id == "self":
            return parts[::-1]
        else:
            return None


def _written_paths(cls: type) -> List[Tuple[str, str]]:
    """(submodule path whose weight is written, method) for one class; "" is the module itself."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError, IndentationError):
        return []
    found = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or "init" in fn.name:
            continue
        for node in ast.walk(fn):
            targets = []
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _INPLACE:
                targets = [node.func.value]
            for target in targets:
                chain = _chain(target)
                if not chain:
                    continue
                while chain and chain[-1] == "data":
                    chain = chain[:-1]
                if chain and chain[-1] in ("weight", "bias"):
                    found.append((".".join(chain[:-1]), fn.name))
    return found


def find_weight_writes(model: nn.Module) -> List[WeightWrite]:
    """Every (writer, written layer, where) in ``model`` whose written layer is a real module."""
    cache: Dict[type, List[Tuple[str, str]]] = {}
    out: List[WeightWrite] = []
    for name, module in model.named_modules():
        cls = type(module)
        if cls.__module__.startswith("torch."):
            continue
        if cls not in cache:
            cache[cls] = _written_paths(cls)
        for path, method in cache[cls]:
            try:
                target = module.get_submodule(path) if path else module
            except AttributeError:
                continue
            if not isinstance(getattr(target, "weight", None), nn.Parameter):
                continue
            full = ".".join(p for p in (name, path) if p)
            out.append((name, full, f"{cls.__name__}.{method}"))
    return out


def keep_writes_exact(model: nn.Module, plan) -> Tuple[set, List[str]]:
    """Take the layers ``model``'s forwards write out of ``plan`` (skipped, with the reason).

    Returns (ids of the writing modules, to keep whole when tracing; the per-sample split
    reasons: one written weight holds one kernel, so a per-sample λ runs row by row).
    """
    from .report import Skipped  # report is a leaf module; imported here to keep this file standalone

    writes = find_weight_writes(model)
    by_id = {id(m): key for key, (_, m, _) in plan.layers.items()}
    writers, reasons, done = set(), [], set()
    for writer, written, where in writes:
        writers.add(id(model.get_submodule(writer)))
        if written in done:
            continue
        done.add(written)
        target = model.get_submodule(written)
        reasons.append(f"{where} writes {written}'s weight in the forward")
        if id(target) in by_id:
            del plan.layers[by_id.pop(id(target))]
            plan.skipped.append(Skipped(written, type(target).__name__,
                                        f"its weight is rewritten by {where} in the forward; kept plain so the write counts"))
    return writers, reasons
