"""Checking BasicSR-style spec dicts (``{"type": "L1Loss", "eps": 1e-3}``) before building.

Specs come from YAML files written by people, so the errors say what is wrong and how to fix
it: an unknown name gets a did-you-mean, a value of the wrong type names its key.

A classic trap: PyYAML reads ``eps: 1e-3`` as the *string* "1e-3" (YAML 1.1 wants a dot in a
float). Where a parameter expects a real number, a string that spells a finite number is
therefore converted; anything else (bools, "abc", NaN, inf) is refused.
"""
from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Mapping
from typing import Any, Callable, Dict, Iterable, List, Literal, Union

from .._text import did_you_mean as _did_you_mean

__all__ = ["did_you_mean", "accepted_keywords", "check_kwargs", "coerce"]

_MISSING = inspect.Parameter.empty


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' Did you mean 'X'?' for the single closest choice, or '' when nothing is close."""
    return _did_you_mean(name, choices, n=1, cutoff=0.6)


def _init_parameters(factory: Callable) -> Dict[str, inspect.Parameter]:
    target = factory.__init__ if inspect.isclass(factory) else factory
    params = inspect.signature(target).parameters
    return {
        n: p for n, p in params.items()
        if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def accepted_keywords(factory: Callable) -> List[str]:
    """The keyword arguments a class's ``__init__`` (or a function) accepts, in order."""
    return list(_init_parameters(factory))


def _hints(factory: Callable) -> Dict[str, Any]:
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        return typing.get_type_hints(target)
    except Exception:  # foreign code with unresolvable annotations: fall back to defaults
        return {}


def _real(value: Any, key: str, owner: str) -> float:
    bad = ValueError(f"{owner}: {key!r} must be a real number, got {value!r} ({type(value).__name__})")
    if isinstance(value, bool):
        raise bad
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise bad from None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad
    return float(value)


def _integer(value: Any, key: str, owner: str) -> int:
    bad = ValueError(f"{owner}: {key!r} must be an integer, got {value!r} ({type(value).__name__})")
    if isinstance(value, bool):
        raise bad
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise bad from None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, int):
        raise bad
    return value


def coerce(value: Any, expected: Any, key: str, owner: str) -> Any:
    """Check ``value`` against the type ``expected`` and convert numeric strings.

    Handles float, int, bool, str, Literal[...], Optional[T] and Mapping[str, T]; any other
    annotation passes the value through unchanged (the constructor checks it).
    """
    origin = typing.get_origin(expected)
    if expected is float:
        return _real(value, key, owner)
    if expected is int:
        return _integer(value, key, owner)
    if expected in (bool, str):
        if not isinstance(value, expected):
            raise ValueError(
                f"{owner}: {key!r} must be a {expected.__name__}, got {value!r} ({type(value).__name__})"
            )
        return value
    if origin is Literal:
        choices = typing.get_args(expected)
        if value not in choices:
            hint = did_you_mean(value, [str(c) for c in choices]) if isinstance(value, str) else ""
            raise ValueError(f"{owner}: {key!r} must be one of {list(choices)}, got {value!r}.{hint}")
        return value
    if origin is Union:
        args = [a for a in typing.get_args(expected) if a is not type(None)]
        if value is None and len(args) < len(typing.get_args(expected)):
            return None
        return coerce(value, args[0], key, owner) if len(args) == 1 else value
    if origin in (Mapping, dict, typing.Mapping, typing.Dict):
        if not isinstance(value, Mapping):
            raise ValueError(f"{owner}: {key!r} must be a mapping, got {value!r}")
        args = typing.get_args(expected)
        if len(args) == 2:
            return {k: coerce(v, args[1], f"{key}.{k}", owner) for k, v in value.items()}
        return dict(value)
    return value


def check_kwargs(factory: Callable, kwargs: Mapping[str, Any], owner: str) -> Dict[str, Any]:
    """Validate spec keywords for ``factory`` (a class or function) and coerce their values.

    Unknown keywords raise ValueError with a did-you-mean over the accepted ones. A value is
    checked against the parameter's annotation, or, when it has none (foreign code), against
    the type of its default when that default is a number or a bool.
    """
    params = _init_parameters(factory)
    hints = _hints(factory)
    out: Dict[str, Any] = {}
    for key, value in kwargs.items():
        if not isinstance(key, str) or key not in params:
            raise ValueError(
                f"{owner}: unknown keyword {key!r}.{did_you_mean(str(key), params)} "
                f"Accepted: {', '.join(params) or '(none)'}"
            )
        expected = hints.get(key)
        default = params[key].default
        if expected is None and type(default) is bool:
            expected = bool
        elif expected is None and type(default) in (int, float):
            # unannotated foreign code: a numeric default only tells us "a number"
            number = _real(value, key, owner)
            out[key] = int(number) if type(default) is int and number.is_integer() else number
            continue
        out[key] = coerce(value, expected, key, owner) if expected is not None else value
    missing = [n for n, p in params.items() if p.default is _MISSING and n not in out]
    if missing:
        raise ValueError(f"{owner}: missing required keyword(s) {missing}")
    return out
