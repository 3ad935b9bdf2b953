"""Inspect a world model's latents layer by layer and step by step, then patch and steer it.

A small latent-dynamics model (input projection -> 2-layer GRU -> next-observation head) is
trained on series of the simulated pendulum, whose true state (sin theta, cos theta, omega) is
known, and inspected on other series of the same system that it never saw.
tslayers then answers "where, layer by layer and step by step, does the model encode the state,
and what happens if I change it there?":

1. probe every layer for the true state, the pendulum's energy (a nonlinear function of the
   state, given as the user's own per-step target) and the series label, next to the untrained
   twin and the raw-window controls, with intervals over test series;
2. decode omega at every step of the window from the selected layer (how much history the
   state estimate needs);
3. activation patching: how much of the difference between two inputs' next-step predictions
   each layer restores, per time step;
4. steering: add the probe's omega direction to GRU layer 0 and read the decoded omega move
   there and one layer later.

    python examples/world_model.py               # ~1 min on 2 CPU cores, writes runs/world_model
    python examples/world_model.py --quick       # ~20 s smoke run
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tslayers.data import load_dataset
from tslayers.probing import (
    ProbeConfig,
    RidgeProbe,
    cache_activations,
    intervene,
    layer_table,
    patching_effect,
    probe_model,
    steer,
    write_results,
)
from tslayers.probing.rnn import unroll_rnns
from tslayers.report import render_report


class WorldModel(nn.Module):
    """What a user brings: observations in, next observation out, a GRU state in between."""

    def __init__(self, n_obs: int = 3, hidden: int = 32):
        super().__init__()
        self.inp = nn.Linear(n_obs, hidden)
        self.rnn = nn.GRU(hidden, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, n_obs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(torch.tanh(self.inp(x)))
        return self.head(h)


def train(model: WorldModel, obs: np.ndarray, steps: int, seed: int = 0) -> list[float]:
    """Next-step prediction on random crops (plain PyTorch, as a user's own code would be)."""
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x = torch.from_numpy(obs)
    losses = []
    for _ in range(steps):
        rows = torch.from_numpy(rng.integers(0, len(x), 32))
        t0 = int(rng.integers(0, x.shape[1] - 65))
        batch = x[rows, t0 : t0 + 65]
        loss = nn.functional.mse_loss(model(batch[:, :-1]), batch[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def energy(latent: np.ndarray) -> np.ndarray:
    """Pendulum energy per step: omega^2 / 2 + (1 - cos theta); not linear in the state."""
    return 0.5 * latent[..., 2] ** 2 + 1.0 - latent[..., 1]


def decode_by_step(model: nn.Module, taps: list[str], x: np.ndarray, y: np.ndarray,
                   train: np.ndarray, test: np.ndarray) -> tuple[RidgeProbe, dict]:
    """Ridge probes from each tap to omega (lambda chosen on the last quarter of the train
    series); test R^2 at each step of the window, {tap: (T,)}."""
    h = cache_activations(model, taps, torch.from_numpy(x))
    h = {k: v.numpy() for k, v in h.items()}
    n_val = max(1, len(train) // 4)
    probe = RidgeProbe(np.logspace(-3, 3, 7))
    for split, rows in (("train", train[:-n_val]), ("val", train[-n_val:])):
        probe.update({k: v[rows].reshape(-1, v.shape[-1]) for k, v in h.items()},
                     y[rows].reshape(-1, 1), split)
    probe.fit("val")
    pred = probe.predict({k: v[test].reshape(-1, v.shape[-1]) for k, v in h.items()})
    total = ((y[test] - y[test].mean()) ** 2).sum(0)
    return probe, {k: 1.0 - ((p.reshape(y[test].shape) - y[test]) ** 2).sum(0) / total
                   for k, p in pred.items()}


def direction(probe: RidgeProbe, tap: str) -> tuple[np.ndarray, torch.Tensor]:
    """The probe's weights at its chosen lambda, and the vector that adds +1 decoded unit."""
    w = probe.coef_[tap][probe.best_[tap][0], :, 0]
    return w, torch.tensor(w / (w @ w), dtype=torch.float32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small data and training (smoke run)")
    ap.add_argument("--out", default="runs/world_model")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n_train, n_series, length, steps = (64, 64, 160, 150) if args.quick else (256, 256, 256, 1500)

    # one simulated system; the world model trains on its first n_train series and every
    # measurement below uses the other n_series, which it never saw
    full = load_dataset("synthetic/pendulum", n_series=n_train + n_series, length=length, seed=0)
    model = WorldModel()
    losses = train(model, full["obs"].values[:n_train], steps)
    ds = full.isel(series=slice(n_train, None))
    obs, latent = ds["obs"].values, ds["latent"].values
    print(f"trained {steps} steps: next-step MSE {losses[0]:.3f} -> {np.mean(losses[-50:]):.3f}")

    # 1. every layer against the true state, a derived target and the label, with controls
    tapped = unroll_rnns(model)  # rnn.layers.0 and rnn.layers.1 become separate taps
    cfg = ProbeConfig(horizons=[1], forecast_from=["last"], context=128, max_windows=512,
                      controls=["untrained", "raw-window", "mlp", "permuted"],
                      bootstrap=200, permutations=100, progress=False)
    result = probe_model(tapped, ds, ["inp", "rnn.layers.*", "head"], cfg, name="gru",
                         targets={"energy": energy(latent)}, causal=True)
    write_results(result, out / "results.nc")
    report = render_report(result, out / "report")
    table = layer_table(result, ["gru"])
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"report: {report}")

    # 2. omega decoded at every step of the window from each GRU layer (test series)
    rng = np.random.default_rng(0)
    order = rng.permutation(n_series)
    train_rows, test_rows = order[: int(0.7 * n_series)], order[int(0.7 * n_series) :]
    x, omega = obs[:, :128], latent[:, :128, 2]
    gru = ["rnn.layers.0", "rnn.layers.1"]
    probe, r2_by_step = decode_by_step(tapped, gru, x, omega, train_rows, test_rows)
    for tap, r2 in r2_by_step.items():
        print(f"omega R^2 by step ({tap}, test series): "
              + " ".join(f"t{t}:{r2[t]:.2f}" for t in (0, 1, 2, 4, 8, 16, 64, 127)))

    # 3. patching: clean vs corrupt = two test series; metric = the predicted next observation
    clean, corrupt = (torch.from_numpy(x[test_rows[i : i + 1]]) for i in (0, 1))
    effect = patching_effect(tapped, ["inp", *gru], clean, corrupt,
                             metric=lambda y: y[0, -1].sum(), per_step=True)
    last, before = effect.isel(step=-1).values, effect.isel(step=-2).values
    print("patching effect on the last prediction, all steps / last step alone / the step "
          "before alone: " + ", ".join(
              f"{t}: {a:.2f} / {e:.2f} / {b:.2f}" for t, a, e, b in
              zip(effect["tap"].values, effect["all_steps"].values, last, before)))

    # 4. steering: add layer 0's omega direction to layer 0; read omega at both layers
    w0, v0 = direction(probe, gru[0])
    w1, _ = direction(probe, gru[1])
    xt = torch.from_numpy(x[test_rows])
    base = cache_activations(tapped, gru, xt)
    shifts = {}
    for alpha in (-0.5, 0.5):
        with intervene(tapped, {gru[0]: steer(v0, alpha)}):
            moved = cache_activations(tapped, gru, xt)
        shifts[alpha] = [float(((moved[k] - base[k]).numpy() @ w).mean())
                         for k, w in zip(gru, (w0, w1))]
    print("steering rnn.layers.0 by -0.5 / +0.5 omega units moves decoded omega at layer 0 by "
          f"{shifts[-0.5][0]:+.3f} / {shifts[0.5][0]:+.3f}, at layer 1 by "
          f"{shifts[-0.5][1]:+.3f} / {shifts[0.5][1]:+.3f}")

    summary = {"final_train_mse": float(np.mean(losses[-50:])),
               "omega_r2_by_step": {k: v.round(4).tolist() for k, v in r2_by_step.items()},
               "patching": {t: {"all_steps": float(a), "last_step": float(e)} for t, a, e in
                            zip(effect["tap"].values.tolist(), effect["all_steps"].values,
                                last)},
               "steering_shift": {str(a): v for a, v in shifts.items()}}
    (out / "world_model.json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
