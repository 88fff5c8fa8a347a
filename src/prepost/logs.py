"""Logging set-up shared by the workflow's scripts and the command-line tools."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

__all__ = ["setup"]


def setup(log_path=None, level=logging.INFO):
    """Send the package's log records (and warnings) to ``log_path`` and stderr; return the logger."""
    logger = logging.getLogger("prepost")
    logger.setLevel(level)
    logger.handlers.clear()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    for h in handlers:
        h.setFormatter(fmt)
        logger.addHandler(h)
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").handlers = handlers

    def _log_uncaught(exc_type, exc, tb):
        # the rule's log then says why the job failed, not only Snakemake's own output
        logger.error("%s: %s", exc_type.__name__, exc, exc_info=(exc_type, exc, tb))

    sys.excepthook = _log_uncaught
    return logger
