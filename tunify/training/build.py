"""From a recipe's ``model:`` and ``tunify:`` sections to the networks a run trains: the plain
network (registry name, ``timm:<name>``, ``module:Class`` or a model file, with its pretrained
weights) and its tunable form. Used by runs, the preflight check and publishing alike."""
from __future__ import annotations

import weakref

from torch import nn

from ..archs import create_model
from ..archs.weights import load_pretrained
from ..surgery import TunableModel, tunify
from .recipe import ModelSpec, Recipe

__all__ = ["build_model", "tunify_from_recipe"]

# Networks build_model read from a model file → spandrel's record of it (what rebuilds it without
# the file), for tunify_from_recipe to put in the model's config. Weak: the record lives as long
# as the network, and nothing is attached to the network itself.
_MODEL_FILE_RECORDS: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def build_model(spec: ModelSpec) -> nn.Module:
    """The plain network of a recipe: registry name, ``timm:<name>`` or ``package.module:Class``,
    with pretrained weights from a local path or URL when given."""
    if spec.arch is None:  # a model file: spandrel detects the architecture from its tensors
        from ..archs.model_file import load_model_file, model_file_config

        descriptor = load_model_file(spec.weights)
        _MODEL_FILE_RECORDS[descriptor.model] = model_file_config(descriptor)
        return descriptor.model
    model = create_model(spec.arch, **spec.kwargs)
    if spec.weights:
        try:
            load_pretrained(model, spec.weights, spec.weights_key, spec.strict)
        except ValueError as exc:
            raise ValueError(f"model.weights: {exc}") from None
    return model


def tunify_from_recipe(model: nn.Module, recipe: Recipe) -> TunableModel:
    """``model`` made tunable as the recipe's ``tunify:`` section says; its config names the
    recipe, each corner's meaning, the architecture and where the weights came from (what an
    adapter-only save names as its base), and a model file's record when it came from one."""
    t = recipe.tunify
    tm = tunify(model, [o.name for o in recipe.objectives], targets=t.targets, exclude=t.exclude,
                lam_space=t.lam_space, mode=t.mode, rank=t.rank)
    tm.config.with_recipe(recipe)
    if model in _MODEL_FILE_RECORDS:
        tm.config.model_file = _MODEL_FILE_RECORDS[model]
    return tm
