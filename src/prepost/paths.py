"""Derivative file names, built from BIDS entities in one place.

Every output name of the workflow is made here from its entities (``sub``, ``ses``, ``task``,
``acq``, ``run``, ``trc``, ``rec``, ``space``, ``res``, ``atlas``, ``meas``, ``stat``, ``desc``
...), always in the same order, as XCP-D builds its names. Each stage's package module has one
builder that calls :func:`derivative` for all of its outputs; rules, scripts, the report and the
tests use those builders, so adding an entity to a stage's names is a change in one place.

Entity values may be Snakemake wildcards (``"{subject}"``); an entity whose value is ``None`` is
left out of the name.
"""

from pathlib import PurePosixPath

__all__ = ["ENTITY_ORDER", "bids_name", "derivative"]

# BIDS order (specification, "Entity table"), with the derivative entities from/to/mode, atlas,
# meas and stat placed where fMRIPrep and XCP-D put them.
ENTITY_ORDER = (
    "sub", "ses", "task", "acq", "ce", "trc", "rec", "dir", "run", "echo", "recording",
    "from", "to", "mode", "space", "res", "den", "atlas", "seg", "label", "meas", "stat", "desc",
)


def bids_name(suffix, extension, **entities):
    """A BIDS file name: entities in :data:`ENTITY_ORDER`, then the suffix and extension.

    Parameters
    ----------
    suffix : str
        BIDS suffix, e.g. ``"bold"``, ``"relmat"``.
    extension : str
        With its leading dot, e.g. ``".nii.gz"``.
    **entities : str or None
        Entity values (``sub="01"``, ``space="MNI152NLin2009aSym"``); ``None`` leaves one out.
        Keyword names follow :data:`ENTITY_ORDER`; ``from`` is a Python keyword, so pass it
        as ``**{"from": "T1w"}``.

    Returns
    -------
    str
    """
    unknown = set(entities) - set(ENTITY_ORDER)
    if unknown:
        raise ValueError(f"unknown BIDS entities {sorted(unknown)}; known: {ENTITY_ORDER}")
    parts = [f"{k}-{entities[k]}" for k in ENTITY_ORDER if entities.get(k) is not None]
    return "_".join(parts + [suffix]) + extension


def derivative(root, suffix, extension, *, datatype=None, **entities):
    """Path of a derivative under ``root``.

    A file with a ``sub`` entity goes to ``root/sub-<sub>[/ses-<ses>]/<datatype>/``; a group file
    (no ``sub``) goes to ``root/<datatype>/`` or ``root/`` when ``datatype`` is None.

    Returns
    -------
    str
        POSIX path, so that Snakemake wildcards and ``expand`` work on it.
    """
    folder = PurePosixPath(str(root))
    if entities.get("sub") is not None:
        folder /= f"sub-{entities['sub']}"
        if entities.get("ses") is not None:
            folder /= f"ses-{entities['ses']}"
    if datatype:
        folder /= datatype
    return str(folder / bids_name(suffix, extension, **entities))
