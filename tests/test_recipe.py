"""Recipe validation: every error path says what is wrong and how to fix it."""
import pytest

from tunify.cli import main, recipe_path
from tunify.training import load_recipe, parse_recipe
from tunify.training.recipe import parse_override
from tunify.training.samplers import build_sampler

BASE = {
    "name": "t",
    "model": {"arch": "nafnet-tiny"},
    "objectives": [
        {"name": "strong", "target": "clean", "losses": [{"type": "MSELoss"}]},
        {"name": "grain", "target": "input", "losses": [{"type": "MSELoss"}]},
    ],
    "data": {"train": {"type": "degraded", "images": "skimage:astronaut", "patch_size": 32,
                       "degradation": [{"type": "gaussian_noise", "sigma": 25}]}},
}


def _with(**changes):
    import copy

    data = copy.deepcopy(BASE)
    for key, value in changes.items():
        node = data
        *path, last = key.split("__")
        for k in path:
            node = node.setdefault(k, {})
        node[last] = value
    return data


def test_valid_recipe_and_defaults():
    r = parse_recipe(BASE)
    assert r.p == 2 and r.optim.schedule == "cosine" and r.lam.sampler == "auto" and r.tunify.lam_space == "simplex"
    assert len(r.digest()) == 64 and r.digest() == parse_recipe(BASE).digest()


@pytest.mark.parametrize("data, message", [
    (_with(optimm={"lr": 1}), "recipe: unknown key 'optimm'. Did you mean 'optim'?"),
    (_with(optim={"learning_rate": 1e-3}), "recipe.optim: unknown key 'learning_rate'"),
    (_with(optim={"lrr": 1e-3}), "Did you mean 'lr'?"),
    (_with(optim={"steps": "many"}), "recipe.optim.steps: expected an integer, got 'many'"),
    (_with(optim={"steps": 2.5}), "recipe.optim.steps: expected an integer"),
    (_with(optim={"lr": -1.0}), "lr must be > 0"),
    (_with(optim={"schedule": "cosin"}), "'cosin' is not one of ['cosine', 'multistep', 'constant']. Did you mean 'cosine'?"),
    (_with(tunify={"lam_space": "simplx"}), "Did you mean 'simplex'?"),
    (_with(lam={"alpha": 0}), "alpha must be > 0"),
    (_with(lam={"vertex_fraction": 1.5}), "vertex_fraction must be in [0, 1]"),
    (_with(lam={"sampler": "fixed"}), "needs `fixed:"),
    ({k: v for k, v in BASE.items() if k != "data"}, "missing required key 'data'"),
    (_with(objectives=[]), "need p ≥ 1 objectives"),
    (_with(objectives=[BASE["objectives"][0], BASE["objectives"][0]]), "unique names"),
    (_with(objectives=[{"name": "a", "losses": []}]), "needs at least one loss"),
    (_with(objectives=[{"name": "a", "losses": [{"type": "L1Loss"}], "target": "clen"}]), "Did you mean 'clean'?"),
    (_with(model="nafnet"), "recipe.model: expected a mapping"),
])
def test_validation_errors(data, message):
    with pytest.raises(ValueError) as err:
        parse_recipe(data)
    assert message in str(err.value)


def test_numbers_without_dot_and_overrides_are_parsed_not_evaluated(tmp_path):
    path = tmp_path / "r.yaml"
    import yaml

    text = yaml.safe_dump(BASE).replace("name: t", "name: t\noptim: {lr: 1e-4, weight_decay: 5E-2}")
    path.write_text(text)
    r = load_recipe(path)
    assert r.optim.lr == pytest.approx(1e-4) and r.optim.weight_decay == pytest.approx(0.05)
    r = load_recipe(path, overrides=["optim.lr=3e-3", "optim.betas=[0.8, 0.9]", "objectives.1.name=keep", "seed=7"])
    assert r.optim.lr == pytest.approx(3e-3) and r.optim.betas == [0.8, 0.9] and r.objectives[1].name == "keep" and r.seed == 7
    assert parse_override("name=__import__('os').getcwd()") == ("name", "__import__('os').getcwd()")
    with pytest.raises(ValueError, match="recipe.optim.lr: expected a number"):
        parse_recipe(BASE, overrides=["optim.lr=__import__('os')"], where="recipe")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_override("optim.lr")
    with pytest.raises(ValueError, match="unknown key 'nam'"):
        parse_recipe(BASE, overrides=["objectives.0.nam=x"])


def test_smoke_overrides_apply_only_with_smoke():
    data = _with(smoke={"optim.steps": 3, "data.batch_size": 2})
    assert parse_recipe(data).optim.steps == 1000
    r = parse_recipe(data, smoke=True)
    assert r.optim.steps == 3 and r.data.batch_size == 2


def test_sampler_must_fit_the_space():
    r = parse_recipe(_with(lam={"sampler": "dirichlet"}, tunify={"lam_space": "box"}))
    with pytest.raises(ValueError, match="with lam_space 'box' use 'box_uniform'"):
        build_sampler(2, r.tunify.lam_space, r.lam)


def test_unknown_loss_and_degradation_names_fail_with_suggestions():
    from tunify.data import build_dataset
    from tunify.objectives import ObjectiveSet

    bad = parse_recipe(_with(objectives=[{"name": "a", "losses": [{"type": "L1loss"}]}]))
    with pytest.raises(ValueError, match="Did you mean 'L1Loss'"):
        ObjectiveSet.from_specs(bad.objectives)
    with pytest.raises(ValueError, match="gaussian_noise"):
        build_dataset({"type": "degraded", "images": "skimage:astronaut", "patch_size": 32,
                       "degradation": [{"type": "gausian_noise", "sigma": 5}]})


def test_recipe_files_and_cli_errors(tmp_path, capsys):
    assert recipe_path("quickstart").name == "quickstart.yaml"
    with pytest.raises(FileNotFoundError, match="Did you mean 'quickstart'"):
        recipe_path("quikstart")
    assert main(["train", "quikstart"]) == 2
    assert "no recipe 'quikstart'" in capsys.readouterr().err
    assert main(["train", "quickstart", "--set", "optim.shedule=cosine"]) == 2
    assert "Did you mean 'schedule'" in capsys.readouterr().err
