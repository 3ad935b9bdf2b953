"""``tslayers run``: the whole layerwise study from one config, resumable stage by stage.

Stages, each a folder under ``out`` guarded by :mod:`tslayers.stages` (skipped when intact):

1. ``pretrain/<objective>-s<seed>``: one encoder per objective and pretraining seed;
2. ``probe/<objective>-s<seed>``: every layer on every task family (+ controls, diagnostics);
3. ``align/<kind>-<objective>-s<seed>``: each configured alignment for every pretraining seed,
   re-probed before and after (the objective is chosen on validation series);
4. ``report/``: the merged results file and the markdown + PNG report.

Pretraining seeds become the ``seed`` dimension of the results, so intervals over seeds in the
report are intervals over pretraining runs (and their probe splits).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tslayers.align.config import AlignConfig
from tslayers.config import load_config, save_config, to_dict
from tslayers.data import DataConfig
from tslayers.io import atomic_write, launch_rank, lock_output
from tslayers.model import EncoderConfig
from tslayers.objectives import ObjectiveConfig
from tslayers.probing import ProbeConfig, ProbeSource, probe_sources
from tslayers.stages import fingerprint, run_stage, stage_inputs_hash
from tslayers.training import TrainConfig


@dataclass
class StudyConfig:
    """A whole study: data, encoder, objectives x seeds, probing, alignments."""

    out: str = "runs/study"
    seeds: list[int] = field(default_factory=lambda: [0])
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    objectives: list[ObjectiveConfig] = field(
        default_factory=lambda: [ObjectiveConfig(name=n)
                                 for n in ("forecast", "reconstruct", "contrastive", "jepa")])
    train: TrainConfig = field(default_factory=TrainConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    probe_data: list[ProbeSource] = field(default_factory=list)  # empty: probe on ``data``
    align: list[AlignConfig] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.probe_data:
            self.probe_data = [ProbeSource(data=self.data, tasks=list(self.probe.tasks))]
        names = [o.name for o in self.objectives]
        if len(set(names)) != len(names):
            raise ValueError(f"study.objectives names must be unique, got {names}")
        if not self.seeds:
            raise ValueError("study.seeds must name at least one seed")
        for spec in self.align:
            for what in ("objective", "teacher_objective"):
                value = getattr(spec, what)
                if value not in (None, "auto") and value not in names:
                    raise ValueError(f"align {what} '{value}' is not among the study's "
                                     f"objectives {names}")


def _log(msg: str) -> None:
    print(msg, flush=True)


def run_study(config: StudyConfig, out_dir: str | Path | None = None) -> Path:
    """Run every stage that is not already done (an interrupted pretraining continues from its
    checkpoint); return the report folder. The output folder is locked while it runs."""

    out = Path(out_dir or config.out)
    out.mkdir(parents=True, exist_ok=True)
    with lock_output(out, "tslayers run"):
        if launch_rank() == 0:
            save_config(config, out / "config.yaml")
        return _run_stages(config, out)


def _run_stages(config: StudyConfig, out: Path) -> Path:
    from tslayers.probing import merge_results, read_results

    n_stages = len(config.objectives) * len(config.seeds) * 2 + \
        len(config.align) * len(config.seeds) + 1
    step = 0

    def stage_name(label: str) -> str:
        nonlocal step
        step += 1
        return f"{step}/{n_stages} {label}"

    probe_files: dict[str, list[Path]] = {}
    for obj in config.objectives:
        for seed in config.seeds:
            probe_files.setdefault(obj.name, []).append(
                _pretrain_and_probe(config, out, obj, seed, stage_name))
    probed = {name: merge_results([read_results(p) for p in paths])
              for name, paths in probe_files.items()}
    align_files = [_align_stage(spec, config, out, probed, probe_files, seed, stage_name)
                   for spec in config.align for seed in config.seeds]
    inputs = [p for paths in probe_files.values() for p in paths] + align_files
    report_key = fingerprint({"inputs": [str(p) for p in inputs],
                              "hashes": stage_inputs_hash(inputs)})
    run_stage(stage_name("report"), out / "report", report_key,
              lambda d: _report(d, list(probed.values()), align_files), _log)
    _log(f"report: {out / 'report' / 'report.md'}")
    return out / "report"


def _pretrain_and_probe(config: StudyConfig, out: Path, obj, seed: int, stage_name) -> Path:
    """The pretrain stage of one objective and seed, then its probe stage; the results path."""
    from tslayers.objectives import load_objective
    from tslayers.probing import write_results
    from tslayers.training import PretrainConfig, can_resume, pretrain

    from .model import TemporalEncoder

    tag = f"{obj.name}-s{seed}"
    train = dataclasses.replace(config.train, seed=seed)
    pre_dir = out / "pretrain" / tag
    pre_key = fingerprint({"data": to_dict(config.data), "encoder": to_dict(config.encoder),
                           "objective": to_dict(obj), "train": to_dict(train)})
    pre_cfg = PretrainConfig(data=dataclasses.replace(config.data),
                             encoder=dataclasses.replace(config.encoder), objective=obj,
                             train=dataclasses.replace(train, resume="auto"), out=str(pre_dir))
    run_stage(stage_name(f"pretrain {tag}"), pre_dir, pre_key,
              lambda d: pretrain(pre_cfg, out_dir=d), _log,
              resumable=lambda d: can_resume(d, pre_cfg), all_ranks=True)
    probe_cfg = dataclasses.replace(config.probe, seeds=[seed])
    probe_key = fingerprint({"pretrain": stage_inputs_hash([pre_dir / "encoder",
                                                            pre_dir / "objective"]),
                             "probe": to_dict(probe_cfg), "sources": to_dict(config.probe_data)})

    def do_probe(d: Path) -> None:
        encoder = TemporalEncoder.from_pretrained(pre_dir).eval()
        objective = load_objective(pre_dir / "objective", encoder.config)
        write_results(probe_sources(encoder, config.probe_data, probe_cfg, model_name=obj.name,
                                    objective=objective), d / "results.nc")

    run_stage(stage_name(f"probe {tag}"), out / "probe" / tag, probe_key, do_probe, _log)
    return out / "probe" / tag / "results.nc"


def _report(d: Path, probed: list, align_files: list[Path]) -> None:
    """The merged results file, the alignment summaries and the report (markdown + figures)."""
    from tslayers.probing import merge_results, read_results, write_results
    from tslayers.report import render_report

    results = merge_results([*probed, *(read_results(p) for p in align_files)])
    write_results(results, d / "results.nc")
    summaries = {p.parent.name: json.loads((p.parent / "summary.json").read_text())
                 for p in align_files}
    if summaries:
        atomic_write(d / "alignment.json", json.dumps(summaries, indent=2))
    render_report(results, d)


def _align_stage(spec: AlignConfig, config: StudyConfig, out: Path, probed: dict,
                 probe_files: dict[str, list[Path]], seed: int, stage_name) -> Path:
    from tslayers.align import align
    from tslayers.probing.analysis import largest_gap_model

    objective = spec.objective
    if objective == "auto":
        merged = merge_results_of(probed)
        objective = largest_gap_model(merged, list(probed), spec.target_task)
    i = config.seeds.index(seed)
    align_cfg = dataclasses.replace(
        spec, objective=objective, checkpoint=str(out / "pretrain" / f"{objective}-s{seed}"),
        results=str(probe_files[objective][i]), name=objective,
        data=dataclasses.replace(config.data), dynamics=dataclasses.replace(spec.dynamics),
        stage1=dataclasses.replace(spec.stage1, seed=seed),
        stage2=dataclasses.replace(spec.stage2, seed=seed),
        probe=dataclasses.replace(config.probe, seeds=[seed]), probe_data=config.probe_data,
        reuse_before=True, **_seed_references(spec, out, probe_files, seed, i))
    tag = f"{spec.kind}-{objective}-s{seed}"
    key = fingerprint({"align": to_dict(align_cfg),
                       "inputs": stage_inputs_hash([Path(align_cfg.checkpoint) / "encoder",
                                                    Path(align_cfg.results)])})
    run_stage(stage_name(f"align {tag}"), out / "align" / tag, key,
              lambda d: align(align_cfg, out_dir=d), _log)
    return out / "align" / tag / "results.nc"


def _seed_references(spec: AlignConfig, out: Path, probe_files: dict[str, list[Path]],
                     seed: int, i: int) -> dict[str, Any]:
    """The same seed's learned teacher (``teacher_objective``) and, for forecast alignment, the
    forecasting objective whose own head the aligned decoder is compared with."""
    refs: dict[str, Any] = {}
    t = spec.teacher_objective
    if t:
        refs.update(teacher_checkpoint=str(out / "pretrain" / f"{t}-s{seed}"),
                    teacher_results=str(probe_files[t][i]), teacher_name=t)
    if spec.kind == "forecast" and spec.forecast_reference is None and "forecast" in probe_files:
        refs["forecast_reference"] = str(out / "pretrain" / f"forecast-s{seed}")
    return refs


def merge_results_of(probed: dict[str, Any]):
    from tslayers.probing import merge_results

    return merge_results(list(probed.values()))


def run_command(args: Any) -> int:
    from tslayers.report import summary_lines

    config = load_config(StudyConfig, args.config, args.overrides)
    report = run_study(config, args.out)
    print(summary_lines(report / "report.md"))
    return 0
