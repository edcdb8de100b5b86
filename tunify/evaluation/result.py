"""The outcome of a λ sweep: metrics per λ and per image, and the files that show them."""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from torch import Tensor

from ..files import atomic_write_text
from ..lam import LamSpace
from . import plots
from .labels import LOWER_IS_BETTER, format_value, lam_text, metric_label

__all__ = ["SweepResult", "SWEEP_FORMAT", "SWEEP_FORMAT_VERSION", "metric_label", "LOWER_IS_BETTER", "lam_text"]

SWEEP_FORMAT, SWEEP_FORMAT_VERSION = "tunify-sweep", 1


@dataclass
class SweepResult:
    """Metrics of a tunable model at each λ of a sweep.

    ``rows``: one dict per λ, ``{"lam": [λ_1..λ_p], <metric>: mean over the images}``;
    ``per_image``: one dict per (λ, image), ``{"image", "lam", <metric>: value or None}``;
    ``input_row`` / ``input_per_image``: the same measures for the degraded input (PSNR,
    SSIM and LPIPS against the clean image when the sizes match, NIQE always);
    ``metrics``: the measured columns in order (psnr, ssim, loss_<objective>..., niqe,
    lpips); ``skipped``: metric → why it was not measured; ``settings``: how the inputs were
    made (degradation, seed, max_size, source); ``files``: what :meth:`save` wrote.
    """

    space: LamSpace
    objectives: Tuple[str, ...]
    metrics: List[str]
    rows: List[Dict[str, Any]]
    per_image: List[Dict[str, Any]] = field(default_factory=list)
    input_row: Dict[str, Any] = field(default_factory=dict)
    input_per_image: List[Dict[str, Any]] = field(default_factory=list)
    images: List[str] = field(default_factory=list)
    skipped: Dict[str, str] = field(default_factory=dict)
    settings: Dict[str, Any] = field(default_factory=dict)
    files: Dict[str, Path] = field(default_factory=dict)
    #: grid tiles per image: [input, output at each grid column's λ..., clean], each (3, c, c)
    tiles: List[List[Tensor]] = field(default_factory=list, repr=False, compare=False)
    #: indices into rows of the λ shown in the grid's columns
    grid_columns: List[int] = field(default_factory=list, repr=False)

    # -- access ------------------------------------------------------------------------
    @property
    def lams(self) -> List[List[float]]:
        """The swept λ, (N, p) as nested lists."""
        return [list(r["lam"]) for r in self.rows]

    def column(self, metric: str) -> List[Optional[float]]:
        """One metric's mean at each λ, in row order."""
        if metric not in self.metrics:
            raise KeyError(f"{metric!r} was not measured; measured: {', '.join(self.metrics)}"
                           + (f" (skipped: {self.skipped[metric]})" if metric in self.skipped else ""))
        return [r.get(metric) for r in self.rows]

    def lam_columns(self) -> List[str]:
        return [f"lam_{n}" for n in self.objectives]

    # -- writing -----------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        """The one sweep.json format (:data:`SWEEP_FORMAT`): what `tunify sweep`, a training run's
        end-of-run sweep and a model card's ``metrics`` field all hold."""
        return {
            "format": SWEEP_FORMAT,
            "format_version": SWEEP_FORMAT_VERSION,
            "objectives": list(self.objectives),
            "space": {"kind": self.space.kind, "p": self.space.p, "names": list(self.space.names)},
            "metrics": list(self.metrics),
            "rows": self.rows,
            "input": self.input_row,
            "per_image": self.per_image,
            "input_per_image": self.input_per_image,
            "images": list(self.images),
            "skipped": dict(self.skipped),
            "settings": self.settings,
            "grid_columns": list(self.grid_columns),
        }

    def to_json(self, path: Union[str, Path]) -> Path:
        """Everything measured (also per image) as JSON, written atomically; :meth:`from_json`
        reads it back."""
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1, default=str, allow_nan=False))

    @classmethod
    def from_dict(cls, data: Dict[str, Any], objectives: Optional[Sequence[str]] = None,
                  lam_space: str = "simplex") -> "SweepResult":
        """A sweep from its dict: the current format, or the older ``{"rows", "input_psnr"}`` one
        that training runs and model cards wrote before the formats were one (then the λ space
        is ``lam_space`` and the names ``objectives``, or those stored, or ``objective_i``)."""
        if data.get("format") == SWEEP_FORMAT:
            space = data["space"]
            return cls(space=LamSpace(space["kind"], int(space["p"]), tuple(space["names"])),
                       objectives=tuple(data["objectives"]), metrics=data["metrics"], rows=data["rows"],
                       per_image=data.get("per_image", []), input_row=data.get("input", {}),
                       input_per_image=data.get("input_per_image", []), images=data.get("images", []),
                       skipped=data.get("skipped", {}), settings=data.get("settings", {}),
                       grid_columns=data.get("grid_columns", []))
        rows = list(data.get("rows") or [])
        p = len(rows[0]["lam"]) if rows else len(objectives or data.get("objectives") or [])
        names = tuple(objectives or data.get("objectives") or [f"objective_{i}" for i in range(p)])
        metrics = [m for m in ("psnr", "ssim") if rows and m in rows[0]]
        metrics += [k for k in (rows[0] if rows else {}) if k.startswith("loss_")]
        legacy_input = data.get("input_psnr")
        return cls(space=LamSpace(lam_space, len(names), names), objectives=names, metrics=metrics, rows=rows,
                   input_row={} if legacy_input is None else {"psnr": legacy_input})

    @classmethod
    def from_json(cls, path: Union[str, Path]) -> "SweepResult":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_csv(self, path: Union[str, Path]) -> Path:
        """One line per λ: lam_<objective>..., then the measured metrics (means over images)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(self.lam_columns() + list(self.metrics))
            for r in self.rows:
                writer.writerow(list(r["lam"]) + ["" if r.get(m) is None else r[m] for m in self.metrics])
        return path

    def table(self) -> str:
        """Markdown table: λ, each metric (↑/↓ says which way is better), and the input row."""
        head = [f"λ ({', '.join(self.objectives)})"] + [metric_label(m) for m in self.metrics]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.rows:
            lines.append("| " + " | ".join([lam_text(r["lam"])] + [format_value(m, r.get(m)) for m in self.metrics]) + " |")
        if any(self.input_row.get(m) is not None for m in self.metrics):
            lines.append("| input | " + " | ".join(format_value(m, self.input_row.get(m)) for m in self.metrics) + " |")
        return "\n".join(lines)

    def report(self) -> str:
        """sweep.md: what was measured, on what, the table, what was skipped, the files."""
        s = self.settings
        name = s.get("model") or "tunable model"
        deg = s.get("degradation")
        made = (f"degraded with {json.dumps(deg)} (seed {s.get('seed')})" if deg is not None
                else "given as (degraded, clean) pairs")
        parts = [f"# λ sweep of {name}", "",
                 f"{len(self.rows)} λ in the {self.space.kind} space over ({', '.join(self.objectives)}); "
                 f"{len(self.images)} images ({', '.join(self.images)}), {made}, longer side at most "
                 f"{s.get('max_size')} px. Metrics are means over the images; the per-image values are "
                 "in sweep.json. ↑ higher is better, ↓ lower is better.", "", self.table(), ""]
        remarks = list(self.skipped.values()) + list(s.get("notes") or [])
        if remarks:
            parts += [f"- {line}" for line in remarks] + [""]
        described = {
            "csv": "one line per λ", "json": "rows, input, per image, settings",
            "metrics_plot": "each metric against λ", "pd_plot": "the perception–distortion plane",
            "grid": "rows: images (centre crops); columns: input | output at λ "
                    + ", ".join(lam_text(self.rows[i]["lam"]) for i in self.grid_columns) + " | clean",
        }
        listed = [f"- `{p.name}`: {described.get(k, '')}" for k, p in self.files.items() if k != "md"]
        if listed:
            parts += ["Files:", *listed, ""]
        return "\n".join(parts)

    def save(self, out_dir: Union[str, Path]) -> Dict[str, Path]:
        """Write sweep.csv, sweep.json, sweep_metrics.png, perception_distortion.png,
        grid.png (when the tiles are in memory) and sweep.md into ``out_dir``."""
        from ..data import save_image

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files: Dict[str, Path] = {"csv": self.to_csv(out / "sweep.csv"), "json": out / "sweep.json"}
        files["metrics_plot"] = plots.plot_metrics(self, out / "sweep_metrics.png")
        files["pd_plot"] = plots.plot_perception_distortion(self, out / "perception_distortion.png")
        if self.tiles:
            captions = ["input", *(lam_text(self.rows[i]["lam"]) for i in self.grid_columns), "clean"]
            save_image(plots.image_grid(self.tiles, labels=captions), out / "grid.png")
            files["grid"] = out / "grid.png"
        files["md"] = out / "sweep.md"
        self.files = files
        self.to_json(files["json"])
        atomic_write_text(files["md"], self.report())
        return files
