"""One way to name a model: every kind of name (a published folder, a training run's folder, a zoo
name, hf-hub:owner/name, a model file, a registry name) through every command that takes one
(load, sweep, demo, export, convert), and unknown names in one line with a did-you-mean."""
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import torch
from conftest import jitter
import yaml
from test_reliability import small
from test_sweep import crops

from tunify import tunify
from tunify.archs import create_model
from tunify.cli import main
from tunify.publishing import resolve

pytest.importorskip("spandrel")
pytest.importorskip("huggingface_hub")

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
NOISE = "[{type: gaussian_noise, sigma: 25}]"
KINDS = ["folder", "run", "zoo", "hub", "hub_file", "model_file", "registry"]


def _perturb(tm):
    return jitter(tm, 0.05)


def _hub_repo(cache: Path, repo: str, files: dict) -> None:
    """A repository in the hub cache, as huggingface_hub lays it out (read with HF_HUB_OFFLINE=1)."""
    root = cache / f"models--{repo.replace('/', '--')}"
    snap = root / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    for name, src in files.items():
        shutil.copytree(src, snap / name) if src.is_dir() else shutil.copyfile(src, snap / name)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(COMMIT)


@pytest.fixture(scope="module")
def names(tmp_path_factory):
    """One name of each kind (and the environment that makes the hub ones resolve offline)."""
    from spandrel.architectures.Compact.__arch.SRVGG import SRVGGNetCompact

    from tunify.training.checkpoint import save_checkpoint
    from tunify.training.recipe import parse_recipe
    from tunify.training.run import build_model, tunify_from_recipe

    base = tmp_path_factory.mktemp("names")
    torch.manual_seed(0)
    pub = _perturb(tunify(create_model("dncnn-tiny"), ["strong", "grain"])).save_pretrained(
        base / "pub", arch="dncnn-tiny", arch_kwargs={}, name="tiny-pub")
    recipe = parse_recipe(small(base / "run", model={"arch": "dncnn-tiny"}, pretrain=None))
    tm = _perturb(tunify_from_recipe(build_model(recipe.model), recipe))
    (base / "run").mkdir()
    (base / "run" / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    save_checkpoint(base / "run" / "checkpoints", 2, tm.model.state_dict(), {"ema": None})
    model_file = base / "2x_compact.pth"
    torch.save(SRVGGNetCompact(num_feat=8, num_conv=2, upscale=2).state_dict(), model_file)
    cache = base / "hub"
    _hub_repo(cache, "someone/tiny-pub", {p.name: p for p in pub.iterdir()})
    _hub_repo(cache, "someone/files", {"2x_compact.pth": model_file, "notes.txt": pub / "config.json"})
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    names = {"folder": str(pub), "run": str(base / "run"), "zoo": "realesr-compact-x4-pd", "hub": "hf-hub:someone/tiny-pub",
             "hub_file": "hf-hub:someone/files/2x_compact.pth", "model_file": str(model_file), "registry": "dncnn-tiny"}
    return names, env, base


@pytest.fixture()
def hub_env(names, monkeypatch):
    for key, value in names[1].items():
        monkeypatch.setenv(key, value)
    return names[0]


EXPECTED = {"folder": ("folder", True), "run": ("run", True), "zoo": ("zoo", True), "hub": ("hub", True),
            "hub_file": ("hub", False), "model_file": ("model_file", False), "registry": ("registry", False)}


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_resolves_to_what_it_names(hub_env, kind):
    r = resolve(hub_env[kind])
    assert (r.kind, r.trained) == EXPECTED[kind]
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        out = r.tm(x, lam=[0.5, 0.5])
        if not r.trained:  # untrained: every λ gives the original network
            assert torch.allclose(out, r.original(x), atol=1e-5)
            assert torch.allclose(r.tm(x, lam=[1.0, 0.0]), out, atol=1e-5)
        else:  # trained (perturbed here): λ changes the output
            assert (r.tm(x, lam=[1.0, 0.0]) - r.tm(x, lam=[0.0, 1.0])).abs().max() > 1e-4
    assert r.tm.config.objectives and (r.tm.config.arch or r.tm.config.model_file)
    if kind in ("folder", "hub", "zoo", "run"):
        assert (r.folder / ("recipe.yaml" if kind == "run" else "config.json")).is_file()


@pytest.mark.parametrize("kind", KINDS)
def test_load_names_the_kind(hub_env, kind, capsys):
    assert main(["load", hub_env[kind]]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert f"({EXPECTED[kind][0]}" in first and "tunable" in first and "λ simplex" in first


@pytest.mark.parametrize("kind", KINDS)
def test_convert_takes_every_kind(hub_env, kind, capsys):
    assert main(["convert", hub_env[kind], "--size", "16"]) == 0
    out = capsys.readouterr().out
    errors = [float(line.rsplit("=", 1)[1]) for line in out.splitlines() if "max |" in line and "=" in line]
    assert errors and max(errors) < 1e-4, out  # the untrained equal the original; the tuned equal their bake
    assert ("bake(λ) must equal tm(λ)" in out) == EXPECTED[kind][1]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return crops(tmp_path_factory.mktemp("img"), "astronaut,coffee", 24, shrink=64)


@pytest.mark.parametrize("kind", KINDS)
def test_sweep_takes_every_kind(hub_env, kind, images, tmp_path, capsys):
    scale = {"model_file": 2, "hub_file": 2, "zoo": 4}.get(kind)  # the zoo name here is the ×4 Real-ESRGAN
    degradation = f"[{{type: bicubic_down, scale: {scale}}}]" if scale else NOISE
    out = tmp_path / "sweep"
    assert main(["sweep", hub_env[kind], "--images", str(images), "--points", "2", "--metrics", "psnr",
                 "--degradation", degradation, "--out", str(out), "--no-progress"]) == 0
    data = json.loads((out / "sweep.json").read_text())
    assert data["format"] == "tunify-sweep" and len(data["rows"]) == 2 and data["images"] == ["astronaut", "coffee"]
    if not EXPECTED[kind][1]:  # untrained: both corners are the original
        assert data["rows"][0]["psnr"] == pytest.approx(data["rows"][1]["psnr"], abs=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_export_takes_every_kind(hub_env, kind, tmp_path, capsys):
    out = tmp_path / "m.pt2"
    assert main(["export", hub_env[kind], "--format", "torch-export", "--out", str(out)]) == 0
    assert out.stat().st_size > 1000 and "max |exported - eager|" in capsys.readouterr().out


DEMOS = r"""
import sys, threading
from tunify.cli import main


class Lines:
    # stdout that says when a server announced itself: conversions are not thread-safe (fx),
    # so each demo starts only when the one before it is serving.
    def __init__(self, out):
        self.out, self.up = out, threading.Event()
    def write(self, text):
        self.out.write(text)
        self.out.flush()
        if " on http://" in text:
            self.up.set()
    def flush(self):
        self.out.flush()


sys.stdout = Lines(sys.stdout)
for name in sys.argv[1:]:  # one server per name, in this one process (one torch import, not seven)
    sys.stdout.up.clear()
    thread = threading.Thread(target=main, args=(["demo", name, "--port", "0"],), daemon=True)
    thread.start()
    while not sys.stdout.up.wait(0.2):
        if not thread.is_alive():
            sys.exit(f"tunify demo {name} ended before serving")
threading.Event().wait()
"""


def test_demo_takes_every_kind(names):
    """`tunify demo NAME --port 0` for each kind: the page and its model info come back."""
    table, env, _ = names
    env = {**os.environ, **env, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-c", DEMOS, *[table[k] for k in KINDS]], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        served = []  # (model name, url), one line per server as it comes up
        while len(served) < len(KINDS):
            line = proc.stdout.readline()
            assert line, proc.stderr.read()  # the process ended before every server was up
            if " on http://" in line:
                served.append((line.split("tunify demo of ", 1)[1].split(" on ", 1)[0], line.split(" on ", 1)[1].split()[0]))
        for name, url in served:
            info = json.loads(urllib.request.urlopen(url + "api/info", timeout=60).read())
            assert info["name"] == name and info["p"] == 2 and len(info["objectives"]) == 2, info
            assert urllib.request.urlopen(url, timeout=60).read().startswith(b"<!")
        assert {name for name, _ in served} == {"tiny-pub", "small", "realesr-compact-x4-pd", "2x_compact", "dncnn-tiny"}
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.parametrize("command", ["load", "sweep", "demo", "export", "convert"])
def test_unknown_names_get_one_line_with_a_did_you_mean(command, tmp_path, capsys):
    extra = {"sweep": ["--images", str(tmp_path)], "export": ["--out", str(tmp_path / "x.onnx")]}.get(command, [])
    assert main([command, "nafnet-grian-s25", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tunify: error: 'nafnet-grian-s25' is not a model") and err.count("\n") == 1
    assert "Did you mean 'nafnet-grain-s25'" in err


def test_mistyped_paths_and_hub_ids(tmp_path, names, monkeypatch, capsys):
    table, env, base = names
    assert main(["load", str(base / "pubb")]) == 2
    assert f"Did you mean '{base / 'pub'}'" in capsys.readouterr().err
    assert main(["load", str(base / "2x_compact.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["load", "someone/tiny-pub"]) == 2  # a bare owner/name is not sent to the network
    assert "For a hub model write hf-hub:someone/tiny-pub" in capsys.readouterr().err
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["load", "hf-hub:someone/missing"]) == 2
    err = capsys.readouterr().err
    assert "could not fetch hub repository 'someone/missing'" in err and err.count("\n") == 1
    (tmp_path / "empty").mkdir()
    assert main(["load", str(tmp_path / "empty")]) == 2
    assert "is a folder but not a model" in capsys.readouterr().err
