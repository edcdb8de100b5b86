"""The command line and the benchmark scripts, run for real in small settings."""
import os
import re
import subprocess
import sys

from tunify.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_convert_prints_report_and_exact_checks(capsys):
    assert main(["convert", "nafnet-tiny", "--size", "32", "--objectives", "strong,grain"]) == 0
    out = capsys.readouterr().out
    assert "tunify report: NAFNet" in out and "p=2 strong, grain" in out
    errors = [float(line.rsplit("=", 1)[1]) for line in out.splitlines() if "max |" in line]
    assert len(errors) == 5 and max(errors) < 1e-5


def test_convert_box_space_full_listing(capsys):
    assert main(["convert", "unet", "--size", "16", "--lam-space", "box", "--full", "--arg", "widths=[8, 16]"]) == 0
    out = capsys.readouterr().out
    assert "3 kernels per layer" in out and "ups.0" in out and "ConvTranspose2d -> TunableConvTranspose2d" in out


def test_convert_unknown_model_suggests(capsys):
    assert main(["convert", "nafnett"]) == 2
    err = capsys.readouterr().err
    assert "'nafnett' is not a model" in err and "Did you mean 'nafnet'" in err and err.count("\n") == 1


def test_overhead_benchmark_smoke_prints_ratios():
    # inference, training and conversion only: torch.compile has its own tests (tests/test_compile.py)
    # and the memory section spawns a process per variant, which CI need not pay for
    run = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "overhead.py"), "--smoke",
                          "--sections", "inference,training,conversion"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    rows = [line for line in run.stdout.splitlines() if line.startswith(("| nafnet-tiny", "| rrdbnet-tiny"))]
    inference = [r for r in rows if "(shared)" in r or "(per-sample)" in r]
    assert len({r for r in inference}) == 6 and all(r.count("×") >= 2 for r in inference)
    assert any("| 8 | " in r and r.count("×") >= 3 for r in rows), "the training table is missing"
    # every per-sample row and training row has its measured floor, with the layers' choices
    floors = {r for r in rows if "(per-sample)" in r or ("| 8 | " in r and "(shared)" not in r)}
    assert len(floors) == 6 and all(re.search(r"× \(\d+, \d+\)", r) for r in floors), floors
    # and the same per-sample call with the static rule's forms beside the measured ones
    assert all(re.search(r"\| [\d.]+× \| [\d.]+× \| [\d.]+× \(", r) for r in floors), floors
    assert "tunify() on timm resnet18" in run.stdout


# -- every failure is one line and a non-zero exit, never a traceback -------------------------------
def _recipe(tmp_path, **changes):
    """A tiny recipe file (tests/test_reliability.py's) writing under tmp_path."""
    import yaml
    from test_reliability import small

    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(small(tmp_path / "run", **changes), sort_keys=False))
    return path


