"""benchmarks/fidelity.py in smoke mode: every method trains through fit, the table and the
files come out, and objectives that do not conflict are refused."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "fidelity.py"
METHODS = ("oracle", "tunable", "film", "dni", "blend", "adafm", "dynamic")


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=env)


def test_smoke_benchmark_trains_every_method_and_writes_results(tmp_path):
    proc = run("--smoke", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "[grain seed 0] endpoint oracles" in out
    for m in METHODS:
        assert f"| {m} (" in out
    assert "made in its last 20% of steps" in out
    assert "tunable within 0.2 dB of the oracle at every λ:" in out
    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["task"] for r in results["reports"]] == ["grain"]
    grain = results["reports"][0]["seeds"][0]["results"]
    lams = [str(t) for t in results["config"]["lams"]]
    # the grain task's corners: the clean oracle beats the keep-the-grain oracle on PSNR vs. clean
    assert grain["oracle"]["0.0"]["psnr"] > grain["oracle"]["1.0"]["psnr"] + 1.0
    for m in METHODS:
        for t in lams:
            cell = grain[m][t]
            assert cell["L"] > 0 and 5 < cell["psnr"] < 60
    # DNI and blending share their corner networks: identical at the corners, different between
    for t in ("0.0", "1.0"):
        assert grain["dni"][t]["psnr"] == pytest.approx(grain["blend"][t]["psnr"], abs=1e-4)
    assert grain["dni"]["0.5"]["L"] != pytest.approx(grain["blend"]["0.5"]["L"], rel=1e-6)
    assert (tmp_path / "fidelity.md").read_text().count("| tunable (") == 1
    params = results["reports"][0]["seeds"][0]["params"]
    assert params["tunable"] == 2 * params["oracle"] == params["dni"] == params["blend"]  # p = 2 copies
    assert params["oracle"] < params["adafm"] < params["film"] < params["dynamic"]
    # --report re-renders without training, and fills a README's marked block (only that block)
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- fidelity:start -->\nold\n<!-- fidelity:end -->\noutro\n")
    (tmp_path / "fidelity.md").unlink()
    proc = run("--report", str(tmp_path / "results.json"), "--readme", str(readme))
    assert proc.returncode == 0, proc.stderr
    body = readme.read_text()
    assert body.startswith("intro\n<!-- fidelity:start -->\n**grain**") and body.endswith("<!-- fidelity:end -->\noutro\n")
    assert "old" not in body and "| tunable (" in body
    assert (tmp_path / "fidelity.md").read_text() in body
    assert (tmp_path / "docs" / "fidelity.png").is_file()
    assert (tmp_path / "fidelity.png").stat().st_size > 10_000


def test_objectives_that_do_not_conflict_are_refused(tmp_path):
    # Identical objectives give identical endpoint oracles at any budget: a few steps show the refusal.
    proc = run("--smoke", "--tasks", "same", "--pretrain", "10", "--steps", "8", "--out", str(tmp_path))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "objectives do not conflict: result uninformative" in proc.stdout
    assert not (tmp_path / "results.json").exists()


def test_unknown_task_and_method_are_named(tmp_path):
    proc = run("--tasks", "grian", "--out", str(tmp_path))
    assert proc.returncode == 2 and "unknown task 'grian'" in proc.stderr and "grain" in proc.stderr
    proc = run("--methods", "tunable,dnii", "--out", str(tmp_path))
    assert proc.returncode == 2 and "unknown method 'dnii'" in proc.stderr
