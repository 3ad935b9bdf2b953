"""Two-process DDP on CPU (gloo) for all four objectives, launched like a user would (torchrun).

Forecasting has no randomness, so 2 ranks x batch 8 must match one process x batch 16 (the
ranks' shards of one epoch permutation are the single process's batches, and DDP averages the
gradients): an independent check that DDP trains the same model, not just that it runs.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tslayers.config import from_dict
from tslayers.model import TemporalEncoder
from tslayers.training import PretrainConfig, pretrain

ROOT = Path(__file__).resolve().parents[2]
OBJECTIVES = ["forecast", "reconstruct", "contrastive", "jepa"]

# each objective as a study would run it: a pretrain stage on every rank, then a stage that
# only rank 0 runs (like probing); the stage books are kept by rank 0 alone
WORKER = '''
import os
import sys
from pathlib import Path
from tslayers.config import from_dict
from tslayers.stages import run_stage
from tslayers.training import PretrainConfig, pretrain
sys.path.insert(0, sys.argv[3])
from test_ddp import config
out = Path(sys.argv[1])
for name in sys.argv[2].split(","):
    cfg = from_dict(PretrainConfig, config(name, batch_size=8, devices=2, strategy="ddp"))
    run_stage("pretrain", out / name, name, lambda d: pretrain(cfg, out_dir=d), all_ranks=True)
    def after(d, name=name):
        with open(d / "ran_by", "a") as f:
            f.write(os.environ["RANK"] + "\\n")
    run_stage("after", out / f"{name}-after", name, after)
'''


def config(name: str, batch_size: int, devices: int = 1, strategy: str = "auto") -> dict:
    return {
        "data": {"name": "synthetic/mixture", "params": {"n_series": 24, "length": 96},
                 "context": 64, "stride": 32, "batch_size": batch_size},
        "encoder": {"patch_len": 16, "d_model": 16, "n_layers": 1, "n_heads": 2},
        "objective": {"name": name, "horizon": 16, "predictor_dim": 16, "predictor_layers": 1},
        "train": {"max_steps": 2, "val_check_interval": 2, "ckpt_every_n_steps": 2,
                  "warmup_steps": 1, "progress_bar": False, "limit_val_batches": 1,
                  "log_every_n_steps": 1, "accelerator": "cpu", "devices": devices,
                  "strategy": strategy},
    }


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    worker = out / "worker.py"
    worker.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for attempt in range(2):  # a free port can be taken between torchrun's choice and its use
        runs = out / f"attempt{attempt}"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", str(worker), str(runs), ",".join(OBJECTIVES),
               str(Path(__file__).parent)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        if proc.returncode == 0 or not re.search(r"(?i)address already in use|EADDRINUSE",
                                                 proc.stderr):
            break
    assert proc.returncode == 0, proc.stderr[-3000:]
    return runs


@pytest.mark.parametrize("name", OBJECTIVES)
def test_two_process_ddp_trains_every_objective(ddp_runs, name):
    from tslayers.stages import stage_status

    run = ddp_runs / name
    assert stage_status(run, name) == "done"
    assert (ddp_runs / f"{name}-after" / "ran_by").read_text() == "0\n"  # rank 0 only
    assert sorted(p.name for p in ddp_runs.iterdir() if p.name.startswith(name)) == [
        name, f"{name}-after"]  # nothing moved aside as "damaged" by the other rank
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == 2 and all(
        torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert not list(run.glob("*.tmp")) and not (run / ".tslayers.lock").exists()
    TemporalEncoder.from_pretrained(run / "encoder")


def test_ddp_forecast_matches_one_process_with_the_global_batch(ddp_runs, tmp_path):
    single = pretrain(from_dict(PretrainConfig, config("forecast", batch_size=16)),
                      out_dir=tmp_path)
    a = TemporalEncoder.from_pretrained(single).state_dict()
    b = TemporalEncoder.from_pretrained(ddp_runs / "forecast").state_dict()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-6)
