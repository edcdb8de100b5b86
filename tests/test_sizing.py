"""A model file's record travels with its published folder (what rebuilds the network without the
file, its scale and size rules), and sweep and demo honour those rules: pad to an accepted size
and crop back, tile large images when the model allows it (issue 12)."""
import base64
import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import jitter
from PIL import Image

from tunify.archs.sizing import run_padded, run_tiled, size_rules, sized_forward
from tunify.cli import main
from tunify.data import save_image
from tunify.demo.server import DemoApp
from tunify.metrics import psnr
from tunify.publishing import from_pretrained, resolve

pytest.importorskip("spandrel")


def _perturb(tm):
    return jitter(tm, 0.02)


@pytest.fixture()
def safmn_file(tmp_path):
    """SAFMN ×2, built small: spandrel says its inputs should be a multiple of 8."""
    from spandrel.architectures.SAFMN import SAFMN

    torch.manual_seed(0)
    path = tmp_path / "2x_safmn.pth"
    torch.save(SAFMN(dim=8, n_blocks=1, upscaling_factor=2).state_dict(), path)
    return path


@pytest.fixture()
def published(safmn_file, tmp_path):
    tm = _perturb(resolve(str(safmn_file)).tm)
    folder = tm.save_pretrained(tmp_path / "pub")  # no arch=: the model-file record says how to rebuild it
    return tm, folder


def test_config_records_what_rebuilds_the_network_without_the_file(published, safmn_file):
    tm, folder = published
    config = json.loads((folder / "config.json").read_text())
    record = config["model_file"]
    assert config["arch"] == "spandrel:SAFMN" and record["spandrel_arch"] == "SAFMN"
    assert record["scale"] == 2 and record["size_requirements"]["multiple_of"] == 8 and record["tiling"] == "SUPPORTED"
    assert record["hyperparameters"]["dim"] == 8 and record["state_dict_shapes"]
    safmn_file.unlink()  # the original file is gone: the folder alone rebuilds the network
    back = from_pretrained(folder)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(back(x, lam=[0.3, 0.7]), tm(x, lam=[0.3, 0.7]))
    assert back.config.model_file == record and size_rules(back)["multiple_of"] == 8


def test_sized_forward_pads_to_the_multiple_and_crops_back(published):
    tm, _ = published
    x, lam = torch.rand(1, 3, 13, 19), torch.tensor([0.5, 0.5])
    with torch.no_grad():
        got = sized_forward(tm)(x, lam)
        expected = tm(F.pad(x, (0, 5, 0, 3), mode="replicate"), lam=lam)[..., :26, :38]
        unpadded = tm(x, lam=lam)
    assert got.shape == (1, 3, 26, 38) and torch.equal(got, expected)
    assert (got - unpadded).abs().max() > 1e-4  # padding is not a no-op here: the rule changed the run
    assert sized_forward(resolve("dncnn-tiny").tm) is None  # no record, no rules: the plain call


def test_tiles_stitch_into_the_whole_image(tmp_path):
    """Overlap wider than the receptive field: tiles equal the whole-image run; a model whose
    tiling is discouraged always runs whole."""
    from spandrel.architectures.Compact.__arch.SRVGG import SRVGGNetCompact

    torch.manual_seed(0)
    path = tmp_path / "2x_compact.pth"
    torch.save(SRVGGNetCompact(num_feat=8, num_conv=2, upscale=2).state_dict(), path)
    tm = _perturb(resolve(str(path)).tm)
    x, lam = torch.rand(1, 3, 40, 36), torch.tensor([0.2, 0.8])
    rules = size_rules(tm)
    with torch.no_grad():
        whole = tm(x, lam=lam)
        tiled = run_tiled(lambda a, l: tm(a, lam=l), x, lam, rules, tile=16, overlap=8)
        assert tiled.shape == whole.shape and (tiled - whole).abs().max() < 1e-5
        thin = run_tiled(lambda a, l: tm(a, lam=l), x, lam, rules, tile=16, overlap=0)
        assert (thin - whole).abs().max() > 1e-4  # without context the seams show: the overlap matters
        assert torch.equal(sized_forward(tm, tile=16, overlap=8)(x, lam), tiled)
        tm.config.model_file = {**tm.config.model_file, "tiling": "DISCOURAGED"}
        assert torch.equal(sized_forward(tm, tile=16)(x, lam), run_padded(lambda a, l: tm(a, lam=l), x, lam, rules))


def test_sweep_and_demo_run_by_the_size_rules(published, tmp_path, capsys):
    tm, folder = published
    gt = torch.rand(3, 26, 38)
    (tmp_path / "pairs" / "gt").mkdir(parents=True)
    save_image(gt, tmp_path / "pairs" / "gt" / "a.png")
    lq = F.interpolate(gt[None], size=(13, 19), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)[0]
    save_image(lq, tmp_path / "pairs" / "lq" / "a.png")
    assert main(["sweep", str(folder), "--images", str(tmp_path / "pairs"), "--lam", "0.5,0.5", "--metrics", "psnr",
                 "--out", str(tmp_path / "sweep"), "--no-progress"]) == 0
    row = json.loads((tmp_path / "sweep" / "sweep.json").read_text())["rows"][0]
    from tunify.data import read_image

    x, clean = read_image(tmp_path / "pairs" / "lq" / "a.png")[None], read_image(tmp_path / "pairs" / "gt" / "a.png")[None]
    lam = torch.tensor([0.5, 0.5])
    with torch.no_grad():
        padded = run_padded(lambda a, l: tm(a, lam=l), x, lam, size_rules(tm))
    assert row["psnr"] == pytest.approx(float(psnr(padded.clamp(0, 1), clean)[0]), abs=1e-5)

    app = DemoApp(from_pretrained(folder), forward=sized_forward(from_pretrained(folder)))
    buf = io.BytesIO()
    Image.fromarray((lq.permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(buf, format="PNG")
    upload = app.upload(buf.getvalue())
    shown = app.run(upload["id"], [0.5, 0.5])["image"]
    img = Image.open(io.BytesIO(base64.b64decode(shown.split(",", 1)[1])))
    assert img.size == (38, 26)
    got = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255
    assert (got - padded[0].clamp(0, 1)).abs().max() <= 1 / 255 + 1e-6
