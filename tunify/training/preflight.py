"""Check the whole recipe before a single step runs.

Parsing a recipe checks its keys and types; what it names (loss types, target specs, data
folders, degradations, the λ sampler, tunify's targets) is only built when used, which for a
recipe with pretraining is minutes in. :func:`preflight` builds each of them once, up front,
and throws them away: an unknown loss type fails before pretraining starts, not after it.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from ..data import build_dataset
from .recipe import Recipe
from .samplers import build_sampler
from .stage import Stage

__all__ = ["preflight"]


def _check_lams(recipe: Recipe) -> None:
    p = recipe.p
    if recipe.lam.fixed is not None and len(recipe.lam.fixed) != p:
        raise ValueError(f"lam.fixed has {len(recipe.lam.fixed)} values, but the recipe has p={p} objectives")
    for i, row in enumerate(recipe.validation.lams or []):
        if len(row) != p:
            raise ValueError(f"validation.lams[{i}] has {len(row)} values, but the recipe has p={p} objectives")


def _build(what: str, fn, *args: Any) -> Any:
    """Run ``fn(*args)``; an error says which part of the recipe it came from."""
    try:
        return fn(*args)
    except (KeyError, ValueError, TypeError, FileNotFoundError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        kind = FileNotFoundError if isinstance(exc, FileNotFoundError) else ValueError
        raise kind(f"{what}: {message}") from exc


def preflight(recipe: Recipe, model: Optional[nn.Module] = None) -> None:
    """Build every part the run will build (losses and targets of the fine-tune and of the
    pretraining, datasets, λ sampler, tunify's plan on ``model``) and raise the first error,
    naming the recipe section. The global RNG is left as it was (runs stay reproducible)."""
    from .build import tunify_from_recipe

    _check_lams(recipe)
    with torch.random.fork_rng(devices=[]):  # discriminators and such draw their initial weights
        reference = model if model is not None else nn.Identity()
        _build("objectives", Stage.fine_tune(recipe).parametric_loss, reference)
        if recipe.pretrain is not None:
            _build("pretrain", Stage.pretrain(recipe).parametric_loss, reference)
        _build("data.train", build_dataset, recipe.data.train)
        if recipe.data.val:
            _build("data.val", build_dataset, recipe.data.val)
        _build("lam", build_sampler, recipe.p, recipe.tunify.lam_space, recipe.lam)
        if model is not None and recipe.pretrain is not None:  # otherwise tunify runs right away anyway
            _build("tunify", tunify_from_recipe, model, recipe)
