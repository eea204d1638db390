"""The HTML report: ``figures`` (one builder a question, on ``plot``'s plumbing), ``tables``
(summary and points), ``page`` (sections into one self-contained file) and ``compare`` (before
and after). Reads DataFrames from the store; never imports torch."""

from harness.report.before_after import render_compare
from harness.report.page import SECTIONS, ReportData, load, render, write

__all__ = ["SECTIONS", "ReportData", "load", "render", "render_compare", "write"]
