"""Showing a run: PNG plots (curves, confusion matrix, reliability, sample predictions) and
one self-contained report.html with everything inlined."""

from training.report.html import write_report_html
from training.report.plots import write_plots

__all__ = ["write_plots", "write_report_html"]
