"""How the command line reports a failure: one line on stderr and an exit status, never a traceback.

Errors tunify raises already say what is wrong and what to do; this module only turns them into
one line, and rewrites the few that come from below tunify (PyYAML, timm, the OS) into the same
form. Anything else is a bug: it is reported in one line too, with how to see the traceback
(``TUNIFY_TRACEBACK=1``).
"""
from __future__ import annotations

import os
import re
from typing import Tuple

__all__ = ["describe", "EXIT_USAGE", "EXIT_TRAINING", "EXIT_BUG", "EXIT_INTERRUPTED", "show_traceback"]

EXIT_BUG, EXIT_USAGE, EXIT_TRAINING, EXIT_INTERRUPTED = 1, 2, 3, 130

_TIMM_UNKNOWN = re.compile(r"^Unknown model \((.+)\)$")


def show_traceback() -> bool:
    """Whether the user asked for tracebacks (TUNIFY_TRACEBACK=1) instead of one-line errors."""
    return os.environ.get("TUNIFY_TRACEBACK", "").lower() in ("1", "true", "yes")


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _timm_hint(name: str) -> str:
    from ._text import did_you_mean

    try:
        import timm

        known = timm.list_models()
    except ImportError:
        return ""
    return f"unknown timm model {name!r}.{did_you_mean(name, known)} See timm.list_models() for the {len(known)} names."


def describe(exc: BaseException) -> Tuple[str, int]:
    """(the line to print after ``tunify: ``, the exit status) for an exception."""
    import yaml

    from .training.trainer import NonFiniteLossError

    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (a training run resumes from its last checkpoint with --resume)", EXIT_INTERRUPTED
    if isinstance(exc, NonFiniteLossError):
        return f"training stopped: {_one_line(exc)}", EXIT_TRAINING
    if isinstance(exc, yaml.YAMLError):
        from .training.schema import yaml_error_message

        return f"error: {yaml_error_message(exc, 'YAML input')}", EXIT_USAGE
    if isinstance(exc, RuntimeError) and _TIMM_UNKNOWN.match(str(exc)):
        return f"error: {_timm_hint(_TIMM_UNKNOWN.match(str(exc)).group(1))}", EXIT_USAGE
    if isinstance(exc, KeyError):
        return f"error: {_one_line(exc.args[0] if exc.args else exc)}", EXIT_USAGE
    if isinstance(exc, (ValueError, TypeError, ImportError, FileNotFoundError, FileExistsError)):
        return f"error: {_one_line(exc)}", EXIT_USAGE
    if isinstance(exc, OSError):  # permissions, a full disk, a folder where a file should be
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        return f"error: {exc.strerror or _one_line(exc)}{where}", EXIT_USAGE
    return (f"internal error: {type(exc).__name__}: {_one_line(exc)} (this is a bug in tunify or a library "
            "below it; rerun with TUNIFY_TRACEBACK=1 to see where, and report it)"), EXIT_BUG
