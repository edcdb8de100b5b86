"""Frozen objectives (`frozen: true`): the corner stays the pretrained network bit for bit,
through weight decay, EMA and a resumed run, while the other corners train."""
import copy

import pytest
import torch

from tunify.training import build_model, fit, parse_recipe, tunify_from_recipe
from tunify.training.freeze import KernelFreeze
from tunify.layers import PER_OBJECTIVE_SUFFIXES

from test_training import TINY


def _recipe(tmp_path, **overrides):
    data = copy.deepcopy(TINY)
    data["objectives"][0]["frozen"] = True
    data["output"]["dir"] = str(tmp_path / "run")
    base = {"optim.weight_decay": 0.1, "optim.ema_decay": 0.9, "optim.steps": 6, "output.checkpoint_every": 3,
            "optim.lr": 5e-3}
    base.update(overrides)
    return parse_recipe(data, overrides=[f"{k}={v}" for k, v in base.items()])


def _models(recipe, seed=0):
    torch.manual_seed(seed)
    original = build_model(recipe.model)
    with torch.no_grad():  # no zero tensors anywhere, so no branch of NAFNet hides a mistake
        for p in original.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return original, tunify_from_recipe(original, recipe)


def test_frozen_corner_is_the_original_after_training(tmp_path):
    recipe = _recipe(tmp_path)
    original, tm = _models(recipe)
    before = {n: p.detach().clone() for n, p in tm.named_parameters()}
    fit(tm, recipe, log=lambda s: None)
    original.eval(), tm.eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        want = original(x)
        assert torch.equal(tm(x, lam=[1.0, 0.0]), want)
        rows = tm(x, lam=torch.tensor([[1.0, 0.0], [0.2, 0.8], [1.0, 0.0]]))
        torch.testing.assert_close(rows[0::2], want[0::2], rtol=0, atol=1e-6)
        assert (tm(x, lam=[0.0, 1.0]) - want).abs().max() > 1e-3  # the other corner did train
    for name, p in tm.named_parameters():
        if name.endswith(PER_OBJECTIVE_SUFFIXES):
            assert torch.equal(p[0], before[name][0]), name          # frozen slice: untouched by decay or EMA
        else:
            assert torch.equal(p, before[name]) and not p.requires_grad, name  # shared tensors never train
    moved = [n for n, p in tm.named_parameters() if n.endswith(PER_OBJECTIVE_SUFFIXES) and not torch.equal(p[1], before[n][1])]
    assert len(moved) > 10


def test_frozen_run_resumes_to_the_same_weights(tmp_path):
    full_recipe, part_recipe = _recipe(tmp_path / "a"), _recipe(tmp_path / "b")
    _, full = _models(full_recipe)
    fit(full, full_recipe, log=lambda s: None)
    _, part = _models(part_recipe)
    fit(part, part_recipe, stop_after=3, log=lambda s: None)
    _, resumed = _models(part_recipe)
    fit(resumed, part_recipe, resume=True, log=lambda s: None)
    for (n, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), n


def test_freeze_hooks_zero_gradients_and_restore_undoes_drift(tmp_path):
    recipe = _recipe(tmp_path)
    _, tm = _models(recipe)
    freeze = KernelFreeze(tm, [0], 2)
    tm(torch.rand(2, 3, 16, 16), lam=torch.tensor([[0.5, 0.5], [0.9, 0.1]])).square().mean().backward()
    grads = [p.grad for p in freeze.params.values() if p.grad is not None]
    assert grads and all(g[0].abs().max() == 0 and g[1].abs().max() > 0 for g in grads if g[1].abs().max() > 0)
    name, p = next(iter(freeze.params.items()))
    with torch.no_grad():
        p.mul_(0.5)
    freeze.restore()
    assert torch.equal(p[0], freeze.snapshot[name][0])
    freeze.remove()
    assert not freeze._hooks


@pytest.mark.parametrize("change, message", [
    ({"tunify": {"lam_space": "box"}}, "needs tunify.lam_space: simplex"),
    ({"all_frozen": True}, "every objective is frozen"),
])
def test_bad_frozen_recipes_fail_before_training(change, message):
    data = copy.deepcopy(TINY)
    data["objectives"][0]["frozen"] = True
    if change.pop("all_frozen", False):
        data["objectives"][1]["frozen"] = True
    data.update(change)
    with pytest.raises(ValueError, match=message):
        parse_recipe(data)
