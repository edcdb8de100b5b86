"""Works from a wheel: build tunify's wheel offline, install it outside the checkout, and from a
directory that knows nothing of the repository run `tunify zoo`, `from_zoo(...)`, the demo page
and `tunify quickstart --smoke`."""
import os
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_WHEEL_MB = 20  # the code is small; the zoo checkpoints (3.5 + 5.0 MB) are most of it

CHECK = r"""
import json, sys, threading, urllib.request
from importlib import resources
from pathlib import Path
import torch
import tunify
from tunify.demo import serve

site = Path(sys.argv[1]).resolve()
assert Path(tunify.__file__).resolve().is_relative_to(site), tunify.__file__  # the wheel, not the checkout
tm = tunify.from_zoo("realesr-compact-x4-pd")                                   # sha256-checked package data
with torch.no_grad():
    y = tm(torch.rand(1, 3, 8, 8), lam=[0.5, 0.5])
assert y.shape == (1, 3, 32, 32), y.shape
page = resources.files("tunify.demo").joinpath("page.html").read_bytes()
server, _ = serve(tm, name="wheel", port=0, background=True)
host, port = server.server_address[:2]  # loopback: the demo server started just above, no network
served = urllib.request.urlopen(f"http://{host}:{port}/", timeout=60).read()
info = json.loads(urllib.request.urlopen(f"http://{host}:{port}/api/info", timeout=60).read())
server.shutdown()
assert served == page and page.startswith(b"<!") and info["scale"] == 4
print("ok", len(page))
"""


def _run(cmd, cwd, env, timeout=300):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}: rc {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_pyproject_lists_every_package():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "tunify").rglob("__init__.py")}
    assert found <= listed, f"add to pyproject.toml's packages: {sorted(found - listed)}"
    assert {"tunify.zoo", "tunify.recipes"} <= listed


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(site folder, environment) of the wheel installed with pip --target, outside the checkout.

    The wheel is built from a copy of the sources, so nothing is written into the checkout and
    no stale build/ folder can slip old files in."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(ROOT / name, src / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("tunify", "zoo", "recipes"):
        shutil.copytree(ROOT / name, src / name, ignore=skip)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    env = {**os.environ, "PIP_NO_INDEX": "1"}  # offline: nothing may come from a registry
    env.pop("PYTHONPATH", None)
    start = time.perf_counter()
    _run(pip + ["wheel", "--no-deps", "--no-build-isolation", str(src), "-w", str(base / "dist")], base, env)
    wheel = next((base / "dist").glob("tunify-*.whl"))
    _run(pip + ["install", "--no-deps", "--target", str(base / "site"), str(wheel)], base, env)
    built = time.perf_counter() - start
    work = base / "elsewhere"
    work.mkdir()
    return {"site": base / "site", "wheel": wheel, "work": work, "seconds": built,
            "env": {**env, "PYTHONPATH": str(base / "site"), "HF_HUB_OFFLINE": "1"}}


def test_the_wheel_carries_the_zoo_recipes_and_demo_page(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    for needed in ("tunify/demo/page.html", "tunify/recipes/quickstart.yaml", "tunify/zoo/index.json",
                   "tunify/zoo/realesr-compact-x4-pd/model.safetensors", "tunify/zoo/nafnet-grain-s25/config.json"):
        assert needed in names
    size_mb = installed["wheel"].stat().st_size / 1e6
    assert 5 < size_mb < MAX_WHEEL_MB, f"wheel is {size_mb:.1f} MB"


def test_zoo_from_zoo_and_demo_run_from_the_installed_wheel(installed):
    cli = installed["site"] / "bin" / "tunify"  # the console script pip wrote
    out = _run([str(cli), "zoo"], installed["work"], installed["env"])
    assert "nafnet-grain-s25" in out and "realesr-compact-x4-pd" in out
    assert _run([sys.executable, "-c", CHECK, str(installed["site"])], installed["work"], installed["env"]).startswith("ok")


def test_quickstart_smoke_runs_from_the_installed_wheel(installed):
    checkout_run = ROOT / "runs" / "quickstart-smoke" / "sweep.json"
    before = checkout_run.stat().st_mtime_ns if checkout_run.exists() else None
    out = _run([sys.executable, "-m", "tunify.cli", "quickstart", "--smoke"], installed["work"], installed["env"])
    run = installed["work"] / "runs" / "quickstart-smoke"
    assert (run / "sweep.json").is_file() and (run / "recipe.yaml").is_file() and "quickstart" in out
    # the run landed where the command ran; the checkout's runs/ was not touched
    assert (checkout_run.stat().st_mtime_ns if checkout_run.exists() else None) == before
