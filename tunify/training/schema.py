"""Typed, validated configs from plain dicts (YAML), with errors people can act on.

``parse(Cls, data, where)`` builds a dataclass from a mapping: unknown keys fail with a
did-you-mean and the list of valid keys, values are checked against the field types
(``int``, ``float``, ``str``, ``bool``, ``Literal``, ``Optional``, ``List``, ``Dict``,
nested dataclasses), ints are accepted where floats are expected, and nothing is evaluated.
YAML needs ``1.0e-4`` to read a float; :data:`RecipeLoader` also reads ``1e-4``.
"""
from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any, Dict, List, Mapping, Union

import yaml

from .._text import did_you_mean

__all__ = ["RecipeLoader", "parse", "did_you_mean", "set_dotted", "load_yaml_text", "yaml_error_message"]


class RecipeLoader(yaml.SafeLoader):
    """SafeLoader that also reads exponent floats without a dot (1e-4, 5E3)."""


RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml_text(text: str, source: str = "") -> Any:
    """Parse YAML (exponent floats included); with ``source``, a syntax error becomes a
    ValueError naming the file, line and column."""
    if not source:
        return yaml.load(text, Loader=RecipeLoader)
    try:
        return yaml.load(text, Loader=RecipeLoader)
    except yaml.YAMLError as exc:
        raise ValueError(yaml_error_message(exc, source)) from None


def yaml_error_message(exc: "yaml.YAMLError", source: str) -> str:
    """``recipe.yaml, line 4, column 7: mapping values are not allowed here (while scanning ...)``."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{source}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else source
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    return f"{where}: not valid YAML: {problem}" + (f" ({context})" if context else "")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check(value: Any, tp: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Union:
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _check(value, option, where)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise ValueError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {_type_name(tp)}")
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{where}: {value!r} is not one of {list(args)}.{did_you_mean(str(value), map(str, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        return parse(tp, value, where)
    if origin in (list, List):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        return [_check(v, args[0] if args else Any, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise ValueError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        return value
    raise TypeError(f"{where}: unsupported schema type {tp!r}")


def parse(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from mapping ``data``; ``where`` names it in errors."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a mapping of {cls.__name__} keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise ValueError(
                f"{where}: unknown key {key!r}.{did_you_mean(str(key), fields)} Valid keys: {', '.join(fields)}."
            )
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _check(data[name], hints[name], f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"{where}: missing required key {name!r}")
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if callable(check):
        check(where)
    return obj


def _index(node: list, key: str, dotted: str, done: str, append_ok: bool) -> int:
    if not key.isdigit():
        raise ValueError(f"--set {dotted}: {done or 'the recipe'} is a list, so {key!r} must be an index "
                         f"(0 to {len(node) - 1})")
    index, limit = int(key), len(node) if append_ok else len(node) - 1
    if index > limit:
        extra = f", or {len(node)} to append" if append_ok else ""
        raise ValueError(f"--set {dotted}: {done} has {len(node)} item{'s' if len(node) != 1 else ''}, "
                         f"so index {index} is past its end (use 0 to {len(node) - 1}{extra})")
    return index


def set_dotted(data: Dict[str, Any], dotted: str, value: Any) -> None:
    """``set_dotted(d, "optim.lr", 1e-3)``; list items by index (``objectives.0.name``; the
    index one past the end appends). A missing mapping key is created (the recipe's schema
    then names it if it is unknown); an index past a list or a key under a plain value fails
    naming the path."""
    keys = dotted.split(".")
    if not all(keys):
        raise ValueError(f"--set {dotted}: empty key in the dotted path")
    node: Any = data
    for i, key in enumerate(keys[:-1]):
        done = ".".join(keys[:i])
        if isinstance(node, list):
            node = node[_index(node, key, dotted, done, append_ok=False)]
            continue
        if not isinstance(node, dict):
            raise ValueError(f"--set {dotted}: {done} is {node!r}, not a mapping, so it has no key {key!r}")
        if node.get(key) is None:
            node[key] = [] if keys[i + 1].isdigit() else {}
        node = node[key]
    last, done = keys[-1], ".".join(keys[:-1])
    if isinstance(node, list):
        index = _index(node, last, dotted, done, append_ok=True)
        if index == len(node):
            node.append(value)
        else:
            node[index] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ValueError(f"--set {dotted}: {done} is {node!r}, not a mapping, so it has no key {last!r}")
