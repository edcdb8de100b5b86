"""A tuned model as a self-describing folder: ``save_pretrained`` / ``from_pretrained``.

Layout (Hugging Face hub conventions, so the folder can be pushed as a model repository):

    config.json         architecture + kwargs, p, objectives and what each λ corner means,
                        λ space, targets, tunify version, recipe and weights sha256, metrics
    model.safetensors   the converted network's state_dict (kernel stacks included)
    recipe.yaml         the recipe that trained it (when known)
    README.md           a generated model card (sweep table and image strip when measured)
    sweep.png           the λ strip (when measured)

Loading never runs pickled code: safetensors, or ``torch.load(weights_only=True)`` for a
legacy ``pytorch_model.pth``.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch

from ..version import __version__
from ..archs import create_model
from ..archs.weights import state_mismatch
from ..layers import PER_OBJECTIVE_SUFFIXES
from ..surgery import TunableModel, TunifyConfig, tunify
from ..surgery.config import objective_entries
from ..files import atomic_write_text
from .layout import CONFIG_NAME, FORMAT_VERSION, LEGACY_WEIGHTS, WEIGHTS_NAME, saved_config, sha256_file, write_recipe, write_tensors

__all__ = ["save_pretrained", "from_pretrained", "sha256_file", "CONFIG_NAME", "WEIGHTS_NAME", "FORMAT_VERSION"]



def _spandrel_record(config: TunifyConfig) -> Optional[Dict[str, Any]]:
    """What rebuilds a network made from a model file without the file (spandrel's arch id,
    tensor shapes, hyper-parameters, scale, size requirements, tiling), or None."""
    record = config.model_file
    return record if isinstance(record, dict) and "spandrel_arch" in record else None


def _build(config: Dict[str, Any], folder: Path):
    """The plain network config.json describes: from its model-file record, else by arch name."""
    try:
        if config.get("model_file"):
            from ..archs.model_file import model_from_config

            return model_from_config(config["model_file"])
        return create_model(config["arch"], **config.get("arch_kwargs", {}))
    except Exception as exc:
        raise ValueError(f"{folder / CONFIG_NAME}: cannot build architecture {config['arch']!r} "
                         f"with {config.get('arch_kwargs')} ({type(exc).__name__}: {exc})") from exc


def _arch_of(config: TunifyConfig, arch: Optional[str], arch_kwargs: Optional[Dict[str, Any]]):
    arch = arch or config.arch
    kwargs = arch_kwargs if arch_kwargs is not None else config.arch_kwargs
    record = _spandrel_record(config)
    if not arch and record:  # made from a model file: config.json's model_file field rebuilds it
        arch, kwargs = f"spandrel:{record['spandrel_arch']}", record.get("hyperparameters", {})
    if not arch:
        raise ValueError(
            "save_pretrained needs to know how to rebuild the network: pass arch= (a registry name, "
            "'timm:<name>' or 'package.module:Class') and arch_kwargs=, or build the model from a recipe"
        )
    return arch, dict(kwargs)


def save_pretrained(tm: TunableModel, folder: Union[str, Path], *, arch: Optional[str] = None,
                    arch_kwargs: Optional[Dict[str, Any]] = None, recipe: Any = None,
                    metrics: Optional[Dict[str, Any]] = None, strip: Optional[Union[str, Path]] = None,
                    name: Optional[str] = None, notes: Optional[str] = None, adapter_only: bool = False,
                    base_weights: Optional[str] = None, base_weights_key: Optional[str] = None) -> Path:
    """Write ``tm`` as a folder others load with :func:`from_pretrained`; returns the folder.

    What the folder says of the model comes from ``tm.config`` (a TunifyConfig); the arguments
    override it. ``adapter_only``: a low-rank model (``tunify(..., rank=r)``) is written
    without its base: only the deltas and what differs from the base, with the base's
    architecture, weights source (``base_weights``: file, URL, ``ncnn:<stem>``; the config's
    ``weights`` by default) and sha256 (see :mod:`tunify.publishing.adapter`).

    ``recipe``: the Recipe that trained it (saved as recipe.yaml and hashed; default: the
    config's); ``metrics``: a λ sweep in the one sweep format (``SweepResult.to_dict()``, a
    run's sweep.json) for the card; ``strip``: its image strip (PNG), copied as sweep.png;
    ``notes``: markdown the card ends with (measured comparisons, caveats).
    """
    recipe = recipe if recipe is not None else tm.config.recipe
    if adapter_only:
        from .adapter import save_adapter

        return save_adapter(tm, folder, arch=arch, arch_kwargs=arch_kwargs, base_weights=base_weights,
                            base_weights_key=base_weights_key, recipe=recipe, metrics=metrics, name=name, notes=notes)
    from .card import write_card

    folder = Path(folder)
    arch, kwargs = _arch_of(tm.config, arch, arch_kwargs)  # fails before anything is written
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in tm.model.state_dict().items()}
    write_tensors(folder / WEIGHTS_NAME, state, "tunify")
    targets, exclude = tm.config.targets, tm.config.exclude
    if not tm.config.serializable:
        # Types or predicates cannot be written down: name every converted tensor instead.
        targets, exclude = [re.escape(n) for n in tm.tunify_report.names()], None
    config = saved_config(tm, name, recipe, folder.name,
                          arch=arch, arch_kwargs=kwargs, model_file=_spandrel_record(tm.config), targets=targets,
                          exclude=exclude, recipe_sha256=write_recipe(folder, recipe),
                          weights_sha256=sha256_file(folder / WEIGHTS_NAME), metrics=metrics)
    atomic_write_text(folder / CONFIG_NAME, json.dumps(config, indent=2))
    if strip is not None and Path(strip).is_file() and Path(strip).resolve() != (folder / "sweep.png").resolve():
        shutil.copyfile(strip, folder / "sweep.png")
    write_card(folder, config, has_strip=(folder / "sweep.png").is_file(), notes=notes)
    return folder


def _resolve(source: Union[str, Path], revision: Optional[str]) -> Path:
    """A local folder as it is, else a hub id 'owner/name' fetched (or read from the hub cache)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    text = str(source)
    if path.exists() or text.count("/") != 1 or text.startswith((".", "/", "~")):
        raise FileNotFoundError(f"{source} is not a tunify model folder (no such directory) nor a hub id 'owner/name'")
    from .hub import download

    return download(text, revision)


def _read_config(folder: Path) -> Dict[str, Any]:
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {CONFIG_NAME}: not a tunify model folder (see tunify.save_pretrained)")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); the file is corrupted") from exc
    if not isinstance(config, dict):
        raise ValueError(f"{path} holds a JSON {type(config).__name__}, not the mapping of a tunify config")
    if config.get("format") != "tunify":
        raise ValueError(f"{path} is not a tunify config (format={config.get('format')!r})")
    version = config.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f"{path}: field 'format_version' must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(f"{path} uses format version {config['format_version']}; this tunify ({__version__}) "
                         f"reads up to {FORMAT_VERSION}: upgrade tunify")
    for key in ("arch", "p", "objectives", "lam_space"):
        if key not in config:
            raise ValueError(f"{path} lacks the field {key!r}; the file is incomplete: copy or download the folder again")
    _check_fields(config, path)
    return config


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


