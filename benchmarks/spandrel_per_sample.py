"""Per-sample λ cost on every spandrel architecture (tests/spandrel_zoo.py's tiny builds).

For each: path (fx/module), per-sample mode (native; owner rows: only the modules owning an
indexed weight-like tensor run on their own rows, vmapped or once per λ row; split rows: the
whole model once per λ row, with why), what was skipped, and the median time of a per-sample
call (B distinct λ rows) over a shared-λ call, next to that of the whole model run once per λ
row (``group_by_lam=True``: what every split model did before), interleaved call by call so
that machine load hits all alike; and at B=1, a call at one fixed λ (the fast path:
surgery/fast.py) over the model baked at that λ, the plain network. Prints a Markdown table.

    .venv/bin/python benchmarks/spandrel_per_sample.py [--batch 4] [--repeats 5] [--only SPAN,FBCNN] [--size 64]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from spandrel_zoo import SPANDREL_ZOO  # noqa: E402

from tunify import bake, tunify  # noqa: E402


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


@torch.no_grad()
def measure(entry, batch: int, repeats: int, size: int = 0) -> dict:
    torch.manual_seed(0)
    model = entry.build().eval()
    side = tuple(entry.shape[2:]) if not size else (size, size)
    shape = (batch if entry.shape[0] > 1 or entry.slow else 1, entry.shape[1], *side)  # GFPGAN: B=1 in the suite for time only
    args = type(entry)(entry.arch, entry.cls, entry.kwargs, shape, entry.slow, entry.masked).inputs()
    tm = tunify(model, 2).eval()
    n = args[0].shape[0]
    rows = torch.stack([torch.tensor([i / max(n - 1, 1), 1 - i / max(n - 1, 1)]) for i in range(n)])
    # a fresh λ on every call: neither form may reuse kernels mixed for the call before
    shared = lambda k: tm(*[a.clone() for a in args], lam=[0.3 + 0.01 * k, 0.7 - 0.01 * k])  # noqa: E731
    per_sample = lambda k: tm(*[a.clone() for a in args], lam=(rows + 0.01 * k) / (1 + 0.02 * k))  # noqa: E731
    # what every split model did before owners ran by rows: the whole model once per λ row
    whole = lambda k: tm(*[a.clone() for a in args], lam=(rows + 0.01 * k) / (1 + 0.02 * k), group_by_lam=True)  # noqa: E731
    one = tuple(a[:1] for a in args)
    fixed, plain = torch.tensor([0.3, 0.7]), bake(tm, [0.3, 0.7])
    at_fixed = lambda k: tm(*[a.clone() for a in one], lam=fixed)  # noqa: E731
    baked = lambda k: plain(*[a.clone() for a in one])  # noqa: E731
    for fn in (shared, per_sample, whole):  # warm-up (and any fallback decided on the first call)
        fn(0)
    ts, tp, tw, tf, tb = [], [], [], [], []
    for k in range(1, repeats + 1):
        ts.append(_time(lambda: shared(k)))
        tp.append(_time(lambda: per_sample(k)))
        tw.append(_time(lambda: whole(k)))
    # apart: a call at another λ in between would make every fixed-λ call re-mix its kernels
    for fn in (at_fixed, at_fixed, baked):
        fn(0)
    for k in range(1, 3 * repeats + 1):
        tf.append(_time(lambda: at_fixed(k)))
        tb.append(_time(lambda: baked(k)))
    r = tm.tunify_report
    skipped = sorted({s.reason.split(":")[0].split(";")[0][:60] for s in r.skipped})
    mode = "native" if r.per_sample == "native" else "owner rows" if r.per_sample.startswith("native, except") \
        else "native, unfused" if r.per_sample.startswith("native;") else "split rows"
    return {"arch": entry.arch, "path": r.path, "per_sample": mode,
            "why": "" if mode == "native" else r.per_sample[:90] if mode == "native, unfused" else r.per_sample.split("(", 1)[-1][:90],
            "ratio": statistics.median(tp) / statistics.median(ts), "batch": n,
            "whole": statistics.median(tw) / statistics.median(ts),
            "fast": statistics.median(f / b for f, b in zip(tf, tb)), "fast_kind": type(tm.__dict__.get("_fast")).__name__,
            "shared_ms": 1000 * statistics.median(ts), "skipped": f"{len(r.skipped)}: {'; '.join(skipped)}" if skipped else "0"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", default="")
    ap.add_argument("--size", type=int, default=0, help="input side for every architecture (default: the suite's)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    only = set(filter(None, args.only.split(",")))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s)\n")
    print("| arch | path | per-sample | B | shared ms | per-sample / shared | whole-model split / shared "
          "| B=1 one λ / baked | fast path | skipped | why split |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for entry in SPANDREL_ZOO:
        if (only and entry.arch not in only) or (entry.slow and not only):
            continue
        try:
            m = measure(entry, args.batch, args.repeats, args.size)
        except Exception as exc:  # a row per arch, whatever happens
            print(f"| {entry.arch} | error: {type(exc).__name__}: {str(exc)[:80]} ||||||||||", flush=True)
            continue
        print(f"| {m['arch']} | {m['path']} | {m['per_sample']} | {m['batch']} | {m['shared_ms']:.1f} | "
              f"{m['ratio']:.2f}x | {m['whole']:.2f}x | {m['fast']:.2f}x | {m['fast_kind']} | {m['skipped']} | {m['why']} |",
              flush=True)


if __name__ == "__main__":
    main()
