"""The probe and inspect commands through the CLI entry point."""

import textwrap

from tslayers.cli import main
from tslayers.probing import read_results

GRU_FACTORY = textwrap.dedent('''
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(3, 16)
            self.rnn = nn.GRU(16, 16, batch_first=True)
            self.mlp = nn.Sequential(nn.Linear(16, 16), nn.GELU(), nn.Linear(16, 3))

        def forward(self, x):
            h, _ = self.rnn(self.inp(x))
            return self.mlp(h)

    def build():
        torch.manual_seed(0)
        return Net()
''')


def test_inspect_arbitrary_module(tmp_path, capsys):
    factory = tmp_path / "net.py"
    factory.write_text(GRU_FACTORY)
    out = tmp_path / "inspect"
    rc = main(["inspect", "--module", f"{factory}:build", "--taps", "rnn,mlp.*",
               "--data", "synthetic/mixture", "--context", "48", "--max-windows", "96",
               "--out", str(out)])
    assert rc == 0
    ds = read_results(out / "results.nc")
    names = ds["layer_name"].sel(model="model").values.tolist()
    assert names == ["rnn", "mlp.0", "mlp.1", "mlp.2"]
    assert ds["cka"].sel(model="model").shape == (4, 4)
    tasks = ds["task"].values.tolist()
    assert "classify" in tasks and "impute" in tasks  # every task the data supports
    models = set(ds["model"].values.tolist())
    assert {"model", "model/untrained", "model/raw-window", "model/periodogram"} <= models
    assert (out / "report" / "report.md").exists()


def test_inspect_bad_pattern_lists_names(tmp_path, capsys):
    factory = tmp_path / "net.py"
    factory.write_text(GRU_FACTORY)
    rc = main(["inspect", "--module", f"{factory}:build", "--taps", "encoder.*",
               "--context", "48", "--max-windows", "32", "--out", str(tmp_path / "o")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "matches no module" in err and "rnn" in err


def test_probe_command_with_overrides(tmp_path):
    cfg = tmp_path / "probe.yaml"
    cfg.write_text(textwrap.dedent('''
        data: {name: synthetic/lgssm, params: {n_series: 24, length: 80}, context: 64}
        encoder: {n_channels: 3, patch_len: 8, d_model: 16, n_layers: 2, n_heads: 2}
        probe: {tasks: [latent], max_windows: 96, bootstrap: 10, progress: false}
    '''))
    out = tmp_path / "run"
    assert main(["probe", str(cfg), "probe.controls=[raw-window]", "--out", str(out)]) == 0
    ds = read_results(out / "results.nc")
    assert set(ds["model"].values) == {"untrained", "untrained/raw-window"}
    assert "optimum" in ds
    for var in ("selected_layer", "gap", "gap_lo", "gap_hi", "vs_control"):
        assert var in ds
    assert ds["score"].sizes["split"] == 2
    assert main(["probe", str(cfg), "probe.tasks=[anomaly]", "--out", str(out)]) == 1
