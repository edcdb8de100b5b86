"""From a recipe's ``model:`` and ``tunify:`` sections to the networks a run trains: the plain
network (registry name, ``timm:<name>``, ``module:Class`` or a model file, with its pretrained
weights) and its tunable form. Used by runs, the preflight check and publishing alike."""
from __future__ import annotations

from torch import nn

from ..archs import create_model
from ..archs.weights import load_pretrained
from ..surgery import TunableModel, tunify
from .recipe import ModelSpec, Recipe

__all__ = ["build_model", "tunify_from_recipe"]


def build_model(spec: ModelSpec) -> nn.Module:
    """The plain network of a recipe: registry name, ``timm:<name>`` or ``package.module:Class``,
    with pretrained weights from a local path or URL when given."""
    if spec.arch is None:  # a model file: spandrel detects the architecture from its tensors
        from ..archs.model_file import load_model_file, model_file_config

        descriptor = load_model_file(spec.weights)
        descriptor.model.tunify_model_file = model_file_config(descriptor)
        return descriptor.model
    model = create_model(spec.arch, **spec.kwargs)
    if spec.weights:
        try:
            load_pretrained(model, spec.weights, spec.weights_key, spec.strict)
        except ValueError as exc:
            if "weights_only" not in str(exc):
                raise
            # torch's own message suggests weights_only=False, i.e. running the file's pickled code: never that.
            raise ValueError(f"model.weights: {spec.weights} is not a checkpoint tunify can read: neither a "
                             "safetensors file nor a torch file of plain tensors (truncated, another format, or "
                             "pickled code, which tunify never runs). Point model.weights at the release's "
                             ".pth/.safetensors file") from None
    return model


def tunify_from_recipe(model: nn.Module, recipe: Recipe) -> TunableModel:
    t = recipe.tunify
    tm = tunify(model, [o.name for o in recipe.objectives], targets=t.targets, exclude=t.exclude,
                lam_space=t.lam_space, mode=t.mode, rank=t.rank)
    # weights: where the base came from, what an adapter-only save names as its base
    tm.arch_source = {"arch": recipe.model.arch, "kwargs": dict(recipe.model.kwargs), "weights": recipe.model.weights,
                      "weights_key": recipe.model.weights_key}
    if getattr(model, "tunify_model_file", None):  # built from a model file: what rebuilds it
        tm.model_file = model.tunify_model_file
    return tm
