"""Pictures of a λ sweep: each metric against λ, the perception–distortion plane, an image grid.

The plots use matplotlib's object-oriented API on the Agg canvas (``matplotlib.figure.Figure``,
no pyplot, no global backend switch), imported only when a plot is drawn, so ``import
tunify`` never needs matplotlib. :func:`image_grid` is plain tensor assembly.

Layouts of :func:`plot_metrics` by λ space:

- simplex, p = 2: one curve per metric, x = λ_2 (from objective 1 to objective 2);
- simplex, p = 3: a triangle per metric (barycentric coordinates), coloured by the metric,
  corners labelled with the objectives;
- box, p = 2: a heatmap per metric over (λ_1, λ_2);
- anything else: the metric against the λ point index.

Colour maps run bright where the metric is better (reversed for ↓ metrics).
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .labels import LOWER_IS_BETTER, lam_text, metric_label

# Plots read a sweep's rows, metrics and space (a SweepResult); result.py imports this module, so
# the type is named here and not imported (no circle, not even for type checkers).
SweepResult = Any

__all__ = ["require_matplotlib", "layout", "plot_metrics", "plot_perception_distortion", "image_grid"]

_TRIANGLE = ((0.0, 0.0), (1.0, 0.0), (0.5, math.sqrt(3) / 2))


def require_matplotlib():
    """The matplotlib module, or an ImportError that says how to install it."""
    try:
        import matplotlib
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"the sweep plots need matplotlib ({exc}): pip install matplotlib, "
                          "or install tunify with the eval extra: pip install 'tunify[eval]'") from None
    return matplotlib


def _figure(panels: int, size: Tuple[float, float] = (4.2, 3.4)):
    require_matplotlib()
    from matplotlib.figure import Figure

    cols = min(3, max(1, panels))
    rows = max(1, math.ceil(panels / cols))
    fig = Figure(figsize=(size[0] * cols, size[1] * rows), layout="constrained")
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(max(1, panels))]
    return fig, axes


def layout(result: SweepResult) -> str:
    """'segment' (simplex p=2), 'triangle' (simplex p=3), 'heatmap' (box p=2) or 'index'."""
    kind, p = result.space.kind, result.space.p
    if kind == "simplex" and p == 2:
        return "segment"
    if kind == "simplex" and p == 3:
        return "triangle"
    return "heatmap" if kind == "box" and p == 2 else "index"


def _cmap(metric: str) -> str:
    return "viridis_r" if metric in LOWER_IS_BETTER or metric.startswith("loss_") else "viridis"


def _points(result: SweepResult, metric: str) -> Tuple[List[List[float]], List[float]]:
    """(λ rows, values) where the metric has a value."""
    pairs = [(r["lam"], r[metric]) for r in result.rows if r.get(metric) is not None]
    return [p[0] for p in pairs], [float(p[1]) for p in pairs]


def _barycentric(lams: Sequence[Sequence[float]]) -> Tuple[List[float], List[float]]:
    xs = [sum(l[i] * _TRIANGLE[i][0] for i in range(3)) for l in lams]
    ys = [sum(l[i] * _TRIANGLE[i][1] for i in range(3)) for l in lams]
    return xs, ys


def _segment(ax, result: SweepResult, metric: str) -> None:
    lams, values = _points(result, metric)
    order = sorted(range(len(lams)), key=lambda i: lams[i][1])
    ax.plot([lams[i][1] for i in order], [values[i] for i in order], "o-", color="C0", label="output")
    a, b = result.objectives
    ax.set_xlabel(f"λ: {a} → {b}  (x = λ_{b})")
    ax.set_xlim(-0.03, 1.03)


def _triangle(fig, ax, result: SweepResult, metric: str) -> None:
    lams, values = _points(result, metric)
    xs, ys = _barycentric(lams)
    corners = list(_TRIANGLE) + [_TRIANGLE[0]]
    ax.plot([c[0] for c in corners], [c[1] for c in corners], color="0.4", lw=1)
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if len(values) >= 3 and hi > lo:
        try:
            ax.tricontourf(xs, ys, values, levels=12, cmap=_cmap(metric), vmin=lo, vmax=hi, alpha=0.85)
        except (ValueError, RuntimeError):  # collinear points: no triangulation, the dots remain
            pass
    dots = ax.scatter(xs, ys, c=values, cmap=_cmap(metric), vmin=lo, vmax=hi if hi > lo else lo + 1e-9,
                      edgecolors="black", s=36, zorder=3)
    fig.colorbar(dots, ax=ax, shrink=0.8)
    offsets = ((-0.04, -0.07, "right"), (0.04, -0.07, "left"), (0.0, 0.05, "center"))
    for (cx, cy), (dx, dy, ha), objective in zip(_TRIANGLE, offsets, result.objectives):
        ax.text(cx + dx, cy + dy, objective, ha=ha, va="center", fontsize=9, weight="bold")
    ax.set_xlim(-0.25, 1.25)
    ax.set_ylim(-0.15, 1.0)
    ax.set_aspect("equal")
    ax.axis("off")


def _heatmap(fig, ax, result: SweepResult, metric: str) -> None:
    lams, values = _points(result, metric)
    a, b = result.objectives
    xs, ys = sorted({l[0] for l in lams}), sorted({l[1] for l in lams})
    cells = {(l[0], l[1]): v for l, v in zip(lams, values)}
    if len(xs) * len(ys) == len(cells) and len(xs) > 1 and len(ys) > 1:
        def edges(c: List[float]) -> List[float]:
            mids = [(u + v) / 2 for u, v in zip(c, c[1:])]
            return [c[0] - (mids[0] - c[0])] + mids + [c[-1] + (c[-1] - mids[-1])]

        z = [[cells[(x, y)] for x in xs] for y in ys]
        mesh = ax.pcolormesh(edges(xs), edges(ys), z, cmap=_cmap(metric), shading="flat")
        fig.colorbar(mesh, ax=ax, shrink=0.8)
        if len(xs) <= 11 and len(ys) <= 11:
            ax.set_xticks(xs, [f"{v:.2g}" for v in xs])
            ax.set_yticks(ys, [f"{v:.2g}" for v in ys])
        if len(cells) <= 36:
            for (x, y), v in cells.items():
                ax.text(x, y, f"{v:.3g}", ha="center", va="center", fontsize=7, color="white",
                        bbox={"facecolor": "black", "alpha": 0.35, "pad": 1, "lw": 0})
    else:  # explicit λ off a full grid: coloured dots
        dots = ax.scatter([l[0] for l in lams], [l[1] for l in lams], c=values, cmap=_cmap(metric), s=60, edgecolors="k")
        fig.colorbar(dots, ax=ax, shrink=0.8)
    ax.set_xlabel(f"λ_{a}")
    ax.set_ylabel(f"λ_{b}")
    ax.set_aspect("equal")


def _index(ax, result: SweepResult, metric: str) -> None:
    pts = [(i, r[metric]) for i, r in enumerate(result.rows) if r.get(metric) is not None]
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color="C0", label="output")
    if len(result.rows) <= 16:
        ax.set_xticks(range(len(result.rows)))
        ax.set_xticklabels([lam_text(r["lam"]) for r in result.rows], rotation=60, fontsize=7)
    ax.set_xlabel(f"λ point ({', '.join(result.objectives)})")


def plot_metrics(result: SweepResult, path: Union[str, Path]) -> Path:
    """One panel per measured metric against λ (layout by λ space, see the module
    docstring); the input's level is a dashed line where the axes allow one."""
    metrics = list(result.metrics)
    fig, axes = _figure(len(metrics))
    shape = layout(result)
    for ax, metric in zip(axes, metrics):
        ref = result.input_row.get(metric)
        title = metric_label(metric)
        if shape == "triangle":
            _triangle(fig, ax, result, metric)
            title += f"  (input {ref:.4g})" if ref is not None else ""
        elif shape == "heatmap":
            _heatmap(fig, ax, result, metric)
            title += f"  (input {ref:.4g})" if ref is not None else ""
        else:
            (_segment if shape == "segment" else _index)(ax, result, metric)
            if ref is not None:
                ax.axhline(ref, ls="--", color="0.45", label="input")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        ax.set_title(title, fontsize=10)
    if not metrics:
        axes[0].text(0.5, 0.5, "no metric measured", ha="center", va="center")
        axes[0].axis("off")
    fig.suptitle(f"{result.settings.get('model', 'model')}: metrics against λ", fontsize=11)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _perception_metric(result: SweepResult) -> Optional[str]:
    for metric in ("lpips", "niqe"):
        if metric in result.metrics:
            return metric
    losses = [m for m in result.metrics if m.startswith("loss_")]
    return losses[-1] if losses else None