# field -> (check, what it must be); fields that may be absent are checked only when present
_FIELDS = {
    "arch": (lambda v: isinstance(v, str) and bool(v), "a non-empty string (registry name, 'timm:<name>' or 'module:Class')"),
    "arch_kwargs": (lambda v: isinstance(v, dict), "a mapping of keyword arguments"),
    "p": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer ≥ 1"),
    "objectives": (lambda v: isinstance(v, list) and all(isinstance(o, str) or (isinstance(o, dict) and isinstance(
        o.get("name"), str)) for o in v), "a list of names or of {name: ..., description: ...} mappings"),
    "lam_space": (lambda v: v in ("simplex", "box"), "'simplex' or 'box'"),
    "targets": (lambda v: v is None or _is_str_list(v), "null or a list of strings"),
    "exclude": (lambda v: v is None or _is_str_list(v), "null or a list of strings"),
    "format_version": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "weights_sha256": (lambda v: v is None or isinstance(v, str), "null or a hex string"),
    "metrics": (lambda v: v is None or isinstance(v, dict), "null or a mapping"),
    "model_file": (lambda v: v is None or (isinstance(v, dict) and isinstance(v.get("spandrel_arch"), str)
                                           and isinstance(v.get("state_dict_shapes"), dict)),
                   "null or a mapping with spandrel_arch and state_dict_shapes"),
    "name": (lambda v: isinstance(v, str), "a string"),
    "rank": (lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1), "null or an integer ≥ 1"),
}


