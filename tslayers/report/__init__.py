"""Results -> markdown tables and PNG figures (``tslayers report RESULTS``)."""

from .alignment import alignment_markdown
from .render import (
    best_layer,
    best_vs_last,
    layer_profile,
    matching_tasks,
    primary_metric,
    render_report,
    report_command,
)

__all__ = ["alignment_markdown", "best_layer", "best_vs_last", "layer_profile", "matching_tasks",
           "primary_metric", "render_report", "report_command"]
