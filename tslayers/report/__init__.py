"""Results -> markdown tables and PNG figures (``tslayers report RESULTS``).

The numbers come from :mod:`tslayers.probing.analysis`; this package only renders them.
"""

from .alignment import alignment_markdown
from .render import render_report, report_command, report_markdown

__all__ = ["alignment_markdown", "render_report", "report_command", "report_markdown"]
