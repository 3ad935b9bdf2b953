"""The user's own probe targets: per series and per time step, from Python and the CLI."""

import textwrap

import numpy as np
import pytest
import torch

from tslayers.cli import main
from tslayers.data import DataError, add_targets, from_numpy
from tslayers.probing import ProbeConfig, probe_model, read_results

CFG = dict(horizons=[1], tasks=["forecast"], controls=["raw-window"], bootstrap=20,
           permutations=0, progress=False, max_windows=256)


def ar1_states(n: int, t: int, k: int, phi: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    s = np.zeros((n, t, k))
    s[:, 0] = rng.normal(size=(n, k)) / np.sqrt(1 - phi**2)  # stationary start
    for i in range(1, t):
        s[:, i] = phi * s[:, i - 1] + rng.normal(size=(n, k))
    return s


class StateAndLag(torch.nn.Module):
    """Tap ``now`` is the input itself; tap ``lag`` the input one step earlier."""

    def __init__(self):
        super().__init__()
        self.now, self.lag = torch.nn.Identity(), torch.nn.Identity()

    def forward(self, x):
        return self.now(x) + self.lag(torch.nn.functional.pad(x, (0, 0, 1, 0))[:, :-1])


def _test_score(ds, task, metric, model="model"):
    return ds["score"].sel(model=model, task=task, metric=metric, split="test", seed=0).values


def test_per_step_targets_are_read_at_the_step_each_token_ends():
    # the state is the input: a tap equal to it decodes it exactly (R^2 = 1); the tap one step
    # late reaches the AR(1) one-step R^2 phi^2 = 0.25 (closed form), so an off-by-one
    # alignment would show as ~0.25 at "now" and 1 at "lag"
    s = ar1_states(60, 64, 1, phi=0.5)
    ds = probe_model(StateAndLag(), s[..., :1].astype(np.float32), ["now", "lag"],
                     ProbeConfig(**CFG), targets={"state": s[..., 0]})
    names = ds["layer_name"].sel(model="model").values.tolist()
    r2 = dict(zip(names, _test_score(ds, "step_target/state", "r2")))
    assert r2["now"] > 0.999
    assert abs(r2["lag"] - 0.25) < 0.08


def test_per_series_targets_regress_floats_and_classify_labels():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(90, 32, 1)).astype(np.float32) + rng.normal(size=(90, 1, 1)) * 3
    level = x[:, :, 0].mean(1).astype(np.float64)  # linear in the mean-pooled tap
    kind = np.where(level > 0, "high", "low")  # strings are class labels
    ds = probe_model(StateAndLag(), x, ["now"], ProbeConfig(**CFG),
                     targets={"level": level, "kind": kind})
    assert _test_score(ds, "series_target/level", "r2")[0] > 0.999
    assert _test_score(ds, "series_target/kind", "accuracy")[0] > 0.9
    # the raw-window control of a model that does not normalise its input keeps the level
    assert _test_score(ds, "series_target/level", "r2", "model/raw-window")[0] > 0.9


def test_targets_by_name_and_clear_errors():
    x = np.random.default_rng(2).normal(size=(30, 40)).astype(np.float32)
    data = from_numpy(x, targets={"y": x.mean(1)})
    ds = probe_model(StateAndLag(), data, ["now"], ProbeConfig(**CFG), targets=["y"])
    assert "series_target/y" in ds["task"].values
    with pytest.raises(ValueError, match=r"\['z'\] not in dataset.*'y'"):
        probe_model(StateAndLag(), data, ["now"], ProbeConfig(**CFG), targets=["z"])
    with pytest.raises(DataError, match="first axis must be the series axis"):
        add_targets(data, {"bad": np.zeros(29)})
    with pytest.raises(DataError, match="reserved"):
        add_targets(data, {"obs": np.zeros(30)})


FACTORY = textwrap.dedent('''
    import pathlib
    import torch

    def build():
        pathlib.Path(__file__).with_name("built").touch()  # the factory ran
        torch.manual_seed(0)
        return torch.nn.GRU(1, 8, num_layers=2, batch_first=True)
''')


def test_inspect_reads_targets_from_an_npz(tmp_path, capsys):
    s = ar1_states(24, 48, 2, phi=0.9, seed=3)
    x = (s[..., :1] + 0.1 * np.random.default_rng(4).normal(size=s[..., :1].shape))
    kind = (s[:, :, 1].mean(1) > 0).astype(np.int64)
    np.savez(tmp_path / "sim.npz", x=x.astype(np.float32), state=s, kind=kind)
    (tmp_path / "net.py").write_text(FACTORY)
    args = ["inspect", "--module", f"{tmp_path / 'net.py'}:build", "--data",
            str(tmp_path / "sim.npz"), "--context", "40", "--max-windows", "64"]
    assert main(args + ["--targets", "state,nope", "--out", str(tmp_path / "bad")]) == 1
    assert "--targets: ['nope'] not in dataset" in capsys.readouterr().err
    assert not (tmp_path / "built").exists()  # refused before the model was built
    assert main(args + ["--targets", "state", "--out", str(tmp_path / "bad")]) == 1
    assert "GRU has no submodules to tap; pass --unroll-rnn" in capsys.readouterr().err
    assert main(args + ["--unroll-rnn", "--targets", "state,kind",
                        "--out", str(tmp_path / "o")]) == 0
    ds = read_results(tmp_path / "o" / "results.nc")
    tasks = ds["task"].values.tolist()
    assert "step_target/state" in tasks and "series_target/kind" in tasks
    # the observed first state component is decoded far better than chance from the GRU
    assert np.nanmax(_test_score(ds, "step_target/state", "r2")) > 0.3


def test_a_probe_source_names_its_own_targets():
    """A study's probe dataset carries its own targets (here the pendulum's drive phase per
    series); a variable without a series dim is refused with its dims."""
    from tslayers.data.config import DataConfig
    from tslayers.model import EncoderConfig, TemporalEncoder
    from tslayers.probing import ProbeSource, probe_sources

    torch.manual_seed(0)
    enc = TemporalEncoder(EncoderConfig(n_channels=3, patch_len=8, d_model=16, n_layers=1,
                                        n_heads=2))
    data = DataConfig(name="synthetic/pendulum", params={"n_series": 30, "length": 64},
                      context=64)
    cfg = ProbeConfig(**{**CFG, "controls": []})
    ds = probe_sources(enc, [ProbeSource(data, tasks=["latent"], targets=["drive_phase"])], cfg,
                       model_name="m")
    assert {"latent", "series_target/drive_phase"} <= set(ds["task"].values.tolist())
    with pytest.raises(ValueError, match=r"'W' has dims \('channel', 'state'\)"):
        probe_sources(enc, [ProbeSource(data, tasks=["latent"], targets=["W"])], cfg,
                      model_name="m")
