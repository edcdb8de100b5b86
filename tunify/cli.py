"""The ``tunify`` command line.

    tunify quickstart                        # the embedded default: a denoiser with a grain knob
    tunify train RECIPE.yaml [--set optim.lr=1e-4 ...] [--resume [--allow-changed-recipe]] [--smoke] [--stop-after N]
    tunify convert nafnet-width32            # tunify a registry model, print the report and checks
    tunify convert 4x_model.pth              # any model file spandrel reads (.pth/.pt/.ckpt/.safetensors)
    tunify publish RUN --to DIR | tunify load NAME [--verify] | tunify zoo
    tunify export NAME --format onnx|torch-export --out FILE [--lam 0.3,0.7]
    tunify demo [NAME]                       # a local page: upload an image, move λ
    tunify sweep NAME --images DIR [--points 11] [--out DIR]   # metrics, plots and a grid across λ

Every failure prints one line (``tunify: error: ...``) and exits non-zero: 2 for a problem with
the input, 3 when training stopped on a NaN/inf loss, 1 for a bug (TUNIFY_TRACEBACK=1 shows it).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional

import yaml

__all__ = ["main"]


def _convert(args: argparse.Namespace) -> int:
    from .cli_convert import convert_command

    return convert_command(args)


def recipe_path(name: str) -> Path:
    """A recipe file: a path, or the name of one shipped with tunify (recipes/, package data in a wheel)."""
    from .shipped import shipped_dir

    path = Path(name)
    if path.is_file():
        return path
    shipped = shipped_dir("recipes")
    for candidate in (shipped / name, shipped / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in shipped.glob("*.yaml"))
    from ._text import did_you_mean

    raise FileNotFoundError(f"no recipe {name!r} (not a file, not in {shipped}).{did_you_mean(name, known)} "
                            f"Shipped recipes: {', '.join(known) or 'none'}.")


def _read_recipe(args: argparse.Namespace):
    """The recipe as the command line says: YAML syntax errors name the file, line and column;
    ``--smoke`` runs get a folder of their own (``<dir>-smoke``) unless an output dir is given."""
    from .training import load_recipe
    from .training.recipe import parse_override
    from .training.schema import load_yaml_text

    path = recipe_path(args.recipe)
    load_yaml_text(path.read_text(), source=str(path))  # syntax first, with the position
    overrides = list(args.set)
    for item in overrides:
        try:
            parse_override(item)
        except yaml.YAMLError as exc:
            raise ValueError(f"--set {item!r}: the value is not valid YAML ({exc.problem or exc}); quote strings "
                             "that hold YAML characters, e.g. --set name='a: b'") from None
    if getattr(args, "out", None):
        overrides.append(f"output.dir={args.out}")
    recipe = load_recipe(path, overrides=overrides, smoke=args.smoke)
    chosen = any(item.split("=", 1)[0].strip() == "output.dir" for item in overrides) or "output.dir" in recipe.smoke
    if args.smoke and not chosen:  # a smoke run must never land in (or refuse) the real run's folder
        recipe.output.dir = recipe.output.dir.rstrip("/") + "-smoke"
    return recipe


def _command(args: argparse.Namespace) -> str:
    base = "tunify quickstart" if args.command == "quickstart" else f"tunify train {args.recipe}"
    return base + (" --smoke" if args.smoke else "")


def _explain_existing(exc, args: argparse.Namespace) -> FileExistsError:
    """A run is already there: say how to continue it or start over, in this command's words."""
    cmd, out = _command(args), exc.out
    fresh = f"{cmd} --out DIR" if args.command == "quickstart" else f"{cmd} --set output.dir=DIR"
    if exc.step is not None and exc.total and exc.step >= exc.total and (out / "sweep.md").is_file():
        return FileExistsError(f"{out} already holds a finished run (step {exc.step} of {exc.total}; results in "
                               f"{out / 'sweep.md'}). To start over, delete {out} or run `{fresh}`")
    return FileExistsError(f"{out} already holds an unfinished run ({exc.stage} checkpoint at step {exc.step} of "
                           f"{exc.total}): continue it with `{cmd} --resume`, or start over with `{fresh}` "
                           f"(or delete {out})")


def _report(recipe, run, seconds: float) -> str:
    parts = [f"{n} {stage} step{'s' if n != 1 else ''}" for stage, n in run.steps_run.items()]
    where = f"{run.fit.stage} at step {run.fit.step} of " \
            f"{recipe.pretrain.steps if run.fit.stage == 'pretrain' else recipe.optim.steps}"
    resumed = f", resumed from step {run.fit.start}" if run.fit.start else ""
    return (f"{recipe.name}: ran {' + '.join(parts) or 'no steps'} in {seconds:.1f} s "
            f"({run.fit.sec_per_step:.3f} s/step{resumed}); {where} -> {run.output_dir}")


