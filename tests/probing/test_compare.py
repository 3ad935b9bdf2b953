"""Comparing two models on the same windows: cross-model CKA against independent references
(a model with itself, a rotated and scaled copy, a numpy unbiased-HSIC CKA of hand-hooked
features), side-by-side results, the report, the CLI and its errors."""

import copy
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from tslayers.cli import main
from tslayers.data import make_lgssm
from tslayers.probing import ProbeConfig, linear_cka, probe_model, read_results, write_results
from tslayers.probing.diagnostics import cross_cka
from tslayers.probing.features import sample_windows
from tslayers.report import render_report
from tslayers.report.figures import cka_compare


def _cfg(**kw):
    base = dict(tasks=["latent"], context=64, max_windows=160, bootstrap=20, permutations=10,
                progress=False, lambdas=[1e-2, 1.0, 100.0, 1e4], controls=[])
    return ProbeConfig(**{**base, **kw})


class GRUModel(nn.Module):
    def __init__(self, c=3, h=16):
        super().__init__()
        self.rnn = nn.GRU(c, h, batch_first=True)
        self.head = nn.Linear(h, c)

    def forward(self, x):
        return self.head(self.rnn(x)[0])


class Rotated(nn.Module):
    """The same GRU, its hidden state then rotated by an orthogonal matrix and scaled."""

    def __init__(self, base: GRUModel, scale: float = 3.7, seed: int = 5):
        super().__init__()
        self.rnn = copy.deepcopy(base.rnn)
        q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(16, 16)))
        self.rot = nn.Linear(16, 16, bias=False)
        with torch.no_grad():
            self.rot.weight.copy_(torch.tensor(scale * q.T, dtype=torch.float32))

    def forward(self, x):
        return self.rot(self.rnn(x)[0])


def _gru(seed, h=16):
    torch.manual_seed(seed)
    return GRUModel(h=h)


