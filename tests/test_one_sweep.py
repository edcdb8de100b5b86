"""One sweep: validation during training, the end-of-run sweep, `tunify sweep` and the model card
give the same rows for the same model, images and λ, in one sweep.json format."""
import json

import torch
from test_reliability import small

from tunify.cli import main
from tunify.data import save_image
from tunify.evaluation import SWEEP_FORMAT, SweepResult
from tunify.publishing import from_pretrained, publish_run, verify_card
from tunify.training import parse_recipe, run_recipe

SIDE = 16


def _pairs(folder):
    """Two 16×16 (noisy, clean) pairs as PNGs: 8-bit exact, so every entry point reads the same
    tensors (a run's validation batch and `tunify sweep --images` alike)."""
    from tunify.data import load_images

    g = torch.Generator().manual_seed(3)
    for i, im in enumerate(load_images("skimage:astronaut,coffee", 48)):
        gt = im[:, 8 : 8 + SIDE, 8 : 8 + SIDE]
        lq = (gt + 0.1 * torch.randn(gt.shape, generator=g)).clamp(0, 1)
        save_image(gt, folder / "gt" / f"{i}.png")
        save_image(lq, folder / "lq" / f"{i}.png")
    return folder


def test_the_same_rows_from_every_entry_point(tmp_path, capsys):
    pairs = _pairs(tmp_path / "pairs")
    spec = {"type": "paired", "lq": str(pairs / "lq"), "gt": str(pairs / "gt"), "patch_size": SIDE}
    data = small(tmp_path / "run", pretrain=None, data={"train": spec, "val": spec, "batch_size": 2, "val_images": 2,
                                                          "val_patch": SIDE},
                 validation={"lam_points": 3})
    run = run_recipe(parse_recipe(data), log=lambda s: None)
    training = run.fit.validation                              # 1. validation during training (with losses)
    end = json.loads((tmp_path / "run" / "sweep.json").read_text())  # 2. the end-of-run sweep
    assert end["format"] == SWEEP_FORMAT and len(end["images"]) == 2
    assert main(["sweep", str(tmp_path / "run"), "--images", str(pairs), "--points", "3", "--metrics", "psnr,ssim,loss",
                 "--out", str(tmp_path / "cli"), "--no-progress"]) == 0
    cli = json.loads((tmp_path / "cli" / "sweep.json").read_text())  # 3. tunify sweep
    folder = publish_run(tmp_path / "run", tmp_path / "pub")
    card = json.loads((folder / "config.json").read_text())["metrics"]  # 4. the model card
    assert cli["format"] == card["format"] == SWEEP_FORMAT
    lams = [r["lam"] for r in training]
    assert lams == [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    for source in (end, cli, card):
        assert [r["lam"] for r in source["rows"]] == lams
        for ours, theirs in zip(training, source["rows"]):
            for key in ("psnr", "ssim"):
                assert theirs[key] == ours[key], (key, ours, theirs)  # identical, not merely close
    losses = [k for k in training[0] if k.startswith("loss_")]
    assert losses and all(c[k] == t[k] for c, t in zip(cli["rows"], training) for k in losses)
    assert cli["input"]["psnr"] == end["input"]["psnr"] == card["input"]["psnr"]
    assert max(r["psnr"] for r in training) - min(r["psnr"] for r in training) > 0  # the rows say something
    # the card shows its table from that same format, and re-measuring it changes nothing
    table = SweepResult.from_dict(card).table()
    assert all(f"| {r['psnr']:.2f} | {r['ssim']:.4f} |" in table for r in training)
    assert table.splitlines()[2] in (folder / "README.md").read_text()
    rows = verify_card(from_pretrained(folder), folder)
    assert all(r["delta"] == 0 for r in rows)


def test_older_sweep_files_still_read(tmp_path):
    """Cards and runs written before the formats were one ({"rows", "input_psnr"}) load as sweeps."""
    old = {"objectives": ["a", "b"], "rows": [{"lam": [1.0, 0.0], "psnr": 30.0, "ssim": 0.9}], "input_psnr": 20.0}
    result = SweepResult.from_dict(old)
    assert result.objectives == ("a", "b") and result.metrics == ["psnr", "ssim"] and result.input_row == {"psnr": 20.0}
    assert "| (1.00, 0.00) | 30.00 | 0.9000 |" in result.table() and "| input | 20.00 |" in result.table()
    again = SweepResult.from_dict(result.to_dict())
    assert again.rows == result.rows and again.to_dict()["format"] == SWEEP_FORMAT
