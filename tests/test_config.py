"""TunifyConfig: the one object that says what a tunable model is, from tunify() to config.json and back."""
import copy
import json

import pytest
import torch
from torch import nn
from conftest import jitter

from tunify import TunifyConfig, from_pretrained, save_pretrained, tunify
from tunify.archs import create_model

KW = dict(width=8, middle_blk_num=1, enc_blk_nums=(1,), dec_blk_nums=(1,))


def _perturbed(tm):
    return jitter(tm, 0.05)


def test_tunify_fills_the_conversion_fields():
    tm = tunify(create_model("nafnet", **KW), ["fidelity", "look"], targets=["intro", r"encoders\..*"], lam_space="box")
    c = tm.config
    assert c.objectives == ("fidelity", "look") and c.p == 2 and c.lam_space == "box"
    assert c.targets == ["intro", r"encoders\..*"] and c.exclude is None and c.serializable
    assert c.path == tm.tunify_report.path and c.rank is None and c.base_record is None
    typed = tunify(create_model("nafnet", **KW), 2, targets=[nn.Conv2d])
    assert typed.config.targets is None and not typed.config.serializable  # a type cannot be written down
    low = tunify(create_model("nafnet", **KW), 2, rank=2)
    assert low.config.rank == 2 and len(low.config.base_record["sha256"]) == 64


def test_no_attributes_are_attached_after_construction():
    tm = tunify(create_model("nafnet", **KW), 2)
    for old in ("card", "recipe", "model_file", "arch_source", "tunify_options", "base_record"):
        with pytest.raises(AttributeError):
            getattr(tm, old)


def test_update_refuses_unknown_fields_and_names_the_real_ones():
    c = TunifyConfig(("a", "b"))
    assert c.update(name="x", step=3) is c and (c.name, c.step) == ("x", 3)
    with pytest.raises(TypeError, match="no field 'stpe'.*step"):
        c.update(stpe=4)


def test_dict_round_trip_keeps_json_fields_and_drops_in_memory_ones():
    c = TunifyConfig(("fidelity", "look"), "simplex", targets=["body"], path="fx", rank=4, arch="nafnet",
                     arch_kwargs={"width": 8}, weights="ncnn:stem", name="m", descriptions={"look": "sharp"},
                     step=7, metrics={"rows": []}, recipe=object(), base_record={"sha256": "0" * 64, "tensors": {}})
    d = c.to_dict()
    json.dumps(d)  # JSON all the way down: no Recipe object, no digests
    assert "recipe" not in d and "base_record" not in d and d["mode"] == "fx"
    assert d["objectives"] == [{"name": "fidelity", "description": ""}, {"name": "look", "description": "sharp"}]
    back = TunifyConfig.from_dict(d)
    for f in ("objectives", "targets", "rank", "arch", "arch_kwargs", "weights", "name", "descriptions", "step", "metrics"):
        assert getattr(back, f) == getattr(c, f), f
    assert back.path == "fx" and back.recipe is None and back.base_record is None


def test_a_saved_folder_gives_its_config_back(tmp_path):
    torch.manual_seed(0)
    tm = _perturbed(tunify(create_model("nafnet", **KW), ["fidelity", "look"]).eval())
    tm.config.update(arch="nafnet", arch_kwargs=dict(KW), name="tiny", descriptions={"look": "sharper"}, step=11,
                     weights="weights.pth")
    save_pretrained(tm, tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["arch"] == "nafnet" and saved["step"] == 11 and saved["weights"] == "weights.pth"
    back = from_pretrained(tmp_path / "m")
    c = back.config
    assert (c.name, c.arch, c.step, c.weights) == ("tiny", "nafnet", 11, "weights.pth")
    assert c.descriptions == {"look": "sharper"} and c.objectives == ("fidelity", "look")
    assert c.arch_kwargs == json.loads(json.dumps(KW))  # tuples come back as lists, as JSON keeps them
    x = torch.rand(2, 3, 16, 16)
    lam = torch.tensor([[0.2, 0.8], [0.9, 0.1]])
    with torch.no_grad():
        assert torch.allclose(back(x, lam=lam), tm(x, lam=lam), atol=1e-6)


def test_the_arch_argument_overrides_and_a_missing_arch_writes_nothing(tmp_path):
    tm = tunify(create_model("nafnet", **KW), 2)
    with pytest.raises(ValueError, match="arch="):
        save_pretrained(tm, tmp_path / "none")
    assert not (tmp_path / "none").exists()  # refused before anything was written
    save_pretrained(tm, tmp_path / "given", arch="nafnet", arch_kwargs=KW)
    assert from_pretrained(tmp_path / "given").config.arch == "nafnet"


def test_copies_own_their_config():
    tm = tunify(create_model("nafnet", **KW), 2)
    tm.config.update(name="a", arch_kwargs={"width": 8})
    twin = copy.deepcopy(tm)
    twin.config.update(name="b")
    twin.config.arch_kwargs["width"] = 16
    assert tm.config.name == "a" and tm.config.arch_kwargs == {"width": 8}
    assert "config" not in "".join(tm.state_dict())  # config is not a tensor of the model
