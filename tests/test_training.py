"""Training for real on tiny models: samplers, L(λ) going down, exact resume, the NaN guard,
atomic checkpoints, DDP with two processes, adversarial objectives, the quickstart smoke."""
import copy
import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tunify.cli import main
from tunify.lam import LamSpace, lam_grid
from tunify.training import NonFiniteLossError, fit, latest_checkpoint, load_checkpoint, parse_recipe, run_recipe
from tunify.training.checkpoint import save_checkpoint
from tunify.training.recipe import OptimSpec
from tunify.training.samplers import LamSampler
from tunify.training.trainer import lr_factor

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "name": "tiny",
    "seed": 3,
    "model": {"arch": "nafnet", "kwargs": {"width": 8, "middle_blk_num": 1, "enc_blk_nums": [1], "dec_blk_nums": [1]}},
    "objectives": [
        {"name": "sharp", "target": "clean", "losses": [{"type": "MSELoss"}]},
        {"name": "soft", "target": [{"type": "gaussian_blur", "sigma": 2.0}], "losses": [{"type": "MSELoss"}]},
    ],
    "data": {"train": {"type": "degraded", "images": "skimage:astronaut,coffee", "patch_size": 32, "max_size": 128,
                       "degradation": [{"type": "gaussian_noise", "sigma": 25}]},
             "batch_size": 4, "val_images": 2, "val_patch": 32},
    "optim": {"steps": 8, "lr": 2e-3, "warmup_steps": 2},
    "validation": {"lam_points": 3},
    "output": {"checkpoint_every": 4, "log_every": 1, "progress": False, "tensorboard": "off"},
}


def _recipe(tmp_path, **overrides):
    data = copy.deepcopy(TINY)
    data["output"]["dir"] = str(tmp_path / "run")
    return parse_recipe(data, overrides=[f"{k}={v}" for k, v in overrides.items()])


def _losses(run_dir):
    with open(Path(run_dir) / "metrics.csv") as f:
        return [(int(r["step"]), r["loss"]) for r in csv.DictReader(f)]


# -- samplers ------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0.3, 1.0, 4.0])
def test_dirichlet_moments(alpha):
    lam = LamSampler(3, alpha=alpha).sample(100_000, torch.Generator().manual_seed(0))
    assert torch.allclose(lam.sum(1), torch.ones(1)) and (lam >= 0).all()
    assert torch.allclose(lam.mean(0), torch.full((3,), 1 / 3), atol=4e-3)
    var = (1 / 3) * (2 / 3) / (3 * alpha + 1)  # Dirichlet variance of one component
    assert lam[:, 0].var().item() == pytest.approx(var, rel=0.04)


def test_box_vertices_distinct_and_determinism():
    g = torch.Generator().manual_seed(1)
    lam = LamSampler(2, "box").sample(100_000, g)
    assert lam.mean().item() == pytest.approx(0.5, abs=5e-3) and lam.var().item() == pytest.approx(1 / 12, rel=0.03)
    corners = LamSampler(2, "simplex", vertex_fraction=0.4).sample(50_000, g)
    assert ((corners == 1).any(1).float().mean().item()) == pytest.approx(0.4, abs=0.01)
    k3 = LamSampler(2, distinct=3).sample(10, g)
    assert torch.unique(k3, dim=0).shape[0] == 3
    a = LamSampler(3).sample(5, torch.Generator().manual_seed(9))
    assert torch.equal(a, LamSampler(3).sample(5, torch.Generator().manual_seed(9)))


def test_lr_schedules():
    f = lr_factor(OptimSpec(steps=10, warmup_steps=2, schedule="cosine", min_lr_ratio=0.1))
    assert [round(f(s), 3) for s in (0, 1)] == [0.5, 1.0] and f(2) == pytest.approx(1.0) and f(10) == pytest.approx(0.1)
    m = lr_factor(OptimSpec(steps=10, schedule="multistep", milestones=[3, 6], gamma=0.5))
    assert [m(s) for s in (0, 3, 6, 9)] == [1.0, 0.5, 0.25, 0.25]


# -- training ------------------------------------------------------------------------------------
def _val_losses(tm, recipe):
    from tunify.data import build_dataset
    from tunify.objectives import ObjectiveSet, ParametricLoss

    batch = build_dataset(recipe.data.train).fixed_batch(4, 32, seed=0)
    ploss = ParametricLoss(ObjectiveSet.from_specs(recipe.objectives))
    out = []
    with torch.no_grad():
        for lam in lam_grid(LamSpace("simplex", 2), 3):
            loss, _ = ploss(tm(batch["lq"], lam=lam), dict(batch), lam, torch.Generator().manual_seed(0))
            out.append(loss.item())
    return out


