"""The GPU benchmark script runs end to end (``--smoke``: tiny shapes, Triton interpreter)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="triton is not installed")
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_attention_smoke(tmp_path):
    env = dict(os.environ, TRITON_INTERPRET="1")
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_attention.py"),
                          "--smoke", "--out", str(tmp_path / "attention")],
                         capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "correctness: PASS" in res.stdout
    table = (tmp_path / "attention.md").read_text()
    # every row of every set was measured, and the agreement with SDPA was checked
    for group in ("headline", "dtypes", "probe"):
        assert f"| {group} |" in table
    assert "skipped" not in table and "error" not in table
    assert "PASS autotuned kernels agree with SDPA" in table
