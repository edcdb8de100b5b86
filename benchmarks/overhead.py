"""Inference overhead of tunable models, measured side by side in one run.

For each model: forward time of the original, the tunable model at a shared λ, at a
per-sample λ (B distinct rows) and baked at one λ, interleaved round by round (timings on
shared CPUs drift, so variants are compared within each round and the median ratio is
reported). Then the time tunify() takes on a >100M-parameter timm model.

    python benchmarks/overhead.py            # full: NAFNet-width32 and light SwinIR, 256x256, B=8
    python benchmarks/overhead.py --smoke    # seconds: tiny models, for CI

Targets: shared λ ≤ 1.05x, baked 1.00x, per-sample ≤ 1.5x, conversion < 2 s.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from tunify import bake, tunify
from tunify.archs import create_model


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@torch.no_grad()
def forward_overhead(name: str, model: torch.nn.Module, batch: int, size: int, rounds: int) -> dict:
    model.eval()
    tm = tunify(model, ["a", "b"]).eval()
    # Perturb so the tunable model really mixes different kernels.
    for p in tm.parameters():
        p.add_(torch.randn_like(p) * 1e-3)
    x = torch.randn(batch, 3, size, size)
    shared = torch.tensor([0.3, 0.7])
    per_sample = torch.distributions.Dirichlet(torch.ones(2)).sample((batch,))
    baked = bake(tm, shared).eval()
    variants = {
        "original": lambda: model(x),
        "shared": lambda: tm(x, lam=shared),
        "per_sample": lambda: tm(x, lam=per_sample),
        "baked": lambda: baked(x),
    }
    for fn in variants.values():  # warm-up: allocator, oneDNN primitive caches
        fn()
    times = {k: [] for k in variants}
    for _ in range(rounds):
        for key, fn in variants.items():
            times[key].append(_time(fn))
    ratio = {k: statistics.median(t / o for t, o in zip(times[k], times["original"])) for k in variants}
    row = {"model": name, "original_s": statistics.median(times["original"]), **{f"{k}_x": ratio[k] for k in variants if k != "original"}}
    row["per_sample_path"] = "split by λ row" if tm.split_reasons else "native"
    return row


def conversion_time(name: str, repeats: int) -> dict:
    import timm

    model = timm.create_model(name, pretrained=False)
    tunify(timm.create_model("resnet18", pretrained=False), 2)  # imports and fx warm-up
    times = []
    for _ in range(repeats):
        tm = None
        times.append(_time(lambda: tunify(model, 2)))
        del tm
    return {"model": name, "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
            "first_s": times[0], "median_s": statistics.median(times), "max_s": max(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny models and inputs (seconds)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", default="", help="comma-separated subset of the full run's models")
    parser.add_argument("--no-conversion", action="store_true", help="skip the conversion-time measurement")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.smoke:
        cases = [("nafnet-tiny", lambda: create_model("nafnet-tiny"), 4, 32, 3),
                 ("swinir-tiny", lambda: create_model("swinir", upscale=1, img_size=16, window_size=4, depths=[2],
                                                      embed_dim=12, num_heads=[2], mlp_ratio=2, upsampler=""), 4, 16, 3)]
        big, repeats = "resnet18", 2
    else:
        cases = [("nafnet-width32", lambda: create_model("nafnet-width32"), 8, 256, 3),
                 ("swinir-light", lambda: create_model("swinir-light"), 8, 256, 2)]
        big, repeats = "wide_resnet101_2", 3
    if args.models:
        cases = [c for c in cases if c[0] in args.models.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print(f"{'model':<16}{'B':>3}{'size':>6}{'original s':>12}{'shared':>9}{'per-sample':>12}{'baked':>8}  per-sample path")
    for name, make, batch, size, rounds in cases:
        r = forward_overhead(name, make(), batch, size, rounds)
        print(f"{name:<16}{batch:>3}{size:>6}{r['original_s']:>12.3f}{r['shared_x']:>8.3f}x{r['per_sample_x']:>11.3f}x"
              f"{r['baked_x']:>7.3f}x  {r['per_sample_path']}", flush=True)
    if args.no_conversion:
        return
    c = conversion_time(big, repeats)
    print(f"\ntunify() on timm {c['model']} ({c['params_M']:.0f}M params): first {c['first_s']:.2f} s, "
          f"median {c['median_s']:.2f} s, max {c['max_s']:.2f} s over {repeats} runs")


if __name__ == "__main__":
    main()
