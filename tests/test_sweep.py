"""tunify sweep and tunify.evaluation: metrics per λ, files, plots; real models, no mocks."""
import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import perturb
from tunify import tunify
from tunify.cli import main
from tunify.data import build_degradation, load_images, save_image
from tunify.evaluation import SweepResult, lpips_distance, lpips_weights_path, sweep
from tunify.metrics import psnr

NOISE = [{"type": "gaussian_noise", "sigma": 25}]
FILES = ("sweep.csv", "sweep.json", "sweep.md", "sweep_metrics.png", "perception_distortion.png", "grid.png")


@pytest.fixture(autouse=True)
def empty_hub(tmp_path, monkeypatch):
    """A torch hub dir of our own, empty: LPIPS is skipped unless a test puts weights there."""
    hub = tmp_path / "torch-hub"
    monkeypatch.setattr(torch.hub, "_hub_dir", str(hub))
    return hub


class Residual(nn.Module):
    """x + conv(relu(conv(x))), 3→8→3 channels: a tiny image-to-image net."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))

    def forward(self, x):
        return x + self.body(x)


def tiny(p=2, space="simplex", seed=0):
    """The tiny net made tunable, each kernel perturbed differently so λ matters."""
    torch.manual_seed(seed)
    tm = tunify(Residual(), [f"o{i}" for i in range(p)], lam_space=space)
    perturb(tm, seed=seed + 1, scale=0.5)
    return tm.eval()


def crops(folder, names, size, shrink=256):
    """Centre size×size crops (or (h, w)) of skimage photos shrunk to ``shrink``, saved as PNGs."""
    h, w = (size, size) if isinstance(size, int) else size
    for name, im in zip(names.split(","), load_images(f"skimage:{names}", shrink)):
        y, x = (im.shape[1] - h) // 2, (im.shape[2] - w) // 2
        save_image(im[:, y : y + h, x : x + w], folder / f"{name}.png")
    return folder


@pytest.fixture(scope="module")
def images48(tmp_path_factory):
    return crops(tmp_path_factory.mktemp("img48"), "astronaut,coffee", 48, shrink=96)


def degraded(folder, spec=NOISE, seed=0):
    """The sweep's documented inputs, rebuilt by hand: clean images in order, one generator."""
    clean = load_images(folder)
    g = torch.Generator().manual_seed(seed)
    return [(build_degradation(spec)(im[None], g), im[None]) for im in clean]


def test_p2_sweep_matches_an_independent_run_and_writes_every_file(images48, tmp_path):
    tm = tiny()
    out = tmp_path / "out"
    r = sweep(tm, images48, degradation=NOISE, out_dir=out, progress=False)
    assert len(r.rows) == 11 and r.rows[0]["lam"] == [1.0, 0.0] and r.rows[-1]["lam"] == [0.0, 1.0]
    assert r.metrics == ["psnr", "ssim"] and set(r.skipped) == {"loss", "niqe", "lpips"}
    pairs = degraded(images48)
    with torch.no_grad():
        for row in r.rows:
            lam = torch.tensor(row["lam"])
            expected = [float(psnr(tm(lq, lam=lam).clamp(0, 1), gt)) for lq, gt in pairs]
            assert abs(row["psnr"] - sum(expected) / len(expected)) < 1e-4
    assert max(r.column("psnr")) - min(r.column("psnr")) > 0.3  # λ really changes the output
    assert abs(r.input_row["psnr"] - sum(float(psnr(lq, gt)) for lq, gt in pairs) / 2) < 1e-4
    assert len(r.per_image) == 22 and {row["image"] for row in r.per_image} == {"astronaut", "coffee"}

    assert all((out / f).is_file() for f in FILES)
    with (out / "sweep.csv").open() as f:
        lines = list(csv.reader(f))
    assert lines[0] == ["lam_o0", "lam_o1", "psnr", "ssim"] and len(lines) == 12
    assert float(lines[1][2]) == r.rows[0]["psnr"]
    back = SweepResult.from_json(out / "sweep.json")
    assert back.rows == r.rows and back.per_image == r.per_image and back.space == tm.lam_space
    assert back.skipped == r.skipped and back.input_row == r.input_row
    assert "| (0.50, 0.50) |" in r.table() and "| input |" in (out / "sweep.md").read_text()
    for name in ("sweep_metrics.png", "perception_distortion.png"):
        with Image.open(out / name) as im:
            assert im.width > 300 and im.height > 200
    with Image.open(out / "grid.png") as im:  # captions; input | 11 outputs | clean, 4-px gaps; a row per image
        assert im.size == (13 * 48 + 12 * 4, 16 + 2 * 48 + 4)
        strip = np.asarray(im.convert("L"))[:16]
        assert strip.min() < 100 and (strip[:, :40] < 100).any()  # the captions are written, "input" first


