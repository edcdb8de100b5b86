"""Publishing: folders that round-trip exactly, cards with real numbers, the zoo's sha256
check, every corruption case, hub ids offline, and push_to_hub up to the upload."""
import copy
import json
import shutil

import pytest
import torch
from conftest import perturb
from test_training import TINY
from torch import nn

from tunify import bake, from_pretrained, push_to_hub, tunify
from tunify.archs import create_model
from tunify.cli import main
from tunify.publishing import add_to_zoo, from_zoo, list_zoo, publish_run, verify_card
from tunify.training import parse_recipe, run_recipe

KW = {"width": 8, "middle_blk_num": 1, "enc_blk_nums": [1], "dec_blk_nums": [1]}
LAMS = [[1.0, 0.0], [0.0, 1.0], [0.3, 0.7]]


def _tuned(space="simplex", **options):
    torch.manual_seed(0)
    tm = tunify(create_model("nafnet", **KW), ["strong", "grain"], lam_space=space, **options)
    perturb(tm, seed=2)
    return tm


@pytest.mark.parametrize("space", ["simplex", "box"])
def test_save_load_is_bit_exact(tmp_path, space):
    tm = _tuned(space)
    folder = tm.save_pretrained(tmp_path / "m", arch="nafnet", arch_kwargs=KW)
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors", "README.md"}
    back = from_pretrained(folder)
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(back(x, lam=LAMS), tm(x, lam=LAMS))
        for lam in LAMS:
            assert torch.equal(back(x, lam=lam), tm(x, lam=lam))
    assert back.objectives == ("strong", "grain") and back.lam_space.kind == space and not back.training


def test_types_and_predicates_are_saved_as_explicit_names(tmp_path):
    tm = _tuned(targets=[nn.Conv2d], exclude=lambda n, m: n.startswith("decoders"))
    folder = tm.save_pretrained(tmp_path / "m", arch="nafnet", arch_kwargs=KW)
    config = json.loads((folder / "config.json").read_text())
    assert len(config["targets"]) == len(tm.tunify_report.converted) and config["exclude"] is None
    back = from_pretrained(folder)
    assert set(back.tunify_report.names()) == set(tm.tunify_report.names())
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(back(x, lam=[0.2, 0.8]), tm(x, lam=[0.2, 0.8]))


