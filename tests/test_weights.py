"""Pretrained weights from a local file or URL, in official checkpoint layouts."""
import pytest
import torch

from tunify.archs import create_model
from tunify.archs.weights import load_pretrained, read_state_dict
from tunify.training import build_model, parse_recipe
from tunify.training.recipe import ModelSpec

KW = {"width": 8, "middle_blk_num": 1, "enc_blk_nums": [1], "dec_blk_nums": [1]}


def _trained_state():
    torch.manual_seed(5)
    net = create_model("nafnet", **KW)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.1)
    return net, net.state_dict()


@pytest.mark.parametrize("layout", ["params", "params_ema", "state_dict", "bare"])
def test_official_layouts_load_exactly(tmp_path, layout):
    net, state = _trained_state()
    path = tmp_path / "w.pth"
    torch.save(state if layout == "bare" else {layout: state, "other": 1}, path)
    model = build_model(ModelSpec(arch="nafnet", kwargs=KW, weights=str(path)))
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(model(x), net(x))


def test_params_ema_preferred_and_explicit_key(tmp_path):
    net, state = _trained_state()
    other = {k: torch.zeros_like(v) for k, v in state.items()}
    torch.save({"params": other, "params_ema": state}, tmp_path / "w.pth")
    assert torch.equal(read_state_dict(str(tmp_path / "w.pth"))["intro.weight"], state["intro.weight"])
    assert not read_state_dict(str(tmp_path / "w.pth"), "params")["intro.weight"].any()
    with pytest.raises(KeyError, match="no 'model' entry"):
        read_state_dict(str(tmp_path / "w.pth"), "model")


def test_url_download_path_on_a_local_file(tmp_path):
    _, state = _trained_state()
    src = tmp_path / "src" / "nafnet_tiny.pth"
    src.parent.mkdir()
    torch.save({"params": state}, src)
    hub = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        model = build_model(ModelSpec(arch="nafnet", kwargs=KW, weights=src.as_uri()))
        assert (tmp_path / "hub" / "checkpoints" / "nafnet_tiny.pth").is_file()
        with pytest.raises(RuntimeError, match="could not download weights"):
            build_model(ModelSpec(arch="nafnet", kwargs=KW, weights=(tmp_path / "missing.pth").as_uri()))
    finally:
        torch.hub.set_dir(hub)
    assert torch.equal(model.state_dict()["ending.weight"], state["ending.weight"])


def test_mismatch_truncation_and_pickles_are_refused(tmp_path):
    _, state = _trained_state()
    wrong = create_model("nafnet", **{**KW, "width": 16})
    torch.save({"params": state}, tmp_path / "w.pth")
    with pytest.raises(ValueError, match=r"shape mismatches: decoders.0.0.beta: file \(1, 8, 1, 1\) vs model \(1, 16, 1, 1\)") as err:
        load_pretrained(wrong, str(tmp_path / "w.pth"))
    assert "kwargs" in str(err.value)
    partial = {k: v for k, v in state.items() if not k.startswith("ending")}
    torch.save(partial, tmp_path / "p.pth")
    with pytest.raises(ValueError, match="missing keys: ending.bias, ending.weight"):
        load_pretrained(create_model("nafnet", **KW), str(tmp_path / "p.pth"))
    blob = (tmp_path / "w.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="cut.pth.*truncated"):
        read_state_dict(str(tmp_path / "cut.pth"))

    class Evil:
        def __reduce__(self):
            return (print, ("pickled code ran",))

    torch.save({"params": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="cannot read weights file"):
        read_state_dict(str(tmp_path / "evil.pth"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_state_dict(str(tmp_path / "nope.pth"))


def test_import_path_architecture():
    m = build_model(ModelSpec(arch="tunify.archs.unet:UNet", kwargs={"widths": [8, 16]}))
    assert type(m).__name__ == "UNet"
    with pytest.raises(ValueError, match="cannot import Nope"):
        build_model(ModelSpec(arch="tunify.archs.unet:Nope"))
    r = parse_recipe({"name": "x", "model": {"arch": "unet"}, "objectives": [{"name": "a", "losses": [{"type": "L1Loss"}]}],
                      "data": {"train": {}}})
    assert r.model.weights_key == "auto"
