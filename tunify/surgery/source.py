"""What a module class's own source says: parsed once per class, over the classes it inherits.

The rewriter reads source where a trace cannot see: which layers a forward writes
(writers.py), and which forwards branch on ``self.training`` (tracer.py), which a traced graph
would fix at the mode it was traced in.
"""
from __future__ import annotations

import ast
import functools
import inspect
import textwrap
from typing import List

__all__ = ["class_methods", "reads_training"]


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
def reads_training(cls: type) -> bool:
    """Whether a method of ``cls`` (other than ``train``/``eval``) reads ``self.training``:
    DropPath's ``drop_path(x, p, self.training)``, ``if self.training:`` branches."""
    for fn in class_methods(cls):
        if fn.name in ("train", "eval"):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Attribute) and node.attr == "training" and isinstance(node.ctx, ast.Load) \
                    and isinstance(node.value, ast.Name) and node.value.id == "self":
                return True
    return False
