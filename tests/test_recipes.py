"""Every shipped recipe validates, says what λ's corners mean, and trains a few steps in its
tiny --smoke setting on generated data."""
from pathlib import Path

import pytest
import torch

from tunify.training import load_recipe, run_recipe

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
ISSUE_RECIPES = {"nafnet_denoise", "swinir_denoise", "swinir_sr_x4_pd", "edsr_denoise_deblur", "stylenet_styles",
                 "unet_generic", "quickstart", "zoo_nafnet_grain", "realesr_compact_pd", "realesrgan_pd"}


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


def test_box_targets_interpolate_between_the_knobs():
    """edsr_denoise_deblur: λ=(0,0) is the input, (1,0) the blurred clean image, (0,1) clean +
    the same noise, (1,1) the clean image — checked by a zero loss exactly at each."""
    from tunify.data import build_dataset
    from tunify.objectives import ObjectiveSet, ParametricLoss

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "edsr_denoise_deblur.yaml", smoke=True)
    batch = build_dataset(recipe.data.train).batch(2, torch.Generator().manual_seed(0))
    loss = ParametricLoss(ObjectiveSet.from_specs(recipe.objectives), recipe.loss.mode, recipe.loss.base, recipe.loss.losses)
    blurred, noisy, clean = batch["stage0"], batch["lq"], batch["gt"]
    expected = {(0.0, 0.0): noisy, (1.0, 0.0): blurred, (0.0, 1.0): clean + noisy - blurred, (1.0, 1.0): clean}
    for lam, target in expected.items():
        value, terms = loss(target, dict(batch), torch.tensor(lam))
        assert value.item() < 1e-6, (lam, value.item())
        others = [t for t in expected.values() if t is not target]
        assert all(loss(o, dict(batch), torch.tensor(lam))[0].item() > 1e-3 for o in others)
    assert set(terms) == {"denoise", "deblur"}
