"""The generated model card (README.md of a published folder), from its config."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from ..training.files import atomic_write_text

__all__ = ["write_card", "sweep_table"]


def sweep_table(metrics: Dict[str, Any], names: List[str]) -> str:
    """Markdown table of a λ sweep: λ, PSNR, SSIM per row (+ the input's PSNR)."""
    lines = [f"| λ ({', '.join(names)}) | PSNR (dB) | SSIM |", "|---|---|---|"]
    for r in metrics.get("rows", []):
        lines.append(f"| ({', '.join(f'{v:.2f}' for v in r['lam'])}) | {r['psnr']:.2f} | {r['ssim']:.4f} |")
    if metrics.get("input_psnr") is not None:
        lines.append(f"| degraded input | {metrics['input_psnr']:.2f} | |")
    return "\n".join(lines)


def write_card(folder: Path, config: Dict[str, Any], has_strip: bool, notes: Optional[str] = None) -> Path:
    names = [o["name"] for o in config["objectives"]]
    corners = "\n".join(
        f"| {'(' + ', '.join('1' if j == i else '0' for j in range(len(names))) + ')'} | **{o['name']}** | "
        f"{o.get('description') or '—'} |"
        for i, o in enumerate(config["objectives"])
    )
    space = ("on the simplex (entries ≥ 0 summing to 1): a trade-off between the objectives"
             if config["lam_space"] == "simplex" else "in the box [0, 1]^p: one independent knob per objective")
    lam_example = ", ".join(f"{1 / len(names):.2f}" for _ in names) if config["lam_space"] == "simplex" else ", ".join("0.5" for _ in names)
    parts = [
        "---",
        "library_name: tunify",
        "tags: [tunify, tunable-convolutions, image-restoration]",
        "---",
        f"# {config['name']}",
        "",
        f"A tunable `{config['arch']}` ({config['converted']} layers and tensors made tunable, "
        f"{config['num_kernels']} kernels each): one network whose behaviour follows a control vector "
        f"λ = ({', '.join(names)}) given at inference, {space}.",
        "",
        "| λ | objective | what it means |",
        "|---|---|---|",
        corners,
        "",
        "## Use",
        "",
        "```python",
        "import tunify",
        f"tm = tunify.from_pretrained(\"{folder.name}\")        # or the folder's path / hub id",
        f"y = tm(x, lam=[{lam_example}])                 # x: (B, 3, H, W) in [0, 1]; or lam (B, {len(names)}) per sample",
        f"plain = tunify.bake(tm, [{lam_example}])       # an ordinary {config['arch']} at that λ",
        "```",
        "",
    ]
    metrics = config.get("metrics")
    if metrics and metrics.get("rows"):
        parts += ["## Measured λ sweep", "", metrics.get("note", "PSNR/SSIM against the clean images of the "
                  "recipe's validation set (reproduce with `tunify load NAME --verify`)."), "",
                  sweep_table(metrics, names), ""]
    if has_strip:
        parts += ["![λ sweep](sweep.png)", "", "*Degraded input, the output at each λ of the sweep, clean image.*", ""]
    parts += [
        "## Provenance",
        "",
        f"- tunify {config['tunify_version']}, format {config['format_version']}",
        f"- architecture: `{config['arch']}` with `{config.get('arch_kwargs')}`",
        f"- recipe sha256: `{config.get('recipe_sha256')}`" + (" (recipe.yaml)" if config.get("recipe_sha256") else ""),
        f"- weights sha256: `{config['weights_sha256']}`",
        "",
    ]
    if notes:
        parts += [notes.strip(), ""]
    path = folder / "README.md"
    atomic_write_text(path, "\n".join(parts))
    return path
