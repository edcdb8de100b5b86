"""Forwards that write a layer's weight (re-parameterised blocks in eval mode).

SPAN's ``Conv3XC`` computes ``eval_conv.weight.data = ...`` from its other kernels on every
eval forward. A traced graph loses such writes, and a tunable layer's ``weight`` is a mixture
made per call, so a write into it is lost too: the output would be silently wrong. The write's
target therefore stays a plain layer (skipped with the reason), the writing module is kept whole
(its forward runs as written, reading its other layers' mixed kernels).

One written weight cannot hold one kernel per sample, and the fused kernel is a product of
the block's kernels, not linear in λ. But such blocks keep their unfused branch for training
(SPAN's: 1x1, 3x3, 1x1 and a skip, equal to the fused 3x3 up to rounding), in which every
layer is an ordinary tunable one. So a per-sample λ runs the writers with their own
``training`` flag set (:func:`unfused`; their children keep theirs), and the model checks the
first per-sample call of each kind against each λ row run alone on the fused branch
(row_proof.py). Where the two differ, every later per-sample call runs by rows.

Found by reading the source of each module class (methods other than ``__init__`` and
``*init*`` helpers): assignments to ``self.<path>.weight`` / ``.bias`` / ``.data`` and in-place
calls (``copy_``, ``mul_``, ...) on them.
"""
from __future__ import annotations

import ast
import contextlib
import functools
import inspect
import textwrap
import threading
from typing import Iterator, List, Optional, Sequence, Tuple

from torch import nn

__all__ = ["WeightWrite", "find_weight_writes", "keep_writes_exact", "unfused"]

_INPLACE = {"copy_", "set_", "fill_", "zero_", "mul_", "add_", "sub_", "div_", "clamp_", "normal_", "uniform_"}

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


@functools.lru_cache(maxsize=None)
def class_methods(cls: type) -> List[ast.FunctionDef]:
    """The methods defined in ``cls`` and its non-torch bases (a subclass runs its base's
    ``update_params``), without ``__init__`` and ``*init*`` helpers; [] where no source exists."""
    found: List[ast.FunctionDef] = []
    for klass in cls.__mro__:
        if klass is object or klass.__module__.startswith("torch."):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError, IndentationError):
            continue
        found += [fn for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                  and "init" not in fn.name]
    return found


@functools.lru_cache(maxsize=None)
def _written_paths(cls: type) -> List[Tuple[str, str]]:
    """(submodule path whose weight is written, method) for one class and the classes it
    inherits from; "" is the module itself."""
    found = []
    for fn in class_methods(cls):
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
    out: List[WeightWrite] = []
    for name, module in model.named_modules():
        cls = type(module)
        if cls.__module__.startswith("torch."):
            continue
        for path, method in _written_paths(cls):  # parsed once per class
            try:
                target = module.get_submodule(path) if path else module
            except AttributeError:
                continue
            if not isinstance(getattr(target, "weight", None), nn.Parameter):
                continue
            full = ".".join(p for p in (name, path) if p)
            out.append((name, full, f"{cls.__name__}.{method}"))
    return out


def keep_writes_exact(model: nn.Module, plan) -> Tuple[set, List[str], List[str]]:
    """Take the layers ``model``'s forwards write out of ``plan`` (skipped, with the reason).

    Returns (ids of the writing modules, to keep whole when tracing; their names, which a
    per-sample λ runs :func:`unfused`; what each writes, for the report).
    """
    from .report import Skipped  # report is a leaf module; imported here to keep this file standalone

    writes = find_weight_writes(model)
    by_id = {id(m): key for key, (_, m, _) in plan.layers.items()}
    writers, names, reasons, done = set(), [], [], set()
    for writer, written, where in writes:
        writers.add(id(model.get_submodule(writer)))
        if writer not in names:
            names.append(writer)
        if written in done:
            continue
        done.add(written)
        target = model.get_submodule(written)
        reasons.append(f"{where} writes {written}'s weight in the forward")
        if id(target) in by_id:
            del plan.layers[by_id.pop(id(target))]
            plan.skipped.append(Skipped(written, type(target).__name__,
                                        f"its weight is rewritten by {where} in the forward; kept plain so the write counts"))
    return writers, names, reasons


# Flags are the modules' own state: two threads flipping them at once would restore each
# other's. A per-sample call through unfused writers holds this for its whole run.
_FLAG_LOCK = threading.RLock()


@contextlib.contextmanager
def unfused(model: nn.Module, names: Sequence[str]) -> Iterator[None]:
    """Run the named writer modules on their training branch: their own ``training`` flag
    is set (not their children's: norms and dropout keep the model's mode), restored after."""
    if not names:
        yield
        return
    with _FLAG_LOCK:
        modules = [model.get_submodule(n) for n in names]
        before = [m.training for m in modules]
        try:
            for m in modules:
                m.training = True
            yield
        finally:
            for m, flag in zip(modules, before):
                m.training = flag
