"""Cost of tunable models against the plain model, measured side by side in one run.

Every figure is a ratio to the plain network, taken within one round (all variants run
once, interleaved) and reported as the median over rounds: timings on these shared CPUs
swing 2-5x run to run, ratios within a round do not. Budgets are in rounds, not seconds.

Sections (issue 13's table):
  inference  B=1 shared λ, baked; B=4/8 per-sample λ (a fresh λ every call; also with the
             static rule's per-sample forms instead of the measured ones), beside the
             anchors: the unofficial port's re-mix on every call (naive) and timm CondConv2d
             (both convs only, see overhead_anchors.py); and the per-sample floor: the plain
             net plus, per tunable layer, the cheaper of building B mixed kernels or running
             its K kernels (overhead_floor.py)
  training   one step (forward, backward, AdamW) at B=8 with per-sample λ (and with the static
             rule's forms); the floor is the plain step with the optimizer over p× parameters
             swapped in
  memory     peak resident memory of a training step (a fresh process per variant)
  compile    torch.compile(tm) on the CPU: equal to eager, graphs for several λ, speed-up

    python benchmarks/overhead.py                     # full run (about 25 min on 2 cores)
    python benchmarks/overhead.py --smoke             # seconds: tiny models, for CI
    python benchmarks/overhead.py --sections inference --models rrdbnet
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from overhead_anchors import ANCHOR_LAM, CondConvAnchor, NaiveTunableConv2d, with_anchor  # noqa: E402
from overhead_floor import floor_model  # noqa: E402

from tunify import autotune, bake, tunify  # noqa: E402
from tunify.training.setup import adamw  # noqa: E402  (the trainer's optimizer: fused where torch has it)
from tunify.archs import create_model  # noqa: E402

P = 2
# name → (factory, inference size, training size)
FULL = {
    "nafnet-width32": (lambda: create_model("nafnet-width32"), 32, 64),  # trains at 64², as issue 13 measured it
    "swinir-light": (lambda: create_model("swinir-light"), 16, 16),
    "rrdbnet": (lambda: create_model("rrdbnet", num_feat=64, num_block=6, num_grow_ch=32, scale=4), 24, 24),
    "convnext-atto": (lambda: create_model("timm:convnext_atto"), 64, 64),
}
SMOKE = {
    "nafnet-tiny": (lambda: create_model("nafnet", width=8, middle_blk_num=1, enc_blk_nums=(1,), dec_blk_nums=(1,)), 32, 32),
    "rrdbnet-tiny": (lambda: create_model("rrdbnet", num_feat=16, num_block=1, num_grow_ch=8, scale=2), 16, 16),
}


def lam_rows(b: int) -> torch.Tensor:
    return torch.distributions.Dirichlet(torch.ones(P)).sample((b,))


def interleaved(variants: dict, rounds: int) -> dict:
    """Median over rounds of each variant's time / the first variant's time; plus its seconds."""
    for fn in variants.values():  # warm-up: allocator, oneDNN primitive caches, the kernel cache
        fn()
    times = {k: [] for k in variants}
    for _ in range(rounds):
        for key, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    first = next(iter(variants))
    out = {k: statistics.median(t / o for t, o in zip(times[k], times[first])) for k in variants}
    out["seconds"] = statistics.median(times[first])
    return out


def build(make) -> tuple:
    """plain model, tunable model (kernels perturbed so mixing is real), the two anchors."""
    model = make().eval()
    tm = tunify(model, P).eval()
    with torch.no_grad():
        for p in tm.parameters():
            p.add_(torch.randn_like(p) * 1e-3)
    return model, tm, with_anchor(model, NaiveTunableConv2d, P).eval(), with_anchor(model, CondConvAnchor, P).eval()


def _static_rule(fn):
    """``fn`` with the per-sample forms of the static rule, not the measured ones (layers/forms.py)."""
    def run():
        autotune(False)
        try:
            return fn()
        finally:
            autotune(True)
    return run


def _anchor(model, lam_fn):
    def run(x):
        ANCHOR_LAM[0] = lam_fn()
        return model(x)
    return run


@torch.no_grad()
def inference(name: str, make, size: int, rounds: int) -> list:
    model, tm, naive, cond = build(make)
    shared = torch.tensor([0.3, 0.7])
    rows = []
    x = torch.randn(1, 3, size, size)
    r = interleaved({
        "plain": lambda: model(x), "shared": lambda: tm(x, lam=shared), "baked": (lambda b: lambda: b(x))(bake(tm, shared)),
        "naive": lambda: _anchor(naive, lambda: shared)(x), "condconv": lambda: _anchor(cond, lambda: shared)(x),
    }, rounds)
    rows.append({"model": name, "B": 1, "size": size, "lam": "shared", **r})
    for b in (4, 8):
        x = torch.randn(b, 3, size, size)
        floor = floor_model(model, tm, b)
        r = interleaved({
            "plain": lambda: model(x), "per_sample": lambda: tm(x, lam=lam_rows(x.shape[0])),
            "static": _static_rule(lambda: tm(x, lam=lam_rows(x.shape[0]))),
            "floor": lambda: floor(x),  # the plain net plus the least extra a per-sample λ needs
            "naive": lambda: _anchor(naive, lambda: lam_rows(x.shape[0]))(x),
            "condconv": lambda: _anchor(cond, lambda: lam_rows(x.shape[0]))(x),
            # the whole model once per λ row: what models with indexed tables did before their
            # owners ran by rows (and what any split model still does)
            "whole": lambda: tm(x, lam=lam_rows(x.shape[0]), group_by_lam=True),
        }, rounds)
        owners = tm.tunify_report.per_sample.startswith("native, except")
        r["floor_layers"] = {k: sum(v == k for v in floor.floor_choice.values()) for k in ("mix", "wide")}
        rows.append({"model": name, "B": b, "size": size, "lam": "per-sample",
                     "path": "split by λ row" if tm.split_reasons else "owner rows" if owners else "native", **r})
    return rows


def _step(model, opt, x, call):
    opt.zero_grad(set_to_none=True)
    call(model, x).float().abs().mean().backward()
    opt.step()


def _opt_only(opt):
    def run():
        opt.step()  # the gradients of the last step stay in place: an optimizer step alone
    return run


def training(name: str, make, size: int, rounds: int, batch: int = 8) -> dict:
    model, tm, _, cond = build(make)
    for m in (model, tm, cond):
        m.train()
    opts = {k: adamw(list(m.parameters()), lr=1e-6) for k, m in (("plain", model), ("tm", tm), ("cond", cond))}
    x = torch.randn(batch, 3, size, size)
    plain_call = lambda m, x: m(x)  # noqa: E731
    tm_call = lambda m, x: m(x, lam=lam_rows(x.shape[0]))  # noqa: E731
    cond_call = lambda m, x: _anchor(m, lambda: lam_rows(x.shape[0]))(x)  # noqa: E731
    floor = floor_model(model, tm, batch).train()
    opts["floor"] = adamw(list(floor.parameters()), lr=1e-6)
    _step(model, opts["plain"], x, plain_call)
    _step(tm, opts["tm"], x, tm_call)
    r = interleaved({
        "plain": lambda: _step(model, opts["plain"], x, plain_call),
        "per_sample": lambda: _step(tm, opts["tm"], x, tm_call),
        "static": _static_rule(lambda: _step(tm, opts["tm"], x, tm_call)),
        "mix_floor": lambda: _step(floor, opts["floor"], x, plain_call),
        "condconv": lambda: _step(cond, opts["cond"], x, cond_call),
        "opt_plain": _opt_only(opts["plain"]), "opt_tm": _opt_only(opts["tm"]),
    }, rounds)
    # Floors: the plain step with the optimizer over p× (or p+1×) parameters in its place; and
    # that plus the least extra per-sample work at each layer (overhead_floor.py).
    r["floor"] = 1 + r["opt_tm"] - r["opt_plain"]
    r["mix_floor"] += r["opt_tm"] - r["opt_plain"]
    r["floor_layers"] = {k: sum(v == k for v in floor.floor_choice.values()) for k in ("mix", "wide")}
    return {"model": name, "B": batch, "size": size, **r}


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def memory_child(name: str, variant: str, smoke: bool) -> None:
    """Run in a fresh process: peak RSS of two training steps above the bare process."""
    torch.set_num_threads(2)
    with open("/proc/self/clear_refs", "w") as f:  # Linux: reset the high-water mark (VmHWM) to now
        f.write("5")
    base = _status_kb("VmRSS")
    make, _, size = (SMOKE if smoke else FULL)[name]
    model = make().train()
    if variant != "plain":
        model = tunify(model, P).train()
    call = (lambda m, x: m(x)) if variant == "plain" else (lambda m, x: m(x, lam=lam_rows(x.shape[0])))
    opt = adamw(list(model.parameters()), lr=1e-6)
    state = sum(p.numel() * p.element_size() for p in model.parameters()) * 4  # params, grads, 2 Adam moments
    x = torch.randn(8, 3, size, size)
    for _ in range(2):
        _step(model, opt, x, call)
    peak = _status_kb("VmHWM")
    print(json.dumps({"peak_mb": (peak - base) / 1024, "state_mb": state / 2**20}))


def memory(name: str, smoke: bool) -> dict:
    out = {"model": name}
    for variant in ("plain", "per_sample"):
        cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", name, variant] + (["--smoke"] if smoke else [])
        res = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
        out[variant] = res
    p, t = out["plain"], out["per_sample"]
    out["ratio"] = t["peak_mb"] / p["peak_mb"]
    # Activations and workspace: the peak less parameters, gradients and optimizer state.
    out["activation_ratio"] = (t["peak_mb"] - t["state_mb"]) / max(p["peak_mb"] - p["state_mb"], 1e-6)
    return out


def _graph_counter():
    graphs = []

    def backend(gm, example_inputs):
        from torch._inductor.compile_fx import compile_fx

        graphs.append(gm)
        return compile_fx(gm, example_inputs)
    return graphs, backend


@torch.no_grad()
def compiled(name: str, make, size: int, rounds: int) -> list:
    """torch.compile(tm) with λ as a tensor: equal to eager, graph counts over λ values, speed-up."""
    model, tm, _, _ = build(make)
    rows = []
    for lam_kind, b in (("shared", 1), ("per-sample", 4)):
        graphs, backend = _graph_counter()
        ctm = torch.compile(tm, backend=backend)
        cplain = torch.compile(model)
        x = torch.randn(b, 3, size, size)
        lams = [torch.tensor([0.3, 0.7]), torch.tensor([0.9, 0.1]), torch.tensor([0.0, 1.0])] if b == 1 else [lam_rows(b) for _ in range(3)]
        start = time.perf_counter()
        diffs, counts = [], []
        for lam in lams:
            diffs.append((ctm(x, lam=lam) - tm(x, lam=lam)).abs().max().item())
            counts.append(len(graphs))
        compile_s = time.perf_counter() - start
        cur = [lams[0]]
        r = interleaved({"eager": lambda: tm(x, lam=cur[0]), "compiled": lambda: ctm(x, lam=cur[0]),
                         "plain_eager": lambda: model(x), "plain_compiled": lambda: cplain(x)}, rounds)
        rows.append({"model": name, "B": b, "lam": lam_kind, "max_abs_diff": max(diffs), "graphs_after_each_lam": counts,
                     "compile_s": compile_s, "speedup": 1 / r["compiled"], "plain_speedup": r["plain_eager"] / r["plain_compiled"],
                     "compiled_vs_plain_eager": r["compiled"] / r["plain_eager"], "eager_s": r["seconds"]})
    return rows


def conversion_time(name: str, repeats: int) -> dict:
    import timm

    model = timm.create_model(name, pretrained=False)
    tunify(timm.create_model("resnet18", pretrained=False), P)  # imports and fx warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        tunify(model, P)
        times.append(time.perf_counter() - start)
    return {"model": name, "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
            "first_s": times[0], "median_s": statistics.median(times), "max_s": max(times)}


def _x(v: float) -> str:
    return f"{v:.3f}×"


def report(res: dict) -> str:
    """Markdown tables of a results dict (what README's overhead section shows)."""
    out = [f"torch {res['torch']}, {res['threads']} CPU threads, no GPU lent (CPU only)", ""]
    if res.get("inference"):
        out += ["| model | B | size | plain s | tunify | static rule | floor (layers mix, wide) | baked | naive re-mix | CondConv2d | per-sample path | whole-model split |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in res["inference"]:
            key = "shared" if r["lam"] == "shared" else "per_sample"
            floor = f"{_x(r['floor'])} ({r['floor_layers']['mix']}, {r['floor_layers']['wide']})" if "floor" in r else "–"
            static = _x(r["static"]) if "static" in r else "–"
            out.append(f"| {r['model']} | {r['B']} ({r['lam']}) | {r['size']} | {r['seconds']:.4f} | {_x(r[key])} | {static} | {floor} | "
                       f"{_x(r['baked']) if 'baked' in r else '–'} | {_x(r['naive'])} | {_x(r['condconv'])} | {r.get('path', '–')} | "
                       f"{_x(r['whole']) if 'whole' in r else '–'} |")
        out.append("")
    if res.get("training"):
        out += ["| model | B | size | plain step s | tunify per-sample | static rule | floor (optimizer over p× params) | floor with the per-layer extra (layers mix, wide) | CondConv2d | AdamW alone: plain s, tunify s |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in res["training"]:
            extra = f"{_x(r['mix_floor'])} ({r['floor_layers']['mix']}, {r['floor_layers']['wide']})" if "mix_floor" in r else "–"
            static = _x(r["static"]) if "static" in r else "–"
            out.append(f"| {r['model']} | {r['B']} | {r['size']} | {r['seconds']:.3f} | {_x(r['per_sample'])} | {static} | {_x(r['floor'])} | {extra} | "
                       f"{_x(r['condconv'])} | {r['opt_plain'] * r['seconds']:.3f}, {r['opt_tm'] * r['seconds']:.3f} |")
        out.append("")
    if res.get("memory"):
        out += ["| model | plain peak MB | tunify peak MB | ratio | params+grads+AdamW MB (plain, tunify) | ratio without them |", "|---|---|---|---|---|---|"]
        for r in res["memory"]:
            p, t = r["plain"], r["per_sample"]
            out.append(f"| {r['model']} | {p['peak_mb']:.0f} | {t['peak_mb']:.0f} | {_x(r['ratio'])} | {p['state_mb']:.0f}, {t['state_mb']:.0f} | {_x(r['activation_ratio'])} |")
        out.append("")
    if res.get("compile"):
        out += ["| model | B (λ) | max abs diff vs eager | graphs after λ 1, 2, 3 | compile s | speed-up (tunify) | speed-up (plain) | compiled tunify / eager plain |", "|---|---|---|---|---|---|---|---|"]
        for r in res["compile"]:
            out.append(f"| {r['model']} | {r['B']} ({r['lam']}) | {r['max_abs_diff']:.1e} | {', '.join(map(str, r['graphs_after_each_lam']))} | "
                       f"{r['compile_s']:.0f} | {r['speedup']:.2f}× | {r['plain_speedup']:.2f}× | {_x(r['compiled_vs_plain_eager'])} |")
        out.append("")
    if res.get("conversion"):
        c = res["conversion"]
        out.append(f"tunify() on timm {c['model']} ({c['params_M']:.0f}M params): first {c['first_s']:.2f} s, median {c['median_s']:.2f} s")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny models and inputs (seconds)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", default="", help="comma-separated subset of the models")
    parser.add_argument("--sections", default="inference,training,memory,compile,conversion")
    parser.add_argument("--rounds", type=int, default=0, help="rounds per measurement (default: 5 full, 2 smoke)")
    parser.add_argument("--compile-models", default="rrdbnet", help="models for the compile section")
    parser.add_argument("--out", default="", help="write the results as JSON here (and the tables beside it as .md)")
    parser.add_argument("--merge", nargs="+", default=[], help="merge result JSONs (one per model run) into --out")
    parser.add_argument("--inference-size", type=int, default=0,
                        help="inference input side for every model run (default: each model's own, e.g. 192 for "
                             "ConvNeXt-atto as issue 13 measured it)")
    parser.add_argument("--training-size", type=int, default=0,
                        help="training crop side for every model run (default: each model's own)")
    parser.add_argument("--memory-child", nargs=2, metavar=("MODEL", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        return memory_child(*args.memory_child, smoke=args.smoke)
    if args.merge:
        return _merge(args.merge, args.out)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = SMOKE if args.smoke else FULL
    names = [n for n in models if not args.models or n in args.models.split(",")]
    rounds = args.rounds or (2 if args.smoke else 5)
    sections = args.sections.split(",")
    res = {"torch": torch.__version__, "threads": torch.get_num_threads(), "rounds": rounds,
           "inference": [], "training": [], "memory": [], "compile": []}
    for name in names:
        make, inf_size, train_size = models[name]
        inf_size, train_size = args.inference_size or inf_size, args.training_size or train_size
        steps = [("inference", lambda: res["inference"].extend(inference(name, make, inf_size, rounds))),
                 ("training", lambda: res["training"].append(training(name, make, train_size, max(2, rounds - 1)))),
                 ("memory", lambda: res["memory"].append(memory(name, args.smoke)))]
        if args.smoke or name in args.compile_models.split(","):
            steps.append(("compile", lambda: res["compile"].extend(compiled(name, make, inf_size, rounds))))
        for section, run in steps:
            if section in sections:
                run()
                print(f"[{name}: {section} done]", flush=True)
                _write(res, args.out)  # after every section: a stopped run keeps what it measured
        print(report({**res, "conversion": None}).split("\n", 2)[-1], flush=True)
    if "conversion" in sections:
        res["conversion"] = conversion_time("resnet18" if args.smoke else "wide_resnet101_2", 2 if args.smoke else 3)
    print("\n" + report(res))
    _write(res, args.out)


def _write(res: dict, out: str) -> None:
    if not out:
        return
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    with open(os.path.splitext(out)[0] + ".md", "w") as f:
        f.write(report(res) + "\n")


def _merge(files: list, out: str) -> None:
    """One table from several runs (e.g. one process per model, run one after another)."""
    res: dict = {}
    for path in files:
        with open(path) as f:
            part = json.load(f)
        for key, value in part.items():
            if isinstance(value, list):
                res.setdefault(key, []).extend(value)
            elif value is not None or key not in res:
                res[key] = value
    print(report(res))
    _write(res, out)


if __name__ == "__main__":
    main()
