"""One way to name a model: what ``load``, ``sweep``, ``demo``, ``export`` and ``convert`` accept.

    resolved = resolve("nafnet-grain-s25")       # -> Resolved(kind="zoo", tm=..., folder=...)

A name is tried as, in this order:

============  ==========================================================================
kind          what it is
============  ==========================================================================
hub           ``hf-hub:owner/name`` (a published folder or a model file in it) or
              ``hf-hub:owner/name/FILE.pth`` (one file), fetched into the hub cache
folder        a published folder (``config.json`` + ``model.safetensors``)
run           a ``tunify train`` output folder (``recipe.yaml`` + ``checkpoints/``): its
              latest checkpoint, finished or not, with its EMA weights
model_file    a ``.pth``/``.pt``/``.ckpt``/``.safetensors`` file spandrel reads
zoo           a name in the zoo index (sha256-checked)
registry      an architecture name (``create_model``), ``timm:<name>`` or ``module:Class``
============  ==========================================================================

Model files and registry names are not tuned yet: they resolve to ``tunify(network, p)``, which
equals the original network at every λ (useful as a baseline, for ``convert`` and ``export``).
Anything else fails with one line naming what was tried and the closest zoo or registry names.
A bare ``owner/name`` is not taken for a hub id here (a mistyped local path would go to the
network); :func:`tunify.from_pretrained` still accepts it in Python.
"""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from torch import nn

from .._text import did_you_mean
from ..archs import ARCHS, create_model
from ..archs.model_file import MODEL_FILE_SUFFIXES, is_model_file, load_model_file
from ..surgery import TunableModel, tunify
from .hub import download
from .layout import CONFIG_NAME
from .pretrained import from_pretrained
from .publish import is_run_dir, load_run
from .zoo import from_zoo, list_zoo, zoo_entry, zoo_folder

__all__ = ["HUB_PREFIX", "KINDS", "Resolved", "identify", "resolve", "resolve_model", "plain_network", "underlying"]

HUB_PREFIX = "hf-hub:"
KINDS = ("hub", "folder", "run", "model_file", "zoo", "registry")
UNTRAINED = "untrained: every λ gives the original network"


@dataclass
class Resolved:
    """A named model: ``tm`` the tunable model; ``kind`` one of :data:`KINDS`; ``folder`` where
    its config.json / recipe.yaml live (None for model files and registry names); ``original``
    the plain network an untrained kind was made from; ``descriptor`` spandrel's, for a model
    file. What the model is (name, architecture, objectives, metrics) is ``tm.config``."""

    kind: str
    name: str
    tm: TunableModel
    folder: Optional[Path] = None
    original: Optional[nn.Module] = None
    descriptor: Any = None

    @property
    def trained(self) -> bool:
        return self.original is None


def _hub_path(text: str) -> Path:
    """``hf-hub:owner/name[@revision][/file]`` -> the local snapshot folder or file."""
    rest = text[len(HUB_PREFIX):]
    parts = rest.split("/")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ValueError(f"{text!r}: write a hub model as hf-hub:owner/name (or hf-hub:owner/name/FILE)")
    repo, revision = "/".join(parts[:2]), None
    if "@" in repo:
        repo, revision = repo.split("@", 1)
    return download(repo, revision, "/".join(parts[2:]) or None)


def _folder_kind(path: Path) -> str:
    if (path / CONFIG_NAME).is_file():
        return "folder"
    if is_run_dir(path):
        return "run"
    files = [p for p in sorted(path.iterdir()) if is_model_file(p)]
    if len(files) == 1:
        return "model_file"
    raise FileNotFoundError(
        f"{path} is a folder but not a model: no {CONFIG_NAME} (a published model), no recipe.yaml + "
        f"checkpoints/ (a training run) and {'several' if files else 'no'} model files ({', '.join(MODEL_FILE_SUFFIXES)})"
    )


def identify(source: Union[str, Path], index: Optional[Union[str, Path]] = None) -> Tuple[str, Union[str, Path]]:
    """(kind, where) for what a user typed, without building anything; ``where`` is the local
    path (hub, folder, run, model_file) or the name (zoo, registry)."""
    text = str(source)
    if text.startswith(HUB_PREFIX):
        return "hub", _hub_path(text)
    path = Path(text).expanduser()
    if path.is_dir():
        return _folder_kind(path), path
    if path.is_file():
        if is_model_file(path):
            return "model_file", path
        raise ValueError(f"{path} is a file but not a model file: model files end in {', '.join(MODEL_FILE_SUFFIXES)}")
    if is_model_file(text):
        raise FileNotFoundError(f"model file {path} does not exist{_nearby(path)}")
    if text in list_zoo(index):
        return "zoo", text
    if text in ARCHS or text.startswith("timm:") or (":" in text and "/" not in text):
        return "registry", text
    raise FileNotFoundError(_unknown(text, path, index))


