"""A run folder nothing can damage, on a real (tiny) run: smoke runs apart, refused runs write
nothing, a changed recipe is refused on resume, pretraining resumes bit-exactly (also after a
SIGKILL), damaged checkpoints are skipped, the recipe is built before step 0, files are 0644/0755,
loss.png, and the CLI's one-line reports."""
import copy
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tunify.cli import main
from tunify.training import NonFiniteLossError, latest_checkpoint, load_checkpoint, parse_recipe, run_recipe
from tunify.training.checkpoint import CheckpointError
from tunify.training.guard import RecipeChangedError, RunExistsError
from tunify.training.logs import plot_losses

ROOT = Path(__file__).resolve().parents[1]
QUIET = {"log": lambda s: None}

# Smaller than test_training's TINY: every test here runs the real loop, a few steps of it.
SMALL = {
    "name": "small",
    "seed": 5,
    "model": {"arch": "nafnet", "kwargs": {"width": 4, "middle_blk_num": 1, "enc_blk_nums": [1], "dec_blk_nums": [1]}},
    "pretrain": {"steps": 4, "lr": 1e-3},
    "objectives": [
        {"name": "sharp", "target": "clean", "losses": [{"type": "MSELoss"}]},
        {"name": "grain", "target": "input", "losses": [{"type": "MSELoss"}]},
    ],
    "data": {"train": {"type": "degraded", "images": "skimage:astronaut", "patch_size": 16, "max_size": 64,
                       "degradation": [{"type": "gaussian_noise", "sigma": 25}]},
             "batch_size": 2, "val_images": 1, "val_patch": 16},
    "optim": {"steps": 4, "lr": 2e-3, "warmup_steps": 1},
    "validation": {"lam_points": 2},
    "output": {"checkpoint_every": 2, "log_every": 1, "progress": False, "tensorboard": "off"},
    "smoke": {"optim.steps": 2, "pretrain.steps": 2},
}


def small(out: Path, **changes) -> dict:
    data = copy.deepcopy(SMALL)
    data.update(copy.deepcopy(changes))  # whole sections: output={...}, pretrain={...}
    data["output"] = {**data["output"], "dir": str(out)}  # always under the test's tmp_path
    return data


def recipe_file(tmp_path: Path, out: Path, **changes) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(small(out, **changes), sort_keys=False))
    return path


def tree(folder: Path) -> dict:
    """Every file under ``folder`` with its bytes: what a refused run must leave alone."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def rows(path: Path) -> list:
    with open(path) as f:
        return [(r["step"], r["loss"]) for r in csv.DictReader(f)]


def weights(run) -> dict:
    return {k: v.clone() for k, v in run.model.state_dict().items()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One uninterrupted run (pretraining + fine-tune): the reference the resumed runs must equal."""
    out = tmp_path_factory.mktemp("ref") / "run"
    return out, run_recipe(parse_recipe(small(out)), **QUIET)


# -- a run never damages another -------------------------------------------------------------------
def test_smoke_run_gets_a_folder_of_its_own(tmp_path, capsys):
    path = recipe_file(tmp_path, tmp_path / "run")
    assert main(["train", str(path), "--smoke"]) == 0
    assert (tmp_path / "run-smoke" / "sweep.md").is_file() and not (tmp_path / "run").exists()
    assert "ran 2 pretrain steps + 2 fine-tune steps" in capsys.readouterr().out


def test_a_refused_run_writes_nothing(finished, tmp_path):
    out, _ = finished
    before = tree(out)
    with pytest.raises(RunExistsError, match="--resume"):
        run_recipe(parse_recipe(small(out)), **QUIET)
    with pytest.raises(RecipeChangedError):
        run_recipe(parse_recipe(small(out), overrides=["optim.lr=1e-2"]), resume=True, **QUIET)
    assert tree(out) == before
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        run_recipe(parse_recipe(small(tmp_path / "none")), resume=True, **QUIET)
    assert not (tmp_path / "none").exists()


