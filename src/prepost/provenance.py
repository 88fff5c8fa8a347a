"""Provenance: the versions of the packages that produced a derivative."""

from __future__ import annotations

from importlib import metadata

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
