"""Provenance: the versions of the packages that produced a derivative."""

from __future__ import annotations

from importlib import metadata

__all__ = ["CORE_PACKAGES", "package_versions", "record", "sidecar_path"]

CORE_PACKAGES = ("prepost", "snakemake", "nipype", "nilearn", "nibabel", "numpy", "scipy",
                 "statsmodels", "pandas", "matplotlib", "antspyx")


def package_versions(packages=CORE_PACKAGES):
    """``{name: version}`` of the installed packages (``'not installed'`` when absent)."""
    out = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _jsonable(obj):
    """Params as plain JSON types (Snakemake passes Namedlists and callables)."""
    import math

    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if hasattr(obj, "items"):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if callable(obj):  # no memory address: sidecars stay identical between runs
        return f"<function {getattr(obj, '__name__', type(obj).__name__)}>"
    return str(obj)


def sidecar_path(output):
    """The BIDS sidecar of a derivative: the same name with a .json extension."""
    from pathlib import Path

    p = Path(output)
    name = p.name
    for ext in (".nii.gz", ".tsv.gz", ".tsv", ".nii", ".png", ".html", ".npz", ".txt", ".mat"):
        if name.endswith(ext):
            return p.with_name(name[: -len(ext)] + ".json")
    return p.with_name(name + ".json")


def record(outputs, *, rule, params=None, inputs=None):
    """Add provenance to each output's JSON sidecar: rule, parameters, inputs, package versions.

    An existing sidecar (e.g. a confounds or TAC description) keeps its content and gains a
    ``Provenance`` key; otherwise a sidecar is created. JSON outputs carry it themselves.
    Returns the sidecars written.
    """
    import json
    from pathlib import Path

    from prepost.io import write_json

    prov = {
        "Rule": rule,
        "Parameters": _jsonable(dict(params or {})),
        "Sources": sorted({str(i) for i in (inputs or [])}),
        "Software": package_versions(),
    }
    written = []
    for out in outputs:
        out = Path(out)
        if not out.exists() or out.is_dir():
            continue
        side = out if out.suffix == ".json" else sidecar_path(out)
        meta = {}
        if side.exists():
            try:
                meta = json.loads(side.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                meta = {}
            if not isinstance(meta, dict):
                continue
        meta["Provenance"] = prov
        write_json(meta, side)
        written.append(side)
    return written
