"""benchmarks/lowrank.py in its smoke setting (sizes only): the table comes out, and an
adapter-only save is smaller than the full save of the same model at every rank."""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import lowrank  # noqa: E402


def test_smoke_sizes(tmp_path, capsys):
    assert lowrank.main(["--smoke", "--skip-speed", "--out", str(tmp_path)]) == 0
    assert "| adapter-only save |" in capsys.readouterr().out
    rows = json.loads((tmp_path / "lowrank_smoke.json").read_text())["sizes"]
    for model in {r["model"] for r in rows}:
        full = next(r for r in rows if r["model"] == model and r["variant"] == "full kernels")
        low = [r for r in rows if r["model"] == model and r["variant"].startswith("rank")]
        assert [r["variant"] for r in low] == ["rank 4", "rank 8", "rank 16"]
        for r in low:
            # never larger (at rank 16 the small RRDBNet's 16-channel convs all stay full: equal)
            assert r["adapter_bytes"] <= full["full_bytes"] * 1.01, r
            assert r["trainable"] <= full["trainable"], r
        assert low[0]["adapter_bytes"] < 0.5 * full["full_bytes"]