def test_short_training_lowers_the_loss_at_every_lam(tmp_path):
    recipe = _recipe(tmp_path, **{"optim.steps": 40, "output.checkpoint_every": 0})
    from tunify.training import build_model, tunify_from_recipe

    torch.manual_seed(0)
    tm = tunify_from_recipe(build_model(recipe.model), recipe)
    before = _val_losses(tm, recipe)
    result = fit(tm, recipe, log=lambda s: None)
    after = _val_losses(tm, recipe)
    assert result.step == 40 and all(a < 0.7 * b for a, b in zip(after, before)), (before, after)
    assert [r["lam"] for r in result.validation] == [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    assert (tmp_path / "run" / "val.csv").is_file()


def test_stop_and_resume_gives_the_same_loss_curve(tmp_path):
    full = run_recipe(_recipe(tmp_path / "a"), log=lambda s: None)
    assert full.fit.step == 8
    part = _recipe(tmp_path / "b")
    first = run_recipe(part, stop_after=3, log=lambda s: None)
    assert first.fit.step == 3 and latest_checkpoint(tmp_path / "b" / "run" / "checkpoints").name == "step_00000003"
    with pytest.raises(FileExistsError, match="--resume"):
        run_recipe(part, log=lambda s: None)
    second = run_recipe(part, resume=True, log=lambda s: None)
    assert second.fit.step == 8
    assert _losses(tmp_path / "a" / "run") == _losses(tmp_path / "b" / "run")
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(full.model(x, lam=[0.3, 0.7]), second.model(x, lam=[0.3, 0.7]))


def test_resume_needs_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        run_recipe(_recipe(tmp_path), resume=True, log=lambda s: None)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    recipe = _recipe(tmp_path, **{"optim.lr": 1e12, "optim.steps": 30, "output.checkpoint_every": 1, "optim.warmup_steps": 0})
    with pytest.raises(NonFiniteLossError) as err:
        run_recipe(recipe, log=lambda s: None)
    last = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert last is not None and str(last) in str(err.value) and "--resume" in str(err.value)
    assert "Lower optim.lr" in str(err.value)  # the fine-tune's key (the pretraining names pretrain.lr)
    step, state, _ = load_checkpoint(last)
    assert all(torch.isfinite(t).all() for t in state.values())


def test_a_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    root = tmp_path / "ckpt"
    save_checkpoint(root, 1, {"w": torch.ones(2)}, {"step_note": 1})
    import tunify.training.checkpoint as ck

    calls, real = [], ck.save_file

    def exploding(tensors, path):  # the model file is written, then the disk fills up
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(tensors, path)

    monkeypatch.setattr(ck, "save_file", exploding)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(root, 2, {"w": torch.zeros(2)}, {"step_note": 2})
    assert latest_checkpoint(root).name == "step_00000001"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_00000001"]
    assert torch.equal(load_checkpoint(latest_checkpoint(root))[1]["w"], torch.ones(2))


def test_ema_freeze_and_distinct_lams_train(tmp_path):
    recipe = _recipe(tmp_path, **{"optim.ema_decay": 0.9, "optim.freeze_non_tunable": True,
                                  "lam.distinct_per_batch": 2, "optim.steps": 4, "output.checkpoint_every": 0})
    from tunify.training import build_model, tunify_from_recipe

    tm = tunify_from_recipe(build_model(recipe.model), recipe)
    norms = {n: p.detach().clone() for n, p in tm.named_parameters()}
    fit(tm, recipe, log=lambda s: None)
    changed = {n for n, p in tm.named_parameters() if not torch.equal(p, norms[n])}
    assert changed and all(n.endswith((".weights", ".biases", ".original")) for n in changed)
    _, _, state = load_checkpoint(latest_checkpoint(tmp_path / "run" / "checkpoints"))
    assert set(state["ema"]) == {n for n, p in tm.named_parameters() if p.requires_grad}


def test_adversarial_objective_trains_its_discriminator(tmp_path):
    recipe = _recipe(tmp_path, **{"optim.steps": 3, "output.checkpoint_every": 0})
    recipe.objectives[1].losses = [{"type": "L1Loss"}, {"type": "GANLoss", "gan_type": "lsgan", "loss_weight": 0.1,
                                    "discriminator": {"type": "PatchDiscriminator", "nf": 8, "n_layers": 2}}]
    run = run_recipe(recipe, log=lambda s: None)
    _, _, state = load_checkpoint(run.fit.checkpoint)
    disc = state["adversarial"][0]["discriminator"]
    assert disc and any("weight" in k for k in disc)
    assert state["adversarial"][0]["optimizer"]["state"], "the discriminator optimizer never stepped"


def test_quickstart_smoke_writes_strip_and_table(tmp_path, capsys):
    assert main(["quickstart", "--smoke", "--out", str(tmp_path / "qs")]) == 0
    out = capsys.readouterr().out
    assert "| (1.00, 0.00) |" in out and "| input |" in out
    assert (tmp_path / "qs" / "sweep.png").stat().st_size > 1000
    assert (tmp_path / "qs" / "pretrain" / "checkpoints").is_dir()
    # run twice: one line saying how to start over, and nothing touched
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "qs").rglob("*")}
    assert main(["quickstart", "--smoke", "--out", str(tmp_path / "qs")]) == 2
    err = capsys.readouterr().err
    assert "already holds a finished run (step 4 of 4" in err and "tunify quickstart --smoke --out DIR" in err
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "qs").rglob("*")} == before


