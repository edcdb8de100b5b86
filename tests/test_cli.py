"""The command line and the benchmark scripts, run for real in small settings."""
import os
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
    assert "unknown architecture 'nafnett'" in err and "Did you mean 'nafnet'" in err


def test_overhead_benchmark_smoke_prints_ratios():
    run = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "overhead.py"), "--smoke"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    rows = [line for line in run.stdout.splitlines() if line.startswith(("nafnet-tiny", "swinir-tiny"))]
    assert len(rows) == 2 and all(line.count("x") >= 3 for line in rows)
    assert "tunify() on timm resnet18" in run.stdout
