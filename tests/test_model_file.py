"""A model file is a model: tunify(descriptor), create_model(path), `tunify convert FILE`,
recipes with only `model: {weights: FILE}` (and a short `tunify train` on one); loading never
unpickles code."""
import pickle

import pytest
import torch
import yaml
from test_cli import _fails
from test_reliability import small

from tunify import tunify
from tunify.archs import create_model
from tunify.cli import main

pytest.importorskip("spandrel")


class NotATensor:  # pickled into a file, it would need code to load
    pass


@pytest.fixture()
def compact_file(tmp_path):
    from spandrel.architectures.Compact.__arch.SRVGG import SRVGGNetCompact

    torch.manual_seed(0)
    path = tmp_path / "2x_compact.pth"
    torch.save(SRVGGNetCompact(num_feat=8, num_conv=2, upscale=2).state_dict(), path)
    return path


def test_descriptor_and_path_are_models(compact_file):
    from tunify.archs.model_file import load_model_file

    descriptor = load_model_file(compact_file)
    tm = tunify(descriptor, 2, example_inputs=torch.rand(2, 3, 8, 8))
    assert tm.config.model_file["spandrel_arch"] == "Compact" and tm.config.model_file["scale"] == 2
    assert type(create_model(str(compact_file))).__name__ == "SRVGGNetCompact"
    with pytest.raises(ValueError, match="brings its own architecture"):
        create_model(str(compact_file), num_feat=4)


def test_convert_command_on_a_model_file(compact_file, tmp_path, capsys):
    assert main(["convert", str(compact_file), "--size", "12"]) == 0
    out = capsys.readouterr().out
    assert "Compact (SR, x2" in out and "path        : fx" in out and "bake(λ) is a plain SRVGGNetCompact" in out
    _fails(capsys, ["convert", str(tmp_path / "missing.pth")], "does not exist")
    torch.save({"foo": torch.ones(3)}, tmp_path / "unknown.pth")
    _fails(capsys, ["convert", str(tmp_path / "unknown.pth")], "spandrel does not recognise")
    with open(tmp_path / "code.pth", "wb") as f:
        torch.save({"w": torch.ones(1), "obj": NotATensor()}, f, pickle_module=pickle)
    err = _fails(capsys, ["convert", str(tmp_path / "code.pth")], "code.pth", "not a checkpoint")  # weights_only refuses it
    (tmp_path / "garbage.pth").write_bytes(b"\xff" * 100)
    err += _fails(capsys, ["convert", str(tmp_path / "garbage.pth")], "garbage.pth", "not a checkpoint")
    assert "weights_only" not in err  # torch's advice (run the file's pickled code) is never passed on


def test_recipe_with_only_weights_trains(compact_file, tmp_path):
    from tunify.training.recipe import parse_recipe
    from tunify.training.run import build_model, tunify_from_recipe

    data = small(tmp_path / "run", model={"weights": str(compact_file)})
    data["data"]["train"] = {**data["data"]["train"], "degradation": [{"type": "bicubic_down", "scale": 2}]}
    data["objectives"] = [{"name": "l2", "target": "clean", "losses": [{"type": "MSELoss"}]},
                          {"name": "l1", "target": "clean", "losses": [{"type": "L1Loss"}]}]
    data.pop("pretrain", None)
    recipe = parse_recipe(data)
    assert recipe.model.arch is None
    model = build_model(recipe.model)
    tm = tunify_from_recipe(model, recipe)
    assert tm.config.model_file["spandrel_arch"] == "Compact"
    path = tmp_path / "file.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["train", str(path)]) == 0  # `tunify train` with model: {weights: FILE}
    with pytest.raises(ValueError, match="give `arch`"):
        parse_recipe(small(tmp_path / "run", model={"kwargs": {}}))
