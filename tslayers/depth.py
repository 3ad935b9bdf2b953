"""``tslayers depth``: the same study at several encoder depths, one resumable study per depth.

Why: the intermediate-layer peak reported for vision encoders belongs to *deep* models; this
runner asks whether a time-series encoder's selected - last gap grows with depth L.

Layout under ``out``::

    L02/, L04/, ...   one ``tslayers run`` study folder per depth (pretrain, probe, report
                      stages; each resumes on its own, so an interrupted sweep restarts where
                      it stopped)
    report/           results.nc (every depth merged), depth.md, depth.png,
                      depth_families.csv, depth_tasks.csv
    timing.json       seconds recorded by every stage, per depth and kind

Naming in the merged results: the model of objective ``forecast`` at depth 4 is
``forecast@L4`` and its untrained twin ``forecast@L4/untrained``; the ``model`` dimension
carries three coordinates, ``depth`` (int), ``objective`` and ``control`` ("" or
"untrained"). This keeps every per-model reader (:func:`~tslayers.probing.analysis.annotate`,
``layer_table``, the standard report) working unchanged, because a depth-L model simply has no
scores above layer L, while :func:`unstack_depth` turns ``model`` into ``objective`` x
``control`` x ``depth`` dimensions.

Every depth sees the same pretraining tokens: steps, batch size and context are those of
``study``; only ``encoder.n_layers`` changes. Alignment is not part of this study.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from tslayers.config import load_config, save_config
from tslayers.io import atomic_write
from tslayers.stages import MARKER, fingerprint, run_stage
from tslayers.study import StudyConfig

_DEPTH_TAG = re.compile(r"^(?P<objective>[^/@]+)@L(?P<depth>\d+)(?P<rest>/.*)?$")


@dataclass
class DepthStudyConfig:
    """A depth sweep: ``study`` is run once per entry of ``depths`` (its ``encoder.n_layers``
    and ``out`` are replaced per depth; everything else, tokens included, is shared)."""

    out: str = "runs/study/depth"
    depths: list[int] = field(default_factory=lambda: [2, 4, 8, 12, 16])
    study: StudyConfig = field(default_factory=StudyConfig)
    # torch intra-op threads during the run (None: torch's default). Small CPU models gain
    # little from a second thread, and on a busy machine its barrier spinning cost ~10x
    # (benchmarks/results/depth.md)
    threads: int | None = None

    def __post_init__(self) -> None:
        if not self.depths or any(d < 1 for d in self.depths):
            raise ValueError(f"depths must be a non-empty list of integers >= 1, got "
                             f"{self.depths}")
        if len(set(self.depths)) != len(self.depths):
            raise ValueError(f"depths must be distinct, got {self.depths}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or null, got {self.threads}")
        if self.study.align:
            raise ValueError("study.align must be empty: the depth study compares pretrained "
                             "encoders only (run alignments with `tslayers run`)")


def depth_dir(out: Path, depth: int) -> Path:
    return out / f"L{depth:02d}"


def depth_name(model: str, depth: int) -> str:
    """``forecast`` -> ``forecast@L4``; ``forecast/untrained`` -> ``forecast@L4/untrained``."""
    base, sep, rest = model.partition("/")
    return f"{base}@L{depth}{sep}{rest}"


def parse_depth_name(model: str) -> tuple[str, int, str] | None:
    """``forecast@L4/untrained`` -> ("forecast", 4, "/untrained"); None for other names."""
    m = _DEPTH_TAG.match(model)
    return (m["objective"], int(m["depth"]), m["rest"] or "") if m else None


def tag_depth(ds: xr.Dataset, depth: int) -> xr.Dataset:
    """Rename one depth's models to ``<objective>@L<depth>[/control]``."""
    return ds.assign_coords(model=[depth_name(str(m), depth) for m in ds["model"].values])


