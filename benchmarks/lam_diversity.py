"""Training-step cost of λ diversity, side by side in one run.

One optimizer step (forward, parametric loss, backward, AdamW) of:
  plain      the original model, one objective (a plain fine-tune)
  K=1        the tunable model, one λ for the whole batch (fast shared path)
  K=2, K=4   K distinct λ per batch, run as K shared-λ sub-batches
  per-sample every sample its own λ (grouped convolutions)
Variants are interleaved round by round and the median ratio to ``plain`` is printed: more
distinct λ per step covers the λ space faster but costs step time.

    python benchmarks/lam_diversity.py            # NAFNet width 16 (64x64) and width 32 (64x64, 128x128), B=8
    python benchmarks/lam_diversity.py --smoke
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from tunify import tunify
from tunify.archs import create_model
from tunify.objectives import Objective, ObjectiveSet, ParametricLoss
from tunify.training.samplers import LamSampler


def step_fn(model, tunable: bool, k, batch, lam, ploss, opt):
    def run():
        if tunable:
            pred = model(batch["lq"], lam=lam, group_by_lam=k not in (None, "per-sample"))
        else:
            pred = model(batch["lq"])
        loss, _ = ploss(pred, batch, lam)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return run


def measure(name: str, kwargs: dict, batch_size: int, size: int, rounds: int) -> dict:
    torch.manual_seed(0)
    plain = create_model("nafnet", **kwargs)
    tm = tunify(plain, ["clean", "input"])
    gt = torch.rand(batch_size, 3, size, size)
    batch = {"gt": gt, "lq": gt + 0.1 * torch.randn_like(gt)}
    two = ParametricLoss(ObjectiveSet([Objective("clean", [{"type": "MSELoss"}], "clean"),
                                       Objective("input", [{"type": "MSELoss"}], "input")]))
    one = ParametricLoss(ObjectiveSet([Objective("clean", [{"type": "MSELoss"}], "clean")]))
    g = torch.Generator().manual_seed(0)
    variants = {"plain": step_fn(plain, False, None, batch, torch.ones(batch_size, 1), one,
                                 torch.optim.AdamW(plain.parameters(), 1e-4))}
    opt = torch.optim.AdamW(tm.parameters(), 1e-4)
    for k in (1, 2, 4, "per-sample"):
        distinct = batch_size if k == "per-sample" else k
        lam = LamSampler(2, distinct=distinct).sample(batch_size, g)
        variants[f"K={k}" if k != "per-sample" else k] = step_fn(tm, True, k, batch, lam, two, opt)
    for fn in variants.values():
        fn()
    times = {k: [] for k in variants}
    for _ in range(rounds):
        for key, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    base = times["plain"]
    return {"model": name, "plain_s": statistics.median(base),
            **{k: statistics.median(t / b for t, b in zip(v, base)) for k, v in times.items() if k != "plain"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tiny = dict(width=8, middle_blk_num=1, enc_blk_nums=[1], dec_blk_nums=[1])
    W32 = dict(width=32, middle_blk_num=12, enc_blk_nums=[2, 2, 4, 8], dec_blk_nums=[2, 2, 2, 2])
    if args.smoke:
        cases = [("nafnet-w8", tiny, 4, 32, 2)]
    else:
        cases = [("nafnet-w16 (quickstart)", dict(width=16, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1]), 8, 64, 15),
                 ("nafnet-width32", W32, 8, 64, 5),
                 ("nafnet-width32", W32, 8, 128, 3)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; training step time relative to a plain fine-tune\n")
    print(f"{'model':<26}{'B':>3}{'crop':>6}{'plain s':>9}{'K=1':>8}{'K=2':>8}{'K=4':>8}{'per-sample':>12}")
    for name, kw, b, size, rounds in cases:
        r = measure(name, kw, b, size, rounds)
        print(f"{name:<26}{b:>3}{size:>6}{r['plain_s']:>9.3f}{r['K=1']:>7.2f}x{r['K=2']:>7.2f}x{r['K=4']:>7.2f}x"
              f"{r['per-sample']:>11.2f}x", flush=True)


if __name__ == "__main__":
    main()
