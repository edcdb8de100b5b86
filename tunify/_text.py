"""Shared wording for errors: the did-you-mean every registry and config check uses."""
from __future__ import annotations

import difflib
from typing import Iterable

__all__ = ["did_you_mean"]


def did_you_mean(word: object, options: Iterable[str], n: int = 3, cutoff: float = 0.5) -> str:
    """`` Did you mean 'x' or 'y'?`` for the options close to ``word``, or '' when none is.

    Case slips ('l1loss' for 'L1Loss') score low on the raw ratio, so lower-cased names are
    compared too when nothing else is close.
    """
    options, word = list(options), str(word)
    close = difflib.get_close_matches(word, options, n=n, cutoff=cutoff)
    if not close:
        lowered = {o.lower(): o for o in options}
        close = [lowered[h] for h in difflib.get_close_matches(word.lower(), list(lowered), n=n, cutoff=cutoff)]
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