def _unbiased_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Reference: CKA from the unbiased HSIC estimator (Song et al. 2012) on full n x n Gram
    matrices, written out term by term in numpy."""
    def hsic(k, l):
        n = len(k)
        k, l = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
        return (np.trace(k @ l) + k.sum() * l.sum() / ((n - 1) * (n - 2))
                - 2 * k.sum(0) @ l.sum(0) / (n - 2)) / (n * (n - 3))
    k, l = x @ x.T, y @ y.T
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


@pytest.fixture(scope="module")
def lgssm():
    return make_lgssm(n_series=40, length=96, seed=0)


# ------------------------------------------------------------------------------ the estimator
def test_cross_cka_equals_numpy_reference_and_is_invariant():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6))
    y = np.tanh(x @ rng.normal(size=(6, 4))) + 0.5 * rng.normal(size=(200, 4))
    got = cross_cka({0: x, 1: x ** 2}, {"y": y})
    assert got.shape == (2, 1)
    assert got[0, 0] == pytest.approx(_unbiased_cka(x, y), rel=1e-10)
    assert got[1, 0] == pytest.approx(_unbiased_cka(x ** 2, y), rel=1e-10)
    assert 0.2 < got[0, 0] < 0.9  # a real, non-trivial value
    assert abs(got[0, 0] - linear_cka(x, y)) < 0.1  # the biased estimator agrees roughly
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert cross_cka({0: x}, {0: 4.2 * x @ q})[0, 0] == pytest.approx(1.0, abs=1e-12)


def test_cross_cka_refuses_different_windows():
    rng = np.random.default_rng(1)
    with pytest.raises(ValueError, match="same windows, got 100 and 90 rows"):
        cross_cka({0: rng.normal(size=(100, 3))}, {0: rng.normal(size=(90, 3))})


# ------------------------------------------------------------------------------ the pipeline
def test_a_model_compared_with_itself_gives_its_within_model_cka(lgssm, tmp_path):
    model = _gru(0)
    res = probe_model(model, lgssm, "rnn,head", _cfg(), name="a", compare=copy.deepcopy(model),
                      compare_name="b")
    cross = res["cka_compare"].sel(model="a", model_other="b").values
    np.testing.assert_allclose(cross, res["cka"].sel(model="a").values, atol=1e-12)
    # same windows and splits: the copy's scores are the model's, replicate by replicate
    np.testing.assert_array_equal(res["score_boot"].sel(model="a").values,
                                  res["score_boot"].sel(model="b").values)
    back = read_results(write_results(res, tmp_path / "r.nc"))
    assert back["cka_compare"].dims == ("model", "model_other", "layer", "layer_other")
    np.testing.assert_allclose(back["cka_compare"].values, res["cka_compare"].values)
    assert back["model_other"].values.tolist() == ["b"]


def test_rotated_and_scaled_copy_has_cka_one(lgssm):
    base = _gru(0)
    res = probe_model(base, lgssm, "rnn", _cfg(), name="gru", compare=Rotated(base),
                      compare_taps="rot", compare_name="rotated")
    assert res["layer_name"].sel(model="rotated").values.tolist()[0] == "rot"
    cka = res["cka_compare"].sel(model="gru", model_other="rotated", layer=0, layer_other=0)
    assert float(cka) == pytest.approx(1.0, abs=1e-6)


def test_independent_model_matches_hand_hooked_reference(lgssm):
    a, b = _gru(0), _gru(1, h=8)
    cfg = _cfg(controls=["untrained"])
    res = probe_model(a, lgssm, "rnn", cfg, name="a", compare=b, compare_name="b")
    win = sample_windows(lgssm, 64, 0, None, cfg.max_windows, cfg.seeds[0])
    x = torch.from_numpy(np.nan_to_num(win.x))
    with torch.no_grad():
        pooled = [m.rnn(x)[0].mean(1).double().numpy() for m in (a, b)]
    expected = _unbiased_cka(*pooled)
    got = float(res["cka_compare"].sel(model="a", model_other="b", layer=0, layer_other=0))
    assert got == pytest.approx(expected, rel=1e-5)
    assert got < 0.999  # two different networks: not the trivial value
    # the compared model's untrained twin is compared too, and only the first model has rows
    assert res["model_other"].values.tolist() == ["b", "b/untrained"]
    assert not np.isfinite(res["cka_compare"].sel(model="b").values).any()


def test_any_two_sources_are_compared_in_one_probe_call(lgssm):
    from tslayers.model import EncoderConfig, TemporalEncoder
    from tslayers.probing import EncoderSource, ModuleSource, probe

    torch.manual_seed(0)
    enc = TemporalEncoder(EncoderConfig(n_channels=3, patch_len=8, d_model=16, n_layers=2,
                                        n_heads=2))
    res = probe([EncoderSource(enc, "enc"), ModuleSource(_gru(0), "rnn,head", "gru")], lgssm,
                _cfg())
    cka = res["cka_compare"].sel(model="enc", model_other="gru")
    assert cka.shape == (3, 2) and np.isfinite(cka.values).all()  # embeddings + 2 blocks x 2 taps
    assert res["layer_name"].sel(model="gru").values.tolist()[:2] == ["rnn", "head"]


def test_report_shows_the_comparison(lgssm, tmp_path):
    a = _gru(0)
    res = probe_model(a, lgssm, "rnn,head", _cfg(controls=["untrained"]), name="a",
                      compare=_gru(1), compare_name="b")
    fig = cka_compare(res)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["a vs b", "a vs b/untrained"]
    md = render_report(res, tmp_path / "report").read_text()
    assert "## Model comparison: a vs b" in md and "![cka_compare](cka_compare.png)" in md
    table = md.split("## Model comparison: a vs b", 1)[1].split("## ", 1)[0]
    best = res["cka_compare"].sel(model="a", model_other="b").max("layer_other").values
    assert "| L0 `rnn` | " in table and f"{best[0]:.3f}" in table and f"{best[1]:.3f}" in table


def test_compare_errors_name_the_fix(lgssm):
    with pytest.raises(ValueError, match="--compare-taps"):
        probe_model(_gru(0), lgssm, "rnn", _cfg(), compare=nn.Sequential(nn.Linear(3, 3)))
    with pytest.raises(ValueError, match="two sources share a name"):
        probe_model(_gru(0), lgssm, "rnn", _cfg(), name="x", compare=_gru(1), compare_name="x")


# ------------------------------------------------------------------------------ the CLI
NET = textwrap.dedent('''
    import torch
    from torch import nn

    def build(hidden=16, seed=0):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(3, hidden), nn.Tanh(), nn.Linear(hidden, 3))

    def broken():
        raise RuntimeError("checkpoint missing")
''')


def test_inspect_compare_writes_cross_cka_and_the_report(tmp_path, capsys):
    (tmp_path / "a.py").write_text(NET)
    (tmp_path / "b.py").write_text(NET)
    out = tmp_path / "inspect"
    rc = main(["inspect", "--module", f"{tmp_path / 'a.py'}:build", "--taps", "0,2",
               "--compare", f"{tmp_path / 'b.py'}:build", "--compare-arg", "hidden=8",
               "--compare-arg", "seed=1", "--compare-taps", "0,1,2", "--data", "synthetic/lgssm",
               "--context", "32", "--max-windows", "64", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    ds = read_results(out / "results.nc")
    assert ds["layer_name"].sel(model="compare").values.tolist() == ["0", "1", "2"]
    cka = ds["cka_compare"].sel(model="model", model_other="compare")
    assert np.isfinite(cka.values[:2, :3]).all()
    md = (out / "report" / "report.md").read_text()
    assert "Model comparison: model vs compare" in md
    assert (out / "report" / "cka_compare.png").exists()


def test_inspect_compare_factory_failure_is_one_line(tmp_path, capsys):
    (tmp_path / "a.py").write_text(NET)
    rc = main(["inspect", "--module", f"{tmp_path / 'a.py'}:build", "--compare",
               f"{tmp_path / 'a.py'}:broken", "--out", str(tmp_path / "o")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "--compare:" in err and "checkpoint missing" in err and "a.py:" in err
    assert "Traceback" not in err
