"""The report stage of the workflow: its file names."""

from prepost.paths import derivative

__all__ = ["output_paths"]


def output_paths(results):
    """The report page ``<results>/report/report.html`` (key ``html``) and the ``log`` and
    ``benchmark`` of the job that writes it; ``results`` is the derivatives root."""
    return {"html": derivative(results, "report", ".html", datatype="report"),
            "log": f"{results}/logs/report/report.log",
            "benchmark": f"{results}/benchmarks/report/report.tsv"}