def _corner(lam: Sequence[float], kind: str) -> Optional[int]:
    """i for the one-hot λ of objective i, -1 for the box origin λ = 0, else None."""
    ones = [i for i, v in enumerate(lam) if abs(v - 1) < 1e-6]
    zeros = sum(1 for v in lam if abs(v) < 1e-6)
    if len(ones) == 1 and zeros == len(lam) - 1:
        return ones[0]
    return -1 if kind == "box" and zeros == len(lam) else None


def _explain(result: SweepResult, path: Path) -> Path:
    """A figure that says why the perception–distortion plane cannot be drawn."""
    fig, (ax,) = _figure(1, size=(6.4, 3.0))
    missing = [] if "psnr" in result.metrics else ["PSNR (distortion) was not measured"]
    if _perception_metric(result) is None:
        missing.append("no perception measure (LPIPS, NIQE or an objective loss):")
        missing += [f"  {result.skipped[m]}" for m in ("lpips", "niqe", "loss") if m in result.skipped]
    text = "\n".join(textwrap.fill(line, 95, subsequent_indent="    ") for line in missing)
    ax.text(0.0, 1.0, "perception–distortion plane not drawn:\n" + text, ha="left", va="top", fontsize=8,
            transform=ax.transAxes)
    ax.axis("off")
    fig.savefig(path, dpi=110)
    return path


