"""Parcellations for connectivity: label images or sphere coordinates, a parcel table and networks.

:func:`load_atlas` returns an :class:`Atlas` with

* ``labels_img`` (nibabel image of integer labels) for label atlases, or ``coords`` (n, 3; MNI mm)
  and ``radius`` (mm) for sphere atlases;
* ``table``: one row per parcel in atlas order with columns ``index`` (label value, 1-based for
  spheres), ``name``, ``network`` and ``hemi`` (``L``, ``R`` or ``M``);
* ``networks``: the network names in order of first appearance.

Atlas names
-----------
``Schaefer100``, ``Schaefer200``, ``Schaefer400``
    Schaefer et al. (2018), 7 networks, FSL MNI152 1 mm, read from the files shipped in
    ``resources/atlases/schaefer_2018`` (installed as the package data ``prepost.resources``;
    ``resolution_mm`` must be None or 1). The network and hemisphere are parsed from names such
    as ``7Networks_LH_Default_pCunPCC_1``. :func:`schaefer_files` and :func:`schaefer_table` give
    the shipped files and the parcel table without building an :class:`Atlas`.
``Seitzman300``
    Seitzman et al. (2020) 300 ROIs, coordinates bundled with nilearn, spheres of ``radius`` mm
    (default 5). Networks are mapped to the Schaefer/Yeo-7 vocabulary with
    :data:`SEITZMAN_TO_YEO7` so summaries are comparable across atlases; pass
    ``network_vocabulary='native'`` to keep the original names.
``custom``
    ``custom_labels`` (label NIfTI) + ``custom_tsv`` (columns ``index``, ``name``, ``network``;
    optional ``hemi``). Every non-zero label in the image must be in the table and vice versa.
``nilearn:<fetcher>``
    Any ``nilearn.datasets.fetch_atlas_*`` returning a deterministic label image, e.g.
    ``nilearn:fetch_atlas_schaefer_2018``; downloads into ``data_dir``. Without network access this
    raises :class:`~prepost.errors.InputError`.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from prepost.errors import ConfigError, InputError

__all__ = [
    "YEO7",
    "SEITZMAN_TO_YEO7",
    "DEFAULT_HIERARCHY",
    "SCHAEFER_PARCELS",
    "Atlas",
    "load_atlas",
    "parse_schaefer_name",
    "schaefer_files",
    "schaefer_table",
    "load_custom_atlas",
    "validate_hierarchy",
]

#: Parcel counts of the shipped Schaefer 2018 files (7 networks, FSL MNI152 1 mm).
SCHAEFER_PARCELS = (100, 200, 400)
YEO7 = ["Vis", "SomMot", "DorsAttn", "SalVentAttn", "Limbic", "Cont", "Default"]

#: Seitzman (2020) network -> Yeo/Schaefer 7-network vocabulary. Auditory cortex is part of the
#: Yeo-7 somatomotor network; cingulo-opercular and salience ROIs fall in Yeo-7 ventral attention
#: ("SalVentAttn"); fronto-parietal is Yeo's control network. Networks without a clear Yeo-7
#: counterpart keep their own name: MedialTemporalLobe (hippocampal; Yeo-7 Limbic is orbitofrontal
#: / temporal pole, so mapping it there would mislead), ParietoMedial (parietal memory network),
#: Reward and unassigned.
SEITZMAN_TO_YEO7 = {
    "Visual": "Vis",
    "SomatomotorDorsal": "SomMot",
    "SomatomotorLateral": "SomMot",
    "Auditory": "SomMot",
    "DorsalAttention": "DorsAttn",
    "VentralAttention": "SalVentAttn",
    "Salience": "SalVentAttn",
    "CinguloOpercular": "SalVentAttn",
    "FrontoParietal": "Cont",
    "DefaultMode": "Default",
    "MedialTemporalLobe": "MedialTemporalLobe",
    "ParietoMedial": "ParietoMedial",
    "Reward": "Reward",
    "unassigned": "unassigned",
}

DEFAULT_HIERARCHY = {"lower": ["Vis", "SomMot"], "higher": ["Default", "Cont"]}


@dataclass
class Atlas:
    """A parcellation: label image or spheres, the parcel table and its networks."""

    name: str
    table: pd.DataFrame
    labels_img: nib.Nifti1Image | None = None
    coords: np.ndarray | None = None
    radius: float | None = None
    networks: list = field(default_factory=list)
    source: str = ""

    def __post_init__(self):
        if not self.networks:
            self.networks = list(dict.fromkeys(self.table["network"]))

    @property
    def kind(self):
        """``'labels'`` or ``'spheres'``."""
        return "labels" if self.labels_img is not None else "spheres"

    @property
    def n_parcels(self):
        return len(self.table)

    @property
    def parcel_networks(self):
        """Per-parcel network labels (array of str, atlas order)."""
        return self.table["network"].to_numpy()

    def parcels_matching(self, pattern):
        """Boolean mask of parcels whose name matches the regular expression ``pattern``."""
        return self.table["name"].str.contains(pattern, regex=True).to_numpy()


# ----------------------------------------------------------------------------------------------
def load_atlas(name, resolution_mm=None, custom_labels=None, custom_tsv=None, data_dir=None,
               radius=5.0, network_vocabulary="yeo7", fetch_kwargs=None):
    """Load an atlas by name.

    Parameters
    ----------
    name : str
        ``Schaefer100``, ``Schaefer200``, ``Schaefer400``, ``Seitzman300``, ``custom`` or
        ``nilearn:<fetcher>``.
    resolution_mm : float or None
        Schaefer: only 1 (the shipped files). ``nilearn:`` fetchers receive it as
        ``resolution_mm`` when given. Ignored otherwise.
    custom_labels, custom_tsv : path-like
        For ``custom``: the label image and its table (index, name, network[, hemi]).
    data_dir : path-like or None
        Download/cache folder for ``nilearn:`` fetchers.
    radius : float
        Sphere radius (mm) for ``Seitzman300``.
    network_vocabulary : {'yeo7', 'native'}
        ``Seitzman300`` network names: mapped to Yeo-7 (default) or as published.
    fetch_kwargs : dict or None
        Extra keyword arguments for a ``nilearn:`` fetcher.

    Returns
    -------
    Atlas
    """
    m = re.fullmatch(r"Schaefer(\d+)", str(name))
    if m:
        return _load_schaefer(int(m.group(1)), resolution_mm)
    if name == "Seitzman300":
        return _load_seitzman(radius, network_vocabulary)
    if name == "custom":
        return load_custom_atlas(custom_labels, custom_tsv)
    if str(name).startswith("nilearn:"):
        return _load_nilearn(str(name).split(":", 1)[1], resolution_mm, data_dir, fetch_kwargs)
    raise ConfigError(None, "atlas", "one of Schaefer100/200/400, Seitzman300, custom or "
                      "nilearn:<fetcher>", repr(name))


def parse_schaefer_name(name):
    """(network, hemi) from a Schaefer label such as ``7Networks_LH_Default_pCunPCC_1``."""
    parts = str(name).split("_")
    if len(parts) >= 3 and parts[1] in ("LH", "RH"):
        return parts[2], parts[1][0]
    return "unknown", "M"


def schaefer_files(n_parcels):
    """The shipped Schaefer 2018 label image and label table of ``n_parcels`` parcels.

    The files are package data (``prepost.resources``), so they are found the same way in an
    editable and in a regular install.

    Parameters
    ----------
    n_parcels : {100, 200, 400}

    Returns
    -------
    image, table : pathlib.Path
        ``..._FSLMNI152_1mm.nii.gz`` and the tab-separated ``.txt`` (index, name, R, G, B, 0).
    """
    if n_parcels not in SCHAEFER_PARCELS:
        raise ConfigError(None, "atlas", "Schaefer100, Schaefer200 or Schaefer400 (shipped files)",
                          f"Schaefer{n_parcels}")
    folder = importlib.resources.files("prepost.resources") / "atlases" / "schaefer_2018"
    stem = f"Schaefer2018_{n_parcels}Parcels_7Networks_order"
    paths = (Path(str(folder / f"{stem}_FSLMNI152_1mm.nii.gz")), Path(str(folder / f"{stem}.txt")))
    for p in paths:
        if not p.is_file():
            raise InputError(p, None, "the shipped Schaefer 2018 atlas file")
    return paths


@functools.lru_cache(maxsize=len(SCHAEFER_PARCELS))
def _schaefer_table(n_parcels):
    rows = []
    for line in schaefer_files(n_parcels)[1].read_text().splitlines():
        if not line.strip():
            continue
        idx, lab = line.split("\t")[:2]
        net, hemi = parse_schaefer_name(lab)
        rows.append({"index": int(idx), "name": lab, "network": net, "hemi": hemi})
    return pd.DataFrame(rows)


def schaefer_table(n_parcels):
    """Parcel table of the shipped Schaefer 2018 atlas: ``index``, ``name``, ``network``, ``hemi``.

    Parameters
    ----------
    n_parcels : {100, 200, 400}

    Returns
    -------
    pandas.DataFrame
        One row per parcel in label order; ``hemi`` is ``L`` or ``R``.
    """
    return _schaefer_table(int(n_parcels)).copy()


def _load_schaefer(n_parcels, resolution_mm):
    if resolution_mm not in (None, 1, 1.0):
        raise ConfigError(None, "atlas resolution_mm", "1 (the shipped Schaefer files are 1 mm)",
                          resolution_mm)
    img_path, _ = schaefer_files(n_parcels)
    return Atlas(f"Schaefer{n_parcels}", schaefer_table(n_parcels), labels_img=nib.load(img_path),
                 source=str(img_path))


def _load_seitzman(radius, vocabulary):
    from nilearn import datasets

    if vocabulary not in ("yeo7", "native"):
        raise ConfigError(None, "network_vocabulary", "'yeo7' or 'native'", repr(vocabulary))
    if not radius or radius <= 0:
        raise ConfigError(None, "radius", "a positive sphere radius in mm", radius)
    d = datasets.fetch_coords_seitzman_2018(ordered_regions=True)
    coords = d.rois[["x", "y", "z"]].to_numpy(float)
    native = np.asarray(d.networks, dtype=str)
    nets = [SEITZMAN_TO_YEO7.get(n, n) for n in native] if vocabulary == "yeo7" else list(native)
    regions = np.asarray(d.regions, dtype=str)
    hemi = np.where(coords[:, 0] < 0, "L", np.where(coords[:, 0] > 0, "R", "M"))
    hemi = np.where(regions == "cortexMid", "M", hemi)
    n = len(coords)
    table = pd.DataFrame({
        "index": np.arange(1, n + 1),
        "name": [f"{r}_{nn}_{i + 1}" for i, (r, nn) in enumerate(zip(regions, native))],
        "network": nets, "hemi": hemi, "native_network": native, "region": regions,
    })
    present = list(dict.fromkeys(nets))
    order = [n for n in YEO7 if n in present] + [n for n in present if n not in YEO7]
    return Atlas("Seitzman300", table, coords=coords, radius=float(radius), networks=order,
                 source="nilearn.datasets.fetch_coords_seitzman_2018")


def load_custom_atlas(labels_img, tsv):
    """A label image with its table (``index``, ``name``, ``network``[, ``hemi``]), cross-checked.

    Raises :class:`InputError` naming the file when a label of the image is missing from the table
    or a table row has no voxel in the image.
    """
    if labels_img is None or tsv is None:
        raise ConfigError(None, "custom_labels/custom_tsv", "both a label image and its TSV for "
                          "atlas 'custom'")
    img = nib.load(labels_img) if isinstance(labels_img, (str, Path)) else labels_img
    src = str(labels_img) if isinstance(labels_img, (str, Path)) else "custom label image"
    try:
        table = pd.read_csv(tsv, sep="\t")
    except (OSError, pd.errors.ParserError) as exc:
        raise InputError(tsv, None, "a readable tab-separated table", str(exc)) from None
    missing = [c for c in ("index", "name", "network") if c not in table.columns]
    if missing:
        raise InputError(tsv, ", ".join(missing), "columns index, name, network")
    if table["index"].duplicated().any():
        dup = table.loc[table["index"].duplicated(), "index"].tolist()
        raise InputError(tsv, "index", "unique label values", f"duplicates {dup}")
    data = np.asarray(img.dataobj)
    if not np.allclose(data, np.round(data)):
        raise InputError(src, None, "an integer label image", "non-integer values")
    in_img = set(np.unique(np.round(data).astype(np.int64)).tolist()) - {0}
    in_tsv = set(table["index"].astype(np.int64).tolist())
    if in_img - in_tsv:
        raise InputError(tsv, "index", f"a row for every label of {src}",
                         f"labels {sorted(in_img - in_tsv)[:20]} missing from the table")
    if in_tsv - in_img:
        raise InputError(src, None, f"voxels for every label listed in {tsv}",
                         f"labels {sorted(in_tsv - in_img)[:20]} absent from the image")
    if "hemi" not in table.columns:
        table["hemi"] = [parse_schaefer_name(n)[1] for n in table["name"]]
    table = table.sort_values("index").reset_index(drop=True)
    table["index"] = table["index"].astype(int)
    table["network"] = table["network"].astype(str)
    return Atlas("custom", table, labels_img=img, source=src)


def _load_nilearn(fetcher, resolution_mm, data_dir, fetch_kwargs):
    from nilearn import datasets

    fn = getattr(datasets, fetcher, None)
    if fn is None or not fetcher.startswith("fetch_atlas"):
        raise ConfigError(None, "atlas", "nilearn:<a nilearn.datasets.fetch_atlas_* function>",
                          fetcher)
    kwargs = dict(fetch_kwargs or {})
    if resolution_mm is not None:
        kwargs["resolution_mm"] = resolution_mm
    if data_dir is not None:
        kwargs["data_dir"] = str(data_dir)
    try:
        bunch = fn(**kwargs)
    except Exception as exc:  # urllib/requests connection errors, HTTP errors, bad archives
        raise InputError(data_dir, fetcher, "a downloadable atlas (network access) or an atlas "
                         "already cached in data_dir; offline, use Schaefer100/200/400, "
                         "Seitzman300 or 'custom'", f"{type(exc).__name__}: {exc}") from None
    maps = bunch.get("maps")
    if maps is None:
        raise InputError(None, fetcher, "a fetcher returning a label image ('maps')")
    img = nib.load(maps) if isinstance(maps, (str, Path)) else maps
    if img.ndim != 3:
        raise InputError(str(maps), fetcher, "a 3D deterministic label image (probabilistic "
                         "atlases are not supported)")
    values = sorted(set(np.unique(np.asarray(img.dataobj).astype(np.int64)).tolist()) - {0})
    lut = bunch.get("lut")
    if isinstance(lut, pd.DataFrame) and {"index", "name"} <= set(lut.columns):
        names = dict(zip(lut["index"].astype(int), lut["name"].astype(str)))
    else:
        labels = [x.decode() if isinstance(x, bytes) else str(x) for x in bunch.get("labels", [])]
        if labels and labels[0].lower() == "background":
            labels = labels[1:]
        names = dict(zip(values, labels)) if len(labels) == len(values) else {}
    rows = []
    for v in values:
        nm = names.get(v, f"label_{v}")
        net, hemi = parse_schaefer_name(nm)
        rows.append({"index": v, "name": nm, "network": net, "hemi": hemi})
    return Atlas(f"nilearn:{fetcher}", pd.DataFrame(rows), labels_img=img, source=str(maps))


# ----------------------------------------------------------------------------------------------
def validate_hierarchy(hierarchy, atlas_or_networks):
    """Check a ``{set: [network, ...]}`` mapping against the atlas networks.

    Every set must be a non-empty list of networks present in the atlas and the sets must not
    overlap. Returns a clean ``dict[str, list[str]]``; raises :class:`ConfigError` otherwise.
    """
    hierarchy = DEFAULT_HIERARCHY if hierarchy is None else hierarchy
    networks = (atlas_or_networks.networks if isinstance(atlas_or_networks, Atlas)
                else list(atlas_or_networks))
    if not isinstance(hierarchy, dict) or not hierarchy:
        raise ConfigError(None, "hierarchy", "a mapping such as {lower: [Vis, SomMot], higher: "
                          "[Default, Cont]}", repr(hierarchy))
    out, seen = {}, {}
    for level, nets in hierarchy.items():
        nets = [nets] if isinstance(nets, str) else list(nets or [])
        if not nets:
            raise ConfigError(None, f"hierarchy.{level}", "at least one network")
        for n in nets:
            if n not in networks:
                raise ConfigError(None, f"hierarchy.{level}", f"networks of the atlas {networks}",
                                  repr(n))
            if n in seen:
                raise ConfigError(None, f"hierarchy.{level}", "each network in one level only",
                                  f"{n!r} also in {seen[n]!r}")
            seen[n] = level
        out[str(level)] = nets
    return out
