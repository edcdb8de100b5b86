"""Adapter-only folders: a low-rank tunable model published without its base network.

``tm.save_pretrained(folder, adapter_only=True)`` writes

    config.json           as a full save (objectives, λ space, targets, rank), plus
                          ``adapter_only: true`` and ``base``: the architecture, where its
                          weights come from (a file, a URL, ``ncnn:<stem>``, a model file) and
                          the sha256 of its state dict (surgery/fingerprint.py)
    adapter.safetensors   only what the base does not already hold: the low-rank factors
                          (``lora_A``/``lora_B``), the full stacks (biases, β/γ, layers kept
                          full such as depthwise convs), and any other tensor whose value is no
                          longer the base's (norms that trained)
    README.md             the card, saying how to load it

Which tensors come from the base is decided by value, not by name: every tensor of the tunable
model that maps to a base tensor (``conv.base_weight`` → ``conv.weight``, untouched buffers such
as attention masks under their own names) and still has that tensor's digest is left out.

``from_pretrained(folder, base_model=net)`` (or without ``base_model``: the base is rebuilt
from the config) tunifies the base as the config says, refuses it when its sha256 differs, and
loads the adapter on top: the result equals the model that was saved, bit for bit.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Union

from torch import Tensor, nn

from ..archs import create_model
from ..archs.model_file import is_model_file
from ..archs.weights import load_pretrained
from ..layers import PER_OBJECTIVE_SUFFIXES
from ..surgery import TunableModel, TunifyConfig, tunify
from ..surgery.config import objective_entries
from ..surgery.fingerprint import tensor_digest
from ..files import atomic_write_text

__all__ = ["ADAPTER_NAME", "BaseMismatch", "adapter_state", "save_adapter", "load_adapter", "build_base"]

ADAPTER_NAME = "adapter.safetensors"


class BaseMismatch(ValueError):
    """The base network given for an adapter is not the one it was trained on."""


def _base_name(key: str) -> Optional[str]:
    """The base state-dict name a tunable model's entry comes from, or None (trained per objective)."""
    if key.endswith(PER_OBJECTIVE_SUFFIXES):
        return None
    if key == "base_weight" or key.endswith(".base_weight"):
        key = key[: -len("base_weight")] + "weight"
    key = key.replace(".base_layer.", ".")
    return key[len("base_layer."):] if key.startswith("base_layer.") else key


def _record(tm: TunableModel) -> Dict[str, Any]:
    record = tm.config.base_record
    if not tm.config.rank or not isinstance(record, dict):
        raise ValueError("adapter_only=True needs a low-rank model made by tunify(base, ..., rank=r) from the base "
                         "network itself (it records the base's sha256); save this one whole (adapter_only=False)")
    return record


def adapter_state(tm: TunableModel) -> Dict[str, Tensor]:
    """The entries of ``tm.model.state_dict()`` the base does not hold (CPU copies)."""
    digests = _record(tm)["tensors"]
    keep: Dict[str, Tensor] = {}
    for key, t in tm.model.state_dict().items():
        name = _base_name(key)
        if name is not None and name in digests:
            if tensor_digest(t) == digests[name]:
                continue  # the base's own value: the loader gets it from the base
            if key.endswith("base_weight"):
                raise ValueError(
                    f"{key}, a frozen base weight, no longer equals the base's {name}: this model's record of its base "
                    "is stale (its state was loaded from another model). Tunify the base it was trained from with "
                    "rank=r, load the state_dict into that, and save again")
        keep[key] = t.detach().cpu().clone().contiguous()  # clones: safetensors refuses shared storage
    return keep


def _base_section(tm: TunableModel, arch: Optional[str], arch_kwargs: Optional[Dict[str, Any]],
                  base_weights: Optional[str], base_weights_key: Optional[str]) -> Dict[str, Any]:
    config = tm.config
    weights = base_weights or config.weights
    arch = arch or config.arch or (str(weights) if is_model_file(weights) else None)
    if not arch:
        raise ValueError("save_pretrained(adapter_only=True) needs to know the base: pass arch= (and arch_kwargs=, "
                         "base_weights= the file, URL or ncnn:<stem> its weights come from), or build it from a recipe")
    return {"arch": arch, "arch_kwargs": dict(arch_kwargs if arch_kwargs is not None else config.arch_kwargs),
            "weights": None if weights is None else str(weights),
            "weights_key": base_weights_key or config.weights_key or "auto",
            "sha256": _record(tm)["sha256"]}


