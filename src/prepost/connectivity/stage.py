"""The connectivity stage of the workflow as plain functions: configured atlases, one session's
time series and measures, and the group-level tangent FC and gradients.

Inputs are the fMRI stage's derivatives: a denoised BOLD image in MNI space whose censored volumes
are removed, its brain mask and a QC record (``excluded``, ``reason``, ``t_r``, ``sample_mask`` =
indices of the retained volumes in the run after the dummy volumes, ``n_volumes``, ``retained_s``,
``mean_fd``). A run the QC excludes still gets every output, with NaN values; its rows of the tidy
table carry the exclusion reason in ``flag``.

Conventions
-----------
* Parcel time series (``timeseries.tsv``) hold the retained volumes only, one column per atlas
  parcel in atlas order (missing parcels all ``n/a``).
* ``relmat`` files are square parcel x parcel tables of the estimator's own values (Pearson r,
  partial r, tangent-space covariance), first column ``node``; missing parcels are ``n/a`` rows
  and columns. Every network, graph and gradient summary uses the Fisher z (arctanh) of Pearson r.
* Tidy tables: participant_id, session, modality (``fmri``, or ``qc`` for mean_fd, retained_s and
  excluded), measure, region, value, flag, atlas. ``flag`` is the exclusion reason of an excluded
  run, ``missing`` for a value that is NaN in an included run (uncovered parcels), and empty
  otherwise.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from prepost.errors import ConfigError, InputError
from prepost.io import read_json_object, read_tsv
from prepost.paths import bids_name, derivative
from prepost.connectivity import alff as _alff
from prepost.connectivity import fc as _fc
from prepost.connectivity import gradients as _grad
from prepost.connectivity.atlas import YEO7, Atlas, load_atlas, validate_hierarchy
from prepost.connectivity.networks import network_fc, tidy_fmri_measures

__all__ = [
    "BUILTIN",
    "FC_KINDS",
    "TIDY",
    "QC_MEASURES",
    "output_paths",
    "group_output_paths",
    "log_paths",
    "atlas_label",
    "atlas_specs",
    "atlas_networks",
    "check_config",
    "load_atlas_spec",
    "read_qc",
    "COMBINE_RUNS",
    "session_qc",
    "combine_timeseries",
    "session_fc",
    "session_alff_maps",
    "parcel_timeseries",
    "covariance_estimator",
    "fc_relmat",
    "relmat_frame",
    "read_relmat",
    "full_length",
    "session_measures",
    "qc_rows",
    "finish_tidy",
    "alff_maps",
    "tangent_fc",
    "group_gradients",
    "fc_group_gradients",
]

log = logging.getLogger(__name__)

BUILTIN = ("Schaefer100", "Schaefer200", "Schaefer400", "Seitzman300")
FC_KINDS = {"pearson": "correlation", "partial": "partial correlation"}
TIDY = ["participant_id", "session", "modality", "measure", "region", "value", "flag", "atlas"]
QC_MEASURES = ("mean_fd", "retained_s", "excluded")
COMBINE_RUNS = ("concatenate", "average")


# ----------------------------------------------------------------------------------------------
# file names
def output_paths(results, *, space, res, atlas="{atlas}", meas="{meas}", **run):
    """Every file the connectivity stage writes for one session, named from its BIDS entities.

    A session's measures combine its runs (:func:`session_qc`, :func:`combine_timeseries`), so
    the names carry ``sub``, ``ses`` and ``task`` but no run entity.

    Parameters
    ----------
    results : str or path-like
        Derivatives root.
    space, res : str
        Template and ``res-`` label of the denoised BOLD the measures come from.
    atlas, meas : str
        Atlas label and FC measure (default: the wildcards ``{atlas}`` and ``{meas}``).
    **run : str
        Entities of the session's BOLD (``sub``, ``ses``, ``task``; values may be Snakemake
        wildcards such as ``"{subject}"``), as in the fMRI stage's names
        (:func:`prepost.fmri.stage.output_paths`).

    Returns
    -------
    dict of str
        ``timeseries``, ``coverage``, ``relmat``, ``network``, ``graph``, ``alff``, ``long``
        (connectivity_session, one job per session and atlas); ``alff_map``,
        ``falff_map`` (connectivity_alff_maps); ``tangent`` (the session's tangent matrix,
        connectivity_tangent); ``qc`` (the session's QC over its runs, connectivity_session_qc).
    """
    def func(suffix, ext, **entities):
        return derivative(results, suffix, ext, datatype="func", **run, space=space, res=res,
                          **entities)

    return {
        "timeseries": func("timeseries", ".tsv", atlas=atlas),
        "coverage": func("coverage", ".tsv", atlas=atlas),
        "relmat": func("relmat", ".tsv", atlas=atlas, meas=meas),
        "network": func("fc", ".tsv", atlas=atlas, desc="network"),
        "graph": func("measures", ".tsv", atlas=atlas, desc="graph"),
        "alff": func("measures", ".tsv", atlas=atlas, desc="alff"),
        "long": func("long", ".tsv", atlas=atlas, desc="connectivity"),
        "alff_map": func("boldmap", ".nii.gz", stat="alff"),
        "falff_map": func("boldmap", ".nii.gz", stat="falff"),
        "tangent": func("relmat", ".tsv", atlas=atlas, meas="tangent"),
        "qc": func("qc", ".json", desc="combined"),
    }


def group_output_paths(results, *, atlas="{atlas}"):
    """The group files of one atlas (connectivity_tangent, connectivity_gradients).

    Returns
    -------
    dict of str
        ``tangent_mean`` (group geometric mean), ``reference`` and ``aligned`` gradients and the
        gradients' tidy table ``long``, in ``<results>/group/connectivity``.
    """
    def group(suffix, ext, **entities):
        return derivative(f"{results}/group", suffix, ext, datatype="connectivity", atlas=atlas,
                          **entities)

    return {"tangent_mean": group("relmat", ".tsv", meas="tangent", desc="groupmean"),
            "reference": group("gradients", ".tsv", desc="reference"),
            "aligned": group("gradients", ".tsv", desc="aligned"),
            "long": group("long", ".tsv", desc="gradients")}


def log_paths(results, step, **entities):
    """``{"log": ..., "benchmark": ...}`` of one connectivity job, named from its entities.

    ``step`` ends the name (``timeseries``, ``fc``, ...); ``entities`` as in :func:`output_paths`
    (wildcards allowed).
    """
    name = bids_name(step, "", **entities)
    return {"log": f"{results}/logs/connectivity/{name}.log",
            "benchmark": f"{results}/benchmarks/connectivity/{name}.tsv"}


# ----------------------------------------------------------------------------------------------
# configuration
def atlas_label(name):
    """File label (letters and digits) of a configured atlas name.

    ``Schaefer400`` -> ``Schaefer400``; ``nilearn:fetch_atlas_harvard_oxford`` ->
    ``nilearnHarvardOxford``; a custom atlas key is used as it is (it must be alphanumeric).
    """
    name = str(name)
    if name.startswith("nilearn:"):
        fetcher = name.split(":", 1)[1].removeprefix("fetch_atlas_")
        return "nilearn" + "".join(p[:1].upper() + p[1:] for p in re.split(r"[^A-Za-z0-9]+", fetcher))
    return name


def atlas_specs(cfg, base_dir=None):
    """``{file label: spec}`` of the configured atlases, checked (config section ``connectivity``).

    A spec is a plain dict (``name``, and ``labels``/``tsv`` for custom atlases, ``data_dir``/
    ``fetch_kwargs`` for nilearn fetchers, ``radius`` for spheres) that :func:`load_atlas_spec`
    turns into an :class:`Atlas`. Raises :class:`ConfigError` naming the config key.
    """
    custom = cfg.get("custom_atlases") or {}
    fetch_kwargs = cfg.get("nilearn_fetch_kwargs") or {}
    data_dir = cfg.get("nilearn_data_dir") or None
    names = list(cfg.get("atlases") or [])
    if not names:
        raise ConfigError(None, "connectivity.atlases", "at least one atlas")
    specs = {}
    for i, name in enumerate(names):
        key = f"connectivity.atlases[{i}]"
        name = str(name)
        if name in BUILTIN:
            spec = {"name": name}
            if name == "Seitzman300":
                spec["radius"] = float(cfg.get("sphere_radius_mm", 5.0))
        elif name.startswith("nilearn:"):
            fetcher = name.split(":", 1)[1]
            if not re.fullmatch(r"fetch_atlas_\w+", fetcher):
                raise ConfigError(None, key, "nilearn:<a nilearn.datasets.fetch_atlas_* function>",
                                  repr(name))
            spec = {"name": name, "data_dir": _path(data_dir, base_dir),
                    "fetch_kwargs": dict(fetch_kwargs.get(fetcher) or {})}
        elif name in custom:
            c = custom[name] or {}
            if not re.fullmatch(r"[A-Za-z0-9]+", name):
                raise ConfigError(None, f"connectivity.custom_atlases.{name}",
                                  "a key of letters and digits (it becomes the atlas- label)")
            labels, tsv = _path(c.get("labels"), base_dir), _path(c.get("tsv"), base_dir)
            for field, p in (("labels", labels), ("tsv", tsv)):
                if not p or not Path(p).exists():
                    raise ConfigError(None, f"connectivity.custom_atlases.{name}.{field}",
                                      "an existing file", repr(p))
            spec = {"name": "custom", "labels": labels, "tsv": tsv}
        else:
            raise ConfigError(None, key, f"one of {', '.join(BUILTIN)}, nilearn:<fetch_atlas_*> or "
                              f"a key of connectivity.custom_atlases {sorted(custom)}", repr(name))
        label = atlas_label(name)
        if label in specs:
            raise ConfigError(None, key, "each atlas once", repr(name))
        specs[label] = spec
    return specs


def _path(p, base_dir):
    if not p:
        return None
    p = Path(p)
    if not p.is_absolute() and not p.exists() and base_dir is not None:
        p = Path(base_dir) / p
    return str(p)


def atlas_networks(spec):
    """Network names of an atlas spec without loading images (None when only a download would
    tell, i.e. ``nilearn:`` fetchers)."""
    if spec["name"].startswith("Schaefer"):
        return list(YEO7)
    if spec["name"] == "custom":
        return list(dict.fromkeys(pd.read_csv(spec["tsv"], sep="\t")["network"].astype(str)))
    if spec["name"] == "Seitzman300":
        return load_atlas_spec(spec).networks
    return None


def check_config(cfg, specs):
    """DAG-time checks of the connectivity section beyond the schema: the hierarchy against the
    networks of every atlas, FC kinds, graph densities and the ALFF band. Raises ConfigError."""
    for label, spec in specs.items():
        nets = atlas_networks(spec)
        if nets is None:
            continue
        try:
            h = validate_hierarchy(cfg.get("hierarchy"), nets)
        except ConfigError as exc:
            raise ConfigError(None, "connectivity.hierarchy", f"networks of atlas {label} "
                              f"{nets}, each in one level", f"{exc.field}: {exc.found}") from None
        if len(h) != 2:
            raise ConfigError(None, "connectivity.hierarchy", "exactly two levels (lower, higher)",
                              list(h))
    for k in cfg.get("fc_kinds", []):
        if k not in FC_KINDS:
            raise ConfigError(None, "connectivity.fc_kinds", f"a subset of {list(FC_KINDS)} "
                              "(tangent: connectivity.tangent)", repr(k))
    lo, hi = cfg["alff"]["band"]
    if not 0 <= lo < hi:
        raise ConfigError(None, "connectivity.alff.band", "[low, high] Hz with 0 <= low < high",
                          [lo, hi])


def load_atlas_spec(spec):
    """The :class:`Atlas` of a spec from :func:`atlas_specs`."""
    spec = dict(spec)
    if spec["name"] == "custom":
        return load_atlas("custom", custom_labels=spec["labels"], custom_tsv=spec["tsv"])
    if spec["name"].startswith("nilearn:"):
        return load_atlas(spec["name"], data_dir=spec.get("data_dir"),
                          fetch_kwargs=spec.get("fetch_kwargs"))
    return load_atlas(spec["name"], radius=spec.get("radius", 5.0))


# ----------------------------------------------------------------------------------------------
# one session
def read_qc(path):
    """The fMRI stage's QC record, checked for the keys this stage uses (``t_r`` in seconds)."""
    qc = read_json_object(path, "a readable JSON QC record")
    for k in ("excluded", "t_r", "sample_mask", "n_volumes"):
        if k not in qc:
            raise InputError(path, k, "present (fMRI stage QC contract)")
    qc.setdefault("reason", "")
    return qc


def parcel_timeseries(bold, mask, atlas, qc, min_coverage=0.5):
    """Parcel time series (DataFrame, columns = parcel names) and coverage table of one run.

    A run the QC excludes whose image cannot be read as a time series gives an empty table.
    """
    from prepost.connectivity.timeseries import extract_parcel_timeseries

    names = atlas.table["name"].astype(str).tolist()
    try:
        res = extract_parcel_timeseries(bold, atlas, mask_img=mask, min_coverage=min_coverage)
    except InputError:
        if not qc["excluded"]:
            raise
        log.warning("excluded run (%s): no usable time series", qc["reason"])
        cov = atlas.table[["index", "name", "network"]].copy()
        cov[["n_voxels", "n_valid", "coverage"]] = 0
        cov["kept"] = False
        return pd.DataFrame(np.empty((0, len(names))), columns=names), cov
    n_ret = len(qc["sample_mask"])
    if res.timeseries.shape[0] != n_ret and not qc["excluded"]:
        raise InputError(bold, "volumes", f"{n_ret} (the retained volumes of the QC sample_mask)",
                         res.timeseries.shape[0])
    return pd.DataFrame(res.timeseries, columns=names), res.coverage


# ----------------------------------------------------------------------------------------------
# several runs of a session
def session_qc(run_qcs, keys=None):
    """QC record of a session from the fMRI QC records of its runs (in run order).

    The runs used are the included ones (all of them when every run is excluded; the session is
    then excluded, with the runs' reasons). Their retained volumes are concatenated (as XCP-D's
    ``--combine-runs``): ``sample_mask`` indexes the concatenation of the used runs' steady-state
    series (``n_volumes`` their sum), ``retained_s`` is summed and ``mean_fd`` weighted by the
    runs' volume counts. ``runs`` lists every run (``key``, ``used``, ``excluded``, ``reason``,
    ``retained_s``, ``n_rows`` = its rows in the session's time series). With one run the record
    is that run's, plus ``runs``.

    Raises
    ------
    InputError
        Runs with different TRs (they cannot be concatenated).
    """
    qcs = [dict(q) for q in run_qcs]
    keys = list(keys) if keys is not None else [str(i + 1) for i in range(len(qcs))]
    if not qcs:
        raise InputError(None, "runs", "at least one BOLD run in the session", "none")
    t_rs = {round(float(q["t_r"]), 6) for q in qcs}
    if len(t_rs) > 1:
        raise InputError(None, "t_r", "one repetition time for every run of a session",
                         sorted(t_rs))
    included = [i for i, q in enumerate(qcs) if not q["excluded"]]
    used = included or list(range(len(qcs)))
    runs = [{"key": k, "used": i in used, "excluded": bool(q["excluded"]),
             "reason": q.get("reason") or "", "retained_s": q.get("retained_s"),
             "n_rows": len(q["sample_mask"])} for i, (k, q) in enumerate(zip(keys, qcs))]
    if len(qcs) == 1:
        return {**qcs[0], "runs": runs}
    sm, offset = [], 0
    for i in used:
        sm += [offset + int(j) for j in qcs[i]["sample_mask"]]
        offset += int(qcs[i]["n_volumes"])
    n = np.array([float(qcs[i]["n_volumes"]) for i in used])
    fd = np.array([np.nan if qcs[i].get("mean_fd") is None else float(qcs[i]["mean_fd"])
                   for i in used])
    ok = np.isfinite(fd)
    ret = [qcs[i].get("retained_s") for i in used]
    excluded = not included
    reason = "; ".join(f"run {r['key']}: {r['reason'] or 'excluded'}" for r in runs
                       if r["excluded"]) if excluded else ""
    return {"excluded": excluded, "reason": reason, "t_r": float(qcs[0]["t_r"]),
            "sample_mask": sm, "n_volumes": int(offset),
            "retained_s": float(np.sum([r for r in ret if r is not None])),
            "mean_fd": float(np.sum(fd[ok] * n[ok]) / np.sum(n[ok])) if ok.any() else None,
            "n_retained": len(sm), "n_runs": len(qcs), "n_runs_used": len(used), "runs": runs}


def combine_timeseries(parts):
    """One session's parcel time series from its used runs' ``(timeseries, coverage)`` pairs:
    rows concatenated in run order; a parcel is kept only when every run keeps it (its column
    is NaN otherwise), and its coverage is the lowest of the runs'."""
    if len(parts) == 1:
        return parts[0]
    ts = pd.concat([t for t, _ in parts], ignore_index=True)
    cov = parts[0][1].copy()
    for col in ("n_valid", "coverage"):
        cov[col] = np.min(np.stack([c[col].to_numpy() for _, c in parts]), axis=0)
    cov["kept"] = np.logical_and.reduce([c["kept"].to_numpy(bool) for _, c in parts])
    ts.loc[:, ~cov["kept"].to_numpy()] = np.nan
    return ts, cov


def _run_segments(timeseries, qc):
    """The used runs' row blocks of a session time series and their retained times (s)."""
    runs = [r for r in qc.get("runs", []) if r["used"]]
    if len(runs) < 2:
        return [timeseries], [1.0]
    bounds = np.cumsum([0] + [int(r["n_rows"]) for r in runs])
    if bounds[-1] != len(timeseries):
        raise InputError(None, "runs", f"{bounds[-1]} rows (the used runs' retained volumes)",
                         len(timeseries))
    t_r = float(qc["t_r"])
    return ([timeseries.iloc[a:b] for a, b in zip(bounds[:-1], bounds[1:])],
            [float(r["retained_s"]) if r.get("retained_s") is not None
             else int(r["n_rows"]) * t_r for r in runs])


def session_fc(timeseries, qc, kind="pearson", estimator="auto", combine="concatenate"):
    """FC matrix of a session from its combined time series (:func:`combine_timeseries`).

    ``concatenate``: the FC of the concatenated retained volumes (XCP-D ``--combine-runs``).
    ``average``: each run's FC, Fisher z (arctanh) averaged with the runs' retained times as
    weights, back to r (tanh): r = tanh(sum_i w_i artanh(r_i) / sum_i w_i). One run: its FC.

    Returns
    -------
    numpy.ndarray
        (n_parcels, n_parcels); NaN for an excluded session.
    """
    if combine not in COMBINE_RUNS:
        raise ConfigError(None, "fmri.combine_runs", " or ".join(COMBINE_RUNS), repr(combine))
    segs, w = _run_segments(timeseries, qc) if combine == "average" else ([timeseries], [1.0])
    mats = [fc_relmat(s, kind, estimator, excluded=qc["excluded"]).set_index("node")
            .to_numpy(float) for s in segs]
    if len(mats) == 1:
        return mats[0]
    w = np.asarray(w, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.stack([_fc.fisher_z(m) for m in mats])
        mean = np.tensordot(w, z, axes=1) / w.sum()
    out = np.tanh(mean)
    np.fill_diagonal(out, np.diag(mats[0]))
    return out


def session_alff_maps(bolds, masks, qcs, band=(0.01, 0.08)):
    """Voxel ALFF and fALFF of a session: the maps of its used runs (:func:`alff_maps`)
    averaged with the runs' retained times as weights (one run: its maps)."""
    import nibabel as nib

    sqc = session_qc(qcs)
    used = [i for i, r in enumerate(sqc["runs"]) if r["used"]]
    maps = [alff_maps(bolds[i], masks[i], {**qcs[i], "excluded": sqc["excluded"]}, band)
            for i in used]
    if len(maps) == 1:
        return maps[0]
    w = np.array([float(qcs[i].get("retained_s") or len(qcs[i]["sample_mask"])) for i in used])
    out = []
    for k in range(2):
        data = np.stack([np.asarray(m[k].dataobj, float) for m in maps])
        mean = np.tensordot(w, data, axes=1) / w.sum()
        out.append(nib.Nifti1Image(mean.astype(np.float32), maps[0][k].affine))
    return tuple(out)


def covariance_estimator(name, n_volumes, n_parcels):
    """sklearn estimator for partial/tangent FC: None (empirical) or LedoitWolf.

    ``auto`` = Ledoit-Wolf when the run has no more volumes than parcels (the empirical covariance
    is then singular).
    """
    from sklearn.covariance import LedoitWolf

    if name == "empirical" or (name == "auto" and n_volumes > n_parcels):
        return None
    if name in ("ledoit_wolf", "auto"):
        return LedoitWolf()
    raise ConfigError(None, "connectivity.covariance_estimator",
                      "'auto', 'empirical' or 'ledoit_wolf'", repr(name))


def fc_relmat(timeseries, kind, estimator="auto", excluded=False):
    """Parcel x parcel FC table (``pearson`` or ``partial``); all NaN for an excluded run."""
    names = list(timeseries.columns)
    ts = timeseries.to_numpy(float)
    if excluded or ts.shape[0] < 3:
        mat = np.full((len(names), len(names)), np.nan)
    else:
        n_ok = int(_fc.valid_parcels(ts).sum())
        est = covariance_estimator(estimator, ts.shape[0], n_ok) if kind == "partial" else None
        if est is not None:
            log.info("%s FC with %s (%d volumes, %d parcels)", kind, type(est).__name__,
                     ts.shape[0], n_ok)
        mat = _fc.connectivity_matrix(ts, FC_KINDS[kind], cov_estimator=est)
    return relmat_frame(mat, names)


def relmat_frame(mat, names):
    df = pd.DataFrame(mat, index=names, columns=names)
    return df.rename_axis("node").reset_index()


def read_relmat(path):
    """A square relationship matrix TSV, as :func:`relmat_frame` writes it.

    The first column holds the node labels (``node``; the statistics stage's NBS matrices call it
    ``parcel``) and the header repeats them in the same order; values are numbers or ``n/a``.

    Returns
    -------
    pandas.DataFrame
        Float matrix indexed by node label; raises :class:`InputError` naming the file otherwise.
    """
    what = "a square relationship matrix (first column: node labels)"
    header = read_tsv(path, what=what).columns
    if len(header) < 2:
        raise InputError(path, None, what, f"columns {list(header)}")
    df = read_tsv(path, what=what, index_col=header[0], numeric="all")
    if df.shape[0] != df.shape[1]:
        raise InputError(path, None, what, f"{df.shape[0]} rows and {df.shape[1]} columns")
    if list(df.index.astype(str)) != [str(c) for c in df.columns]:
        raise InputError(path, header[0], "the same node labels in rows and columns")
    return df.astype(float)


def full_length(timeseries, qc):
    """(n_volumes, n_parcels) array with the retained volumes at their QC positions, NaN else,
    and the sample mask (indices) for :func:`tidy_fmri_measures`."""
    sm = np.asarray(qc["sample_mask"], int)
    full = np.full((int(qc["n_volumes"]), timeseries.shape[1]), np.nan)
    full[sm] = timeseries.to_numpy(float)
    return full, sm


def session_measures(participant_id, session, timeseries, atlas, qc, hierarchy=None,
                     densities=(0.1, 0.15, 0.2), regions=None, band=(0.01, 0.08),
                     combine="concatenate"):
    """Every per-session table of a session's time series (one run, or its runs combined).

    FC-based tables use :func:`session_fc` with ``combine``; ALFF uses the concatenated
    retained volumes at their ``sample_mask`` positions.

    Returns a dict of DataFrames: ``network`` (network pairs: network_a, network_b, type, fc_z),
    ``graph`` (per density and parcel: strength, eigenvector centrality, participation
    coefficient), ``alff`` (per parcel: alff, falff) and ``long`` (tidy, see module docstring).
    An excluded run gives the same rows with NaN values.
    """
    from prepost.connectivity import graph as _graph

    names = atlas.table["name"].astype(str).to_numpy()
    nets = atlas.parcel_networks.astype(str)
    regions = dict(regions) if regions else {}
    regions = {r: p for r, p in regions.items() if pd.Series(names).str.contains(p).any()}
    excluded = bool(qc["excluded"])
    if excluded:
        # the same tables from a surrogate run, then every value NaN
        rng = np.random.default_rng(0)
        n = max(atlas.n_parcels + 10, 64)
        ts = pd.DataFrame(rng.standard_normal((n, atlas.n_parcels)), columns=timeseries.columns)
        qc_use = {**qc, "sample_mask": list(range(n)), "n_volumes": n}
    else:
        ts, qc_use = timeseries, qc
    full, sm = full_length(ts, qc_use)
    kept = full[sm]
    if combine == "average" and not excluded and len(_run_segments(ts, qc_use)[0]) > 1:
        z = _fc.fisher_z(session_fc(ts, qc_use, "pearson", combine="average"))
    else:
        z = _fc.fisher_z(_fc.pearson(kept))
    nf = network_fc(z, nets, atlas.networks)
    rows = []
    for i, a in enumerate(atlas.networks):
        for b in atlas.networks[i:]:
            rows.append((a, b, "within" if a == b else "between", nf.loc[a, b]))
    network = pd.DataFrame(rows, columns=["network_a", "network_b", "type", "fc_z"])
    W = z.copy()
    np.fill_diagonal(W, 0.0)
    graph, _ = _graph.graph_measures(W, nets, densities)
    graph.insert(2, "name", names[graph["parcel"].to_numpy()])
    a, f = _alff.compute_alff(full, float(qc_use["t_r"]), tuple(band), sm)
    alff = pd.DataFrame({"name": names, "network": nets, "alff": a, "falff": f})
    long = tidy_fmri_measures(participant_id, session, full, atlas, t_r=float(qc_use["t_r"]),
                              fc_z=z, hierarchy=hierarchy, sample_mask=sm, alff_band=tuple(band),
                              densities=tuple(densities), regions=regions,
                              measures=("fc", "alff", "graph"))
    if excluded:
        network["fc_z"] = np.nan
        graph.iloc[:, 4:] = np.nan
        alff[["alff", "falff"]] = np.nan
        long["value"] = np.nan
    long = finish_tidy(long, qc, atlas.name)
    return {"network": network, "graph": graph, "alff": alff, "long": long}


def qc_rows(participant_id, session, qc):
    return pd.DataFrame([(participant_id, session, "qc", m, "global",
                          float(qc.get(m, np.nan)) if qc.get(m) is not None else np.nan)
                         for m in QC_MEASURES],
                        columns=TIDY[:6])


def finish_tidy(long, qc, atlas_name, with_qc=True):
    """Add the QC rows, the ``flag`` and ``atlas`` columns (see module docstring)."""
    pid, ses = (long["participant_id"].iloc[0], long["session"].iloc[0]) if len(long) else (None,
                                                                                          None)
    if with_qc and pid is not None:
        long = pd.concat([qc_rows(pid, ses, qc), long], ignore_index=True)
    reason = qc.get("reason") or "excluded"
    is_qc = long["modality"] == "qc"
    flag = np.where(~is_qc & bool(qc["excluded"]), reason,
                    np.where(~is_qc & long["value"].isna(), "missing", ""))
    long = long.assign(flag=flag, atlas=atlas_name)
    return long[TIDY]


def alff_maps(bold, mask, qc, band=(0.01, 0.08)):
    """Voxel ALFF and fALFF images of a run (Lomb-Scargle over the retained volumes when volumes
    were censored); all NaN inside the mask for an excluded run."""
    import nibabel as nib
    from nilearn import image, masking

    mask_img = image.resample_to_img(image.check_niimg_3d(mask), image.index_img(bold, 0),
                                     interpolation="nearest", force_resample=True,
                                     copy_header=True)
    if qc["excluded"]:
        nan = masking.unmask(np.full(int(np.asarray(mask_img.dataobj).astype(bool).sum()),
                                     np.nan), mask_img)
        return nan, nib.Nifti1Image(np.asarray(nan.dataobj), nan.affine)
    return _alff.alff_maps(bold, mask_img, t_r=float(qc["t_r"]), band=tuple(band),
                           sample_mask=qc["sample_mask"], n_volumes=int(qc["n_volumes"]))


# ----------------------------------------------------------------------------------------------
# group level
def tangent_fc(timeseries_list, excluded, estimator="auto"):
    """Tangent FC of every run (NaN matrices for excluded runs) and the group geometric mean,
    fitted on the included runs."""
    n = timeseries_list[0].shape[1]
    use = [i for i, e in enumerate(excluded) if not e]
    if not use:
        log.warning("tangent FC: all %d runs are excluded; every matrix is NaN", len(excluded))
        return [np.full((n, n), np.nan) for _ in excluded], np.full((n, n), np.nan)
    arrays = [timeseries_list[i].to_numpy(float) for i in use]
    keep = np.logical_and.reduce([_fc.valid_parcels(t) for t in arrays])
    est = covariance_estimator(estimator, min(t.shape[0] for t in arrays), int(keep.sum()))
    log.info("tangent FC on %d of %d runs with %s", len(use), len(excluded),
             "EmpiricalCovariance" if est is None else type(est).__name__)
    mats, mean = _fc.fit_tangent(arrays, cov_estimator=est)
    out = [np.full((n, n), np.nan) for _ in excluded]
    for j, i in enumerate(use):
        out[i] = mats[j]
    return out, mean


def group_gradients(timeseries_list, excluded, atlas, ids, n_components=5, sparsity=0.9,
                    kernel="normalized_angle", regions=None):
    """Group reference gradients and each run's gradients aligned to it, from parcel time
    series (see :func:`fc_group_gradients`)."""
    zs = [None if e else _fc.fisher_z(_fc.pearson(t.to_numpy(float)))
          for t, e in zip(timeseries_list, excluded)]
    return fc_group_gradients(zs, excluded, atlas.table["name"].astype(str).to_numpy(),
                              atlas.parcel_networks.astype(str), ids, n_components, sparsity,
                              kernel, regions, order=atlas.networks)


def fc_group_gradients(fc_z, excluded, names, networks, ids, n_components=5, sparsity=0.9,
                       kernel="normalized_angle", regions=None, order=None):
    """Group reference gradients and each run's gradients aligned to it, from FC matrices.

    The reference is the diffusion-map embedding of the mean Fisher-z FC of the included runs,
    its first component oriented from unimodal (Vis, SomMot) to transmodal (Default). Each run's
    own embedding is rotated onto it by orthogonal Procrustes.

    Parameters
    ----------
    fc_z : list of array (n_parcels, n_parcels)
        Each run's Fisher-z FC (an excluded run's entry is not read).
    excluded : list of bool
    names, networks : array of str
        Each parcel's name and network.
    ids : list of (participant_id, session)
    order : sequence of str or None
        Network order of the position rows (default: as they first appear).

    Returns ``(reference DataFrame, aligned DataFrame, [tidy DataFrame per run])`` (add flags with
    :func:`finish_tidy`).
    """
    names, nets = np.asarray(names).astype(str), np.asarray(networks).astype(str)
    order = list(dict.fromkeys(nets)) if order is None else list(order)
    cols = [f"gradient{k + 1}" for k in range(n_components)]
    zs = [None if e else np.asarray(z, float) for z, e in zip(fc_z, excluded)]
    if all(z is None for z in zs):
        log.warning("gradients: all %d runs are excluded; every gradient is NaN", len(zs))
        ref = np.full((len(names), n_components), np.nan)
    else:
        with warnings.catch_warnings():  # the diagonal (NaN in every run) stays NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            mean_z = np.nanmean(np.stack([z for z in zs if z is not None]), axis=0)
        ref, lam = _grad.fc_gradients(mean_z, n_components, sparsity, kernel)
        ref[:, 0] = _grad.orient_gradient(ref[:, 0], nets)
        log.info("reference gradient lambdas: %s", np.round(lam, 4).tolist())
    reference = pd.DataFrame(ref, columns=cols)
    reference.insert(0, "network", nets)
    reference.insert(0, "name", names)
    regions = dict(regions or {})
    region_sel = {r: pd.Series(names).str.contains(p).to_numpy() for r, p in regions.items()}
    region_sel = {r: s for r, s in region_sel.items() if s.any()}
    aligned, rows = [], []
    for (pid, ses), z in zip(ids, zs):
        if z is None:
            g = np.full_like(ref, np.nan)
        else:
            g = _grad.procrustes_align(_grad.fc_gradients(z, n_components, sparsity, kernel)[0],
                                       ref)
        df = pd.DataFrame(g, columns=cols)
        df.insert(0, "network", nets)
        df.insert(0, "name", names)
        df.insert(0, "session", ses)
        df.insert(0, "participant_id", pid)
        aligned.append(df)
        g1 = g[:, 0]
        s = _grad.gradient_summary(g1, nets)
        r = [(pid, ses, "fmri", "gradient1_range", "global", s["range"]),
             (pid, ses, "fmri", "gradient1_variance", "global", s["variance"])]
        r += [(pid, ses, "fmri", "gradient1_position", n, s["position"][n]) for n in order]
        for reg, sel in region_sel.items():
            v = g1[sel]
            r.append((pid, ses, "fmri", "gradient1_position", reg,
                      float(np.nanmean(v)) if np.isfinite(v).any() else np.nan))
        rows.append(pd.DataFrame(r, columns=TIDY[:6]))
    return reference, pd.concat(aligned, ignore_index=True), rows
