"""Progress bars: tqdm when it is installed and wanted, a silent stand-in otherwise (used by
training runs and sweeps alike, so it sits below both)."""
from __future__ import annotations

import sys
from typing import Any

__all__ = ["progress_bar"]


class _Silent:
    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, *a: Any, **k: Any) -> None: ...
    def set_description(self, *a: Any, **k: Any) -> None: ...
    def close(self) -> None: ...


def progress_bar(total: int, initial: int, enabled: bool, desc: str):
    """tqdm when available and enabled; a silent stand-in otherwise."""
    if enabled:
        try:
            from tqdm.auto import tqdm

            return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, file=sys.stderr)
        except ImportError:
            pass
    return _Silent()
