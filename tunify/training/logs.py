"""Where a run's numbers go: metrics.csv (and TensorBoard when installed), a progress bar."""
from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

__all__ = ["MetricsLog"]


class MetricsLog:
    """Append-only CSV of per-step metrics; on resume, rows past the checkpoint are dropped
    (a crashed run may have logged steps its checkpoint does not hold)."""

    def __init__(self, path: Path, columns: Sequence[str], active: bool = True, resume_step: Optional[int] = None,
                 tensorboard: str = "auto"):
        self.path, self.columns, self.active = Path(path), list(columns), active
        self.rows: List[Dict[str, Any]] = []
        self.tb = None
        if not active:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.is_file():
            with self.path.open() as f:
                kept = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
            self.rows = kept
            self._rewrite()
        else:
            self._rewrite()
        if tensorboard != "off":
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.path.parent / "tensorboard"))
            except Exception as exc:  # tensorboard not installed
                if tensorboard == "on":
                    raise RuntimeError(f"output.tensorboard is 'on' but TensorBoard is unavailable ({exc}); "
                                       "pip install tensorboard, or set it to 'auto'") from exc

    def _rewrite(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(self.rows)
        tmp.replace(self.path)

    def add(self, row: Dict[str, Any]) -> None:
        if not self.active:
            return
        row = {k: row.get(k, "") for k in self.columns}
        self.rows.append(row)
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.columns).writerow(row)
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, int(row["step"]))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def progress_bar(total: int, initial: int, enabled: bool, desc: str):
    """tqdm when available and enabled; a silent stand-in otherwise."""
    if enabled:
        try:
            from tqdm.auto import tqdm

            return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, file=sys.stderr)
        except ImportError:
            pass

    class _Silent:
        def update(self, n: int = 1) -> None: ...
        def set_postfix(self, *a: Any, **k: Any) -> None: ...
        def close(self) -> None: ...

    return _Silent()
