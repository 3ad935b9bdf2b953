"""Small results files for the report tests: two tiny encoders with controls on LGSSM data
(known optimum), and an external GRU whose layers are named by their taps."""

import pytest
import torch
import xarray as xr
from torch import nn

from tslayers.data import make_lgssm
from tslayers.model import EncoderConfig, TemporalEncoder
from tslayers.probing import ProbeConfig, merge_results, probe_encoder, probe_model


def _cfg(**kw):
    base = dict(tasks=["latent", "forecast"], horizons=[1], forecast_from=["last"], context=64,
                max_windows=96, bootstrap=20, permutations=10, progress=False,
                controls=["untrained", "raw-window", "permuted"])
    return ProbeConfig(**{**base, **kw})


class GRUModel(nn.Module):
    def __init__(self, c=3, h=8):
        super().__init__()
        self.rnn = nn.GRU(c, h, batch_first=True)
        self.head = nn.Linear(h, c)

    def forward(self, x):
        return self.head(self.rnn(x)[0])


@pytest.fixture(scope="session")
def lgssm():
    return make_lgssm(n_series=36, length=80)


@pytest.fixture(scope="session")
def results(lgssm):
    """Two base models ("contrastive", "forecast"), each with its controls."""
    runs = []
    for seed, name in enumerate(["contrastive", "forecast"]):
        torch.manual_seed(seed)
        enc = TemporalEncoder(EncoderConfig(n_channels=3, patch_len=8, d_model=16, n_layers=2,
                                            n_heads=2))
        runs.append(probe_encoder(enc, lgssm, _cfg(), model_name=name))
    return merge_results(runs)


@pytest.fixture(scope="session")
def external(lgssm):
    torch.manual_seed(0)
    return probe_model(GRUModel(), lgssm, "rnn,head", _cfg(tasks=["latent"],
                                                           controls=["untrained"]), name="gru")


@pytest.fixture(scope="session")
def five_models(results) -> xr.Dataset:
    """Five copies of one base model under new names (no controls)."""
    one = results.sel(model=["contrastive"])
    parts = [one.assign_coords(model=[f"model{i}"]) for i in range(5)]
    return xr.concat(parts, "model", data_vars="minimal", combine_attrs="override")
