"""Low-rank tunable deltas (issue 14) against full kernels, measured side by side in one run.

Sizes: for NAFNet-width32, SwinIR-M (colour denoising, 11.5 M) and Real-ESRGAN's RRDBNet
x4plus (random init is enough for sizes), p = 2 objectives on the simplex:
  * numbers stored by the tunable model (parameters + buffers) and trainable parameters,
  * bytes of a full save (model.safetensors) and of an adapter-only save (adapter.safetensors),
for full kernels and rank 4 / 8 / 16.

Speed: one training step (forward, backward, AdamW step) with a fresh per-sample λ per call,
plain model vs full tunable vs low rank, interleaved round by round so that machine load hits
every variant alike; the median per variant and its ratio to plain. Timed as CPU seconds of
this process (time.process_time) on one thread: on a shared, overloaded machine wall time
swings 2-5× with other jobs, CPU time of a single-threaded process barely does (wall time is
recorded too).

    python benchmarks/lowrank.py                    # sizes for all three, speed on NAFNet-width32 and x4plus
    python benchmarks/lowrank.py --smoke            # tiny models, 2 rounds (for tests)

Writes benchmarks/results/lowrank/lowrank_cpu2.{md,json} (or --out).
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tunify import tunify  # noqa: E402
from tunify.archs import create_model  # noqa: E402

SWINIR_M = dict(upscale=1, in_chans=3, img_size=128, window_size=8, img_range=1.0, depths=[6] * 6, embed_dim=180,
                num_heads=[6] * 6, mlp_ratio=2, upsampler="", resi_connection="1conv")
MODELS = {
    "NAFNet-width32": ("nafnet-width32", {}, None),
    "SwinIR-M": ("swinir", SWINIR_M, None),
    "RRDBNet x4plus": ("realesrgan-x4plus", {}, "ncnn:realesrgan-x4plus"),
}
SMOKE_MODELS = {
    "NAFNet-tiny": ("nafnet-tiny", {}, None),
    "RRDBNet-small": ("rrdbnet", dict(num_feat=16, num_block=1, num_grow_ch=8, scale=4), None),
}
RANKS = (4, 8, 16)
NAMES = ["a", "b"]


def build(arch: str, kwargs: dict) -> nn.Module:
    torch.manual_seed(0)
    return create_model(arch, **kwargs).eval()


def _stored(tm) -> int:
    return sum(t.numel() for t in tm.model.state_dict().values())


def sizes(label: str, arch: str, kwargs: dict, weights: Optional[str], tmp: Path) -> List[Dict]:
    """One row per variant: stored numbers, trainable parameters, full and adapter bytes."""
    base = build(arch, kwargs)
    rows = [{"model": label, "variant": "original", "stored": sum(t.numel() for t in base.state_dict().values()),
             "trainable": sum(p.numel() for p in base.parameters()), "full_bytes": None, "adapter_bytes": None}]
    for rank in (None, *RANKS):
        tm = tunify(base, NAMES, rank=rank)
        folder = tm.save_pretrained(tmp / f"{label}-{rank}-full", arch=arch, arch_kwargs=kwargs)
        row = {"model": label, "variant": "full kernels" if rank is None else f"rank {rank}", "stored": _stored(tm),
               "trainable": sum(p.numel() for p in tm.parameters() if p.requires_grad),
               "full_bytes": (folder / "model.safetensors").stat().st_size, "adapter_bytes": None,
               "kept_full": sum(1 for c in tm.tunify_report.converted if c.tunable in ("TunableConv2d", "TunableLinear"))}
        if rank is not None:
            ad = tm.save_pretrained(tmp / f"{label}-{rank}-adapter", adapter_only=True, arch=arch, arch_kwargs=kwargs,
                                    base_weights=weights)
            row["adapter_bytes"] = (ad / "adapter.safetensors").stat().st_size
        rows.append(row)
        del tm
    return rows


def _step_fn(model: nn.Module, x: torch.Tensor, tunable: bool):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    model.train()

    def step() -> float:
        lam = torch.distributions.Dirichlet(torch.ones(2)).sample((x.shape[0],)) if tunable else None
        c0, t0 = time.process_time(), time.perf_counter()
        out = model(x, lam=lam) if tunable else model(x)
        out.float().pow(2).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.process_time() - c0, time.perf_counter() - t0

    return step


def speed(label: str, arch: str, kwargs: dict, shape: tuple, rounds: int) -> List[Dict]:
    """Median training-step seconds per variant (per-sample λ), interleaved; ratio to plain."""
    base = build(arch, kwargs)
    x = torch.rand(shape)
    variants = {"plain (original, all weights train)": _step_fn(copy.deepcopy(base), x, False),
                "full kernels, per-sample λ": _step_fn(tunify(base, NAMES), x, True)}
    for rank in RANKS:
        variants[f"rank {rank}, per-sample λ"] = _step_fn(tunify(base, NAMES, rank=rank), x, True)
    times: Dict[str, List[tuple]] = {k: [] for k in variants}
    for fn in variants.values():
        fn()  # warm-up (allocator, first-call paths)
    for _ in range(rounds):
        for name, fn in variants.items():
            times[name].append(fn())
    med = {k: statistics.median(c for c, _ in v) for k, v in times.items()}
    plain = med["plain (original, all weights train)"]
    return [{"model": label, "input": list(shape), "variant": k, "median_cpu_s": med[k],
             "median_wall_s": statistics.median(w for _, w in v), "ratio_to_plain": med[k] / plain, "rounds": rounds}
            for k, v in times.items()]


def markdown(size_rows: List[Dict], speed_rows: List[Dict]) -> str:
    mb = lambda b: "—" if b is None else f"{b / 1e6:.2f} MB"  # noqa: E731
    lines = ["| model | variant | stored numbers | trainable | full save | adapter-only save | adapter / full save |",
             "|---|---|---|---|---|---|---|"]
    full_bytes = {}
    for r in size_rows:
        if r["variant"] == "full kernels":
            full_bytes[r["model"]] = r["full_bytes"]
    for r in size_rows:
        share = "—" if r["adapter_bytes"] is None else f"{100 * r['adapter_bytes'] / full_bytes[r['model']]:.1f}%"
        lines.append(f"| {r['model']} | {r['variant']} | {r['stored']:,} | {r['trainable']:,} | {mb(r['full_bytes'])} | "
                     f"{mb(r['adapter_bytes'])} | {share} |")
    lines += ["", "| model | input | training step | median CPU s (1 thread) | × plain | median wall s |",
              "|---|---|---|---|---|---|"]
    for r in speed_rows:
        lines.append(f"| {r['model']} | {tuple(r['input'])} | {r['variant']} | {r['median_cpu_s']:.3f} | "
                     f"{r['ratio_to_plain']:.2f} | {r['median_wall_s']:.3f} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny models, 2 rounds")
    ap.add_argument("--rounds", type=int, default=None, help="timed steps per variant (default 7; smoke 2)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lowrank"), help="folder for the results")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: see the docstring)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = SMOKE_MODELS if args.smoke else MODELS
    rounds = args.rounds or (2 if args.smoke else 7)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    size_rows: List[Dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, (arch, kwargs, weights) in models.items():
            t0 = time.perf_counter()
            size_rows += sizes(label, arch, kwargs, weights, Path(tmp))
            print(f"sizes: {label} in {time.perf_counter() - t0:.0f} s", flush=True)
    speed_rows: List[Dict] = []
    if not args.skip_speed:
        plans = ([("NAFNet-tiny", "nafnet-tiny", {}, (4, 3, 32, 32))] if args.smoke else
                 [("NAFNet-width32", "nafnet-width32", {}, (4, 3, 64, 64)),
                  ("RRDBNet x4plus", "realesrgan-x4plus", {}, (2, 3, 24, 24))])
        for label, arch, kwargs, shape in plans:
            t0 = time.perf_counter()
            speed_rows += speed(label, arch, kwargs, shape, rounds)
            print(f"speed: {label} in {time.perf_counter() - t0:.0f} s", flush=True)
    text = markdown(size_rows, speed_rows)
    print(text)
    stem = "lowrank_smoke" if args.smoke else "lowrank_cpu2"
    (out / f"{stem}.md").write_text(text + "\n")
    (out / f"{stem}.json").write_text(json.dumps({"sizes": size_rows, "speed": speed_rows,
                                                  "threads": torch.get_num_threads()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
