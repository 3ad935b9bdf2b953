"""Results -> markdown tables and PNG figures (``tslayers report RESULTS``)."""

from .render import best_vs_last, render_report, report_command

__all__ = ["best_vs_last", "render_report", "report_command"]
