"""The generated model card (README.md of a published folder), from its config."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from ..evaluation import SweepResult
from ..files import atomic_write_text

__all__ = ["write_card", "sweep_table"]


def sweep_table(metrics: Dict[str, Any], names: List[str], lam_space: str = "simplex") -> str:
    """Markdown table of a card's λ sweep: the sweep's own table (λ, PSNR, SSIM, losses, ...,
    and the input), from the one sweep format or the older ``{"rows", "input_psnr"}`` one."""
    return SweepResult.from_dict(metrics, names, lam_space).table()


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
                  sweep_table(metrics, names, config["lam_space"]), ""]
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
