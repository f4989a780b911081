"""Reports: a self-contained HTML writer and small plots, shared by ``selfsup eval --plot`` and ``selfsup compare``."""

from selfsup.report.audit import audit_chart, format_audit, group_gaps, write_audit_report
from selfsup.report.html import (
    cost_summary,
    fmt_bytes,
    fmt_seconds,
    fmt_si,
    html_image,
    html_kv,
    html_table,
    html_text,
    render_block,
    run_summary,
    write_report,
)
from selfsup.report.plots import (
    ENCODER_LABELS,
    bar_plot,
    embedding_plot,
    encoder_label,
    label_efficiency_plot,
    line_plot,
    scatter_plot,
    tsne_2d,
)

__all__ = ["ENCODER_LABELS", "audit_chart", "bar_plot", "cost_summary", "embedding_plot", "encoder_label", "fmt_bytes",
           "fmt_seconds", "fmt_si", "format_audit", "group_gaps", "html_image", "html_kv", "html_table", "html_text",
           "label_efficiency_plot", "line_plot", "render_block", "run_summary", "scatter_plot", "tsne_2d",
           "write_audit_report", "write_report"]  # fmt: skip
