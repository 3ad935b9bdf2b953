"""Ahead-of-time compile of the Triton attention kernels for sm_90 (H100/H200), on the CPU.

What the interpreter cannot show: whether a tile fits in shared memory, spills registers or uses
Hopper tensor cores. The compile runs in a subprocess without ``TRITON_INTERPRET`` (this test
session interprets the kernels); the test skips when Triton's CUDA toolchain is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="triton is not installed")
from tslayers.kernels import resources  # noqa: E402
from tslayers.kernels import triton_attention as ta  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
LIMIT = resources.SMEM_LIMIT[90]
BACKWARD = ("bwd", "bwd_kv", "bwd_dq")

pytestmark = pytest.mark.skipif(not resources.toolchain_available(),
                                reason="no Triton CUDA toolchain (ptxas) to compile for sm_90")


def _compile(*args: str) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    res = subprocess.run([sys.executable, "-m", "tslayers.kernels.resources", "--json", *args],
                         capture_output=True, text=True, env=env, cwd=REPO, timeout=1800)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = json.loads(res.stdout.strip().splitlines()[-1])
    print("\n".join(resources.Resources(**r).row() for r in rows))  # the table, with -s
    return rows


def _check_fit_and_model(rows: list[dict]) -> None:
    for r in rows:
        tile = (r["block_m"], r["block_n"], r["num_warps"], r["num_stages"])
        block_d = max(16, 1 << (r["head_dim"] - 1).bit_length())
        model = ta.smem_bytes(r["kernel"], tile, block_d, 4 if r["dtype"] == "fp32" else 2)
        assert r["smem"] <= LIMIT, f"{r} does not fit in {LIMIT} B"
        # the pruner's estimate must never be below what the compiler allocates
        assert model >= r["smem"], f"model {model} B < compiled {r['smem']} B for {r}"


@pytest.fixture(scope="module")
def first_choice() -> list[dict]:
    """The autotuner's first tile per kernel at N=4096, bf16, D=64/128/256 (fp16 compiles to
    the same resources; the slow test below covers it)."""
    return _compile("--first-only", "--dtypes", "bf16", "--head-dims", "64", "128", "256")


def test_every_head_dim_has_fitting_forward_and_backward(first_choice):
    _check_fit_and_model(first_choice)
    for d in (64, 128, 256):
        kernels = {r["kernel"] for r in first_choice if r["head_dim"] == d and r["dtype"] == "bf16"}
        assert kernels == set(ta.PLANS), f"D={d}: compiled only {sorted(kernels)}"


def test_first_choices_do_not_spill_at_d64_and_d128(first_choice):
    spilling = [resources.Resources(**r).row() for r in first_choice
                if r["head_dim"] in (64, 128) and r["spill_bytes"]]
    assert not spilling, "\n".join(spilling)


def test_d128_forward_and_backward_use_hopper_tensor_cores(first_choice):
    for r in first_choice:
        if r["head_dim"] == 128 and r["kernel"] in ("fwd", "fwd_stats", "bwd"):
            assert r["tensor_core"] == "wgmma", r


def test_fp32_forward_uses_tensor_cores():
    """fp32 inputs go through TF32 (x3) tensor-core dots, not the scalar fp32 path."""
    rows = _compile("--first-only", "--dtypes", "fp32", "--head-dims", "64", "--kernels", "fwd",
                    "bwd")
    _check_fit_and_model(rows)
    assert {r["kernel"] for r in rows} == {"fwd", "bwd"}
    for r in rows:
        assert r["tensor_core"] in ("wgmma", "mma"), r


@pytest.mark.slow
def test_every_planned_tile_fits_and_d64_d128_tiles_do_not_spill():
    rows = _compile("--every-config", "--dtypes", "bf16", "fp16", "--head-dims", "64", "128",
                    "256")
    _check_fit_and_model(rows)
    spilling = [resources.Resources(**r).row() for r in rows
                if r["head_dim"] in (64, 128) and r["spill_bytes"]]
    assert not spilling, "\n".join(spilling)
