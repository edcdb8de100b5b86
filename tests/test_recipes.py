"""Every shipped recipe validates, says what λ's corners mean, and trains a few steps in its
tiny --smoke setting on generated data."""
from pathlib import Path

import pytest
import torch

from tunify.training import load_recipe, run_recipe

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
ISSUE_RECIPES = {"nafnet_denoise", "swinir_denoise", "swinir_sr_x4_pd", "edsr_denoise_deblur", "stylenet_styles",
                 "unet_generic", "quickstart", "zoo_nafnet_grain"}


def test_the_shipped_recipes_are_all_here():
    assert ISSUE_RECIPES <= {p.stem for p in RECIPES}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_validates_and_documents_its_corners(path):
    recipe = load_recipe(path)
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    assert header and path.read_text().startswith("#"), "a recipe opens with a comment"
    assert "λ = (" in "\n".join(header), "the header says what λ's corners mean"
    for o in recipe.objectives:
        assert o.name in "\n".join(header), f"objective {o.name!r} is not explained in the header"
    assert load_recipe(path, smoke=True).optim.steps <= 4


@pytest.mark.parametrize("path", [p for p in RECIPES if p.stem != "zoo_nafnet_grain"], ids=lambda p: p.stem)
def test_recipe_smoke_trains(path, tmp_path):
    recipe = load_recipe(path, smoke=True, overrides=[f"output.dir={tmp_path / 'run'}"])
    torch.manual_seed(0)
    run = run_recipe(recipe, log=lambda s: None)
    assert run.fit.step == recipe.optim.steps
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in run.fit.history)
    assert run.sweep and (tmp_path / "run" / "sweep.png").is_file()
    assert run.model.p == recipe.p and run.model.lam_space.kind == recipe.tunify.lam_space
