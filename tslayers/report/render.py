"""``render_report``: a results file (or Dataset) -> ``report.md``, ``report.html`` (one
self-contained file), ``layers.csv`` and PNG figures in one folder, with the alignment section
when ``alignment.json`` sits beside the results. The same results give the same markdown
wherever the report is written, so a study's report can be regenerated from its results file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import xarray as xr

from tslayers.io import atomic_write
from tslayers.probing.results import read_results, validate_results

from .alignment import alignment_markdown
from .figures import write_figures
from .html import markdown_to_html
from .markdown import report_markdown

ALIGNMENT_FILE = "alignment.json"


def _load(results: str | Path | xr.Dataset) -> xr.Dataset:
    if isinstance(results, xr.Dataset):
        return validate_results(results)
    return read_results(results)


def _alignment(results: str | Path | xr.Dataset, ds: xr.Dataset, out: Path) -> str:
    """The alignment section from ``alignment.json`` beside a results file (copied into
    ``out``), or in ``out`` when the results come as a Dataset; "" when there is none."""
    source = out / ALIGNMENT_FILE if isinstance(results, xr.Dataset) else \
        Path(results).parent / ALIGNMENT_FILE
    if not source.is_file():
        return ""
    summaries = json.loads(source.read_text())
    if source.resolve() != (out / ALIGNMENT_FILE).resolve():
        shutil.copyfile(source, out / ALIGNMENT_FILE)
    return alignment_markdown(summaries) if summaries else ""


def render_report(results: str | Path | xr.Dataset, out_dir: str | Path) -> Path:
    """Write ``report.md``, ``report.html``, ``layers.csv`` and the figures into ``out_dir``;
    return the markdown's path."""
    ds = _load(results)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = [p.stem for p in write_figures(ds, out)]
    text, table = report_markdown(ds, figures, _alignment(results, ds, out))
    md = atomic_write(out / "report.md", text)
    atomic_write(out / "layers.csv", table.to_csv(index=False))
    atomic_write(out / "report.html", markdown_to_html(text, out))
    return md


def report_command(args) -> int:
    """``tslayers report RESULTS [--out DIR]``: the full report (alignment included) beside
    the results file, or in DIR."""
    path = Path(args.results)
    out = Path(args.out) if getattr(args, "out", None) else path.parent
    md = render_report(path, out)
    print(f"report written to {md} and {md.with_suffix('.html')}")
    return 0


def summary_lines(md: Path, limit: int = 30) -> str:
    """The report's summary section (at most ``limit`` lines) and where the full report is."""
    lines = md.read_text().splitlines() if md.is_file() else []
    start = next((i for i, line in enumerate(lines) if line.startswith("## Summary")), 0)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
               len(lines))
    shown = lines[start:end][:limit]
    more = " (summary truncated)" if end - start > limit else ""
    return "\n".join([*shown, f"full report{more}: {md} (and {md.with_suffix('.html').name})"])
