"""The ``tunify`` command line.

    tunify convert nafnet-width32            # tunify a registry model, print the report and checks
    tunify convert timm:resnet18 --size 64 --objectives fidelity,perception
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import List, Optional

import torch
import yaml

__all__ = ["main"]


def _kwargs(pairs: List[str]) -> dict:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"--arg expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key] = yaml.safe_load(value)  # parsed as YAML scalars/lists, never evaluated
    return out


def _convert(args: argparse.Namespace) -> int:
    from .archs import create_model
    from .surgery import bake, tunify

    torch.manual_seed(0)
    model = create_model(args.model, **_kwargs(args.arg)).eval()
    objectives = args.objectives.split(",") if args.objectives else 2
    tm = tunify(model, objectives, lam_space=args.lam_space, mode=args.mode)
    print(tm.tunify_report if args.full else tm.tunify_report.summary())
    x = torch.rand(args.batch, args.channels, args.size, args.size)
    p = tm.p
    lams = [tm.lam_space.vertex(i) for i in range(p)] + [torch.full((p,), 1.0 / p if args.lam_space == "simplex" else 0.5)]
    print("\nchecks (untrained tunable model must equal the original at every λ):")
    with torch.no_grad():
        ref = model(x)
        for lam in lams:
            err = (tm(x, lam=lam) - ref).abs().max().item()
            print(f"  λ={[round(v, 3) for v in lam.tolist()]}: max |tm - original| = {err:.2e}")
        rows = torch.stack([lams[i % len(lams)] for i in range(args.batch)])
        print(f"  per-sample λ ({args.batch} rows): max |tm - original| = {(tm(x, lam=rows) - ref).abs().max().item():.2e}")
        plain = bake(tm, lams[-1])
        print(f"  bake(λ) is a plain {type(plain).__name__}: max |baked - original| = {(plain(x) - ref).abs().max().item():.2e}")
        t0 = time.perf_counter()
        model(x)
        t1 = time.perf_counter()
        tm(x, lam=lams[-1])
        t2 = time.perf_counter()
        print(f"  one forward at {args.size}x{args.size}: original {t1 - t0:.3f} s, tunable (shared λ) {t2 - t1:.3f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunify", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="tunify a registry model and print what was converted")
    conv.add_argument("model", nargs="?", default="nafnet-width32", help="registry name or timm:<name> (default nafnet-width32)")
    conv.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE", help="architecture keyword argument")
    conv.add_argument("--objectives", default="", help="comma-separated objective names (default: 2 unnamed)")
    conv.add_argument("--lam-space", default="simplex", choices=["simplex", "box"])
    conv.add_argument("--mode", default="auto", choices=["auto", "fx", "module"])
    conv.add_argument("--full", action="store_true", help="list every converted layer")
    conv.add_argument("--size", type=int, default=64)
    conv.add_argument("--channels", type=int, default=3)
    conv.add_argument("--batch", type=int, default=2)
    conv.set_defaults(func=_convert)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (KeyError, ValueError, TypeError, ImportError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"tunify: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