def plot_perception_distortion(result: SweepResult, path: Union[str, Path]) -> Path:
    """The λ path in the perception–distortion plane: x = PSNR (right is better), y = LPIPS,
    else NIQE, else the last objective's loss (lower is better), corners highlighted, the
    input marked. Without PSNR or a perception measure the figure says why instead."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    y_metric = _perception_metric(result)
    if "psnr" not in result.metrics or y_metric is None:
        return _explain(result, path)
    pts = [(r["psnr"], r[y_metric], r["lam"]) for r in result.rows
           if r.get("psnr") is not None and r.get(y_metric) is not None]
    fig, (ax,) = _figure(1, size=(6.4, 4.8))
    style = "o-" if layout(result) in ("segment", "index") else "o"
    ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color="C0", ms=5, label="output at λ", zorder=2)
    for x, y, lam in pts:
        corner = _corner(lam, result.space.kind)
        if corner is not None:
            label = "λ = 0" if corner < 0 else result.objectives[corner]
            ax.scatter([x], [y], s=140, marker="*", color="C3", edgecolors="k", zorder=4)
            ax.annotate(f"{label} {lam_text(lam)}", (x, y), textcoords="offset points", xytext=(6, 6),
                        fontsize=8, weight="bold")
        elif len(pts) <= 11:
            ax.annotate(lam_text(lam), (x, y), textcoords="offset points", xytext=(5, -10), fontsize=7, color="0.3")
    ref_x, ref_y = result.input_row.get("psnr"), result.input_row.get(y_metric)
    if ref_x is not None and ref_y is not None:
        ax.scatter([ref_x], [ref_y], marker="X", s=90, color="0.3", label="input", zorder=4)
    ax.set_xlabel("distortion: PSNR (dB), higher (right) is better")
    which = {"lpips": "LPIPS", "niqe": "NIQE"}.get(y_metric, f"loss of objective '{y_metric[5:]}'")
    ax.set_ylabel(f"perception: {which}, lower is better")
    ax.set_title(f"{result.settings.get('model', 'model')}: perception–distortion as λ moves", fontsize=10)
    ax.margins(0.15)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    return path


def image_grid(tiles: Sequence[Sequence[Tensor]], gap: int = 4, fill: float = 1.0,
               labels: Optional[Sequence[str]] = None) -> Tensor:
    """Rows of (3, h, w) tiles → one (3, H, W) image: each tile padded (bottom/right, with
    ``fill``) to the largest tile, ``gap`` px of ``fill`` between tiles and rows. ``labels``:
    one caption per column, written (PIL's default font) in a strip above the first row."""
    if not tiles or not all(len(r) for r in tiles):
        raise ValueError("image_grid needs at least one non-empty row of tiles")
    th = max(t.shape[-2] for r in tiles for t in r)
    tw = max(t.shape[-1] for r in tiles for t in r)
    cols = max(len(r) for r in tiles)
    height = len(tiles) * th + (len(tiles) - 1) * gap
    width = cols * tw + (cols - 1) * gap
    canvas = torch.full((3, height, width), float(fill))
    for i, row in enumerate(tiles):
        for j, tile in enumerate(row):
            y, x = i * (th + gap), j * (tw + gap)
            canvas[:, y : y + tile.shape[-2], x : x + tile.shape[-1]] = tile.float().cpu()
    if labels:
        canvas = torch.cat([_caption_strip(labels, width, tw + gap), canvas], dim=1)
    return canvas


def _caption_strip(labels: Sequence[str], width: int, pitch: int, height: int = 16) -> Tensor:
    """A white (3, height, width) strip with ``labels[j]`` at the left of column j."""
    import numpy as np
    from PIL import Image, ImageDraw

    strip = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(strip)
    for j, text in enumerate(labels):
        draw.text((j * pitch + 2, 2), str(text), fill="black")
    return torch.from_numpy(np.asarray(strip).copy()).permute(2, 0, 1).float() / 255