def _fails(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tunify: error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def test_broken_yaml_names_file_line_and_column(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nmodel:\n  arch: nafnet\n  kwargs: {width: 8\noptim: {}\n")
    _fails(capsys, ["train", str(path)], f"{path}, line 5, column 6: not valid YAML")
    _fails(capsys, ["train", str(_recipe(tmp_path)), "--set", "optim.lr=[1,"], "--set 'optim.lr=[1,'", "not valid YAML")


def test_set_paths_that_do_not_exist_are_named(tmp_path, capsys):
    path = str(_recipe(tmp_path))
    _fails(capsys, ["train", path, "--set", "objectives.5.name=x"], "objectives has 2 items, so index 5 is past its end")
    _fails(capsys, ["train", path, "--set", "optim.lr.x=1"], "optim.lr is 0.002, not a mapping")
    _fails(capsys, ["train", path, "--set", "optim.lrr=1"], "unknown key 'lrr'. Did you mean 'lr'?")
    assert not (tmp_path / "run").exists()


def test_unknown_timm_model_suggests_from_timms_list(tmp_path, capsys):
    path = str(_recipe(tmp_path, model={"arch": "timm:resnet19"}))
    _fails(capsys, ["train", path], "unknown timm model 'resnet19'. Did you mean 'resnet18'")


def test_garbage_weights_file_is_not_a_checkpoint(tmp_path, capsys):
    import pickle

    garbage, pickled = tmp_path / "garbage.pth", tmp_path / "pickled.pth"
    garbage.write_bytes(b"this is not a checkpoint" * 40)
    pickled.write_bytes(pickle.dumps({"net": ValueError("an object, not tensors")}))
    kw = {"width": 4, "middle_blk_num": 1, "enc_blk_nums": [1], "dec_blk_nums": [1]}
    for weights in (garbage, pickled):
        path = str(_recipe(tmp_path, model={"arch": "nafnet", "kwargs": kw, "weights": str(weights)}))
        err = _fails(capsys, ["train", path], str(weights), "not a checkpoint")
        assert "weights_only=False" not in err and "`weights_only` set to `False`" not in err


def test_config_json_fields_missing_or_of_the_wrong_type(tmp_path, capsys):
    import json

    from tunify import tunify
    from tunify.archs import create_model

    kw = {"width": 4, "middle_blk_num": 1, "enc_blk_nums": [1], "dec_blk_nums": [1]}
    folder = tunify(create_model("nafnet", **kw), ["a", "b"]).save_pretrained(tmp_path / "m", arch="nafnet", arch_kwargs=kw)
    config = json.loads((folder / "config.json").read_text())
    for change, needle in (({"p": "two"}, "field 'p' must be an integer ≥ 1, got 'two'"),
                           ({"arch_kwargs": [4]}, "field 'arch_kwargs' must be a mapping"),
                           ({"objectives": [{"title": "a"}]}, "field 'objectives' must be a list"),
                           ({"arch": None}, "lacks the field 'arch'")):
        broken = {**config, **change}
        broken = {k: v for k, v in broken.items() if v is not None}
        (folder / "config.json").write_text(json.dumps(broken))
        _fails(capsys, ["load", str(folder)], str(folder / "config.json"), needle)


def test_an_unexpected_exception_is_still_one_line():
    from tunify.cli_errors import describe

    message, code = describe(RuntimeError("something\nbroke"))
    assert code == 1 and message == ("internal error: RuntimeError: something broke (this is a bug in tunify or a "
                                     "library below it; rerun with TUNIFY_TRACEBACK=1 to see where, and report it)")


def test_a_run_reports_its_steps_and_its_stages_and_refuses_to_be_overwritten(tmp_path, capsys):
    import json

    path = str(_recipe(tmp_path))
    assert main(["train", path, "--stop-after", "6", "--set", "output.progress=true"]) == 0
    out, err = capsys.readouterr()
    assert "small: ran 4 pretrain steps + 2 fine-tune steps" in out and "fine-tune at step 2 of 4" in out
    bars = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("small ")]
    assert any(b.startswith("small pretrain") for b in bars) and any(b.startswith("small fine-tune") for b in bars)
    assert not any("lam0" in b for b in bars if b.startswith("small pretrain"))
    assert any("lam0" in b for b in bars if b.startswith("small fine-tune"))
    assert (tmp_path / "run" / "loss.png").is_file() and (tmp_path / "run" / "pretrain" / "loss.png").is_file()
    _fails(capsys, ["train", path], "holds an unfinished run (fine-tune checkpoint at step 2 of 4)",
           f"continue it with `tunify train {path} --resume`", "--set output.dir=DIR")
    assert main(["train", path, "--resume"]) == 0
    out = capsys.readouterr().out
    assert "ran 0 pretrain steps + 2 fine-tune steps in" in out and "resumed from step 2); fine-tune at step 4 of 4" in out
    _fails(capsys, ["train", path], "already holds a finished run (step 4 of 4", "--set output.dir=DIR")
    # the published (and zoo) name follows --to unless --name is given
    assert main(["publish", str(tmp_path / "run"), "--to", str(tmp_path / "grain-knob")]) == 0
    assert json.loads((tmp_path / "grain-knob" / "config.json").read_text())["name"] == "grain-knob"
    assert main(["publish", str(tmp_path / "run"), "--to", str(tmp_path / "other"), "--name", "mine"]) == 0
    assert json.loads((tmp_path / "other" / "config.json").read_text())["name"] == "mine"
