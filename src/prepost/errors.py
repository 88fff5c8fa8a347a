"""The project's own error types.

Every error names the file, the field (or value) and what was expected, so that a user can fix the
input without reading code. Readers raise these and never let a bare KeyError/IndexError escape.
"""

from __future__ import annotations

__all__ = ["BIDSError", "ConfigError", "FitError", "InputError", "PrepostError",
           "ValidationReport"]


class PrepostError(Exception):
    """Base class of every error the package raises on purpose."""


class InputError(PrepostError, ValueError):
    """An input file or value is wrong.

    Parameters
    ----------
    file : str or path-like or None
        The file at fault (None for a config value or in-memory input).
    field : str or None
        The field, column, key or value at fault.
    expected : str
        What was expected instead.
    found : str or None
        What was found, if it helps.
    """

    def __init__(self, file=None, field=None, expected="", found=None):
        self.file = None if file is None else str(file)
        self.field = field
        self.expected = expected
        self.found = found
        parts = []
        if self.file:
            parts.append(f"{self.file}")
        if field:
            parts.append(f"field '{field}'")
        msg = ": ".join(parts) if parts else "input"
        msg += f": expected {expected}"
        if found is not None:
            msg += f", found {found}"
        super().__init__(msg)


class BIDSError(InputError):
    """A BIDS dataset problem (missing file, missing or inconsistent sidecar field)."""


class ConfigError(InputError):
    """A configuration value is wrong."""


class ValidationReport(PrepostError):
    """Several input problems found at once; each is listed on its own line."""

    def __init__(self, problems):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} input problem(s) found:\n{lines}")


class FitError(PrepostError):
    """A model fit failed; callers flag it in their tables instead of dropping it."""