def _nearby(path: Path) -> str:
    """A did-you-mean over the entries of the folder a mistyped path points into (names are
    compared, not whole paths, whose shared prefix would make everything look close)."""
    parent = path.parent
    if not parent.is_dir():
        return ""
    close = difflib.get_close_matches(path.name, [p.name for p in parent.iterdir()], n=3, cutoff=0.6)
    shown = [name if str(parent) == "." else str(parent / name) for name in close]
    return f" Did you mean {' or '.join(repr(x) for x in shown)}?" if shown else ""


def _unknown(text: str, path: Path, index: Optional[Union[str, Path]]) -> str:
    zoo = list_zoo(index)
    looks_like_path = "/" in text or text.startswith((".", "~"))
    hint = _nearby(path) if looks_like_path else did_you_mean(text, [*zoo, *ARCHS])
    if not hint and text.count("/") == 1 and not path.parent.is_dir() and not text.startswith((".", "/", "~")):
        hint = f" For a hub model write hf-hub:{text}."
    return (f"{text!r} is not a model: no such folder or file, zoo name or registry name.{hint} "
            f"Zoo: {', '.join(zoo) or 'none'}; also a published or run folder, a model file "
            f"({', '.join(MODEL_FILE_SUFFIXES)}), an architecture (see tunify.archs.ARCHS), timm:<name> or hf-hub:owner/name")


def underlying(kind: str, where: Union[str, Path]) -> str:
    """The kind that loads a hub download (a published folder, a run, a model file); others as they are."""
    if kind != "hub":
        return kind
    return "model_file" if Path(where).is_file() else _folder_kind(Path(where))


def plain_network(kind: str, where: Union[str, Path], arch_kwargs: Optional[Dict[str, Any]] = None):
    """(network, descriptor or None) for an untrained kind: a model file through spandrel, a
    registry name through ``create_model(name, **arch_kwargs)``."""
    if kind == "model_file":
        if arch_kwargs:
            raise ValueError("architecture arguments were given, but a model file brings its own; drop them")
        path = Path(where)
        descriptor = load_model_file(next(p for p in sorted(path.iterdir()) if is_model_file(p)) if path.is_dir() else path)
        return descriptor.model.eval(), descriptor
    return create_model(str(where), **(arch_kwargs or {})).eval(), None


def _untrained(kind: str, where: Union[str, Path], objectives: Any, lam_space: str,
               arch_kwargs: Optional[Dict[str, Any]], **tunify_kwargs: Any) -> Resolved:
    network, descriptor = plain_network(kind, where, arch_kwargs)
    tm = tunify(descriptor if descriptor is not None else network, objectives, lam_space=lam_space, **tunify_kwargs)
    name = Path(str(where)).stem if kind == "model_file" else str(where)
    arch = f"spandrel:{descriptor.architecture.id}" if descriptor is not None else str(where)
    record = tm.config.model_file or {}
    tm.config.update(name=name, arch=arch, arch_kwargs=record.get("hyperparameters", dict(arch_kwargs or {})),
                     descriptions={n: UNTRAINED for n in tm.objectives})  # what the demo and sweep show
    return Resolved(kind, name, tm, None, network, descriptor)


def resolve(source: Union[str, Path], *, objectives: Any = 2, lam_space: str = "simplex",
            arch_kwargs: Optional[Dict[str, Any]] = None, index: Optional[Union[str, Path]] = None,
            **tunify_kwargs: Any) -> Resolved:
    """The model a name means (see the module docstring for the kinds and their order).

    ``objectives``, ``lam_space``, ``arch_kwargs`` and ``tunify_kwargs`` (``mode``,
    ``example_inputs``) apply to the untrained kinds only (model files, registry names)."""
    shown, where = identify(source, index)
    kind = underlying(shown, where)
    if kind in ("model_file", "registry"):
        resolved = _untrained(kind, where, objectives, lam_space, arch_kwargs, **tunify_kwargs)
    elif kind == "zoo":
        tm = from_zoo(str(where), index)
        resolved = Resolved(kind, str(where), tm, zoo_folder(zoo_entry(str(where), index), index))
    elif kind == "run":
        tm = load_run(where, finished=False)
        sweep = Path(where) / "sweep.json"  # the run's own measurement, as a published card holds it
        tm.config.metrics = json.loads(sweep.read_text()) if sweep.is_file() else None
        resolved = Resolved(kind, tm.config.name, tm, Path(where))
    else:
        tm = from_pretrained(where)
        resolved = Resolved(kind, tm.config.name or Path(where).name, tm, Path(where))
    resolved.kind = shown
    return resolved


def resolve_model(source: Union[str, Path], index: Optional[Union[str, Path]] = None) -> Tuple[TunableModel, Optional[Path]]:
    """``(tm, folder)`` for a name (:func:`resolve`); the folder holds config.json and, when
    known, the recipe.yaml that trained the model (None for model files and registry names)."""
    resolved = resolve(source, index=index)
    return resolved.tm, resolved.folder

