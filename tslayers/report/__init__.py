"""Results -> markdown, HTML and PNG figures (``tslayers report RESULTS``).

The numbers come from :mod:`tslayers.probing.analysis`; this package only renders them:
``markdown`` (text), ``figures`` (matplotlib, one look from ``style``), ``html`` (one
self-contained file), ``render`` (the folder), ``alignment`` (alignment runs' section).
"""

from .alignment import alignment_markdown
from .figures import build_figures
from .markdown import report_markdown
from .render import render_report, report_command, summary_lines

__all__ = ["alignment_markdown", "build_figures", "render_report", "report_command",
           "report_markdown", "summary_lines"]