def test_resume_refuses_a_changed_recipe_naming_the_difference(finished, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(finished[0], out)
    changed = parse_recipe(small(out), overrides=["optim.lr=1e-2", "data.batch_size=3"])
    with pytest.raises(RecipeChangedError) as err:
        run_recipe(changed, resume=True, **QUIET)
    assert "optim.lr: 0.002 -> 0.01" in str(err.value) and "data.batch_size: 2 -> 3" in str(err.value)
    assert "--allow-changed-recipe" in str(err.value)
    logs = []
    run = run_recipe(changed, resume=True, allow_changed_recipe=True, log=logs.append)
    assert run.fit.step == 4 and run.steps_run == {"pretrain": 0, "fine-tune": 0}
    assert any("changed recipe (allowed): data.batch_size: 2 -> 3; optim.lr" in line for line in logs)
    assert yaml.safe_load((out / "recipe.yaml").read_text())["optim"]["lr"] == 0.01  # the record follows


# -- pretraining checkpoints and resumes like the fine-tune; any stop resumes bit-exactly ----------
@pytest.mark.parametrize("stops", [(1, 4), (4, 1)])  # inside the pretraining then across it; at its end
def test_stopping_anywhere_resumes_bit_exactly(finished, tmp_path, stops):
    ref_out, ref = finished
    out = tmp_path / "run"
    recipe = parse_recipe(small(out))
    done = 0
    for i, n in enumerate(stops):
        part = run_recipe(recipe, resume=i > 0, stop_after=n, **QUIET)
        assert sum(part.steps_run.values()) == n
        done += n
    assert done < 8
    last = run_recipe(recipe, resume=True, **QUIET)
    assert sum(last.steps_run.values()) == 8 - done and last.fit.start == max(0, done - 4)
    assert rows(out / "pretrain" / "metrics.csv") == rows(ref_out / "pretrain" / "metrics.csv")
    assert rows(out / "metrics.csv") == rows(ref_out / "metrics.csv")
    ref_w = weights(ref)
    assert all(torch.equal(v, ref_w[k]) for k, v in weights(last).items())
    assert (out / "pretrain" / "checkpoints" / "step_00000004" / "manifest.json").is_file()


def test_a_resumed_run_takes_the_per_sample_forms_its_checkpoint_recorded(finished, tmp_path, monkeypatch):
    """Per-sample forms are measured per process (layers/forms.py) and differ in rounding: a
    resume in a new process that measured afresh could pick others and drift from the run it
    continues. The checkpoint records the choices and the resume takes them up. Here the new
    "process" (the table cleared) would pick the slowest form wherever it measures."""
    from tunify.layers import clear_form_choices, forms

    ref_out, ref = finished
    out = tmp_path / "run"
    recipe = parse_recipe(small(out))
    run_recipe(recipe, stop_after=6, **QUIET)
    state = json.loads(next((out / "checkpoints").glob("step_*/state.json")).read_text())
    assert "per_sample_forms" in json.dumps(state)
    clear_form_choices()
    real = forms._timed
    monkeypatch.setattr(forms, "_timed", lambda *a: -real(*a))
    last = run_recipe(recipe, resume=True, **QUIET)
    clear_form_choices()
    assert rows(out / "metrics.csv") == rows(ref_out / "metrics.csv")
    ref_w = weights(ref)
    assert all(torch.equal(v, ref_w[k]) for k, v in weights(last).items())


def test_a_killed_run_resumes_bit_exactly(tmp_path):
    from tunify.layers import autotune

    # Another process measures its per-sample forms afresh and may pick others than this one
    # (they differ in rounding): the reference, the killed run and the resume all take the
    # static rule, so that only the kill and the resume are under test.
    autotune(False)
    try:
        ref_out = tmp_path / "ref"
        ref = run_recipe(parse_recipe(small(ref_out)), **QUIET)
        _killed_and_resumed(ref_out, ref, tmp_path)
    finally:
        autotune(True)


def _killed_and_resumed(ref_out, ref, tmp_path):
    out = tmp_path / "run"
    path = recipe_file(tmp_path, out, output={**SMALL["output"], "checkpoint_every": 1})
    # the same thread count as this process: float sums depend on it, and the runs must match bit for bit
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()), PYTHONPATH=str(ROOT), TUNIFY_AUTOTUNE="0")
    proc = subprocess.Popen([sys.executable, "-m", "tunify.cli", "train", str(path)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        # step 2's folder lives only until step 4 prunes it (keep_last 2): wait for any step ≥ 2
        past_two = lambda: any(p.name >= "step_00000002" for p in (out / "pretrain" / "checkpoints").glob("step_*"))  # noqa: E731
        while not past_two() and proc.poll() is None:
            assert time.time() < deadline, "the run never wrote its second pretraining checkpoint"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    data = small(out, output={**SMALL["output"], "checkpoint_every": 1})
    last = run_recipe(parse_recipe(data), resume=True, **QUIET)
    assert rows(out / "metrics.csv") == rows(ref_out / "metrics.csv")
    ref_w = weights(ref)
    assert all(torch.equal(v, ref_w[k]) for k, v in weights(last).items())


# -- damaged checkpoints ---------------------------------------------------------------------------
def test_a_damaged_latest_checkpoint_falls_back_and_says_so(finished, tmp_path, capsys):
    import shutil

    ref_out, ref = finished
    out = tmp_path / "run"
    shutil.copytree(ref_out, out)
    newest = out / "checkpoints" / "step_00000004"
    data = (newest / "model.safetensors").read_bytes()
    (newest / "model.safetensors").write_bytes(data[: len(data) // 3])  # truncated
    messages = []
    assert latest_checkpoint(out / "checkpoints", log=messages.append).name == "step_00000002"
    assert "step_00000004: model.safetensors has" in messages[0] and "step_00000002" in messages[0]
    # resume reruns the lost steps from the intact checkpoint and lands on the same weights
    run = run_recipe(parse_recipe(small(out)), resume=True, **QUIET)
    assert run.fit.start == 2 and run.steps_run == {"pretrain": 0, "fine-tune": 2}
    ref_w = weights(ref)
    assert all(torch.equal(v, ref_w[k]) for k, v in weights(run).items())
    # a flipped byte of the same size is caught by the manifest's sha256; the sweep's loader falls back too
    blob = bytearray((newest / "state.safetensors").read_bytes())
    blob[-3] ^= 0xFF
    (newest / "state.safetensors").write_bytes(bytes(blob))
    from tunify.publishing import resolve_model

    capsys.readouterr()
    tm, _ = resolve_model(out)
    assert tm.config.step == 2
    err = capsys.readouterr().err
    assert "state.safetensors does not match the sha256" in err and "using the newest intact one, step_00000002" in err
    for ckpt in (out / "checkpoints").glob("step_*"):
        (ckpt / "state.json").write_text("{")
    with pytest.raises(CheckpointError, match="every checkpoint under .* is damaged"):
        latest_checkpoint(out / "checkpoints")


# -- the whole recipe is built before any step -----------------------------------------------------
def test_an_unknown_loss_fails_before_pretraining(tmp_path):
    data = small(tmp_path / "run")
    data["objectives"][1]["losses"] = [{"type": "L1Losss"}]
    with pytest.raises(ValueError, match=r"objectives: unknown loss type 'L1Losss'. Did you mean 'L1Loss'"):
        run_recipe(parse_recipe(data), **QUIET)
    data = small(tmp_path / "run", pretrain={"steps": 4, "losses": [{"type": "MSELos"}]})
    with pytest.raises(ValueError, match=r"^pretrain: unknown loss type 'MSELos'"):
        run_recipe(parse_recipe(data), **QUIET)
    data = small(tmp_path / "run", tunify={"targets": ["no_such_layer"]})
    with pytest.raises(ValueError, match=r"^tunify: .*no_such_layer"):
        run_recipe(parse_recipe(data), **QUIET)
    assert not (tmp_path / "run").exists()


def test_nan_in_the_pretraining_names_pretrain_lr(tmp_path):
    data = small(tmp_path / "run", pretrain={"steps": 20, "lr": 1e12})
    with pytest.raises(NonFiniteLossError, match=r"Lower pretrain\.lr"):
        run_recipe(parse_recipe(data), **QUIET)


# -- files -----------------------------------------------------------------------------------------
def test_written_files_are_readable_by_others_and_loss_png_is_drawn(finished, tmp_path):
    out, _ = finished
    for p in [out, *out.rglob("*")]:
        mode = p.stat().st_mode & 0o777
        assert mode == (0o755 if p.is_dir() else 0o644), (p, oct(mode))
    assert (out / "loss.png").stat().st_size > 5000 and (out / "pretrain" / "loss.png").is_file()
    assert not list(out.rglob(".*")), "a temporary file was left behind"
    from tunify.publishing import publish_run

    folder = publish_run(out, tmp_path / "pub")
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in folder.iterdir())


def test_loss_png_is_skipped_with_a_note_without_matplotlib(finished, tmp_path, monkeypatch):
    out, _ = finished
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # what a missing install looks like to import
    notes = []
    assert plot_losses(out / "metrics.csv", tmp_path / "loss.png", log=notes.append) is None
    assert "matplotlib is not installed" in notes[0] and not (tmp_path / "loss.png").exists()


# -- the pretraining is a stage of its own, not a made-up recipe --------------------------------
def test_the_pretrain_stage_reads_its_own_section_and_checkpoints_the_real_recipe(finished):
    from tunify.training import Stage
    from tunify.training.checkpoint import latest_checkpoint

    recipe = parse_recipe(small(Path("unused")))
    pre, fine = Stage.pretrain(recipe), Stage.fine_tune(recipe)
    assert (pre.name, pre.tunable, pre.steps, pre.optim.lr, pre.lr_key) == ("pretrain", False, 4, 1e-3, "pretrain.lr")
    assert pre.lam is None and pre.validate_every is None and pre.optim.ema_decay == 0 and pre.optim.warmup_steps == 0
    assert [o.name for o in pre.objectives] == ["pretrain"] and pre.no_lam(3).shape == (3, 1)
    assert (fine.steps, fine.optim.lr, fine.lam, fine.lr_key) == (4, 2e-3, recipe.lam, "optim.lr")
    assert [o.name for o in fine.objectives] == ["sharp", "grain"]
    no_pre = parse_recipe({k: v for k, v in small(Path("unused")).items() if k != "pretrain"})
    with pytest.raises(ValueError, match="no `pretrain:` section"):
        Stage.pretrain(no_pre)
    ref_out, _ = finished
    _, _, state = load_checkpoint(latest_checkpoint(ref_out / "pretrain" / "checkpoints"))
    stored = parse_recipe(state["recipe"])  # the run's whole recipe, as the fine-tune's checkpoints keep it
    assert [o.name for o in stored.objectives] == ["sharp", "grain"] and stored.pretrain.steps == 4
