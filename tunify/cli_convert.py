"""``tunify convert NAME``: make a model tunable and show that it is exact.

For a model file or a registry name: tunify it (the guard compares it with the original at a
random shared and per-sample λ and names the first layer that differs), print the report, and
check every corner of the λ space, per-sample rows, ``bake`` and the forward time. For a model
that is tunable already (a published, run, zoo or hub folder): its report, and ``bake(λ)``
against ``tm(λ)`` and per-sample rows against separate runs.
"""
from __future__ import annotations

import argparse
import time
from typing import List

import torch
import yaml

__all__ = ["convert_command"]


def _kwargs(pairs: List[str]) -> dict:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"--arg expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key] = yaml.safe_load(value)  # parsed as YAML scalars/lists, never evaluated
    return out


def _convert_source(args: argparse.Namespace):
    """(original network, tunify's first argument, example inputs) for a model file or a
    registry name (a model file's inputs sized as its architecture requires), or None for a
    model that is tunable already (published, run, zoo, hub folder)."""
    from .archs.model_file import describe, example_inputs
    from .publishing.resolve import identify, plain_network, underlying

    kind, where = identify(args.model)
    kind = underlying(kind, where)
    if kind not in ("model_file", "registry"):
        return None
    model, descriptor = plain_network(kind, where, _kwargs(args.arg))
    if descriptor is None:
        return model, model, (torch.rand(args.batch, args.channels, args.size, args.size),)
    print(describe(descriptor, str(where)))
    return model, descriptor, example_inputs(descriptor, args.size, args.batch)


def _lams(tm) -> list:
    """Every corner of the λ space and its centre."""
    p = tm.p
    return [tm.lam_space.vertex(i) for i in range(p)] + [torch.full((p,), 1.0 / p if tm.lam_space.kind == "simplex" else 0.5)]


def _check_tuned(args: argparse.Namespace) -> int:
    """``convert`` on a model that is tunable already: its report, and bake(λ) against tm(λ)."""
    from .archs.model_file import fit_size
    from .publishing import resolve
    from .surgery import bake

    tm = resolve(args.model).tm
    print(tm.tunify_report if args.full else tm.tunify_report.summary())
    rules = tm.config.model_file or {}
    side = fit_size(rules.get("size_requirements", {}), args.size)
    x = torch.rand(args.batch, rules.get("input_channels", args.channels), side, side)
    print("\nchecks (a tuned model: bake(λ) must equal tm(λ), each per-sample row its own run):")
    with torch.no_grad():
        lams = _lams(tm)
        for lam in lams:
            err = (bake(tm, lam)(x) - tm(x, lam=lam)).abs().max().item()
            print(f"  λ={[round(v, 3) for v in lam.tolist()]}: max |baked - tm| = {err:.2e}")
        rows = torch.stack([lams[i % len(lams)] for i in range(args.batch)])
        alone = torch.cat([tm(x[i : i + 1], lam=rows[i]) for i in range(args.batch)])
        print(f"  per-sample λ ({args.batch} rows): max |rows - separate runs| = {(tm(x, lam=rows) - alone).abs().max().item():.2e}")
    return 0


def convert_command(args: argparse.Namespace) -> int:
    from .surgery import bake, tunify
    from .surgery.guard import original_by_rows

    torch.manual_seed(0)
    found = _convert_source(args)
    if found is None:
        return _check_tuned(args)
    model, source, xs = found
    objectives = args.objectives.split(",") if args.objectives else 2
    # the guard: raises naming the first layer that differs from the original at init
    tm = tunify(source, objectives, lam_space=args.lam_space, mode=args.mode, example_inputs=xs)
    print(tm.tunify_report if args.full else tm.tunify_report.summary())
    lams = _lams(tm)
    first = lambda out: out[0] if isinstance(out, (tuple, list)) else out  # noqa: E731
    def run(m, **kw):  # inputs cloned: some forwards edit them; one seed: some draw noise (GFPGAN)
        torch.manual_seed(0)
        return first(m(*[x.clone() for x in xs], **kw))

    print("\nchecks (untrained tunable model must equal the original at every λ):")
    with torch.no_grad():
        ref = run(model)
        for lam in lams:
            err = (run(tm, lam=lam) - ref).abs().max().item()
            print(f"  λ={[round(v, 3) for v in lam.tolist()]}: max |tm - original| = {err:.2e}")
        rows = torch.stack([lams[i % len(lams)] for i in range(args.batch)])
        # where the model runs each λ row alone (why: its report), so does the original here: a
        # model that draws random numbers draws them per run
        by_rows = tm.split_reasons and xs[0].shape[0] > 1
        if by_rows:
            torch.manual_seed(0)
        ref_rows = first(original_by_rows(model, tm, rows, xs)) if by_rows else ref
        print(f"  per-sample λ ({args.batch} rows{', each λ row run alone' if by_rows else ''}): "
              f"max |tm - original| = {(run(tm, lam=rows) - ref_rows).abs().max().item():.2e}")
        plain = bake(tm, lams[-1])
        print(f"  bake(λ) is a plain {type(plain).__name__}: max |baked - original| = {(run(plain) - ref).abs().max().item():.2e}")
        t0 = time.perf_counter()
        run(model)
        t1 = time.perf_counter()
        run(tm, lam=lams[-1])
        t2 = time.perf_counter()
        side = xs[0].shape[-1]
        print(f"  one forward at {side}x{side}: original {t1 - t0:.3f} s, tunable (shared λ) {t2 - t1:.3f} s")
    return 0