@pytest.mark.parametrize("p, space, rows", [(3, "simplex", 6), (2, "box", 9)])
def test_triangle_and_box_sweeps_plot(images48, tmp_path, p, space, rows):
    tm = tiny(p, space)
    r = sweep(tm, images48, points=3, degradation=NOISE, metrics="psnr,ssim", out_dir=tmp_path, progress=False)
    assert len(r.rows) == rows
    if space == "simplex":
        assert all(abs(sum(row["lam"]) - 1) < 1e-6 for row in r.rows)
    else:
        assert {tuple(row["lam"]) for row in r.rows} == {(a, b) for a in (0, .5, 1) for b in (0, .5, 1)}
    for name in ("sweep_metrics.png", "perception_distortion.png", "grid.png"):
        with Image.open(tmp_path / name) as im:
            assert im.width > 200
    assert len(r.grid_columns) == rows


def test_niqe_column_is_basicsr_niqe_of_the_output(tmp_path):
    niqe_mod = pytest.importorskip("basicsr.metrics.niqe")
    folder = crops(tmp_path / "img", "astronaut", (96, 192))
    tm = tiny()
    r = sweep(tm, folder, lams=[[1.0, 0.0]], degradation=NOISE, metrics="niqe", progress=False)
    (lq, gt), = degraded(folder)
    with torch.no_grad():
        out = tm(lq, lam=torch.tensor([1.0, 0.0])).clamp(0, 1)
    bgr = np.ascontiguousarray((out[0] * 255).permute(1, 2, 0).numpy()[..., ::-1])
    assert abs(r.rows[0]["niqe"] - niqe_mod.calculate_niqe(bgr, crop_border=0)) < 1e-6
    assert math.isfinite(r.input_row["niqe"]) and r.metrics == ["niqe"]