def test_two_process_ddp_run(tmp_path):
    data = copy.deepcopy(TINY)
    data["output"]["dir"] = str(tmp_path / "ddp")
    data["optim"]["steps"] = 3
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(data))
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "tunify.cli", "train", str(path)], capture_output=True, text=True, timeout=300,
                         env=env, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "ranks in sync: 2 processes hold identical weights" in run.stdout
    assert latest_checkpoint(tmp_path / "ddp" / "checkpoints").name == "step_00000003"
    _, _, state = load_checkpoint(latest_checkpoint(tmp_path / "ddp" / "checkpoints"))
    assert state["world_size"] == 2


def test_paired_folders_train_end_to_end(tmp_path):
    from tunify.data import bicubic_down, load_images, save_image

    gt_dir, lq_dir = tmp_path / "gt", tmp_path / "lq"
    for i, img in enumerate(load_images("skimage:astronaut,coffee", max_size=96)):
        img = img[:, :64, :64]
        save_image(img, gt_dir / f"{i:03d}.png")
        save_image(bicubic_down(img[None], 2)[0], lq_dir / f"{i:03d}.png")
    data = copy.deepcopy(TINY)
    data["model"] = {"arch": "edsr", "kwargs": {"num_feat": 8, "num_block": 1, "upscale": 2}}
    data["objectives"] = [{"name": "l1", "losses": [{"type": "L1Loss"}]},
                          {"name": "grad", "losses": [{"type": "GradientLoss"}, {"type": "FFTLoss", "loss_weight": 0.1}]}]
    data["data"] = {"train": {"type": "paired", "lq": str(lq_dir), "gt": str(gt_dir), "patch_size": 32, "scale": 2},
                    "batch_size": 2, "val_images": 2, "val_patch": 32}
    data["optim"]["steps"] = 3
    data["output"]["dir"] = str(tmp_path / "run")
    run = run_recipe(parse_recipe(data), log=lambda s: None)
    assert run.fit.step == 3 and len(run.sweep) == 3 and all(r["psnr"] > 5 for r in run.sweep)
    assert (tmp_path / "run" / "sweep.png").is_file()


def test_the_trainer_steps_with_fused_adamw_where_torch_has_it():
    from tunify.training.setup import adamw

    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(7))]
    b = [torch.nn.Parameter(t.detach().clone()) for t in a]
    start = [t.detach().clone() for t in a]
    fused, loop = adamw(a, lr=1e-2, weight_decay=0.1), torch.optim.AdamW(b, lr=1e-2, weight_decay=0.1)
    assert fused.defaults["fused"] is True and not loop.defaults["fused"]
    for _ in range(3):
        for ps in (a, b):
            for p in ps:
                p.grad = torch.sin(p.detach() * 3)
        fused.step(), loop.step()
    for x, y, x0 in zip(a, b, start):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-6)  # the same rule
        assert (x - x0).abs().min() > 1e-3  # and it moved every number
    assert adamw([torch.nn.Parameter(torch.zeros(2, dtype=torch.complex64))], lr=1e-3).defaults["fused"] in (None, False)