def save_adapter(tm: TunableModel, folder: Union[str, Path], *, arch: Optional[str] = None,
                 arch_kwargs: Optional[Dict[str, Any]] = None, base_weights: Optional[str] = None,
                 base_weights_key: Optional[str] = None, recipe: Any = None, metrics: Optional[Dict[str, Any]] = None,
                 name: Optional[str] = None, notes: Optional[str] = None) -> Path:
    """Write the adapter folder of a low-rank ``tm``; returns the folder."""
    from .card import write_card
    from .layout import CONFIG_NAME, saved_config, sha256_file, write_recipe, write_tensors

    folder = Path(folder)
    base = _base_section(tm, arch, arch_kwargs, base_weights, base_weights_key)  # these fail before writing
    if not tm.config.serializable:
        raise ValueError("targets/exclude given as types or functions cannot be written to config.json; "
                         "tunify with names or regexes to save an adapter")
    state = adapter_state(tm)
    folder.mkdir(parents=True, exist_ok=True)
    write_tensors(folder / ADAPTER_NAME, state, "tunify-adapter")
    config = saved_config(tm, name, recipe, folder.name, adapter_only=True, arch=base["arch"],
                          arch_kwargs=base["arch_kwargs"], base=base, weights=base["weights"],
                          weights_key=base["weights_key"], recipe_sha256=write_recipe(folder, recipe),
                          weights_file=ADAPTER_NAME, weights_sha256=sha256_file(folder / ADAPTER_NAME),
                          adapter_numbers=int(sum(t.numel() for t in state.values())), metrics=metrics)
    atomic_write_text(folder / CONFIG_NAME, json.dumps(config, indent=2))
    how = (f"**Adapter only**: this folder holds the rank-{tm.config.rank} deltas, not the base network. Load it with "
           f"`tunify.from_pretrained(folder, base_model=net)` where `net` is `{base['arch']}` with the weights "
           f"`{base['weights'] or 'it was trained on'}` (state-dict sha256 `{base['sha256'][:16]}…`; another base is "
           "refused), or without `base_model` to rebuild the base from this config.")
    write_card(folder, config, has_strip=(folder / "sweep.png").is_file(), notes=how + ("\n\n" + notes if notes else ""))
    return folder


def build_base(base: Dict[str, Any], where: Path) -> nn.Module:
    """The base network an adapter's config names, with its weights loaded."""
    arch, weights = base.get("arch"), base.get("weights")
    try:
        if is_model_file(arch):
            return create_model(arch)  # a model file brings architecture and weights together
        model = create_model(arch, **base.get("arch_kwargs", {}))
    except Exception as exc:
        raise ValueError(f"{where}: cannot build the adapter's base {arch!r} ({type(exc).__name__}: {exc}); "
                         "build it yourself and pass base_model=") from exc
    if not weights:
        raise ValueError(f"{where}: the adapter does not say where its base's weights come from; "
                         f"load {arch} with its pretrained weights and pass it as base_model=")
    return load_pretrained(model, weights, base.get("weights_key") or "auto")


def _read_adapter(folder: Path, config: Dict[str, Any]) -> Dict[str, Tensor]:
    from safetensors.torch import load_file

    from .layout import sha256_file

    path = folder / ADAPTER_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {ADAPTER_NAME}: copy or download the whole adapter folder")
    if config.get("weights_sha256") and sha256_file(path) != config["weights_sha256"]:
        raise ValueError(f"{path} does not match the sha256 in config.json: the file is corrupted or was replaced; "
                         "download or copy the folder again")
    try:
        return load_file(str(path))
    except Exception as exc:
        raise ValueError(f"{path} cannot be read ({exc}): the file is truncated or corrupted") from exc


def _check_config(config: Dict[str, Any], where: Path) -> None:
    base, rank = config.get("base"), config.get("rank")
    if not isinstance(base, dict) or not isinstance(base.get("sha256"), str) or not isinstance(base.get("arch"), str):
        raise ValueError(f"{where}: field 'base' must be a mapping with 'arch' and 'sha256'; copy the folder again")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"{where}: field 'rank' must be a positive integer in an adapter config, got {rank!r}")


def load_adapter(folder: Path, config: Dict[str, Any], base_model: Optional[nn.Module] = None,
                 map_location: str = "cpu") -> TunableModel:
    """The tunable model of an adapter folder on ``base_model`` (or the base its config names)."""
    where = folder / "config.json"
    _check_config(config, where)
    base = config["base"]
    if base_model is None:
        base_model = build_base(base, where)
    elif not isinstance(base_model, nn.Module):
        raise TypeError(f"base_model must be an nn.Module (the base network), got {type(base_model).__name__}")
    names, _ = objective_entries(config["objectives"])
    tm = tunify(base_model, names, targets=config.get("targets"), exclude=config.get("exclude"),
                lam_space=config["lam_space"], rank=config["rank"])
    got = tm.config.base_record["sha256"]
    if got != base["sha256"]:
        raise BaseMismatch(
            f"{folder}: the base network's weights (sha256 {got[:16]}…) are not the ones this adapter was trained on "
            f"({base['sha256'][:16]}…): pass base_model= {base['arch']} loaded with {base.get('weights') or 'its original weights'}")
    state = _read_adapter(folder, config)
    own = tm.model.state_dict()
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(state) & set(own)) if state[k].shape != own[k].shape]
    lacking = sorted(k for k in set(own) - set(state) if _base_name(k) not in tm.config.base_record["tensors"])
    if unexpected or shapes or lacking:
        raise ValueError(f"{folder / ADAPTER_NAME} does not fit {base['arch']} at rank {config['rank']}: unexpected "
                         f"{unexpected[:5]}, shape mismatches {shapes[:3]}, missing trained tensors {lacking[:5]}")
    tm.model.load_state_dict(state, strict=False)
    tm.to(map_location).eval()
    tm.config.adopt(TunifyConfig.from_dict(config))  # the base's architecture and weights, provenance, metrics
    return tm