def test_save_needs_the_architecture():
    with pytest.raises(ValueError, match="arch="):
        _tuned().save_pretrained("/tmp/never-written")


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A tiny real training run, published with its recipe, sweep and strip."""
    root = tmp_path_factory.mktemp("pub")
    data = copy.deepcopy(TINY)
    data["output"]["dir"] = str(root / "run")
    data["optim"]["ema_decay"] = 0.5
    data["objectives"][0]["description"] = "the clean image"
    run = run_recipe(parse_recipe(data), log=lambda s: None)
    folder = publish_run(root / "run", root / "published")
    return run, folder, root


def test_publish_run_card_has_the_measured_numbers(published):
    run, folder, _ = published
    assert {"config.json", "model.safetensors", "README.md", "recipe.yaml", "sweep.png"} <= {p.name for p in folder.iterdir()}
    card = (folder / "README.md").read_text()
    for row in run.sweep:
        assert f"| {row['psnr']:.2f} | {row['ssim']:.4f} |" in card
    assert "the clean image" in card and "weights sha256" in card and "![λ sweep](sweep.png)" in card
    tm = from_pretrained(folder)
    rows = verify_card(tm, folder)
    assert len(rows) == len(run.sweep) and max(abs(r["delta"]) for r in rows) < 1e-3
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(tm(x, lam=[0.4, 0.6]), run.model.eval()(x, lam=[0.4, 0.6]))  # EMA weights published


def test_a_training_run_folder_resolves_like_its_published_copy(published, tmp_path, capsys):
    from tunify.cli import main
    from tunify.publishing import is_run_dir, load_run, resolve_model

    run, folder, root = published
    assert is_run_dir(root / "run") and not is_run_dir(folder)
    from_run, where = resolve_model(root / "run")
    from_pub, _ = resolve_model(folder)
    assert where == root / "run" and from_run.config.step == run.fit.step
    x = torch.rand(2, 3, 16, 16)
    for lam in ([1.0, 0.0], [0.3, 0.7]):  # EMA weights in both, bit for bit
        assert torch.equal(from_run(x, lam=lam), from_pub(x, lam=lam))
    # an unfinished run: publishing refuses it, sweeping (resolve_model) takes its latest checkpoint
    unfinished = copy.deepcopy(TINY)
    unfinished["output"]["dir"] = str(tmp_path / "half")
    run_recipe(parse_recipe(unfinished), stop_after=1, log=lambda s: None)
    with pytest.raises(ValueError, match="finish the run"):
        load_run(tmp_path / "half")
    assert resolve_model(tmp_path / "half")[0].config.step == 1
    images = tmp_path / "images"
    images.mkdir()
    from tunify.data import load_images, save_image
    save_image(load_images("skimage:coffee", max_size=48)[0], images / "coffee.png")
    rc = main(["sweep", str(root / "run"), "--images", str(images), "--points", "3", "--metrics", "psnr,loss",
               "--out", str(tmp_path / "sweep"), "--no-progress"])
    assert rc == 0 and (tmp_path / "sweep" / "sweep.csv").read_text().count("\n") == 4
    assert "loss_" in (tmp_path / "sweep" / "sweep.csv").read_text().splitlines()[0]  # objectives from the run's recipe


def test_zoo_index_sha256_and_cli(published, tmp_path, capsys):
    _, folder, root = published
    zoo = tmp_path / "repo" / "zoo"
    shutil.copytree(folder, zoo / "tiny")
    index = zoo / "index.json"
    entry = add_to_zoo(zoo / "tiny", index=index, recipe="recipes/x.yaml")
    assert entry["path"] == "zoo/tiny" and len(entry["sha256"]) == 64 and list_zoo(index) == ["tiny"]
    assert entry["metrics"]["psnr_by_lam"]
    tm = from_zoo("tiny", index=index)
    assert tm.objectives == ("sharp", "soft")
    with pytest.raises(KeyError, match="Did you mean 'tiny'"):
        from_zoo("tiyn", index=index)
    weights = zoo / "tiny" / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-5] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="sha256 .* the index says"):
        from_zoo("tiny", index=index)
    assert main(["load", str(folder), "--verify"]) == 0
    assert "within 0.05 dB" in capsys.readouterr().out


def _copy(folder, tmp_path, name):
    dst = tmp_path / name
    shutil.copytree(folder, dst)
    return dst


def _edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def test_every_corruption_case_names_the_file_and_problem(published, tmp_path):
    _, folder, _ = published
    f = _copy(folder, tmp_path, "truncated")
    data = (f / "model.safetensors").read_bytes()
    (f / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"model.safetensors does not match the sha256"):
        from_pretrained(f)
    _edit_config(f, weights_sha256=None)
    with pytest.raises(ValueError, match=r"truncated/model.safetensors cannot be read .* truncated or corrupted"):
        from_pretrained(f)
    f = _copy(folder, tmp_path, "wrong_p")
    _edit_config(f, p=3, objectives=[{"name": "a"}, {"name": "b"}, {"name": "c"}])
    with pytest.raises(ValueError, match=r"holds 2 kernels, but config.json says p=3"):
        from_pretrained(f)
    f = _copy(folder, tmp_path, "wrong_arch")
    _edit_config(f, arch_kwargs={**KW, "width": 16})
    with pytest.raises(ValueError, match=r"wrong_arch/model.safetensors does not fit nafnet"):
        from_pretrained(f)
    f = _copy(folder, tmp_path, "bad_json")
    (f / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        from_pretrained(f)
    (f / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        from_pretrained(f)
    f = _copy(folder, tmp_path, "unknown_arch")
    _edit_config(f, arch="nafnett")
    with pytest.raises(ValueError, match="cannot build architecture 'nafnett'"):
        from_pretrained(f)


def test_legacy_pth_loads_safely(published, tmp_path):
    _, folder, _ = published
    from safetensors.torch import load_file

    f = _copy(folder, tmp_path, "legacy")
    state = load_file(str(f / "model.safetensors"))
    (f / "model.safetensors").unlink()
    torch.save(state, f / "pytorch_model.pth")
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(from_pretrained(f)(x, lam=[0.5, 0.5]), from_pretrained(folder)(x, lam=[0.5, 0.5]))

    class Evil:
        def __reduce__(self):
            return (print, ("pickled code ran",))

    torch.save({"x": Evil()}, f / "pytorch_model.pth")
    with pytest.raises(ValueError, match="never unpickles code"):
        from_pretrained(f)


def test_hub_id_loads_offline_from_the_hub_cache(published, tmp_path, monkeypatch):
    _, folder, _ = published
    repo = tmp_path / "hub" / "models--someone--tiny-tunable"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    tm = from_pretrained("someone/tiny-tunable")
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(tm(x, lam=[1.0, 0.0]), from_pretrained(folder)(x, lam=[1.0, 0.0]))
    with pytest.raises(FileNotFoundError, match="could not fetch hub repository 'someone/missing'"):
        from_pretrained("someone/missing")
    with pytest.raises(FileNotFoundError, match="not a tunify model folder"):
        from_pretrained(str(tmp_path / "nowhere" / "x" / "y"))


def test_push_to_hub_dry_run(published):
    _, folder, _ = published
    files = push_to_hub(folder, "someone/tiny", dry_run=True)
    assert {"config.json", "model.safetensors", "README.md", "recipe.yaml", "sweep.png"} <= set(files)
    with pytest.raises(ValueError, match="owner/name"):
        push_to_hub(folder, "tiny", dry_run=True)
    with pytest.raises(FileNotFoundError, match="not a published tunify folder"):
        push_to_hub(folder.parent, "someone/tiny", dry_run=True)


def test_bake_of_a_loaded_model(published):
    _, folder, _ = published
    tm = from_pretrained(folder)
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(bake(tm, [0.3, 0.7])(x), tm(x, lam=[0.3, 0.7]), atol=1e-6)


@pytest.mark.parametrize("name", list_zoo())
def test_every_shipped_zoo_checkpoint_reproduces_its_card(name):
    """Each zoo model, trained on this kind of machine: sha256-checked load, and the card's λ
    sweep re-measured on the recipe's validation images within 0.05 dB; the knob spans a real
    range, monotonically from the first objective's corner to the second's."""
    from tunify.publishing import zoo_entry
    from tunify.publishing.zoo import ZOO_DIR

    entry = zoo_entry(name)
    assert entry["size"] < 8_000_000 and all(entry["lam"].values())
    tm = from_zoo(name)
    rows = verify_card(tm, ZOO_DIR.parent / entry["path"])
    assert len(rows) >= 5 and max(abs(r["delta"]) for r in rows) <= 0.05, rows
    psnr = [r["measured"] for r in rows]
    sign = 1 if psnr[-1] > psnr[0] else -1
    steps = [sign * (b - a) for a, b in zip(psnr, psnr[1:])]
    assert min(steps) > -0.05, f"PSNR must move one way along the knob (within 0.05 dB): {psnr}"
    assert abs(psnr[0] - psnr[-1]) > 1, "the knob must span a real range"


def test_the_demo_opens_on_a_zoo_model():
    from tunify.cli import DEFAULT_DEMO_MODEL

    assert DEFAULT_DEMO_MODEL in list_zoo()