def add_depth_coords(ds: xr.Dataset) -> xr.Dataset:
    """Attach ``depth``, ``objective`` and ``control`` ("" for the trained model, else e.g.
    "untrained") coordinates along ``model``, read from the names."""
    parsed = [parse_depth_name(str(m)) for m in ds["model"].values]
    if any(p is None for p in parsed):
        bad = [str(m) for m, p in zip(ds["model"].values, parsed) if p is None]
        raise ValueError(f"models without a depth tag: {bad}")
    return ds.assign_coords(depth=("model", np.array([p[1] for p in parsed], dtype=np.int64)),
                            objective=("model", np.array([p[0] for p in parsed], dtype=object)),
                            control=("model", np.array([p[2].lstrip("/") for p in parsed],
                                                       dtype=object)))


def unstack_depth(ds: xr.Dataset) -> xr.Dataset:
    """``model`` -> separate ``objective``, ``control`` and ``depth`` dimensions, e.g.
    ``unstack_depth(ds)["gap"].sel(objective="forecast", control="")`` has dims (task, metric,
    seed, depth). Depths without a model of a kind are NaN."""
    return ds.set_index(model=["objective", "control", "depth"]).unstack("model")


def merge_depths(files: dict[int, Path]) -> xr.Dataset:
    """Per-depth merged results -> one results Dataset over every depth (re-annotated)."""
    from tslayers.probing import merge_results, read_results

    tagged = [tag_depth(read_results(path), depth) for depth, path in sorted(files.items())]
    return add_depth_coords(merge_results(tagged))


def _finished(stage: Path) -> str:
    """The fingerprint recorded by a finished stage ('' if none): the merged report is redone
    whenever any depth's report was."""
    marker = stage / MARKER
    return json.loads(marker.read_text()).get("fingerprint", "") if marker.is_file() else ""


def _log(msg: str) -> None:
    print(msg, flush=True)


def run_depth_study(config: DepthStudyConfig, out_dir: str | Path | None = None) -> Path:
    """Run (or resume) the study at every depth, then the merged depth report; return the
    report folder."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(config.threads or before)
    try:
        return _run_depths(config, Path(out_dir or config.out))
    finally:
        torch.set_num_threads(before)


def _run_depths(config: DepthStudyConfig, out: Path) -> Path:
    from tslayers.probing import write_results
    from tslayers.report.depth import render_depth_report
    from tslayers.study import run_study

    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    files: dict[int, Path] = {}
    for i, depth in enumerate(config.depths, 1):
        _log(f"== depth {depth} ({i}/{len(config.depths)}) ==")
        where = depth_dir(out, depth)
        study = dataclasses.replace(
            config.study, out=str(where),
            encoder=dataclasses.replace(config.study.encoder, n_layers=depth))
        files[depth] = run_study(study, where) / "results.nc"

    def do_report(d: Path) -> None:
        ds = merge_depths(files)
        write_results(ds, d / "results.nc")
        render_depth_report(ds, d)

    key = fingerprint({"depths": {str(k): _finished(p.parent) for k, p in files.items()}})
    run_stage("depth report", out / "report", key, do_report, _log)
    seconds = stage_seconds(out)
    atomic_write(out / "timing.json", json.dumps(seconds, indent=1))
    _log(f"stage time recorded so far: {sum(seconds.values()) / 60:.1f} min "
         f"({', '.join(f'{k} {v / 60:.1f}' for k, v in seconds.items())}); "
         f"depth report: {out / 'report' / 'depth.md'}")
    return out / "report"


def stage_seconds(out: Path) -> dict[str, float]:
    """Seconds recorded by every finished stage under ``out``, summed per depth folder and
    kind ("L04/pretrain", ..., "report"): the compute a full run took, even across resumes."""
    totals: dict[str, float] = {}
    for marker in sorted(out.rglob(MARKER)):
        parts = marker.relative_to(out).parts[:-1]
        if any(".stale-" in p or ".damaged-" in p for p in parts):  # moved aside, not used
            continue
        kind = "/".join(parts[:2]) if parts[0].startswith("L") else parts[0]
        seconds = json.loads(marker.read_text()).get("seconds", 0.0)
        totals[kind] = round(totals.get(kind, 0.0) + float(seconds), 2)
    return totals


def depth_command(args: Any) -> int:
    """``tslayers depth [CONFIG] [key=value ...] [--out DIR]``."""
    config = load_config(DepthStudyConfig, args.config, args.overrides)
    report = run_depth_study(config, args.out)
    md = report / "depth.md"
    if md.is_file():
        print(md.read_text())
    return 0
