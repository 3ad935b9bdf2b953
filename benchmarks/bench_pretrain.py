"""Pretraining quality: each objective vs a same-architecture untrained encoder; forecast MASE.

For every objective in configs/pretrain/: pretrain on the built-in synthetic mixture for at
most ``--budget-s`` seconds of CPU (max_steps sized from a timing probe so the cosine schedule
completes, max_time as a hard cap), then evaluate on the validation split with the objective's
own validation loss (identical seeded masks/views for both models), trained vs untrained.
The forecaster is also scored by MASE on held-out LGSSM series (same system as in the mixture,
new draws) and seasonal series (new seed), against the seasonal-naive forecast (gluonts
metrics; season = 24 for seasonal, 1 = naive for LGSSM).

    python benchmarks/bench_pretrain.py --budget-s 300            # the acceptance setting
    python benchmarks/bench_pretrain.py --budget-s 20 --small     # smoke run
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from tslayers.config import load_config
from tslayers.data import SeriesDataModule, load_dataset
from tslayers.model import TemporalEncoder
from tslayers.objectives import load_objective
from tslayers.training import LitPretrainer, PretrainConfig, build_trainer, pretrain
from tslayers.training.pretraining import build_models


def step_time(config: PretrainConfig, n: int = 4) -> float:
    """Seconds per training step of this config (fwd + bwd + AdamW), after one warm-up."""
    data = SeriesDataModule(config.data)
    batch = next(iter(data.train_dataloader()))
    config.encoder.n_channels = data.n_channels
    enc, obj = build_models(config.encoder, config)
    opt = torch.optim.AdamW([p for m in (enc, obj) for p in m.parameters() if p.requires_grad])
    times = []
    for _ in range(n + 1):
        t = time.perf_counter()
        loss = obj(enc, batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return float(np.median(times[1:]))


def validate(config: PretrainConfig, encoder, objective, out: Path) -> dict[str, float]:
    data = SeriesDataModule(config.data)
    module = LitPretrainer(encoder, objective, config.train)
    trainer = build_trainer(config.train, out, checkpoints=False, loggers=False,
                            enable_progress_bar=False)
    return {k: float(v) for k, v in
            trainer.validate(module, data.val_dataloader(), verbose=False)[0].items()}


def seasonal_naive(context: np.ndarray, horizon: int, m: int) -> np.ndarray:
    """(N, T, C) -> (N, horizon, C): repeat the last season."""
    last = context[:, -m:]
    reps = -(-horizon // m)
    return np.concatenate([last] * reps, axis=1)[:, :horizon]


def mase_table(encoder, objective, context: int, horizon: int, seed: int) -> dict[str, dict]:
    from gluonts.evaluation.metrics import calculate_seasonal_error, mase

    mix_seeds = np.random.SeedSequence(0).spawn(7)  # the mixture's per-system seeds (lgssm = 0)
    sets = {
        "lgssm": (load_dataset("synthetic/lgssm", n_series=96, length=context + horizon,
                               obs_dim=3, noise=0.1,
                               seed=int(mix_seeds[0].generate_state(1)[0])), 1),
        "seasonal": (load_dataset("synthetic/seasonal", n_series=96, length=context + horizon,
                                  n_channels=3, noise=0.1, seed=seed), 24),
    }
    table = {}
    encoder.eval()
    for name, (ds, m) in sets.items():
        obs = ds["obs"].values.astype(np.float32)
        ctx, fut = obs[:, :context], obs[:, context:]
        pred = objective.predict(encoder, torch.from_numpy(ctx)).numpy()
        naive = seasonal_naive(ctx, horizon, m)
        scores = {"model": [], "seasonal_naive": []}
        for i in range(obs.shape[0]):
            for c in range(obs.shape[2]):
                err = calculate_seasonal_error(ctx[i, :, c], seasonality=m)
                scores["model"].append(mase(fut[i, :, c], pred[i, :, c], err))
                scores["seasonal_naive"].append(mase(fut[i, :, c], naive[i, :, c], err))
        table[name] = {k: float(np.mean(v)) for k, v in scores.items()} | {"season": m}
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-s", type=float, default=300.0, help="training seconds per objective")
    ap.add_argument("--objectives", default="forecast,reconstruct,contrastive,jepa")
    ap.add_argument("--out", default="runs/bench_pretrain")
    ap.add_argument("--small", action="store_true", help="tiny model and data (smoke test)")
    ap.add_argument("--steps", type=int, default=None,
                    help="fix max_steps instead of sizing it from a timing probe (a busy "
                         "machine makes the probe pessimistic); max_time still caps the run")
    ap.add_argument("overrides", nargs="*", help="config overrides applied to every objective")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results = {}
    for name in args.objectives.split(","):
        overrides = ["train.progress_bar=false", "train.val_check_interval=100",
                     "train.ckpt_every_n_steps=100", "train.limit_val_batches=20", *args.overrides]
        if args.small:
            overrides += ["encoder.d_model=32", "encoder.n_layers=2", "data.params.n_series=64"]
        config = load_config(PretrainConfig, f"configs/pretrain/{name}.yaml", overrides)
        steps = args.steps or max(20, int(0.8 * args.budget_s / step_time(config)))
        secs = int(args.budget_s)
        config.train.max_steps = steps
        config.train.max_time = f"00:00:{secs // 60:02d}:{secs % 60:02d}"
        config.train.warmup_steps = min(config.train.warmup_steps, steps // 10)
        config.train.val_check_interval = min(config.train.val_check_interval, steps)
        out = Path(args.out) / name
        t0 = time.perf_counter()
        run = pretrain(config, out_dir=out)
        train_s = time.perf_counter() - t0
        resolved = load_config(PretrainConfig, run / "config.yaml")
        encoder = TemporalEncoder.from_pretrained(run / "encoder")
        objective = load_objective(run / "objective", encoder.config)
        trained = validate(resolved, encoder, objective, out / "eval")
        torch.manual_seed(resolved.train.seed)
        fresh_enc, fresh_obj = build_models(resolved.encoder, resolved)
        untrained = validate(resolved, fresh_enc, fresh_obj, out / "eval")
        row = {"steps": json.loads((run / "metrics.json").read_text())["global_step"],
               "planned_steps": steps, "train_s": round(train_s, 1),
               "val_loss_trained": trained["val/loss"], "val_loss_untrained": untrained["val/loss"],
               "rank_trained": trained.get("val/effective_rank"),
               "rank_untrained": untrained.get("val/effective_rank")}
        if name == "forecast":
            row["mase"] = mase_table(encoder, objective, resolved.data.context,
                                     resolved.data.horizon, seed=4321)
            row["mase_untrained"] = mase_table(fresh_enc, fresh_obj, resolved.data.context,
                                               resolved.data.horizon, seed=4321)
        results[name] = row
        print(json.dumps({name: row}, indent=2), flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.json").write_text(json.dumps(results, indent=2))
    print("\n| objective | steps | val loss untrained | val loss trained | eff. rank (u -> t) |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['steps']} | {r['val_loss_untrained']:.4f} | "
              f"{r['val_loss_trained']:.4f} | "
              f"{r['rank_untrained']:.1f} -> {r['rank_trained']:.1f} |")
    if "forecast" in results:
        for ds, s in results["forecast"]["mase"].items():
            u = results["forecast"]["mase_untrained"][ds]["model"]
            print(f"MASE {ds}: model {s['model']:.3f} | seasonal naive (m={s['season']}) "
                  f"{s['seasonal_naive']:.3f} | untrained {u:.3f}")


if __name__ == "__main__":
    main()
