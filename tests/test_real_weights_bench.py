"""benchmarks/real_weights.py end to end in its smoke setting: the official weights, every
method trained a few steps by the same trainer, measured and written out."""
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_real_weights_benchmark_smoke(tmp_path):
    spec = importlib.util.spec_from_file_location("real_weights", ROOT / "benchmarks" / "real_weights.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--smoke", "--recipe", str(ROOT / "recipes" / "realesr_compact_pd.yaml"),
                       "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "results.json").read_text())
    rows = report["rows"]
    assert set(rows) == {"bicubic", "original", "oracle", "tunable", "dni", "blend", "film"}
    for name in ("tunable", "dni", "blend", "film"):
        assert sorted(rows[name]) == ["0", "0.25", "0.5", "0.75", "1"]
    # DNI and blending start exactly at the original and end exactly at the oracle; the tunable
    # model's look corner is frozen, so it starts (and stays) exactly at the original too
    assert rows["tunable"]["0"] == rows["original"]["-"]
    for name in ("dni", "blend"):
        assert rows[name]["0"] == rows["original"]["-"] and rows[name]["1"] == rows["oracle"]["-"]
    assert all(0 < m["niqe"] < 100 and 10 < m["psnr"] < 50 for per in rows.values() for m in per.values())
    assert len(report["verdicts"]) == 5 and (tmp_path / "strip.png").is_file()
    # a second run reuses the trained baselines instead of training them again
    assert bench.main(["--smoke", "--recipe", str(ROOT / "recipes" / "realesr_compact_pd.yaml"),
                       "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "results.json").read_text())["rows"]["oracle"] == rows["oracle"]
