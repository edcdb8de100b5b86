"""Where the files tunify ships live: the zoo (``index.json`` and its checkpoint folders) and
the recipes (``quickstart.yaml``, ...).

In an installed wheel they are package data, ``tunify/zoo`` and ``tunify/recipes``
(pyproject.toml maps the repository's ``zoo/`` and ``recipes/`` folders into the package);
in a checkout (or an editable install) they are those repository folders themselves. Either
way :func:`shipped_dir` finds them, so ``tunify quickstart``, ``tunify zoo``, ``from_zoo`` and
the demo run from any working directory.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["shipped_dir", "KINDS"]

KINDS = ("zoo", "recipes")
_PACKAGE = Path(__file__).resolve().parent


def shipped_dir(kind: str) -> Path:
    """The folder of shipped ``kind`` ("zoo" or "recipes"): inside the installed package when
    it is there, else the checkout's folder beside the package."""
    if kind not in KINDS:
        raise ValueError(f"shipped files are {', '.join(KINDS)}, not {kind!r}")
    inside = _PACKAGE / kind
    return inside if inside.is_dir() else _PACKAGE.parent / kind
