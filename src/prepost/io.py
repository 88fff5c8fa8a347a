"""Atomic writers: a crash mid-write never leaves a file that looks complete."""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # keep the full suffix (e.g. .nii.gz) so writers that dispatch on it still work
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix="".join(path.suffixes), dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp creates 0600; give the file the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(obj, path):
    """Write ``obj`` as sorted, indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_default) + "\n")


def write_tsv(df, path, **kwargs):
    """Write a DataFrame as TSV (no index, 'n/a' for missing), atomically.

    A ``.gz`` path is compressed with a fixed header (no name, no time stamp) so that identical
    tables give identical bytes.
    """
    kwargs.setdefault("index", False)
    kwargs.setdefault("na_rep", "n/a")
    with atomic_path(path) as tmp:
        if str(path).endswith(".gz"):
            text = df.to_csv(sep="\t", **kwargs).encode()
            with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                       mtime=0, compresslevel=6) as gz:
                gz.write(text)
        else:
            df.to_csv(tmp, sep="\t", **kwargs)


def write_nifti(img, path):
    """Save a nibabel image atomically."""
    with atomic_path(path) as tmp:
        img.to_filename(str(tmp))


def _default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_tsv(path, *, what="a tab-separated table", required=(), numeric=None, index_col=None):
    """Read a TSV written by a stage or a user, turning every failure into an InputError.

    Parameters
    ----------
    path : path-like
    what : str
        What the file should be, for the message.
    required : sequence of str
        Columns that must be present.
    numeric : sequence of str, 'all' or None
        Columns whose values must be numbers (or missing); 'all' for every column.
    index_col : str or None
        A required column used as the index.
    """
    import pandas as pd

    from .errors import InputError

    path = Path(path)
    if not path.exists():
        raise InputError(path, None, what, "no such file")
    try:
        df = pd.read_csv(path, sep="\t", na_values=["n/a"])
    except Exception as exc:  # pandas raises several parser/decoding error types
        raise InputError(path, None, what, f"an unreadable table ({type(exc).__name__}: {exc})") \
            from None
    need = list(required) + ([index_col] if index_col else [])
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise InputError(path, missing[0], f"{what} with column(s) {need}",
                         f"columns {list(df.columns)}")
    cols = [c for c in df.columns if c != index_col] if numeric == "all" else list(numeric or [])
    for col in cols:
        vals = pd.to_numeric(df[col], errors="coerce")
        bad = vals.isna() & df[col].notna()
        if bad.any():
            raise InputError(path, str(col), "numbers (or n/a)",
                             f"{df[col][bad].iloc[0]!r} on row {int(bad.to_numpy().argmax()) + 1}")
        df[col] = vals
    if index_col:
        df = df.set_index(index_col)
    return df


def read_json_object(path, what="a JSON object"):
    """Read a JSON file that must hold an object; every failure is an InputError."""
    from .errors import InputError

    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, None, what, "no such file") from None
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InputError(path, None, what, f"unreadable JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise InputError(path, None, what, type(obj).__name__)
    return obj
