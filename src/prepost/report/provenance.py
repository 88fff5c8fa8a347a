"""Provenance of a report: a hash of the configuration and checksums of every input file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

__all__ = ["canonical_json", "config_hash", "sha256_file", "file_checksums"]


def canonical_json(obj):
    """JSON with sorted keys, no whitespace and ASCII only: equal configs give equal bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      default=str)


def config_hash(config):
    """sha256 (hex) of :func:`canonical_json` of ``config``."""
    return hashlib.sha256(canonical_json(config).encode("ascii")).hexdigest()


def sha256_file(path, chunk=1 << 20):
    """sha256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def file_checksums(paths):
    """Table of ``file``, ``bytes`` and ``sha256`` of each existing path (sorted, unique)."""
    rows = []
    for p in sorted(dict.fromkeys(str(p) for p in paths)):
        q = Path(p)
        if q.is_file():
            rows.append({"file": p, "bytes": q.stat().st_size, "sha256": sha256_file(q)})
    return pd.DataFrame(rows, columns=["file", "bytes", "sha256"])