def _train(args: argparse.Namespace) -> int:
    from .training import run_recipe
    from .training.guard import RunExistsError
    from .training.setup import leave_distributed

    recipe = _read_recipe(args)
    start = time.perf_counter()
    try:
        run = run_recipe(recipe, resume=args.resume, stop_after=args.stop_after,
                         allow_changed_recipe=args.allow_changed_recipe)
    except RunExistsError as exc:
        leave_distributed(wait=False)
        raise _explain_existing(exc, args) from None
    except BaseException:
        leave_distributed(wait=False)
        raise
    leave_distributed()
    if run.files:
        print(f"\nwrote {', '.join(str(p) for p in run.files.values())}")
    print(_report(recipe, run, time.perf_counter() - start))
    return 0


def _publish(args: argparse.Namespace) -> int:
    from .publishing import add_to_zoo, publish_run

    name = args.name or Path(args.to).resolve().name  # the zoo name follows --to unless --name is given
    folder = publish_run(args.run_dir, args.to, name=name, adapter_only=args.adapter_only)
    print(f"published {args.run_dir} -> {folder} ({', '.join(sorted(p.name for p in folder.iterdir()))})")
    if args.zoo:
        entry = add_to_zoo(folder, recipe=args.recipe)
        print(f"zoo entry {entry['name']}: sha256 {entry['sha256']}, {entry['size']:,} bytes")
    return 0


def _load(args: argparse.Namespace) -> int:
    from .publishing import resolve, verify_card
    from .publishing.card import sweep_table

    resolved = resolve(args.name)
    tm = resolved.tm
    config = tm.config
    step = f", checkpoint at step {config.step}" if config.step is not None else ""
    arch = config.arch or f"model file {config.weights}"
    print(f"{resolved.name} ({resolved.kind}{step}): tunable {arch} {config.arch_kwargs or {}}, "
          f"λ {config.lam_space} over {', '.join(config.objectives)}")
    for o in config.objective_list():
        print(f"  {o['name']}: {o['description'] or '-'}")
    if config.metrics:
        print(sweep_table(config.metrics, list(tm.objectives), config.lam_space))
    if args.verify:
        if resolved.folder is None or not config.metrics:
            raise ValueError(f"{args.name} has no measured sweep to verify ({resolved.kind}): --verify re-measures "
                             "a published or zoo model's card")
        rows = verify_card(tm, resolved.folder)
        worst = max(abs(r["delta"]) for r in rows)
        for r in rows:
            print(f"  λ={r['lam']}: card {r['published']:.3f} dB, measured {r['measured']:.3f} dB ({r['delta']:+.4f})")
        print(f"largest difference {worst:.4f} dB ({'within' if worst <= 0.05 else 'OUTSIDE'} 0.05 dB)")
        return 0 if worst <= 0.05 else 1
    return 0


