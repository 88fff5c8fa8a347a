"""participants.tsv columns as formula terms: one mapping used by every statistic.

BIDS only recommends snake_case column names, and real tables have ``Age``, ``Gender`` or
``body weight (kg)``. Every participants.tsv column (except ``participant_id``) becomes a
covariate of the group table under its *formula term* (:func:`formula_term`): camelCase and
capitals split into lower-case words joined by ``_``, any other run of characters that is not a
letter or digit becomes one ``_`` (``Age`` -> ``age``, ``BodyWeight`` -> ``body_weight``,
``body weight (kg)`` -> ``body_weight_kg``). Mixed-model formulas (``stats.mixed.formula``) and
the group table use the terms; the stage logs the mapping and writes it beside the group table
(:func:`covariate_table`).

Typed covariates (:data:`TYPED_COVARIATES`, matched by their term, so also ``Age`` or ``AGE``)
must be numbers >= 0 or ``n/a``.
"""

from __future__ import annotations

import keyword
import re

import pandas as pd

from prepost.errors import InputError

__all__ = ["RESERVED_TERMS", "TYPED_COVARIATES", "covariate_table", "covariate_terms", "formula_term"]

#: Covariates with a known type, by formula term: (description of the value expected, minimum).
TYPED_COVARIATES = {
    "age": ("a number of years >= 0", 0.0),
    "followup_days": ("a number of days >= 0 between baseline and follow-up", 0.0),
}
#: Terms taken by the group table's own columns; a covariate may not map to one of them.
RESERVED_TERMS = ("participant_id", "session", "modality", "atlas", "measure", "region", "value",
                  "flag", "source", "label")
# names formulas call as functions (prepost.stats.group.formula_variables skips them): a column
# with such a name gets a trailing "_" so that the formula sees the data, not the function
_PATSY_NAMES = {"np", "log", "exp", "center", "standardize", "scale", "poly", "bs", "cr"}


def formula_term(name):
    """The formula term of a participants.tsv column name.

    Parameters
    ----------
    name : str
        Column name as written in the file.

    Returns
    -------
    str
        Lower-case snake_case term: camelCase and acronym boundaries split, every run of
        characters other than ASCII letters and digits replaced by one ``_``, leading and
        trailing ``_`` removed. A term starting with a digit gets an ``x_`` prefix; a Python
        keyword (``class``) or a formula function name (``log``, ``scale``) a trailing ``_``. An empty result (a name of punctuation only) is
        ``''``; :func:`covariate_terms` refuses it.
    """
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", str(name).strip())
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s)
    s = re.sub(r"[^A-Za-z0-9]+", "_", s).strip("_").lower()
    if s and s[0].isdigit():
        s = f"x_{s}"
    if keyword.iskeyword(s) or s in _PATSY_NAMES:
        s = f"{s}_"
    return s


def covariate_terms(columns, source=None):
    """Map the covariate columns of participants.tsv to their formula terms.

    Parameters
    ----------
    columns : iterable of str
        Column names of participants.tsv; ``participant_id`` and ``label`` (the label column
        :func:`prepost.bids.read_participants` adds) are not covariates and are left out.
    source : str, optional
        File name used in error messages.

    Returns
    -------
    dict of str to str
        Column name -> term, in column order.

    Raises
    ------
    InputError
        When two columns map to the same term (naming both), a column maps to no term or to a
        term of the group table's own columns (``session``, ``value``, ...).
    """
    terms, seen = {}, {}
    for col in columns:
        if col in ("participant_id", "label"):
            continue
        term = formula_term(col)
        if not term:
            raise InputError(file=source, field=repr(col),
                             expected="a column name with at least one letter or digit")
        if term in RESERVED_TERMS:
            raise InputError(file=source, field=repr(col),
                             expected=f"a covariate name whose formula term is not one of the "
                                      f"group table's columns {list(RESERVED_TERMS)}; rename the column",
                             found=f"term {term!r}")
        if term in seen:
            raise InputError(file=source, field=f"{seen[term]!r}, {col!r}",
                             expected="column names that map to distinct formula terms; rename one",
                             found=f"both map to {term!r}")
        seen[term] = col
        terms[col] = term
    return terms


def covariate_table(participants, source=None):
    """How each participants.tsv column enters the statistics, as a table.

    Parameters
    ----------
    participants : pandas.DataFrame
        participants.tsv as read by :func:`prepost.bids.read_participants`.
    source : str, optional
        File name used in error messages.

    Returns
    -------
    pandas.DataFrame
        Columns ``column`` (name in participants.tsv), ``term`` (name in formulas and in the
        group table), ``kind`` (``numeric`` or ``categorical``: a categorical term enters a
        formula as dummy codes) and ``n_missing`` (``n/a`` cells).
    """
    rows = []
    for col, term in covariate_terms(participants.columns, source).items():
        values = participants[col]
        kind = "numeric" if pd.api.types.is_numeric_dtype(values) else "categorical"
        rows.append({"column": col, "term": term, "kind": kind,
                     "n_missing": int(values.isna().sum())})
    return pd.DataFrame(rows, columns=["column", "term", "kind", "n_missing"])
