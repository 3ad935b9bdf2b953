"""The README's quickstart table, regenerated from a study's results file and checked.

    tslayers run configs/quickstart.yaml
    python benchmarks/readme_table.py runs/quickstart/report/results.nc          # print
    python benchmarks/readme_table.py runs/quickstart/report/results.nc --check  # vs README

Per task: each objective's layer selected on validation series, its test score, the margin over
the best control (chosen on validation) with its paired interval, and the gap to the last layer
where that gap's interval excludes 0. ``--check`` exits 1 when README.md's table (between the
``quickstart-table`` markers) differs from the one the results give.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tslayers.probing import layer_table, read_results
from tslayers.probing.analysis import significant

TASKS = ("forecast/h1/last", "forecast/h8/last", "latent", "latent@lorenz", "impute", "classify",
         "regime", "anomaly", "correspondence")
OBJECTIVES = ("forecast", "reconstruct", "contrastive", "jepa")
START, END = "<!-- quickstart-table:start -->", "<!-- quickstart-table:end -->"


def _interval(v: float, lo: float, hi: float) -> str:
    text = f"{v:+.3f} [{lo:+.3f}, {hi:+.3f}]"
    return f"**{text}**" if significant(lo, hi) else text


def table(results: Path) -> str:
    ds = read_results(results)
    t = layer_table(ds, list(OBJECTIVES))
    lines = ["| task (metric) | floor → ceiling | " + " | ".join(OBJECTIVES) + " |",
             "|---|---|" + "---|" * len(OBJECTIVES)]
    for task in TASKS:
        sub = t[t.task == task].set_index("model")
        first = sub.iloc[0]
        ceiling = f"{first.ceiling:.2f}" if first.ceiling == first.ceiling else "–"
        cells = []
        for name in OBJECTIVES:
            r = sub.loc[name]
            cell = f"L{r.selected_layer} {r.score:.3f}; " + _interval(r.vs_control,
                                                                      r.vs_control_lo,
                                                                      r.vs_control_hi)
            if significant(r.gap_lo, r.gap_hi):
                cell += f"; gap to L{r.last_layer} **{r.gap:+.3f} [{r.gap_lo:+.3f}, " \
                        f"{r.gap_hi:+.3f}]**"
            cells.append(cell)
        control = first.best_control.split("/", 1)[1]
        lines.append(f"| {task} ({first.metric}) | {first.floor:.2f} ({control}) → {ceiling} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--check", action="store_true", help="compare with README.md")
    ap.add_argument("--readme", type=Path, default=Path(__file__).parents[1] / "README.md")
    args = ap.parse_args()
    text = table(args.results)
    if not args.check:
        print(text)
        return 0
    readme = args.readme.read_text()
    committed = readme[readme.index(START) + len(START):readme.index(END)].strip()
    if committed == text.strip():
        print("README table matches the results")
        return 0
    print("README table differs from the results:\n" + text, file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
