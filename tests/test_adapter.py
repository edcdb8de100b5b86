"""Adapter-only checkpoints: a low-rank model trained from a recipe, published without its
base, loaded back onto the base (given, or rebuilt from the config) bit for bit; a different
base is refused; full saves of low-rank models keep working."""
import copy
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from tunify import bake, from_pretrained, tunify
from tunify.archs import create_model
from tunify.layers import LowRankLayer
from tunify.publishing.adapter import ADAPTER_NAME, BaseMismatch
from tunify.surgery.fingerprint import state_fingerprint
from tunify.training import fit, parse_recipe, tunify_from_recipe

KW = {"width": 8, "middle_blk_num": 1, "enc_blk_nums": [1], "dec_blk_nums": [1]}
RECIPE = {
    "name": "tiny-lowrank", "seed": 3,
    "model": {"arch": "nafnet", "kwargs": KW},
    "tunify": {"rank": 2},
    "objectives": [
        {"name": "sharp", "target": "clean", "losses": [{"type": "MSELoss"}]},
        {"name": "soft", "target": [{"type": "gaussian_blur", "sigma": 2.0}], "losses": [{"type": "MSELoss"}]},
    ],
    "data": {"train": {"type": "degraded", "images": "skimage:astronaut,coffee", "patch_size": 32, "max_size": 128,
                       "degradation": [{"type": "gaussian_noise", "sigma": 25}]},
             "batch_size": 4, "val_images": 2, "val_patch": 32},
    "optim": {"steps": 6, "lr": 5e-3, "warmup_steps": 1},
    "validation": {"every": 0, "lam_points": 3},
    "output": {"checkpoint_every": 0, "log_every": 1, "progress": False, "tensorboard": "off"},
}
LAMS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.3, 0.7]])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A base saved to a file (as a release would be), tunified at rank 2 from a recipe that
    names it, trained a few steps, and published adapter-only."""
    root = tmp_path_factory.mktemp("adapter")
    torch.manual_seed(0)
    base = create_model("nafnet", **KW).eval()
    weights = root / "base.pth"
    torch.save({"params": base.state_dict()}, weights)
    data = copy.deepcopy(RECIPE)
    data["model"]["weights"] = str(weights)
    data["output"]["dir"] = str(root / "run")
    recipe = parse_recipe(data)
    tm = tunify_from_recipe(copy.deepcopy(base), recipe)
    fit(tm, recipe, log=lambda *_: None)
    tm.eval()
    folder = tm.save_pretrained(root / "adapter", adapter_only=True, recipe=recipe)
    x = torch.rand(3, 3, 16, 16)
    return base, tm, folder, x, root


def test_training_moved_the_deltas(trained):
    base, tm, _, x, _ = trained
    with torch.no_grad():
        a, b = tm(x, lam=[1.0, 0.0]), tm(x, lam=[0.0, 1.0])
        assert (a - b).abs().max() > 1e-4, "λ does nothing after training: the factors did not train"
        assert (a - base(x)).abs().max() > 1e-5
    assert any(m.lora_B.abs().sum() > 0 for m in tm.modules() if isinstance(m, LowRankLayer))


def test_adapter_holds_only_what_the_base_lacks(trained):
    base, tm, folder, _, _ = trained
    config = json.loads((folder / "config.json").read_text())
    assert config["adapter_only"] and config["rank"] == 2
    assert config["base"]["sha256"] == state_fingerprint(base)["sha256"]
    assert config["base"]["weights"].endswith("base.pth")
    state = load_file(str(folder / ADAPTER_NAME))
    assert not any(k.endswith("base_weight") for k in state), "frozen base weights were written"
    assert any(k.endswith(".lora_A") for k in state) and any(k.endswith(".lora_B") for k in state)
    full = sum(t.numel() for t in tm.model.state_dict().values())
    assert sum(t.numel() for t in state.values()) < 0.8 * full
    assert not (folder / "model.safetensors").exists()


def test_reload_onto_the_given_base_is_exact(trained):
    base, tm, folder, x, _ = trained
    loaded = from_pretrained(folder, base_model=base)
    with torch.no_grad():
        assert torch.equal(loaded(x, lam=LAMS), tm(x, lam=LAMS))
        assert torch.equal(loaded(x, lam=[0.4, 0.6]), tm(x, lam=[0.4, 0.6]))
        plain = bake(loaded, [0.4, 0.6])
        assert [type(m) for m in plain.modules()] == [type(m) for m in base.modules()]
        torch.testing.assert_close(plain(x), tm(x, lam=[0.4, 0.6]), rtol=1e-5, atol=1e-5)
    # loaded again from the folder alone: the base is rebuilt from the weights file the config names
    rebuilt = from_pretrained(folder)
    with torch.no_grad():
        assert torch.equal(rebuilt(x, lam=LAMS), tm(x, lam=LAMS))
    # and a re-save of the loaded model is the same adapter
    again = loaded.save_pretrained(folder.parent / "again", adapter_only=True)
    a, b = load_file(str(folder / ADAPTER_NAME)), load_file(str(again / ADAPTER_NAME))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_another_base_is_refused_in_one_line(trained):
    base, _, folder, _, root = trained
    other = copy.deepcopy(base)
    with torch.no_grad():
        other.intro.weight[0, 0, 0, 0] += 1e-3
    with pytest.raises(BaseMismatch, match="not the ones this adapter was trained on") as info:
        from_pretrained(folder, base_model=other)
    assert "\n" not in str(info.value) and "base_model=" in str(info.value)
    # the weights file the config names was replaced: rebuilding the base finds out too
    torch.save({"params": other.state_dict()}, root / "base.pth")
    try:
        with pytest.raises(BaseMismatch):
            from_pretrained(folder)
    finally:
        torch.save({"params": base.state_dict()}, root / "base.pth")


def test_corrupted_or_mismatched_adapter_files(trained, tmp_path):
    base, _, folder, _, _ = trained
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in folder.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    state = load_file(str(bad / ADAPTER_NAME))
    key = next(k for k in state if k.endswith(".lora_B"))
    state[key] = torch.zeros(1)
    save_file(state, str(bad / ADAPTER_NAME))
    with pytest.raises(ValueError, match="sha256"):
        from_pretrained(bad, base_model=base)
    config = json.loads((bad / "config.json").read_text())
    config["weights_sha256"] = None
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="shape mismatches"):
        from_pretrained(bad, base_model=base)


def test_adapter_needs_a_low_rank_model_with_a_fresh_base_record(tmp_path):
    torch.manual_seed(0)
    base = create_model("nafnet", **KW).eval()
    with pytest.raises(ValueError, match="needs a low-rank model"):
        tunify(base, 2).save_pretrained(tmp_path / "a", adapter_only=True, arch="nafnet", arch_kwargs=KW)
    tm = tunify(base, 2, rank=2)
    other = tunify(create_model("nafnet", **KW), 2, rank=2)  # another random init
    tm.load_state_dict(other.state_dict())  # its frozen weights are no longer the recorded base's
    with pytest.raises(ValueError, match="record of its base is stale"):
        tm.save_pretrained(tmp_path / "b", adapter_only=True, arch="nafnet", arch_kwargs=KW)
    assert not (tmp_path / "b" / ADAPTER_NAME).exists()


def test_full_save_of_a_low_rank_model_round_trips(trained, tmp_path):
    _, tm, _, x, _ = trained
    folder = tm.save_pretrained(tmp_path / "full", arch="nafnet", arch_kwargs=KW)
    assert json.loads((folder / "config.json").read_text())["rank"] == 2
    loaded = from_pretrained(folder)
    with torch.no_grad():
        assert torch.equal(loaded(x, lam=LAMS), tm(x, lam=LAMS))
    with pytest.raises(ValueError, match="full save"):
        from_pretrained(folder, base_model=create_model("nafnet", **KW))


def test_a_low_rank_box_recipe_runs_end_to_end(tmp_path):
    """run_recipe with tunify.rank (preflight, fine-tune, sweep) in the box space, as
    `tunify train RECIPE --set tunify.rank=4` runs it."""
    from tunify.training import run_recipe

    data = copy.deepcopy(RECIPE)
    data["tunify"] = {"rank": 2, "lam_space": "box"}
    data["lam"] = {"sampler": "box_uniform"}
    data["optim"]["steps"] = 2
    data["output"]["dir"] = str(tmp_path / "run")
    run = run_recipe(parse_recipe(data), log=lambda s: None)
    assert run.fit.step == 2 and run.sweep and (tmp_path / "run" / "sweep.png").is_file()
    layers = [m for m in run.model.modules() if isinstance(m, LowRankLayer)]
    assert layers and all(m.lora_A.shape[0] == 2 for m in layers)  # one slice per knob; the base is W_0
    assert any(m.lora_B.abs().sum() > 0 for m in layers), "the factors did not train"


def test_a_low_rank_run_publishes_adapter_only_from_the_cli(trained, tmp_path):
    """`tunify publish RUN --adapter-only`: a run of a recipe naming its base weights becomes an
    adapter folder a small fraction of the full save, which loads back onto the base exactly;
    a recipe without weights is refused in one line."""
    from tunify.cli import main
    from tunify.training import run_recipe

    base, _, _, x, root = trained
    data = copy.deepcopy(RECIPE)
    data["model"]["weights"] = str(root / "base.pth")
    data["optim"]["steps"] = 2
    data["output"]["dir"] = str(tmp_path / "run")
    run = run_recipe(parse_recipe(data), log=lambda s: None)
    assert main(["publish", str(tmp_path / "run"), "--to", str(tmp_path / "adapter"), "--adapter-only"]) == 0
    assert main(["publish", str(tmp_path / "run"), "--to", str(tmp_path / "full")]) == 0
    adapter = sum(p.stat().st_size for p in (tmp_path / "adapter").glob("*.safetensors"))
    full = sum(p.stat().st_size for p in (tmp_path / "full").glob("*.safetensors"))
    assert (tmp_path / "adapter" / ADAPTER_NAME).is_file() and adapter < 0.7 * full  # a width-8 toy: norms weigh a lot
    loaded = from_pretrained(tmp_path / "adapter", base_model=copy.deepcopy(base)).eval()
    want = run.model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x, lam=LAMS), want(x, lam=LAMS))
    data["model"].pop("weights")
    data["output"]["dir"] = str(tmp_path / "run2")
    run_recipe(parse_recipe(data), log=lambda s: None)
    assert main(["publish", str(tmp_path / "run2"), "--to", str(tmp_path / "bad"), "--adapter-only"]) != 0
    assert not (tmp_path / "bad").exists()
