"""Choosing what to convert: ``targets=`` / ``exclude=`` and the default policy.

A target is a name (exact, or a dotted suffix: ``"conv1"`` matches ``"blocks.0.conv1"``;
a name also selects everything under a module of that name), a regex (a compiled pattern,
or a string with regex characters, matched in full), a module type, or a predicate
``fn(name, module) -> bool``. Weight-like tensors are matched by their own name
(``"blocks.0.beta"``) and called with their owner module.
"""
from __future__ import annotations

import difflib
import re
from typing import Any, Callable, Iterable, List, Optional, Sequence, Union

from torch import nn

__all__ = ["TargetSpec", "TargetMatcher"]

TargetSpec = Union[None, str, "re.Pattern[str]", type, Callable[[str, nn.Module], bool], Sequence[Any]]
_REGEX_CHARS = set("*?[]()|^$+\\{}")


def _ancestors(name: str) -> List[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


class TargetMatcher:
    """Compiled ``targets``/``exclude`` spec; ``match`` says how a name is selected."""

    def __init__(self, spec: TargetSpec, role: str = "targets") -> None:
        self.role = role
        items = [] if spec is None else list(spec) if isinstance(spec, (list, tuple, set)) else [spec]
        self.items: List[Any] = []
        for item in items:
            if isinstance(item, str) and _REGEX_CHARS & set(item):
                item = re.compile(item)
            if not isinstance(item, (str, re.Pattern, type)) and not callable(item):
                raise TypeError(
                    f"{role} entries must be names, regexes, module types or fn(name, module) "
                    f"predicates; got {item!r} of type {type(item).__name__}"
                )
            self.items.append(item)
        self.used = [False] * len(self.items)

    def __bool__(self) -> bool:
        return bool(self.items)

    def match(self, name: str, module: nn.Module) -> Optional[str]:
        """'self' if an entry selects ``name`` itself, 'ancestor' if it selects a module
        above it, None if nothing does."""
        how = None
        for i, item in enumerate(self.items):
            hit = None
            if isinstance(item, str):
                for a in _ancestors(name):
                    if a == item or a.endswith("." + item):
                        hit = "self" if a == name else "ancestor"
            elif isinstance(item, re.Pattern):
                for a in _ancestors(name):
                    if item.fullmatch(a):
                        hit = "self" if a == name else "ancestor"
            elif isinstance(item, type):
                hit = "self" if isinstance(module, item) else None
            elif item(name, module):
                hit = "self"
            if hit:
                self.used[i] = True
                how = "self" if hit == "self" or how == "self" else hit
        return how

    def check_used(self, candidates: Iterable[str], model_name: str) -> None:
        """Raise for a name or regex entry that selected nothing, with the closest names."""
        names = sorted(set(candidates))
        pool = sorted(set(names) | {n.rsplit(".", 1)[-1] for n in names})
        for item, used in zip(self.items, self.used):
            if used or not isinstance(item, (str, re.Pattern)):
                continue
            text = item if isinstance(item, str) else item.pattern
            close = difflib.get_close_matches(text, pool, n=5, cutoff=0.5)
            hint = f" Did you mean: {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(
                f"{self.role} entry {text!r} matches no convertible layer or weight-like tensor "
                f"of {model_name}.{hint} Some of its names: {', '.join(names[:8])}"
                f"{', ...' if len(names) > 8 else ''} (tunify.list_targets(model) lists them all)."
            )