def test_lpips_needs_alexnet_weights_in_the_hub_cache_and_never_downloads(images48, empty_hub, monkeypatch):
    pytest.importorskip("lpips")
    torchvision = pytest.importorskip("torchvision")
    tm = tiny()
    r = sweep(tm, images48, lams=[[1.0, 0.0]], degradation=NOISE, metrics="psnr,lpips", progress=False)
    path = empty_hub / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert "lpips" not in r.metrics and str(path) in r.skipped["lpips"] and "put them there" in r.skipped["lpips"]

    def no_network(*args, **kwargs):
        raise AssertionError("LPIPS tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet().state_dict(), path)  # random weights stand in for ImageNet's
    assert lpips_weights_path() == path
    r = sweep(tm, images48, lams=[[1.0, 0.0], [0.0, 1.0]], degradation=NOISE, metrics="psnr,lpips", progress=False)
    assert r.metrics == ["psnr", "lpips"] and "lpips" not in r.skipped
    assert all(math.isfinite(v) and v >= 0 for v in r.column("lpips") + [r.input_row["lpips"]])
    x, y = torch.rand(2, 3, 48, 48).chunk(2)
    assert float(lpips_distance(x, x)[0]) < 1e-6 and float(lpips_distance(x, y)[0]) > 0


def test_objective_losses_equal_hand_computed_mse(images48):
    tm = tiny()
    specs = [{"name": "clean", "losses": [{"type": "MSELoss"}], "target": "clean"},
             {"name": "input", "losses": [{"type": "MSELoss"}], "target": "input"}]
    r = sweep(tm, images48, lams=[[1.0, 0.0], [0.0, 1.0]], degradation=NOISE, objectives=specs, loss="sum",
              metrics="psnr,loss", progress=False)
    assert r.metrics == ["psnr", "loss_clean", "loss_input"]
    pairs = degraded(images48)
    with torch.no_grad():
        outs = [(tm(lq, lam=torch.tensor([1.0, 0.0])), lq, gt) for lq, gt in pairs]
        outs_grain = [(tm(lq, lam=torch.tensor([0.0, 1.0])), lq, gt) for lq, gt in pairs]
    clean_mse = sum(float((o - gt).square().mean()) for o, _, gt in outs) / len(outs)
    input_mse = sum(float((o - lq).square().mean()) for o, lq, _ in outs_grain) / len(outs)
    assert abs(r.rows[0]["loss_clean"] - clean_mse) < 1e-7 and abs(r.rows[1]["loss_input"] - input_mse) < 1e-7


def test_paired_folder_and_batch_inputs(images48, tmp_path):
    tm = tiny()
    pairs = degraded(images48)
    for i, (lq, gt) in enumerate(pairs):
        save_image(lq[0], tmp_path / "pairs" / "lq" / f"{i}.png")
        save_image(gt[0], tmp_path / "pairs" / "gt" / f"{i}.png")
    r = sweep(tm, tmp_path / "pairs", points=2, metrics="psnr", progress=False)  # no degradation needed
    stored = [(load_images(tmp_path / "pairs" / "lq" / f"{i}.png")[0], load_images(tmp_path / "pairs" / "gt" / f"{i}.png")[0])
              for i in range(2)]
    assert abs(r.input_row["psnr"] - sum(float(psnr(a[None], b[None])) for a, b in stored) / 2) < 1e-4
    assert r.images == ["0", "1"] and r.settings["degradation"] is None
    batch = {"lq": torch.cat([lq for lq, _ in pairs]), "gt": torch.cat([gt for _, gt in pairs])}
    b = sweep(tm, batch, points=2, metrics="psnr", progress=False)
    a = sweep(tm, images48, points=2, degradation=NOISE, metrics="psnr", progress=False)
    assert b.rows == a.rows


def test_errors_name_the_fix(images48, tmp_path, capsys):
    tm = tiny()
    with pytest.raises(FileNotFoundError, match="no such folder.*lq/ and gt/"):
        sweep(tm, tmp_path / "missing", degradation=NOISE)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no images"):
        sweep(tm, tmp_path / "empty", degradation=NOISE)
    with pytest.raises(ValueError, match=r"λ #2 \(0.7, 0.7\) is off the simplex.*sum to 1"):
        sweep(tm, images48, lams=[[1, 0], [0.7, 0.7]], degradation=NOISE)
    with pytest.raises(ValueError, match="unknown metric 'psnrr'. Did you mean 'psnr'"):
        sweep(tm, images48, degradation=NOISE, metrics=["psnrr"])
    with pytest.raises(ValueError, match="pass --degradation"):
        sweep(tm, images48)
    assert main(["sweep", "nafnet-grain-s25", "--images", str(images48), "--metrics", "psnr,ssm"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tunify: error: unknown metric 'ssm'. Did you mean 'ssim'") and err.count("\n") == 1
    assert main(["sweep", "nafnet-grain-s2", "--images", str(images48)]) == 2
    assert "Did you mean 'nafnet-grain-s25'" in capsys.readouterr().err
    assert main(["sweep", "nafnet-grain-s25", "--images", str(images48), "--lam", "0.7,0.7", "--out", str(tmp_path)]) == 2
    assert "λ #1 (0.7, 0.7) is off the simplex" in capsys.readouterr().err
    (tmp_path / "pairs" / "lq").mkdir(parents=True)
    (tmp_path / "pairs" / "gt").mkdir()
    assert main(["sweep", "nafnet-grain-s25", "--images", str(tmp_path / "pairs"), "--degradation", "[{type: jpeg, quality: 30}]"]) == 2
    assert "drop --degradation" in capsys.readouterr().err
    assert main(["sweep", "nafnet-grain-s25", "--images", str(images48), "--degradation", "[{type: gaussian_nois}]"]) == 2
    assert "Did you mean 'gaussian_noise'" in capsys.readouterr().err


def test_cli_sweep_of_the_zoo_model(tmp_path, capsys):
    folder = crops(tmp_path / "img", "astronaut,coffee", 64)
    out = tmp_path / "sweep"
    assert main(["sweep", "nafnet-grain-s25", "--images", str(folder), "--points", "3", "--out", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "| λ (strong, grain) |" in printed and "wrote" in printed and "recipe.yaml" in printed
    assert all((out / f).is_file() for f in FILES)
    data = json.loads((out / "sweep.json").read_text())
    strong, grain, noisy = data["rows"][0], data["rows"][-1], data["input"]["psnr"]
    assert strong["lam"] == [1.0, 0.0] and grain["lam"] == [0.0, 1.0]
    assert strong["psnr"] > noisy + 5 and abs(grain["psnr"] - noisy) < 1.5
    # the recipe's objectives give the loss columns: the grain corner keeps the input
    assert grain["loss_grain"] < strong["loss_grain"] and strong["loss_strong"] < grain["loss_strong"]
