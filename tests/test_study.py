"""A tiny study through every stage: pretrain -> probe -> align -> report, then resume."""

import json

import numpy as np
import pytest
import yaml

from tslayers.cli import main
from tslayers.probing import read_results
from tslayers.stages import mark_started

_TRAIN = {"max_steps": 6, "warmup_steps": 1, "val_check_interval": 3, "ckpt_every_n_steps": 3,
          "limit_val_batches": 2, "progress_bar": False}
_DATA = {"params": {"n_series": 48, "length": 96}, "context": 64, "batch_size": 16}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    cfg = {
        "out": str(root / "run"),
        "seeds": [0],
        "data": {"name": "synthetic/mixture", **_DATA},
        "encoder": {"n_channels": 3, "patch_len": 8, "d_model": 16, "n_layers": 2,
                    "n_heads": 2},
        "objectives": [{"name": "forecast", "horizon": 8}, {"name": "contrastive"}],
        "train": _TRAIN,
        "probe": {"horizons": [1, 8], "max_windows": 96, "bootstrap": 10, "progress": False,
                  "controls": ["untrained"]},
        "probe_data": [
            {"data": {"name": "synthetic/lgssm", **_DATA}, "tasks": ["forecast", "latent"]},
            {"data": {"name": "synthetic/mixture", **_DATA}, "tasks": ["classify"]},
        ],
        "align": [{"kind": "forecast", "objective": "auto", "target_task": "forecasting",
                   "forecast": {"horizon": 8}, "stage1": _TRAIN, "stage2": _TRAIN},
                  {"kind": "dynamics", "objective": "contrastive", "target_task": "dense",
                   "dynamics": {"locality_teacher": "spectral", "locality_layer": None},
                   "teachers": ["spectral", "encoder"], "teacher_objective": "forecast",
                   "stage1": _TRAIN}],
    }
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path)]) == 0
    return root / "run", path


def test_results_file_holds_every_stage(study):
    run, _ = study
    ds = read_results(run / "report" / "results.nc")
    models = set(ds["model"].values.tolist())
    assert {"forecast", "contrastive", "forecast/untrained", "contrastive/untrained"} <= models
    assert any(m.endswith("/align-forecast/full") for m in models)
    assert "contrastive/align-dynamics/self" in models
    assert "contrastive/align-dynamics/both/spectral" in models
    # the learned teacher is the same seed's forecasting encoder, recorded beside the scores
    teacher = ds["align_teacher"].sel(model="contrastive/align-dynamics/corr/encoder")
    assert str(teacher.values).startswith("learned: forecast L")
    tasks = set(ds["task"].values.tolist())
    assert {"latent", "classify", "forecast/h1/last", "forecast/h8/last"} <= tasks
    assert "lens/h8" in tasks  # the forecast objective decoded every layer with its own head
    # every probed layer of the base models has a finite classification accuracy in [0, 1]
    acc = ds["score"].sel(model="forecast", task="classify", metric="accuracy",
                          split="test").isel(seed=0)
    assert np.isfinite(acc.values).all() and ((acc >= 0) & (acc <= 1)).all()
    assert acc.sizes["layer"] == 3  # embeddings + 2 blocks
    # LGSSM: no layer beats the Kalman optimum on latent decoding
    test = ds.sel(split="test", seed=0)
    r2 = test["score"].sel(model="forecast", task="latent", metric="r2")
    assert float(r2.max()) <= float(test["optimum"].sel(model="forecast", task="latent",
                                                        metric="r2")) + 1e-9
    # the layer chosen for every task is chosen on validation series
    assert np.isfinite(ds["selected_layer"].sel(model="forecast", task="latent", metric="r2"))
    report = (run / "report" / "report.md").read_text()
    assert "classify" in report and "latent" in report and "## Alignment" in report
    summary = json.loads((run / "report" / "alignment.json").read_text())
    assert "dynamics-contrastive-s0" in summary and len(summary) == 2


def test_rerun_skips_and_damage_is_recomputed(study, capsys):
    run, path = study
    capsys.readouterr()
    assert main(["run", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.count("up to date, skipped") == 2 + 2 + 2 + 1  # pretrain, probe, align, report
    (run / "probe" / "contrastive-s0" / "results.nc").write_bytes(b"garbage")
    assert main(["run", str(path)]) == 0
    out = capsys.readouterr().out
    assert "[4/7 probe contrastive-s0] previous output is damaged" in out
    assert read_results(run / "probe" / "contrastive-s0" / "results.nc") is not None


def test_report_regenerates_the_same_markdown(study, tmp_path):
    run, _ = study
    assert main(["report", str(run / "report" / "results.nc"), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "report.md").read_text() == (run / "report" / "report.md").read_text()
    assert "## Alignment" in (tmp_path / "report.md").read_text()


def test_an_interrupted_pretrain_stage_resumes_from_its_checkpoint(study, capsys):
    run, path = study
    stage = run / "pretrain" / "forecast-s0"
    assert (stage / "checkpoints" / "last.ckpt").is_file()
    key = json.loads((stage / "_stage.json").read_text())["fingerprint"]
    (stage / "_stage.json").unlink()  # what a kill during training leaves behind:
    mark_started(stage, key)  # a started stage without its completion record
    capsys.readouterr()
    assert main(["run", str(path)]) == 0
    out = capsys.readouterr().out
    assert "[1/" in out and "was interrupted: resuming in" in out
    assert not list(stage.parent.glob("forecast-s0.*"))  # nothing moved aside
    assert (stage / "_stage.json").is_file()


def test_the_terminal_stays_quiet_and_a_rerun_reproduces_the_scores(study, tmp_path):
    """A whole study prints its stage lines and a short summary, no library banners; two runs
    of the same config and seed in fresh processes give bit-identical scores."""
    import subprocess
    import sys

    _, path = study
    runs = []
    for name in ("a", "b"):
        done = subprocess.run([sys.executable, "-m", "tslayers.cli", "run", str(path), "--out",
                               str(tmp_path / name)], capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        runs.append(read_results(tmp_path / name / "report" / "results.nc"))
    lines = (done.stdout + done.stderr).splitlines()
    assert len(lines) <= 80, len(lines)
    noise = [x for x in lines if any(s in x for s in ("GPU available", "Tip:", "LeafSpec",
                                                       "weights_only", "eval mode",
                                                       "Trainer.fit` stopped", "it/s"))]
    assert not noise, noise
    assert any(x.startswith("full report") for x in lines)
    np.testing.assert_array_equal(runs[0]["score"].values, runs[1]["score"].values)
