"""Where a run's numbers go: metrics.csv (and TensorBoard when installed), its loss curve
(loss.png beside it, when matplotlib is installed), a progress bar."""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..console import progress_bar
from .files import FILE_MODE, atomic_write_bytes

__all__ = ["MetricsLog", "plot_losses", "progress_bar"]


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
        os.chmod(tmp, FILE_MODE)
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


def _read_curves(csv_path: Path) -> Dict[str, List[tuple]]:
    curves: Dict[str, List[tuple]] = {}
    with Path(csv_path).open() as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key == "loss" or (key or "").startswith("L_"):
                    try:
                        curves.setdefault(key, []).append((int(row["step"]), float(value)))
                    except (TypeError, ValueError):  # an empty cell (a term that was not logged)
                        pass
    return curves


def plot_losses(csv_path: Path, png_path: Path, title: str = "", log: Callable[[str], None] = print) -> Optional[Path]:
    """The loss (and each objective's term) against the step, from metrics.csv, as a PNG.
    Returns None when there is no curve to draw (fewer than two logged steps), and, saying
    why, when matplotlib is missing."""
    curves = _read_curves(csv_path) if Path(csv_path).is_file() else {}
    if len(curves.get("loss", [])) < 2:  # a point is not a curve (and costs a figure per short fit call)
        return None
    try:
        from matplotlib.figure import Figure  # no pyplot: no global backend, no window
    except ImportError:
        log(f"{png_path.name} not written: matplotlib is not installed (pip install matplotlib); "
            f"the numbers are in {csv_path}")
        return None
    fig = Figure(figsize=(6, 3.6), dpi=100)
    ax = fig.subplots()
    for key, points in curves.items():
        steps, values = zip(*points)
        ax.plot(steps, values, label="L(λ)" if key == "loss" else key[2:], lw=1.6 if key == "loss" else 1.0)
    positive = all(v > 0 for points in curves.values() for _, v in points)
    if positive:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title or Path(csv_path).parent.name, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return atomic_write_bytes(png_path, buffer.getvalue())
