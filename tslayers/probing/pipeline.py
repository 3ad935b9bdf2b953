"""One pipeline from any feature source to results.

``probe(sources, data, config)``: sample windows, split them by series (train / val / test),
extract every source's per-layer features once, add the configured controls, build each
registered task's problems, fit the probes on train (hyper-parameters chosen on val), score
every layer on val AND test with paired bootstrap replicates over series, and return the
results Dataset (:mod:`tslayers.probing.results`) with the analysis of
:mod:`tslayers.probing.analysis` (layer selected on val, gaps and control comparisons on test).

:func:`probe_encoder` (a TemporalEncoder) and :func:`probe_model` (any ``nn.Module`` with tap
globs) are thin wrappers that build the source.
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import xarray as xr

from tslayers.data.config import DataConfig

from . import metrics as M
from .analysis import annotate
from .compare import compare_cka, twin_cka
from .config import ProbeConfig
from .diagnostics import ATTN_FIELDS, stack_heads
from .features import Features, Windows, hide_spans, sample_windows
from .probes import LogisticProbe, MLPProbe, RidgeProbe, knn_propagate
from .results import finalize, records_to_dataset
from .sources import (
    EncoderSource,
    ExtractOptions,
    MiniRocketSource,
    ModuleSource,
    PeriodogramSource,
    RawWindowSource,
)
from .tasks import TASKS, Context, Problem, Split, control_task, resolve_tasks


def _load(data, cfg: ProbeConfig) -> tuple[xr.Dataset, int, int | None]:
    """Dataset, context and stride from an ``xr.Dataset``, a dataset name or a ``DataConfig``."""
    from tslayers.data import load_dataset, validate_dataset

    if isinstance(data, str):
        data = load_dataset(data)
    if isinstance(data, xr.Dataset):
        ds, context, stride = data, cfg.context, cfg.stride
        if context is None:
            context = min(256, ds.sizes["time"] - max(cfg.horizons))
    else:
        ds = load_dataset(data.name, **data.params)
        context, stride = cfg.context or data.context, cfg.stride or data.stride
    return validate_dataset(ds), int(context), stride


def split_windows(ds: xr.Dataset, win: Windows, cfg: ProbeConfig, seed: int) -> Split:
    """Split the window sample by series (train / val / test never share a series)."""
    from tslayers.data.windows import split_series

    n = ds.sizes["series"]
    if n < 3:
        raise ValueError(f"too few series for a split by series: the dataset has {n}, a "
                         "train/val/test split needs at least 3 (10+ recommended); use more "
                         "series (data.params.n_series)")
    parts = split_series(ds, cfg.val_fraction, cfg.test_fraction, seed)
    masks = [np.isin(win.series, p["series"].values) for p in parts]
    for name, m, p in zip(("train", "val", "test"), masks, parts):
        if p.sizes["series"] == 0 or not m.any():
            raise ValueError(
                f"too few series for the split: the '{name}' split has {p.sizes['series']} series "
                f"and {int(m.sum())} sampled windows (dataset: {n} series, val_fraction="
                f"{cfg.val_fraction}, test_fraction={cfg.test_fraction}); use more series or "
                "larger fractions")
    return Split(*masks)


# ------------------------------------------------------------------------------ fitting
def solve(problem: Problem, cfg: ProbeConfig, layers: list[int] | None = None
          ) -> dict[str, dict[int, np.ndarray]]:
    """Fit the problem's probe on train rows (choices on val rows); predictions of every layer
    on the val and test rows, {split: {layer: (n_split, ...)}}. Test rows are never read
    before prediction."""
    r = problem.rows
    tr, va = np.flatnonzero(r.train), np.flatnonzero(r.val)
    x = {l: v for l, v in problem.x.items() if layers is None or l in layers}
    if len(tr) < 2 or len(va) < 1:
        raise ValueError(f"too few rows to fit a probe ({len(tr)} train, {len(va)} val); use "
                         "more series or windows (probe.max_windows)")
    rows = {"val": va, "test": np.flatnonzero(r.test)}
    if problem.kind == "given":
        return {s: {l: v[i] for l, v in x.items()} for s, i in rows.items()}
    if problem.kind == "neighbours":
        return {s: {l: knn_propagate(v[tr], problem.y[tr], v[i], k=cfg.knn_k,
                                     n_classes=problem.n_classes).argmax(-1)
                    for l, v in x.items()} for s, i in rows.items()}
    if problem.kind == "classify":  # one batched fit per feature width (taps may differ)
        preds: dict[str, dict[int, np.ndarray]] = {s: {} for s in rows}
        for width in dict.fromkeys(v.shape[1] for v in x.values()):
            group = [l for l, v in x.items() if v.shape[1] == width]
            stack = np.stack([x[l] for l in group])
            probe = LogisticProbe(cfg.Cs).fit(stack[:, tr], problem.y[tr], stack[:, va],
                                              problem.y[va], problem.n_classes)
            for s, i in rows.items():
                preds[s].update(zip(group, probe.predict(stack[:, i])))
        return {s: {l: preds[s][l] for l in x} for s in rows}
    probe = RidgeProbe(cfg.lambdas)
    for split, idx in (("train", tr), ("val", va)):
        for s in range(0, len(idx), 4096):
            b = idx[s : s + 4096]
            probe.update({l: v[b] for l, v in x.items()}, problem.y[b], split)
    probe.fit("val", problem.output_groups)
    return {s: probe.predict({l: v[i] for l, v in x.items()}) for s, i in rows.items()}


def solve_mlp(problem: Problem, layer: int, seed: int) -> dict[str, dict[int, np.ndarray]]:
    """The nonlinear control: a one-hidden-layer MLP on one layer."""
    r = problem.rows
    tr, va, te = (np.flatnonzero(m) for m in (r.train, r.val, r.test))
    x, y = problem.x[layer], problem.y
    probe = MLPProbe(problem.kind, seed=seed).fit(x[tr], y[tr], x[va], y[va], problem.n_classes)
    return {"val": {layer: probe.predict(x[va])}, "test": {layer: probe.predict(x[te])}}


# ------------------------------------------------------------------------------ scoring
@dataclass
class Scorer:
    """Scores predictions with bootstrap replicates shared by every model on the same split."""

    win: Windows
    split: Split
    cfg: ProbeConfig
    seed: int
    counts: dict[str, np.ndarray] = field(default_factory=dict)
    series: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("val", "test"):
            self.series[name] = np.unique(self.win.series[getattr(self.split, name)])
            self.counts[name] = M.bootstrap_counts(self.series[name], max(self.cfg.bootstrap, 1),
                                                   self.seed, name)

    def _weights(self, split: str, groups: np.ndarray) -> np.ndarray:
        return M.row_weights(self.counts[split], self.series[split], groups)

    def records(self, model: str, problem: Problem, preds: dict[str, dict[int, np.ndarray]],
                optimum: list | None = None, pvalues: bool = True) -> list[dict]:
        out = []
        for split, by_layer in preds.items():
            idx = np.flatnonzero(getattr(problem.rows, split))
            w = self._weights(split, problem.groups[idx])
            for task, view in problem.views.items():
                target = view.target[idx]
                base = {k: v[idx] for k, v in view.baselines.items()}
                for layer, raw in by_layer.items():
                    pred = raw[:, view.cols] if raw.ndim == 2 and problem.kind != "given" \
                        else raw
                    if view.decode is not None:
                        pred = view.decode(pred, idx)
                    for metric, (value, reps) in _metric_values(view.metrics, target, pred,
                                                                base, w).items():
                        p = float("nan")
                        if pvalues and split == "test" and metric == view.metrics[0]:
                            p = M.permutation_pvalue(metric, target, pred, problem.blocks[idx],
                                                     self.cfg.permutations, self.seed)
                        out.append(dict(model=model, layer=layer, task=task, metric=metric,
                                        seed=self.seed, split=split, score=value,
                                        boot=reps, pvalue=p))
                if optimum is not None and "optimum" in base:
                    for metric, (value, reps) in _metric_values(
                            view.metrics, target, base["optimum"], base, w).items():
                        optimum.append(dict(model=model, task=task, metric=metric,
                                            seed=self.seed, split=split, score=value, boot=reps))
        return out


def _metric_values(metrics: tuple[str, ...], y: np.ndarray, pred: np.ndarray,
                   base: dict[str, np.ndarray], w: np.ndarray) -> dict[str, tuple]:
    """{metric: (value, replicates)}; derived metrics need the named baselines."""
    out = {}
    for m in metrics:
        fn = M.METRICS[m].fn
        if fn is not None:
            out[m] = (float(fn(y, pred, None)), np.asarray(fn(y, pred, w), dtype=np.float32))
            continue
        if "naive" not in base or (m == "share_of_optimum" and "optimum" not in base):
            continue
        err = {k: (float(M.mse(y, p, None)), M.mse(y, p, w))
               for k, p in (("model", pred), *base.items())}
        with np.errstate(divide="ignore", invalid="ignore"):
            if m == "mse_vs_naive":
                out[m] = tuple(np.divide(err["model"][i], err["naive"][i]) for i in (0, 1))
            else:
                out[m] = tuple(np.divide(err["naive"][i] - err["model"][i],
                                         err["naive"][i] - err["optimum"][i]) for i in (0, 1))
        out[m] = (float(out[m][0]), np.asarray(out[m][1], dtype=np.float32))
    return out


# ------------------------------------------------------------------------------ the pipeline
@dataclass
class _Entry:
    name: str
    source: object
    feats: Features | None = None
    permuted: bool = False


def _build_entries(sources: list, win: Windows, cfg: ProbeConfig, impute: bool) -> list[_Entry]:
    """Every source plus its controls, with features extracted once."""
    entries = []
    for src in sources:
        own = [_Entry(src.name, src)]
        if "untrained" in cfg.controls and hasattr(src, "untrained"):
            own.append(_Entry(f"{src.name}/untrained", src.untrained(cfg.seeds[0])))
        for e in own:
            e.feats = _extract(e.source, win, cfg, impute)
        first = own[0].feats
        if "raw-window" in cfg.controls:
            raw = RawWindowSource(f"{src.name}/raw-window", first.token_end, first.token_len,
                                  causal=src.causal, instance_scaled=src.instance_scaled)
            own.append(_Entry(raw.name, raw, _extract(raw, win, cfg, impute)))
        if "periodogram" in cfg.controls:
            per = PeriodogramSource(f"{src.name}/periodogram")
            own.append(_Entry(per.name, per, per.extract(win.x)))
        if "minirocket" in cfg.controls:
            own.append(_Entry(f"{src.name}/minirocket", MiniRocketSource(
                f"{src.name}/minirocket", seed=cfg.seeds[0])))  # fitted per split on train
        entries += own
    return entries


def _extract(source, win: Windows, cfg: ProbeConfig, impute: bool) -> Features:
    feats = source.extract(win.x)
    feats.check_finite(source.name)
    if impute and feats.dense:
        rng = np.random.default_rng([cfg.seeds[0], 7919])
        hidden = rng.integers(0, len(feats.token_end), len(win))
        masked = source.extract(hide_spans(win.x, feats.token_end, feats.token_len, hidden))
        feats.masked = {l: t[np.arange(len(win)), hidden] for l, t in masked.tokens.items()}
        feats.hidden = hidden
    return feats


def _permuted_problem(problem: Problem, seed: int) -> Problem:
    """The same problem with train and val targets shuffled between windows (a null that
    every probe must fail on; refitted, then scored against the true test targets)."""
    rng = np.random.default_rng([seed, 99])
    y = problem.y.copy()
    for mask in (problem.rows.train, problem.rows.val):
        idx = np.flatnonzero(mask)
        blocks = np.unique(problem.blocks[idx])
        src_of = dict(zip(blocks, rng.permutation(blocks)))
        for b in blocks:  # blocks of unequal size keep their own targets
            rows_b = idx[problem.blocks[idx] == b]
            rows_s = idx[problem.blocks[idx] == src_of[b]]
            if len(rows_b) == len(rows_s):
                y[rows_b] = problem.y[rows_s]
    return dataclasses.replace(problem, y=y)


def _selected_layer(records: list[dict], problem: Problem) -> int | None:
    task = next(iter(problem.views))
    metric = problem.views[task].metrics[0]
    val = {r["layer"]: r["score"] for r in records
           if r["task"] == task and r["metric"] == metric and r["split"] == "val"}
    if not val:
        return None
    sign = 1 if M.HIGHER_IS_BETTER[metric] else -1
    return max(val, key=lambda l: sign * val[l] if np.isfinite(val[l]) else -np.inf)


def probe(sources, data, config: ProbeConfig | None = None) -> xr.Dataset:
    """Probe every layer of every source (and its controls) on every configured task.

    ``sources``: one or a list of :class:`~tslayers.probing.sources.FeatureSource` (the first
    source's name leads the controls). Several sources are probed on the same windows and
    splits, so their scores are paired, and the first is compared with the others layer by
    layer (``cka_compare``, see :mod:`.compare`). ``data``: an ``xr.Dataset`` or a
    ``DataConfig``.
    """
    cfg = config or ProbeConfig()
    sources = sources if isinstance(sources, (list, tuple)) else [sources]
    for src in sources:  # names end up in file names: no path tricks
        parts = src.name.split("/")
        if not all(re.fullmatch(r"[A-Za-z0-9_.+@=-]+", p) and set(p) != {"."} for p in parts):
            raise ValueError(f"model name '{src.name}' cannot name results and figure files: "
                             "use letters, digits and - _ . + @ = in '/'-separated parts, "
                             "none of them '.' or '..'")
    names = [s.name for s in sources]
    if len(set(names)) < len(names):
        raise ValueError(f"two sources share a name ({names}); name each model differently "
                         "(e.g. probe_model(..., name=..., compare_name=...))")
    t0 = time.perf_counter()
    ds, context, stride = _load(data, cfg)
    lens = any(getattr(s, "objective", None) is not None for s in sources)
    horizon = max(cfg.horizons) if (lens or any(t in ("forecast", "auto")
                                                for t in cfg.tasks)) else 0
    win = sample_windows(ds, context, horizon, stride, cfg.max_windows, cfg.seeds[0],
                         cfg.targets)
    tasks = resolve_tasks(cfg.tasks, win, ds.attrs.get("name", "dataset"))
    for extra, wanted in (("lens", lens), ("series_target", win.targets),
                          ("step_target", win.step_targets)):
        if wanted and extra not in tasks:  # named targets always run
            tasks.append(extra)
    if not tasks:
        raise ValueError("no task applies to this dataset; name tasks in probe.tasks to see "
                         "what each one needs")
    entries = _build_entries(sources, win, cfg, "impute" in tasks)
    optimum_of = _optimum_fn(ds, win, cfg)
    records, optimum = [], []
    for seed in cfg.seeds:
        split = split_windows(ds, win, cfg, seed)
        scorer = Scorer(win, split, cfg, seed)
        for e in entries:
            feats = e.feats or e.source.extract(win.x, fit_rows=split.train)
            ctx = Context(win, feats, split, cfg, e.source.instance_scaled,
                          lambda f, causal=e.source.causal: optimum_of(f, causal))
            for name in tasks:
                task = TASKS[name]
                if task.dense and (e.source.series_only or not feats.dense):
                    continue
                for problem in task.build(ctx):
                    own = scorer.records(e.name, problem, solve(problem, cfg), optimum)
                    records += own
                    records += _extra_controls(e, problem, own, cfg, scorer, sources, ctx)
    result = records_to_dataset(records, optimum, cfg)
    diags = [_diag_dataset(e.name, e.feats) for e in entries if e.feats is not None]
    result = xr.merge([result, *diags], join="outer", compat="no_conflicts")
    if cfg.diagnostics:  # CKA across models: twins, and the first source against the others
        result = compare_cka(twin_cka(result, entries), entries, [s.name for s in sources])
    config_yaml = _yaml({"probe": dataclasses.asdict(cfg),
                         "sources": [s.name for s in sources],
                         "data": ds.attrs.get("name", "dataset")})
    result = annotate(finalize(result, config_yaml=config_yaml), cfg.ci)
    result.attrs["probe_seconds"] = round(time.perf_counter() - t0, 2)
    return result


def _extra_controls(entry: _Entry, problem: Problem, own: list[dict], cfg: ProbeConfig,
                    scorer: Scorer, sources: list, ctx: Context) -> list[dict]:
    """Permuted-label refits (main sources and their untrained twins, each under its own
    name), the MLP control (main sources, on the layer selected on val) and the control task
    of classification problems (selectivity; main sources)."""
    out = []
    main = entry.source in sources
    if "selectivity" in cfg.controls and main:
        ctl = control_task(problem, ctx, scorer.seed)
        if ctl is not None:
            out += scorer.records(entry.name, ctl, solve(ctl, cfg), pvalues=False)
    fitted = problem.kind in ("regress", "classify")
    if "permuted" in cfg.controls and fitted and (main or entry.name.endswith("/untrained")):
        perm = _permuted_problem(problem, scorer.seed)
        out += scorer.records(f"{entry.name}/permuted", perm, solve(perm, cfg))
    if "mlp" in cfg.controls and fitted and main:
        layer = _selected_layer(own, problem)
        if layer is not None:
            out += scorer.records(f"{entry.name}/mlp", problem,
                                  solve_mlp(problem, layer, scorer.seed), pvalues=False)
    return out


def _optimum_fn(ds: xr.Dataset, win: Windows, cfg: ProbeConfig):
    """Kalman estimates on the probe's own windows (LGSSM data only), cached per token grid:
    the filter for causal sources, the smoother for bidirectional ones."""
    if not all(k in ds for k in ("A", "Cobs", "Q", "R", "m0", "P0")) or win.latent is None:
        return lambda feats, causal: None
    from tslayers.data.kalman import window_estimates

    systems = win.label if (win.label is not None and "system" in ds.dims) else None
    est = window_estimates(ds, win.x, systems, sorted(set(cfg.horizons)))
    cache: dict = {}

    def optimum(feats: Features, causal: bool) -> dict:
        key = (tuple(feats.token_end.tolist()), causal)
        if key not in cache:
            states = est["filtered" if causal else "smoothed"]
            idx = np.clip(feats.token_end, 0, None)
            cache[key] = {"latent": states[:, idx].reshape(-1, states.shape[-1]),
                          "forecast": est["forecast"]}
        return cache[key]

    return optimum


def _diag_dataset(name: str, feats: Features) -> xr.Dataset:
    layers = feats.layers
    ds = xr.Dataset(coords={"model": [name], "layer": layers, "layer2": layers})
    ds["layer_name"] = (("model", "layer"), np.array([feats.names], dtype=object))
    if not feats.diag:
        return ds
    for key in ("effective_rank", "norm_outlier_frac", "mean_token_sim"):
        ds[key] = (("model", "layer"), feats.diag[key][None])
    ds["cka"] = (("model", "layer", "layer2"), feats.diag["cka"][None])
    if feats.n_heads and feats.attn:
        heads = stack_heads(feats.attn, layers, feats.n_heads)
        ds = ds.assign_coords(head=np.arange(feats.n_heads))
        for key in ATTN_FIELDS:
            ds[key] = (("model", "layer", "head"), heads[key][None])
    return ds


def _yaml(obj) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False)


# ------------------------------------------------------------------------------ wrappers
def _options(cfg: ProbeConfig) -> ExtractOptions:
    return ExtractOptions(batch_size=cfg.batch_size, device=cfg.device,
                          diagnostics=cfg.diagnostics, outlier_factor=cfg.outlier_factor,
                          progress=cfg.progress)


def probe_encoder(encoder: torch.nn.Module, data, config: ProbeConfig | None = None, *,
                  model_name: str, objective=None) -> xr.Dataset:
    """Probe a :class:`~tslayers.model.TemporalEncoder` (``objective`` with ``decode`` adds
    the forecast lens)."""
    cfg = config or ProbeConfig()
    return probe(EncoderSource(encoder, model_name, objective=objective, pool=cfg.pool,
                               options=_options(cfg)), data, cfg)


def probe_model(model: torch.nn.Module, data, taps: str | list[str], config: ProbeConfig |
                None = None, *, name: str = "model", targets=None,
                compare: torch.nn.Module | None = None, compare_taps: str | list[str] | None = None,
                compare_name: str = "compare", **source_kw) -> xr.Dataset:
    """Probe any ``nn.Module`` tapped by module-name globs (see :class:`ModuleSource`).

    ``data``: a dataset name, an ``xr.Dataset`` or an array of inputs, (N, T) or (N, T, C).
    ``targets``: ``{name: array}`` probe targets, per series (N,) / (N, K) or per time step
    (N, T) / (N, T, K) (classes for integer or string values), or names of dataset variables.
    ``compare``: a second model (taps ``compare_taps``, default ``taps``; same ``source_kw``)
    probed on the same windows with the same tasks and controls, so its curves sit beside the
    first model's and ``cka_compare`` says which of its layers resemble which.
    """
    cfg = config or ProbeConfig()
    data, names = _with_targets(data, targets)
    if names:
        cfg = dataclasses.replace(cfg, targets=[*cfg.targets, *names])
    sources = [ModuleSource(model, taps, name, options=_options(cfg), **source_kw)]
    if compare is not None:
        try:
            sources.append(ModuleSource(compare, compare_taps or taps, compare_name,
                                        options=_options(cfg), **source_kw))
        except ValueError as err:
            raise ValueError(f"compared model '{compare_name}': {err}; its taps are "
                             "compare_taps (--compare-taps), default the first model's") from None
    return probe(sources, data, cfg)


def _with_targets(data, targets) -> tuple[object, list[str]]:
    """Data with the user's target arrays attached, and the names to probe."""
    from tslayers.data import add_targets, from_numpy

    if isinstance(data, (np.ndarray, torch.Tensor)):
        x = data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else data
        data = from_numpy(x, name="arrays")
    if targets is None:
        return data, []
    if isinstance(targets, str):
        targets = [targets]
    if not isinstance(targets, dict):
        return data, list(targets)
    if not isinstance(data, xr.Dataset):
        raise ValueError("target arrays need the data as arrays or an xr.Dataset (so rows "
                         "line up); with a dataset name, give targets as variable names")
    return add_targets(data, targets), list(targets)


@dataclass
class ProbeSource:
    """A dataset to probe on, with the tasks to run there. Tasks of different sources must not
    overlap (e.g. forecasting on LGSSM for the Kalman bound, classification on the mixture)."""

    data: DataConfig = field(default_factory=DataConfig)
    tasks: list[str] = field(default_factory=lambda: ["auto"])
    label: str | None = None  # tasks are recorded as "<task>@<label>" (one task, two datasets)
    targets: list[str] = field(default_factory=list)  # this dataset's own probe targets


def probe_sources(encoder: torch.nn.Module, sources: list[ProbeSource], config: ProbeConfig,
                  *, model_name: str, objective=None) -> xr.Dataset:
    """Probe one encoder on every dataset with that dataset's tasks; one merged Dataset."""
    from .results import merge_results

    parts = []
    for source in sources:
        cfg = dataclasses.replace(config, tasks=list(source.tasks),
                                  targets=[*config.targets, *source.targets])
        lens = objective if any(t in ("auto", "forecast") for t in source.tasks) else None
        part = probe_encoder(encoder, source.data, cfg, model_name=model_name, objective=lens)
        if source.label:
            part = part.assign_coords(task=[f"{t}@{source.label}" for t in part["task"].values])
        parts.append(part)
    return parts[0] if len(parts) == 1 else merge_results(parts)
