"""What a model folder's ``recipe.yaml`` says about measuring it: the degradation its inputs get
and the objectives' losses (for the ``loss_<objective>`` columns of a sweep).

It lives here, above training, because reading a recipe is training's knowledge and the
sweep itself (:mod:`tunify.evaluation`) sits below training.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Union

__all__ = ["recipe_settings"]


def recipe_settings(folder: Optional[Union[str, Path]]) -> Dict[str, Any]:
    """What a published folder's (or a run's) recipe.yaml says about evaluation.

    Returns {"degradation": list or None, "loss": ParametricLoss or None, "loss_reason":
    why no loss could be built (or None)}; an empty dict when there is no recipe.yaml.
    The degradation is the validation set's (else the training set's) when it is synthetic.
    """
    if folder is None or not (Path(folder) / "recipe.yaml").is_file():
        return {}
    from ..objectives import ParametricLoss
    from ..training import build_model, load_recipe

    recipe = load_recipe(Path(folder) / "recipe.yaml")
    spec = recipe.data.val or recipe.data.train
    out: Dict[str, Any] = {"degradation": spec.get("degradation") if spec.get("type") == "degraded" else None,
                           "loss": None, "loss_reason": None}
    try:
        ploss = ParametricLoss.from_recipe(recipe, strict=False)
        if ploss.needs_reference:  # "original" targets: the pretrained network, rebuilt from the recipe's weights
            ploss.set_reference(build_model(recipe.model))
        out["loss"] = ploss
    except Exception as exc:  # e.g. a perceptual loss whose weights are not at hand
        out["loss_reason"] = f"objective losses skipped: the recipe's objectives could not be built ({exc})"
    return out
