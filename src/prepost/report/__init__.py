"""The study report: one self-contained HTML page (figures embedded as base64 PNG).

Modules
-------
figures
    Matplotlib/nilearn figures (Agg backend): QC, FC matrices, paired plots, gradients, TACs,
    change scatter plots and a glass brain of parcel-level changes.
methods
    A methods paragraph generated from the configuration, software versions and citations.
provenance
    Configuration hash (sha256 of canonical JSON) and input checksums.
html
    :func:`build_report` assembles the page from the statistics stage's tables, one function per
    section (cohort and QC, hypotheses, connectivity and NBS, paired plots, gradients, PET
    time-activity curves, statistics, multimodal, methods, provenance).
stage
    :func:`~prepost.report.stage.output_paths`: the report's file names.
"""

__all__ = ["build_report"]


def __getattr__(name):
    # html and figures import matplotlib, nilearn and the statistics: loaded when the report is
    # built, not when the workflow reads the report's file names while it builds the DAG
    if name == "build_report":
        from prepost.report.html import build_report

        return build_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