def _check_fields(config: Dict[str, Any], path: Path) -> None:
    """Every known field of config.json has the right type; the error names the file and field."""
    for key, (ok, what) in _FIELDS.items():
        if key in config and not ok(config[key]):
            raise ValueError(f"{path}: field {key!r} must be {what}, got {config[key]!r}; fix the field or copy "
                             "the folder again")


def _read_weights(folder: Path, config: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    st, legacy = folder / WEIGHTS_NAME, folder / LEGACY_WEIGHTS
    if st.is_file():
        expected = config.get("weights_sha256")
        if expected and sha256_file(st) != expected:
            raise ValueError(f"{st} does not match the sha256 in {CONFIG_NAME}: the file is corrupted or was "
                             "replaced; download or copy the folder again")
        from safetensors.torch import load_file

        try:
            return load_file(str(st))
        except Exception as exc:
            raise ValueError(f"{st} cannot be read ({exc}): the file is truncated or corrupted") from exc
    if legacy.is_file():
        try:
            data = torch.load(str(legacy), map_location="cpu", weights_only=True)
        except Exception as exc:
            # torch's own message would suggest weights_only=False (running the file's code): never that.
            raise ValueError(f"{legacy} is not a checkpoint tunify can read: not a torch file of plain tensors "
                             f"({type(exc).__name__}: truncated, another format, or pickled objects; tunify never "
                             "unpickles code). Re-save the weights as model.safetensors") from None
        return data
    raise FileNotFoundError(f"{folder} has neither {WEIGHTS_NAME} nor {LEGACY_WEIGHTS}")


def from_pretrained(source: Union[str, Path], *, revision: Optional[str] = None, map_location: str = "cpu",
                    base_model: Optional[torch.nn.Module] = None) -> TunableModel:
    """Load a tunable model from a folder written by :func:`save_pretrained` or a hub id.

    Returns the TunableModel in eval mode; ``tm.config`` holds the folder's config (objectives,
    what λ means, measured metrics). Errors name the file and the problem (missing,
    truncated or corrupted weights, a wrong p, an architecture mismatch).
    """
    folder = _resolve(source, revision)
    config = _read_config(folder)
    if config.get("adapter_only"):  # deltas only: tunify the base (given, or rebuilt from the config), then load
        from .adapter import load_adapter

        return load_adapter(folder, config, base_model, map_location)
    if base_model is not None:
        raise ValueError(f"{folder} is a full save (it holds its whole network); base_model= is only for adapter-only folders")
    model = _build(config, folder)
    names, _ = objective_entries(config["objectives"])
    if len(names) != config["p"]:
        raise ValueError(f"{folder / CONFIG_NAME}: p={config['p']} but {len(names)} objectives are listed")
    tm = tunify(model, names, targets=config.get("targets"), exclude=config.get("exclude"),
                lam_space=config["lam_space"], mode="auto", rank=config.get("rank"))
    state = _read_weights(folder, config)
    own = tm.model.state_dict()
    k = tm.lam_space.num_kernels
    for key, t in state.items():
        stack = key.endswith(PER_OBJECTIVE_SUFFIXES)  # one slice per kernel on the leading axis
        if stack and key in own and t.shape != own[key].shape and t.shape[1:] == own[key].shape[1:]:
            raise ValueError(f"{folder / WEIGHTS_NAME}: {key} holds {t.shape[0]} kernels, but {CONFIG_NAME} says "
                             f"p={config['p']} in the {config['lam_space']} space ({k} kernels): config and weights disagree")
    missing, unexpected, shapes = state_mismatch(own, state)
    if missing or unexpected or shapes:
        raise ValueError(
            f"{folder / WEIGHTS_NAME} does not fit {config['arch']} {config.get('arch_kwargs')}: "
            f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{' ...' if len(unexpected) > 5 else ''}, shape mismatches {shapes[:3]}"
        )
    tm.model.load_state_dict(state)
    tm.to(map_location).eval()
    # The folder's architecture, provenance and metrics; a model file's record brings its size
    # rules, which sweep and demo pad, crop and tile by.
    tm.config.adopt(TunifyConfig.from_dict(config))
    return tm


TunableModel.save_hook = save_pretrained  # tm.save_pretrained(...) (surgery does not import publishing)