def _zoo(args: argparse.Namespace) -> int:
    from .publishing import zoo_index

    models = zoo_index()["models"]
    if not models:
        print("the zoo is empty")
    for m in models:
        lam = "; ".join(f"{k}: {v}" for k, v in m["lam"].items())
        print(f"{m['name']}  ({m['arch']}, {m['size'] / 1e6:.1f} MB)  {lam}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .export import export_command

    lam = [float(v) for v in args.lam.split(",")] if args.lam else None
    summary = export_command(args.model, args.format, args.out, lam=lam)
    print(f"exported {args.model} -> {summary['path']} ({summary['format']}, {summary['file_size']:,} bytes)")
    print(f"  inputs {summary['inputs']}, dynamic axes {summary['dynamic_axes']}")
    for key, err in summary["max_abs_error"].items():
        print(f"  λ={key}: max |exported - eager| = {err:.2e}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from .evaluation import check_metrics, is_paired_folder, parse_lams, require_matplotlib, sweep
    from .publishing import recipe_settings, resolve
    from .archs.sizing import sized_forward
    from .training.schema import load_yaml_text

    metrics = check_metrics(args.metrics)
    lams = parse_lams(args.lam) if args.lam else None
    degradation, where = None, "--degradation"
    if args.degradation:
        try:
            degradation = load_yaml_text(args.degradation)
        except yaml.YAMLError as exc:
            raise ValueError(f"--degradation is not valid YAML ({exc}); write e.g. "
                             "\"[{type: gaussian_noise, sigma: 25}]\"") from None
    if degradation is not None and is_paired_folder(args.images):
        raise ValueError(f"--degradation applies to clean images, but {args.images} holds lq/ and gt/ pairs "
                         "(their lq images are already degraded): drop --degradation")
    require_matplotlib()
    resolved = resolve(args.model)
    tm, folder = resolved.tm, resolved.folder
    settings = recipe_settings(folder)
    if degradation is None and settings.get("degradation") is not None:
        degradation, where = settings["degradation"], f"{folder / 'recipe.yaml'}"
    name = resolved.name
    out = Path(args.out or f"runs/sweep-{name}")
    result = sweep(tm, args.images, lams=lams, points=args.points, degradation=degradation, loss=settings.get("loss"),
                   metrics=metrics, max_size=args.max_size, seed=args.seed, progress=not args.no_progress, name=name,
                   forward=sized_forward(tm))
    if "loss" in result.skipped and settings.get("loss_reason"):
        result.skipped["loss"] = settings["loss_reason"]
    files = result.save(out)
    print(result.table())
    for line in list(result.skipped.values()) + list(result.settings.get("notes") or []):
        print(line)
    if result.settings.get("degradation") is not None:
        print(f"inputs: {len(result.images)} images degraded with {result.settings['degradation']} "
              f"(from {where}, seed {args.seed})")
    print(f"wrote {', '.join(str(p) for p in files.values())}")
    print(f"{name}: {len(result.rows)} λ × {len(result.images)} images in {result.settings['seconds']:.1f} s -> {out}")
    return 0


DEFAULT_DEMO_MODEL = "realesr-compact-x4-pd"  # real Real-ESRGAN weights with a look–fidelity knob


def _demo(args: argparse.Namespace) -> int:
    from .demo import serve
    from .publishing import resolve
    from .archs.sizing import sized_forward

    resolved = resolve(args.model)
    name = resolved.name
    server, _ = serve(resolved.tm, name=name, host=args.host, port=args.port, forward=sized_forward(resolved.tm))
    host, port = server.server_address[:2]
    print(f"tunify demo of {name} on http://{host}:{port}/  (Ctrl+C to stop)")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print("warning: listening beyond loopback; anyone who can reach this address can use the demo")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


MODEL_HELP = ("a zoo name, a published folder, a training run's folder (its latest checkpoint), a model file "
              "(.pth/.pt/.ckpt/.safetensors, read by spandrel; untrained: every λ gives the original), a registry "
              "name or timm:<name> (untrained), or hf-hub:owner/name")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunify", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_convert, _add_training, _add_publishing, _add_use):
        add(sub)
    return parser


def _add_convert(sub) -> None:
    """tunify convert: a registry model or a model file made tunable, and what was converted."""
    conv = sub.add_parser("convert", help="tunify a registry model or a model file and print what was converted")
    conv.add_argument("model", nargs="?", default="nafnet-width32", help=MODEL_HELP + " (default nafnet-width32); "
                      "a model that is tunable already gets its report and bake(λ) checked against tm(λ)")
    conv.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE", help="architecture keyword argument")
    conv.add_argument("--objectives", default="", help="comma-separated objective names (default: 2 unnamed)")
    conv.add_argument("--lam-space", default="simplex", choices=["simplex", "box"])
    conv.add_argument("--mode", default="auto", choices=["auto", "fx", "module"])
    conv.add_argument("--full", action="store_true", help="list every converted layer")
    conv.add_argument("--size", type=int, default=64)
    conv.add_argument("--channels", type=int, default=3)
    conv.add_argument("--batch", type=int, default=2)
    conv.set_defaults(func=_convert)


def _add_training(sub) -> None:
    """tunify train / quickstart: a recipe run, with the options both take."""
    def add_run_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a recipe value, e.g. optim.lr=1e-4 (parsed as YAML, never evaluated)")
        p.add_argument("--resume", action="store_true", help="continue the run in the output dir from its latest checkpoint")
        p.add_argument("--smoke", action="store_true", help="apply the recipe's smoke: overrides (a tiny run)")
        p.add_argument("--stop-after", type=int, default=None, metavar="N",
                       help="stop after N steps, pretraining included (resume later)")
        p.add_argument("--allow-changed-recipe", action="store_true",
                       help="with --resume: continue even though the recipe differs from the stored one")
        p.set_defaults(func=_train)

    train = sub.add_parser("train", help="fine-tune a tunified model as a YAML recipe says")
    train.add_argument("recipe", help="recipe file, or the name of a shipped recipe (recipes/NAME.yaml)")
    add_run_options(train)
    quick = sub.add_parser("quickstart", help="the embedded default: recipes/quickstart.yaml (about 3 minutes on 2 CPU cores)")
    quick.add_argument("--out", default=None, help="output dir (default runs/quickstart)")
    add_run_options(quick)
    quick.set_defaults(recipe="quickstart")


def _add_publishing(sub) -> None:
    """tunify publish / load / export: from a run to a folder, a card, a deployable file."""
    pub = sub.add_parser("publish", help="turn a training run's final checkpoint into a published folder")
    pub.add_argument("run_dir")
    pub.add_argument("--to", required=True, help="output folder")
    pub.add_argument("--name", default=None, help="model name (default: the --to folder's name)")
    pub.add_argument("--zoo", action="store_true", help="also list it in zoo/index.json")
    pub.add_argument("--recipe", default=None, help="recipe path to record in the zoo entry")
    pub.add_argument("--adapter-only", action="store_true",
                     help="a low-rank run (tunify.rank): write only the deltas, naming the base weights and their sha256")
    pub.set_defaults(func=_publish)
    load = sub.add_parser("load", help="load a model (zoo name, folder, run, model file, ...) and show its card")
    load.add_argument("name", help=MODEL_HELP)
    load.add_argument("--verify", action="store_true", help="re-measure the card's λ sweep (must match within 0.05 dB)")
    load.set_defaults(func=_load)
    exp = sub.add_parser("export", help="export a published model with λ as an input (or baked at --lam)")
    exp.add_argument("model", help=MODEL_HELP)
    exp.add_argument("--format", default="onnx", choices=["onnx", "torch-export"])
    exp.add_argument("--lam", default=None, help="bake this λ (comma-separated) instead of making λ an input")
    exp.add_argument("--out", required=True, help="output file (.onnx or .pt2)")
    exp.set_defaults(func=_export)


def _add_use(sub) -> None:
    """tunify demo / sweep / zoo: what a model does at each λ, and what is published."""
    demo = sub.add_parser("demo", help="a local page: upload an image and move λ")
    demo.add_argument("model", nargs="?", default=DEFAULT_DEMO_MODEL, help=f"{MODEL_HELP} (default {DEFAULT_DEMO_MODEL})")
    demo.add_argument("--host", default="127.0.0.1", help="default: loopback only")
    demo.add_argument("--port", type=int, default=7860)
    demo.set_defaults(func=_demo)
    sw = sub.add_parser("sweep", help="measure and picture what λ does: metrics per λ, plots, an image grid")
    sw.add_argument("model", help=MODEL_HELP)
    sw.add_argument("--images", required=True,
                    help="folder of clean images (or with lq/ and gt/ subfolders), a file, or skimage:name1,name2")
    sw.add_argument("--out", default=None, help="output folder (default runs/sweep-<name>)")
    sw.add_argument("--points", type=int, default=11, help="λ grid points per axis (default 11)")
    sw.add_argument("--lam", default=None, help='explicit λ rows instead of a grid, e.g. "1,0;0.5,0.5"')
    sw.add_argument("--degradation", default=None,
                    help='YAML list of degradation steps for clean images, e.g. "[{type: gaussian_noise, sigma: 25}]" '
                         "(default: the model recipe's)")
    sw.add_argument("--max-size", type=int, default=512, help="shrink clean images to this longer side (default 512)")
    sw.add_argument("--metrics", default="psnr,ssim,loss,niqe,lpips", help="comma-separated subset of "
                    "psnr,ssim,loss,niqe,lpips (default all; those that cannot run are skipped with the reason)")
    sw.add_argument("--seed", type=int, default=0, help="seed of the degradation noise (default 0)")
    sw.add_argument("--no-progress", action="store_true", help="no progress bar")
    sw.set_defaults(func=_sweep)
    zoo = sub.add_parser("zoo", help="list the published checkpoints")
    zoo.set_defaults(func=_zoo)


def main(argv: Optional[List[str]] = None) -> int:
    """Run one command; a failure prints one line on stderr and returns non-zero (never a traceback,
    unless TUNIFY_TRACEBACK=1)."""
    from .cli_errors import describe, show_traceback

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as exc:
        if show_traceback():
            raise
        message, code = describe(exc)
        print(f"tunify: {message}", file=sys.stderr)
        return code
    except KeyboardInterrupt as exc:
        message, code = describe(exc)
        print(f"\ntunify: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
