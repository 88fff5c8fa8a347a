"""Simulated pre/post study: a complete BIDS dataset with known ground truth.

The simulator is the workflow's embedded default and the ground truth of its tests. For every
participant and session it writes a T1w, a resting BOLD run, a dynamic [11C]UCB-J PET with its
arterial blood, and every sidecar field the BIDS layer checks. The post session carries the study's
planted effects (lower within-Default FC, higher SomMot-Default FC, lower global synchrony, a PCC VT
increase with no global VT change); their sizes are parameters, and ``null=True`` sets all to zero.

Models
------
* Anatomy: nilearn's bundled MNI152 2009 template, GM/WM probability maps and brain mask, with a
  synthetic skull/scalp shell, deformed per participant by a brain-size factor and a smooth
  nonlinear warp (:class:`Warp`), seen through a per-subject affine (scaling, rotation, translation)
  and a per-session head pose; a smooth multiplicative bias field and Rician-like noise.
* BOLD: each Schaefer parcel's signal is ``x_p = s_k + sqrt(1 - S_kk) e_p`` where ``s`` are the
  7 network signals with covariance ``S`` (unit-variance parcels, so the expected correlation of two
  parcels in networks k, l is ``S_kl``) and ``e_p`` parcel-specific noise. The network signals are
  whitened before colouring, so their sample correlation equals ``S`` exactly. Voxels carry
  ``B_v (1 + 0.01 pGM_v x_p)`` plus physiological noise loading mostly on WM/CSF, per-volume rigid
  head motion, drift and thermal noise.
* PET: a one-tissue compartment model per tissue class and parcel, ``C = (1 - vB) K1 e^{-k2 t} *
  Cp + vB Cb``, computed in closed form for a four-exponential Feng (1993) parent input, averaged
  exactly over frames; partial volume from tissue probabilities, 5 mm scanner blur, frame motion
  and noise whose variance scales with activity x decay / frame duration.

Motion convention (BOLD and PET truth): the 4x4 matrix ``M_t`` in world (scanner, mm) coordinates
maps a point of volume t to the point of the head in the reference pose, i.e. ``image_t(x) =
image_ref(M_t @ x)``. ``M_t = T(trans) @ Rz(rot_z) @ Ry(rot_y) @ Rx(rot_x)``, rotations about the
world origin (which sits near the centre of the brain). Parameters are fMRIPrep's columns
trans_x, trans_y, trans_z (mm) and rot_x, rot_y, rot_z (rad); volume 0 is the reference (all zero).
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage, signal

from prepost import __version__
from prepost.connectivity.atlas import schaefer_files, schaefer_table
from prepost.connectivity.fc import fisher_z
from prepost.io import write_json, write_nifti, write_tsv
from prepost.paths import bids_name, derivative

__all__ = [
    "bias_field", "bids_paths", "blood_frame_means", "C11_HALF_LIFE_MIN", "dataset_paths",
    "default_participants", "DEFAULTS", "ExpSum", "fd_power", "feng_input", "frame_mean",
    "frame_timing", "gradient_truth", "grid_affine", "group_network_z", "group_parcel_fc",
    "hierarchy_loading", "hierarchy_positions", "hierarchy_signal", "hill_parent_fraction",
    "input_functions", "main", "merge_params", "mni_maps", "mni_maps_on_grid", "motion_trajectory",
    "network_fc_truth", "network_signals", "NETWORKS", "one_tcm_frames", "parcel_fc_truth",
    "pet_region_truth", "planted_changes", "planted_effect_z", "planted_sessions",
    "random_stream", "rigid_matrix", "sample_world", "schaefer400_table", "session_pose",
    "simulate_dataset_files", "simulate_study", "simulate_subject", "subject_affine",
    "subject_network_fc", "subject_outputs", "subject_warp", "synthetic_confounds",
    "t1w_to_mni", "to_template", "truth_paths", "truth_summary", "Warp", "world_coords",
]

NETWORKS = ["Vis", "SomMot", "DorsAttn", "SalVentAttn", "Limbic", "Cont", "Default"]
# fMRIPrep's rigid-motion columns, the order of every motion table the simulator writes
MOTION_COLUMNS = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
C11_HALF_LIFE_MIN = 20.364

# Group-mean parcel-pair FC (Fisher z) between the 7 networks at baseline.
_WITHIN_Z = {"Vis": 0.55, "SomMot": 0.55, "DorsAttn": 0.45, "SalVentAttn": 0.45,
             "Limbic": 0.30, "Cont": 0.40, "Default": 0.50}
_BETWEEN_Z = {("Vis", "DorsAttn"): 0.25, ("SomMot", "SalVentAttn"): 0.25,
              ("DorsAttn", "Cont"): 0.20, ("Cont", "Default"): 0.20,
              ("SalVentAttn", "Cont"): 0.20, ("Vis", "SomMot"): 0.20,
              ("SomMot", "Default"): 0.03, ("Vis", "Default"): 0.02,
              ("Limbic", "Default"): 0.15}
_BETWEEN_DEFAULT_Z = 0.10

# Each network's mean position on the unimodal-to-transmodal axis (the principal gradient's order,
# Margulies et al. 2016); parcels scatter about it by ``hierarchy.spread``.
_HIERARCHY = {"Vis": -1.0, "SomMot": -0.9, "DorsAttn": -0.4, "SalVentAttn": -0.2, "Limbic": 0.3,
              "Cont": 0.5, "Default": 1.0}

# Relative regional VT (x cortical mean) per network; PCC parcels take the Default value.
_NETWORK_VT = {"Vis": 1.08, "SomMot": 0.95, "DorsAttn": 1.0, "SalVentAttn": 1.04,
               "Limbic": 0.90, "Cont": 1.0, "Default": 1.03}

DEFAULTS = {
    "seed": 20261126,
    "null_study": False,
    "effects": {
        "within_default_dz": -0.10,
        "sommot_default_dz": 0.10,
        "global_dz": -0.05,
        "pcc_vt_pct": 12.0,
        "global_vt_pct": 0.0,
        "gradient_compression": 0.15,
    },
    "hierarchy": {"loading": 0.35, "spread": 0.25},
    "variability": {
        "fc_subject_sd_z": 0.10,
        "fc_session_sd_z": 0.05,
        "vt_subject_sd_pct": 12.0,
        "vt_session_sd_pct": 2.5,
        "vt_region_sd_pct": 2.0,
    },
    "anat": {"voxel_mm": 2.0, "noise_pct": 2.0, "bias_pct": 10.0, "warp_mm": 2.5,
             "warp_fwhm_mm": 40.0, "size_sd": 0.025},
    "bold": {
        "voxel_mm": 3.0,
        "n_volumes": 300,
        "t_r": 2.0,
        "dummy_volumes": 2,
        "thermal_noise_pct": 0.8,
        "signal_pct": 1.0,
        "physio": True,
        "drift_pct": 1.0,
        "motion_scale": 1.0,
        "n_spikes": 2,
    },
    "pet": {
        "voxel_mm": 3.0,
        "frames": [[6, 10], [3, 20], [2, 30], [2, 60], [2, 150], [16, 300]],
        "fwhm_mm": 5.0,
        "noise_scale": 2.5,
        "motion_scale": 1.0,
        "injected_mbq": 550.0,
        "vt_gm": 20.0,
        "k1_gm": 0.30,
        "vt_wm": 5.0,
        "k1_wm": 0.12,
        "vb": 0.05,
        "blood": True,
        "autosampler": True,
    },
}


def merge_params(overrides=None):
    """Return DEFAULTS updated recursively with ``overrides`` (unknown keys are an error)."""
    out = copy.deepcopy(DEFAULTS)

    def _merge(dst, src, path):
        for key, val in (src or {}).items():
            if key not in dst:
                raise KeyError(f"unknown simulation parameter '{path}{key}'")
            if isinstance(dst[key], dict):
                _merge(dst[key], val, f"{path}{key}.")
            else:
                dst[key] = val

    _merge(out, overrides, "")
    if out["null_study"]:
        out["effects"] = {k: 0.0 for k in out["effects"]}
    return out


def frame_timing(frames):
    """Frame starts and durations (s) from ``[[count, seconds], ...]``."""
    durations = np.concatenate([np.full(int(n), float(d)) for n, d in frames])
    starts = np.concatenate([[0.0], np.cumsum(durations)[:-1]])
    return starts, durations


# ----------------------------------------------------------------------------------------------
# Randomness: one stream per participant, independent of the order and number of participants.
def random_stream(seed, *keys):
    """The random generator of one part of the study (e.g. ``seed, "01", "anat"``).

    Streams are keyed by names, not drawn in sequence, so one participant's files do not depend
    on which other participants are simulated or in which order.
    """
    ints = [int(seed)] + [zlib.crc32(str(k).encode()) for k in keys]
    return np.random.default_rng(ints)


# ----------------------------------------------------------------------------------------------
# Geometry
def rigid_matrix(params):
    """4x4 world matrix from (trans_x, trans_y, trans_z, rot_x, rot_y, rot_z)."""
    tx, ty, tz, rx, ry, rz = params
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    M = np.eye(4)
    M[:3, :3] = Rz @ Ry @ Rx
    M[:3, 3] = [tx, ty, tz]
    return M


def grid_affine(voxel_mm, lo=(-84.0, -120.0, -78.0), hi=(84.0, 88.0, 96.0)):
    """Affine and shape of a grid covering the head, origin near the brain centre."""
    lo, hi = np.asarray(lo), np.asarray(hi)
    shape = tuple(int(np.ceil((h - l) / voxel_mm)) + 1 for l, h in zip(lo, hi))
    aff = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    aff[:3, 3] = lo
    return aff, shape


def world_coords(affine, shape):
    """World (mm) coordinates, shape (3, N), of every voxel of a grid, in C order."""
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1)
    return affine[:3, :3] @ ijk + affine[:3, 3:4]


def sample_world(vol, vol_affine, world_xyz, order=1, cval=0.0):
    """Sample ``vol`` (array on vol_affine) at world coordinates (3, N)."""
    inv = np.linalg.inv(vol_affine)
    ijk = inv[:3, :3] @ world_xyz + inv[:3, 3:4]
    return ndimage.map_coordinates(vol, ijk, order=order, mode="constant", cval=cval, prefilter=False)


@functools.lru_cache(maxsize=1)
def _mni_sources():
    """The unfiltered 1 mm source maps, shared by every voxel size (loading the template and the
    distance transform are most of a small simulation's time)."""
    from nilearn import datasets, image

    t1_img = datasets.load_mni152_template(resolution=1)
    aff = t1_img.affine
    t1 = t1_img.get_fdata(dtype=np.float32)
    gm = datasets.load_mni152_gm_template(resolution=1).get_fdata(dtype=np.float32)
    wm = datasets.load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32)
    brain = datasets.load_mni152_brain_mask(resolution=1).get_fdata(dtype=np.float32)
    csf = np.clip(brain - gm - wm, 0, 1) * brain
    # A synthetic skull (dark) and scalp (bright) so brain extraction is not trivial. Only
    # distances up to 11 mm matter, so the transform runs on the brain's box widened by 12 voxels
    # (the same values there; beyond it every distance exceeds 11).
    inside = brain >= 0.5
    box = tuple(slice(max(int(i.min()) - 12, 0), int(i.max()) + 13) for i in np.nonzero(inside))
    dist = np.full(brain.shape, np.inf, dtype=np.float64)
    dist[box] = ndimage.distance_transform_edt(~inside[box])
    scalp = ((dist > 6) & (dist <= 11)).astype(np.float32)
    t1 = t1 * brain + 0.55 * scalp + 0.05 * ((dist > 0) & (dist <= 6))
    atlas = nib.load(schaefer_files(400)[0])
    atlas = image.resample_to_img(atlas, t1_img, interpolation="nearest",
                                  force_resample=True, copy_header=True)
    labels = np.asarray(atlas.dataobj).astype(np.int16)
    return {"t1": t1, "gm": gm, "wm": wm, "csf": csf, "brain": brain, "labels": labels,
            "affine": aff}


@functools.lru_cache(maxsize=4)
def mni_maps(voxel_mm):
    """MNI-space source maps (1 mm), anti-aliased for sampling at ``voxel_mm``.

    Returns dict of arrays on the template's 1 mm affine: t1 (with skull/scalp shell), gm, wm, csf,
    brain, labels (Schaefer 400, nearest) and the affine.
    """
    src = _mni_sources()
    sigma = max(voxel_mm / 2.355 - 0.4, 0.0)  # anti-alias: about one target voxel FWHM
    maps = {k: src[k] for k in ("t1", "gm", "wm", "csf", "brain")}
    if sigma > 0:
        maps = {k: ndimage.gaussian_filter(v, sigma) for k, v in maps.items()}
    maps["labels"] = src["labels"]
    maps["affine"] = src["affine"]
    return maps


def mni_maps_on_grid(affine, shape, to_mni=None, voxel_mm=None,
                     keys=("gm", "wm", "csf", "brain"), warp=None):
    """The simulator's MNI source maps, sampled on an image grid: the truth an image was drawn from.

    Parameters
    ----------
    affine : (4, 4) array
        Voxel -> world (mm) matrix of the grid.
    shape : tuple of int
        Spatial shape of the grid.
    to_mni : (4, 4) array or None
        World (mm) of the grid -> MNI mm, e.g. :func:`t1w_to_mni` for a simulated T1w or BOLD;
        None for a grid already in MNI space.
    voxel_mm : float or None
        Anti-aliasing of the maps (see :func:`mni_maps`); the grid's largest voxel size if None.
    keys : sequence of str
        Maps among ``t1``, ``gm``, ``wm``, ``csf``, ``brain`` (trilinear) and ``labels``
        (Schaefer 400 index, nearest neighbour).
    warp : Warp or None
        The participant's anatomy after ``to_mni`` (:func:`subject_warp`); None: the affine alone.

    Returns
    -------
    dict of str to ndarray
        One array of ``shape`` per key (``labels`` as int).
    """
    if voxel_mm is None:
        voxel_mm = float(np.max(np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)))
    maps = mni_maps(float(voxel_mm))
    to_mni = np.eye(4) if to_mni is None else np.asarray(to_mni)
    xyz = to_template(to_mni, warp, world_coords(affine, shape))
    out = {}
    for k in keys:
        if k == "labels":
            lab = sample_world(maps[k].astype(np.float32), maps["affine"], xyz, order=0)
            out[k] = lab.astype(int).reshape(shape)
        else:
            out[k] = sample_world(maps[k], maps["affine"], xyz).reshape(shape)
    return out


@functools.lru_cache(maxsize=1)
def schaefer400_table():
    """Parcel table of Schaefer 400 (7 networks): index, name, network, hemi, is_pcc."""
    table = schaefer_table(400)
    table["is_pcc"] = table["name"].str.contains("pCunPCC")
    return table


# ----------------------------------------------------------------------------------------------
# Ground-truth FC
def group_network_z():
    """Baseline group-mean network x network Fisher z (parcel-pair FC)."""
    k = len(NETWORKS)
    Z = np.full((k, k), _BETWEEN_DEFAULT_Z)
    for (a, b), z in _BETWEEN_Z.items():
        i, j = NETWORKS.index(a), NETWORKS.index(b)
        Z[i, j] = Z[j, i] = z
    for n, z in _WITHIN_Z.items():
        i = NETWORKS.index(n)
        Z[i, i] = z
    return Z


def planted_effect_z(effects):
    """Network x network Δz planted in the follow-up session."""
    k = len(NETWORKS)
    D = np.full((k, k), float(effects["global_dz"]))
    d, s = NETWORKS.index("Default"), NETWORKS.index("SomMot")
    D[d, d] = effects["within_default_dz"]
    D[s, d] = D[d, s] = effects["sommot_default_dz"]
    return D


def _nearest_valid_cov(R, floor=0.02):
    """Clip eigenvalues so R is a valid signal covariance (PSD, diagonal < 1)."""
    w, V = np.linalg.eigh((R + R.T) / 2)
    R = (V * np.maximum(w, floor)) @ V.T
    np.fill_diagonal(R, np.clip(np.diag(R), 0.02, 0.95))
    return R


def subject_network_fc(params, participant, sessions=("pre", "post"), planted=None):
    """Per-session network covariance ``S`` (= expected parcel-pair r) for one participant.

    Sessions draw their noise in the order given; those in ``planted`` (default: the second)
    carry the planted effects. Returns ``{session: S}``.
    """
    planted = planted_sessions(sessions, planted)
    var = params["variability"]
    rng = random_stream(params["seed"], participant, "fc")
    k = len(NETWORKS)
    dev = rng.normal(0, var["fc_subject_sd_z"], (k, k))
    dev = np.triu(dev) + np.triu(dev, 1).T
    base = group_network_z() + dev
    out = {}
    for ses in sessions:
        eff = params["effects"] if ses in planted else None
        noise = rng.normal(0, var["fc_session_sd_z"], (k, k))
        noise = np.triu(noise) + np.triu(noise, 1).T
        Z = base + noise + (planted_effect_z(eff) if eff else 0.0)
        out[ses] = _nearest_valid_cov(np.tanh(Z))
    return out


def planted_sessions(sessions, planted=None):
    """The sessions that carry the planted effects (default: the second, the follow-up)."""
    return tuple(sessions[1:2] if planted is None else planted)


def hierarchy_positions(params):
    """Each Schaefer-400 parcel's position on the unimodal-to-transmodal axis.

    The network's position (:data:`_HIERARCHY`) plus a parcel scatter of SD ``hierarchy.spread``
    from a stream that does not depend on the seed: every participant and every study shares
    the axis, as they share the group network FC.
    """
    table = schaefer400_table()
    rng = random_stream(0, "hierarchy")
    m = np.array([_HIERARCHY[n] for n in table.network])
    return m + rng.normal(0, params["hierarchy"]["spread"], len(table))


def hierarchy_loading(params, planted):
    """Loading of the hierarchy signal: ``hierarchy.loading``, compressed by
    ``effects.gradient_compression`` in a planted session (the flattened hierarchy)."""
    g = float(params["hierarchy"]["loading"])
    return g * (1 - float(params["effects"]["gradient_compression"])) if planted else g


def _parcel_model(S, parcel_networks, h=None, g=0.0):
    """Parcel signal = its network's signal + ``g h_p`` x the hierarchy signal + a unique part.

    All three are unit-variance band-limited signals; returns the parcels' network index, their
    hierarchy weights ``g h_p`` and unique variances (floored at 0.05, where the parcel's variance
    then exceeds 1).
    """
    idx = np.array([NETWORKS.index(n) for n in parcel_networks])
    w = np.zeros(idx.size) if h is None else g * np.asarray(h, float)
    unique = np.clip(1 - np.diag(S)[idx] - w**2, 0.05, None)
    return idx, w, unique


def parcel_series(S, parcel_networks, h, g, network, hierarchy, unique):
    """Noise-free parcel signals (T, n_parcels) from the network signals (T, 7), the hierarchy
    signal (T, 1) and the unit-variance unique signals (T, n_parcels) (see :func:`_parcel_model`)."""
    idx, w, u = _parcel_model(S, parcel_networks, h, g)
    return network[:, idx] + hierarchy * w + np.sqrt(u) * unique


def hierarchy_signal(network, t_r, rng):
    """The hierarchy signal (T, 1): band-limited, unit variance and, in the sample, exactly
    uncorrelated with the network signals, as those have exactly their covariance: its chance
    correlation with a network's signal would otherwise enter every parcel pair of that network
    (about 0.1 at 300 volumes) and swamp the changes the network FC truth plants."""
    c = _unit_band(rng, (network.shape[0], 1), t_r)
    q, _ = np.linalg.qr(network - network.mean(0))
    c = c - q @ (q.T @ c)
    return (c - c.mean()) / c.std(ddof=1)


def _unit_band(rng, shape, t_r, band=(0.01, 0.08)):
    x = _bandpass(rng.standard_normal(shape), t_r, band)
    return (x - x.mean(0)) / x.std(0, ddof=1)


def network_signals(S, n_volumes, t_r, rng, band=(0.01, 0.08)):
    """Band-limited network signals whose sample covariance equals ``S`` exactly."""
    k = S.shape[0]
    white = rng.standard_normal((n_volumes, k + 4))
    filt = _bandpass(white, t_r, band)[:, :k]
    filt -= filt.mean(0)
    q, _ = np.linalg.qr(filt)  # orthonormal columns, still within the band
    q *= np.sqrt(n_volumes - 1)
    L = np.linalg.cholesky(S)
    return q @ L.T


def _bandpass(x, t_r, band):
    nyq = 0.5 / t_r
    hi = min(band[1] / nyq, 0.99)
    b, a = signal.butter(2, [band[0] / nyq, hi], btype="band")
    return signal.filtfilt(b, a, x, axis=0, padlen=min(15, x.shape[0] - 1))


def parcel_fc_truth(S, parcel_networks, h=None, g=0.0):
    """Expected parcel x parcel correlation from network covariance ``S`` and, when given, the
    hierarchy positions ``h`` with loading ``g`` (see :func:`hierarchy_positions`)."""
    idx, w, unique = _parcel_model(S, parcel_networks, h, g)
    R = S[np.ix_(idx, idx)] + np.outer(w, w)
    sd = np.sqrt(np.diag(S)[idx] + w**2 + unique)
    R = R / np.outer(sd, sd)
    np.fill_diagonal(R, 1.0)
    return R


def network_fc_truth(R, parcel_networks):
    """Network x network FC as the workflow measures it: the mean Fisher z over parcel pairs
    (distinct parcels), returned as its ``tanh`` (the network-fc.tsv convention)."""
    nets = np.asarray(parcel_networks)
    z = fisher_z(R)
    k = len(NETWORKS)
    out = np.zeros((k, k))
    for i, a in enumerate(NETWORKS):
        for j, b in enumerate(NETWORKS[i:], start=i):
            out[i, j] = out[j, i] = np.nanmean(z[np.ix_(nets == a, nets == b)])
    return np.tanh(out)


def _group_network_cov(params, planted):
    Z = group_network_z() + (planted_effect_z(params["effects"]) if planted else 0.0)
    return _nearest_valid_cov(np.tanh(Z))


def group_parcel_fc(params, planted):
    """Group-level expected parcel FC of a baseline (``planted`` False) or planted session: the
    baseline network FC (plus the planted network changes) without participant or session
    deviations, and the hierarchy at its loading."""
    return parcel_fc_truth(_group_network_cov(params, planted), schaefer400_table().network,
                           hierarchy_positions(params), hierarchy_loading(params, planted))


def group_sample_fc(params, planted, rng):
    """One draw of the noise-free parcel signals' FC (Fisher z) of a group-level session at the
    protocol's length (``bold.n_volumes`` minus the non-steady-state volumes)."""
    b = params["bold"]
    T, t_r = int(b["n_volumes"]) - int(b["dummy_volumes"]), float(b["t_r"])
    table = schaefer400_table()
    S = _group_network_cov(params, planted)
    s = network_signals(S, T, t_r, rng)
    x = parcel_series(S, table.network, hierarchy_positions(params),
                      hierarchy_loading(params, planted), s, hierarchy_signal(s, t_r, rng),
                      _unit_band(rng, (T, len(table)), t_r))
    return fisher_z(np.corrcoef(x.T))


def planted_changes(params, n_draws=10):
    """The group-level change the planted effects make in each fMRI measure the simulator has a
    truth for: network FC (Fisher z, the hierarchy's share included) and the principal
    gradient's range, variance and network positions (mean over ``n_draws`` pairs of noise-free
    group sessions). A tidy table: measure, region, change, change_se (the gradient measures'
    Monte Carlo standard error; 0 for network FC, which is exact)."""
    nets = schaefer400_table().network.astype(str).to_numpy()
    R = [group_parcel_fc(params, p) for p in (False, True)]
    rows = []
    Z = [np.arctanh(network_fc_truth(r, nets)) for r in R]
    for i, a in enumerate(NETWORKS):
        rows.append(("fc_within", a, Z[1][i, i] - Z[0][i, i], 0.0))
        rows += [("fc_between", f"{a}-{b}", Z[1][i, j] - Z[0][i, j], 0.0)
                 for j, b in enumerate(NETWORKS) if j > i]
    # The gradient measures are not a function of the expected FC (on it, the row sparsification
    # ties and the range does not move with the loading): their planted change is the mean over
    # draws of noise-free sessions at the protocol's length, as their truth is per session. Both
    # sessions of a draw share its random numbers, so their difference is the planted effects'
    # alone: exactly 0 in a null study, and a small Monte Carlo error otherwise. The streams are
    # a property of the parameters, not of the seed.
    fcs, ids = [], []
    for k in range(n_draws):
        for ses, planted in (("pre", False), ("post", True)):
            fcs.append(group_sample_fc(params, planted,
                                       random_stream(0, "planted-gradients", k)))
            ids.append((str(k), ses))
    g = gradient_truth(fcs, ids, nets)
    g = g.pivot_table(index=["measure", "region", "participant_id"], columns="session",
                      values="value")
    d = (g["post"] - g["pre"]).groupby(level=["measure", "region"])
    se = d.std(ddof=1) / np.sqrt(d.count())  # NaN for a single draw
    rows += [(m, r, v, se[m, r]) for (m, r), v in d.mean().items()]
    return pd.DataFrame(rows, columns=["measure", "region", "change", "change_se"])


def gradient_truth(fc_z, ids, parcel_networks):
    """The workflow's principal-gradient measures of true FC matrices (Fisher z), aligned to the
    gradients of their mean as the connectivity stage aligns the estimates (its defaults:
    5 components, sparsity 0.9, normalized angle). A tidy table: participant_id, session,
    measure, region, value."""
    from prepost.connectivity.stage import fc_group_gradients

    nets = np.asarray(parcel_networks).astype(str)
    _, _, rows = fc_group_gradients(list(fc_z), [False] * len(ids), nets, nets, ids,
                                    order=NETWORKS)
    return pd.concat(rows, ignore_index=True).drop(columns="modality")


# ----------------------------------------------------------------------------------------------
# PET: closed-form 1TCM with a Feng input
@dataclass
class ExpSum:
    """f(u) = sum_i c_i u^m_i exp(l_i u) for u >= 0 (0 before), with u = t - delay (minutes)."""

    c: np.ndarray
    m: np.ndarray
    lam: np.ndarray
    delay: float = 0.0

    def __call__(self, t):
        u = np.asarray(t, float)[..., None] - self.delay
        val = self.c * np.where(self.m == 1, u, 1.0) * np.exp(self.lam * np.maximum(u, 0))
        return np.where(u[..., 0] > 0, val.sum(-1), 0.0)

    def integral(self, t0, t1):
        """Exact integral from t0 to t1 (arrays, minutes)."""
        return self._prim(np.asarray(t1, float)) - self._prim(np.asarray(t0, float))

    def _prim(self, t):
        u = np.maximum(t[..., None] - self.delay, 0.0)
        lam, m, c = self.lam, self.m, self.c
        e = np.exp(lam * u)
        p0 = (e - 1.0) / lam
        p1 = (e * (lam * u - 1.0) + 1.0) / lam**2
        return (c * np.where(m == 1, p1, p0)).sum(-1)

    def convolve_exp(self, K1, k2):
        """K1 exp(-k2 u) convolved with this function (same delay), closed form.

        The form divides by (lambda_i + k2); a rate within 1e-6/min of -lambda_i is moved 1e-6
        away (a relative change of about 1e-4 in k2) rather than handled as a separate limit.
        """
        if np.any(np.abs(self.lam + k2) < 1e-6):
            k2 = k2 + 2e-6
        cs, ms, ls = [], [], []
        tail = 0.0
        for c, m, lam in zip(self.c, self.m, self.lam):
            a = lam + k2
            if m == 0:
                cs.append(K1 * c / a); ms.append(0); ls.append(lam)
                tail -= K1 * c / a
            else:
                cs += [K1 * c / a, -K1 * c / a**2]; ms += [1, 0]; ls += [lam, lam]
                tail += K1 * c / a**2
        cs.append(tail); ms.append(0); ls.append(-k2)
        return ExpSum(np.array(cs), np.array(ms), np.array(ls, float), self.delay)


def feng_input(A1, A2, A3, l1, l2, l3, delay):
    """Four-part Feng (1993) input, kBq/mL, t in minutes."""
    return ExpSum(np.array([A1, -(A2 + A3), A2, A3]), np.array([1, 0, 0, 0]),
                  np.array([l1, l1, l2, l3], float), delay)


def hill_parent_fraction(t_min, a, b, c):
    """Parent fraction f(t) = a + (1 - a) / (1 + (t/c)^b)."""
    t = np.maximum(np.asarray(t_min, float), 0.0)
    return a + (1 - a) / (1 + (t / c) ** b)


def input_functions(inp):
    """Parent plasma (ExpSum) and whole-blood callable from an input dict (see _subject_input)."""
    cp = feng_input(*inp["feng"], inp["delay_min"])

    def whole_blood(t):
        f = hill_parent_fraction(np.asarray(t) - inp["delay_min"], *inp["parent_fraction_hill"])
        return inp["blood_plasma_ratio"] * cp(t) / f

    return cp, whole_blood


@functools.lru_cache(maxsize=4)
def _gauss_legendre(n):
    return np.polynomial.legendre.leggauss(n)


def frame_mean(fun, starts_min, ends_min, n=64):
    """Frame means of a smooth callable by Gauss-Legendre quadrature on each frame."""
    x, w = _gauss_legendre(n)
    mids, half = (starts_min + ends_min) / 2, (ends_min - starts_min) / 2
    pts = mids[:, None] + half[:, None] * x[None, :]
    return (fun(pts) * w).sum(1) / 2


def blood_frame_means(inp, starts_s, durations_s):
    """Frame means of whole blood; frames are split at the input delay, where it has a kink."""
    _, cb = input_functions(inp)
    t0, t1 = starts_s / 60.0, (starts_s + durations_s) / 60.0
    kink = np.clip(inp["delay_min"], t0, t1)
    lo = np.where(kink > t0, frame_mean(cb, t0, np.maximum(kink, t0 + 1e-12)), 0.0)
    hi = np.where(kink < t1, frame_mean(cb, np.minimum(kink, t1 - 1e-12), t1), 0.0)
    return (lo * (kink - t0) + hi * (t1 - kink)) / (t1 - t0)


def one_tcm_frames(inp, K1, k2, vb, starts_s, durations_s, blood=None):
    """Noise-free frame-mean 1TCM TAC (kBq/mL): (1 - vB) K1 e^{-k2 t} * Cp + vB Cb.

    The tissue term is exact (closed-form convolution and integral); whole blood, which is not a
    sum of exponentials, is integrated by Gauss-Legendre quadrature (``blood`` may pass it in).
    """
    cp, _ = input_functions(inp)
    t0, t1 = starts_s / 60.0, (starts_s + durations_s) / 60.0
    tissue = cp.convolve_exp(K1, k2).integral(t0, t1) / (t1 - t0) if K1 else 0.0 * t0
    if vb == 0:
        return (1 - vb) * tissue
    if blood is None:
        blood = blood_frame_means(inp, starts_s, durations_s)
    return (1 - vb) * tissue + vb * blood


def _subject_input(rng):
    jitter = lambda s: float(np.exp(rng.normal(0, s)))  # noqa: E731
    return {
        "feng": [400.0 * jitter(0.1), 8.0 * jitter(0.1), 2.5 * jitter(0.1),
                 -4.0 * jitter(0.05), -0.25 * jitter(0.05), -0.015 * jitter(0.05)],
        "delay_min": float(rng.uniform(0.15, 0.35)),
        "parent_fraction_hill": [0.15 * jitter(0.1), 1.8, 12.0 * jitter(0.1)],
        "blood_plasma_ratio": 0.9,
        "units": "kBq/mL; time in minutes from TimeZero; parent plasma is the 1TCM input",
    }


def pet_region_truth(params, participant, sessions=("pre", "post"), planted=None):
    """True K1, k2, VT per parcel and tissue class of each session of one participant.

    Sessions draw in the order given; those in ``planted`` (default: the second) carry the
    planted effects. Returns ``{session: {...}}``.
    """
    planted = sessions[1:2] if planted is None else planted
    p, var, eff = params["pet"], params["variability"], params["effects"]
    rng = random_stream(params["seed"], participant, "pet")
    table = schaefer400_table()
    subj = float(np.exp(rng.normal(0, var["vt_subject_sd_pct"] / 100)))
    net_dev = {n: float(np.exp(rng.normal(0, var["vt_region_sd_pct"] / 100))) for n in NETWORKS}
    k1_subj = float(np.exp(rng.normal(0, 0.05)))
    out = {}
    for ses in sessions:
        sess = float(np.exp(rng.normal(0, var["vt_session_sd_pct"] / 100)))
        reg = {n: float(np.exp(rng.normal(0, var["vt_region_sd_pct"] / 200))) for n in NETWORKS}
        glob = 1 + (eff["global_vt_pct"] / 100 if ses in planted else 0.0)
        pcc = 1 + (eff["pcc_vt_pct"] / 100 if ses in planted else 0.0)
        vt = np.array([p["vt_gm"] * subj * sess * glob * _NETWORK_VT[n] * net_dev[n] * reg[n]
                       for n in table.network])
        vt = np.where(table.is_pcc, vt * pcc, vt)
        k1 = np.full(len(vt), p["k1_gm"] * k1_subj)
        out[ses] = {
            "parcel_vt": vt, "parcel_k1": k1,
            "subcortical": (0.9 * p["vt_gm"] * subj * sess * glob, p["k1_gm"] * k1_subj),
            "wm": (p["vt_wm"] * subj * sess, p["k1_wm"] * k1_subj),
        }
    return out


# ----------------------------------------------------------------------------------------------
# Nuisances
def motion_trajectory(n, rng, scale=1.0, n_spikes=2, trans_sd=0.03, rot_sd=0.0005):
    """Per-volume rigid parameters: AR(1) drift with a few spikes; row 0 is zero."""
    sd = np.array([trans_sd] * 3 + [rot_sd] * 3) * scale
    x = np.zeros((n, 6))
    for t in range(1, n):
        x[t] = 0.97 * x[t - 1] + rng.normal(0, sd)
    if scale > 0:
        for t in rng.choice(np.arange(5, n - 4), size=min(n_spikes, max(n - 9, 0)), replace=False):
            length = int(rng.integers(1, 3))
            jump = rng.normal(0, 1, 6) * np.array([0.5] * 3 + [0.006] * 3) * scale
            x[t:t + length] += jump
    x -= x[0]
    return x


def synthetic_confounds(n_volumes, rng, t_r=2.0):
    """An fMRIPrep-style confounds table of the simulator's motion and smooth nuisance signals.

    For checking denoising on signals without images: ``trans_*``/``rot_*`` from
    :func:`motion_trajectory` and band-limited ``white_matter``, ``csf`` and ``global_signal``,
    each with its 24-parameter expansion, and ``framewise_displacement`` (Power).
    """
    from prepost.fmri.confounds import expand_24

    base = pd.DataFrame(motion_trajectory(n_volumes, rng), columns=MOTION_COLUMNS)
    nuis = _bandpass(rng.standard_normal((n_volumes, 3)), t_r, (0.005, 0.2))
    for k, name in enumerate(("white_matter", "csf", "global_signal")):
        base[name] = nuis[:, k]
    out = expand_24(base, list(base.columns))
    out["framewise_displacement"] = fd_power(base)
    return out


def _move(vol, affine, params):
    """Resample one volume so that out(x) = vol(M @ x) (trilinear)."""
    M = rigid_matrix(params)
    ijk2 = np.linalg.inv(affine) @ M @ affine
    return ndimage.affine_transform(vol, ijk2[:3, :3], ijk2[:3, 3], order=1, mode="constant",
                                    cval=float(vol.min()), prefilter=False)


def bias_field(shape, rng, pct):
    """Smooth multiplicative field of amplitude ~pct %."""
    coords = [np.linspace(-1, 1, s) for s in shape]
    X, Y, Z = np.meshgrid(*coords, indexing="ij")
    c = rng.normal(0, pct / 100 / 2, 6)
    return 1 + c[0] * X + c[1] * Y + c[2] * Z + c[3] * X * Y + c[4] * (X**2 - 0.3) + c[5] * Z**2


# ----------------------------------------------------------------------------------------------
# The writer
def bids_paths(bids_dir, participant, session, tracer="UCBJ", task="rest"):
    """Paths of the BIDS files the simulator writes for one participant and session.

    Parameters
    ----------
    bids_dir : path-like
        Dataset root.
    participant, session : str
        Labels without ``sub-``/``ses-``; Snakemake wildcards such as ``"{subject}"`` work.
    tracer, task : str
        ``trc-`` and ``task-`` labels.

    Returns
    -------
    dict of str to pathlib.Path
        ``t1w``, ``bold``, ``pet`` and ``blood_<recording>`` with their ``_json`` sidecars.
    """
    ent = {"sub": participant, "ses": session}
    pet = {**ent, "trc": tracer}
    out = {
        "t1w": derivative(bids_dir, "T1w", ".nii.gz", datatype="anat", **ent),
        "t1w_json": derivative(bids_dir, "T1w", ".json", datatype="anat", **ent),
        "bold": derivative(bids_dir, "bold", ".nii.gz", datatype="func", task=task, **ent),
        "bold_json": derivative(bids_dir, "bold", ".json", datatype="func", task=task, **ent),
        "pet": derivative(bids_dir, "pet", ".nii.gz", datatype="pet", **pet),
        "pet_json": derivative(bids_dir, "pet", ".json", datatype="pet", **pet),
    }
    for rec in ("manual", "autosampler"):
        out[f"blood_{rec}"] = derivative(bids_dir, "blood", ".tsv", datatype="pet",
                                         recording=rec, **pet)
        out[f"blood_{rec}_json"] = derivative(bids_dir, "blood", ".json", datatype="pet",
                                              recording=rec, **pet)
    return {k: Path(v) for k, v in out.items()}


# Ground-truth files of one session: suffix, extension and extra entities of each.
_TRUTH_FILES = {
    "motion": ("motion", ".tsv", {"task": "rest"}),
    "network_fc": ("network-fc", ".tsv", {}),
    "parcel_fc": ("fc", ".tsv.gz", {"atlas": "Schaefer400"}),
    "sample_fc": ("fc", ".tsv.gz", {"atlas": "Schaefer400", "desc": "sample"}),
    "network_signals": ("network-signals", ".tsv", {}),
    "pet_regions": ("pet-regions", ".tsv", {}),
    "pet_tacs": ("pet-tacs", ".tsv", {}),
    "pet_motion": ("pet-motion", ".tsv", {}),
    "input": ("input-function", ".json", {}),
    "geometry": ("geometry", ".json", {}),
    "warp": ("warp", ".nii.gz", {"ses": None}),  # the participant's, one for all sessions
}


def truth_paths(truth_dir, participant, session):
    """Paths of the ground truth of one participant and session (``truth_dir/sub-<label>/``).

    Returns
    -------
    dict of str to pathlib.Path
        ``motion`` (BOLD head motion), ``network_fc``, ``parcel_fc`` (expected parcel r),
        ``sample_fc`` (Fisher z of the noise-free parcel signals of the run), ``network_signals``,
        ``pet_regions`` (true K1, k2, VT, vB), ``pet_tacs``, ``pet_motion``, ``input`` (the
        arterial input function's parameters), ``geometry`` (image -> MNI matrices and the brain
        size) and ``warp`` (the participant's displacement field, :class:`Warp`).
    """
    folder = Path(truth_dir) / f"sub-{participant}"
    return {key: folder / bids_name(suffix, ext, **{"sub": participant, "ses": session, **extra})
            for key, (suffix, ext, extra) in _TRUTH_FILES.items()}


def dataset_paths(bids_dir, truth_dir):
    """Paths of the dataset-level files :func:`simulate_dataset_files` writes.

    Returns
    -------
    dict of str to pathlib.Path
        ``description`` and ``participants`` (BIDS), ``effects`` (planted effects and every
        parameter) and ``truth`` (the study-level truth table, see :func:`truth_summary`).
    """
    bids_dir, truth_dir = Path(bids_dir), Path(truth_dir)
    return {"description": bids_dir / "dataset_description.json",
            "participants": bids_dir / "participants.tsv",
            "effects": truth_dir / "effects.json",
            "truth": truth_dir / _TRUTH_TABLE}


_TRUTH_TABLE = "truth.tsv"


def subject_outputs(bids_dir, truth_dir, participant, sessions=("pre", "post"), params=None):
    """Every file :func:`simulate_subject` writes (for Snakemake outputs)."""
    params = merge_params(params)
    out = []
    for ses in sessions:
        paths = bids_paths(bids_dir, participant, ses)
        if not params["pet"]["blood"]:
            paths = {k: v for k, v in paths.items() if not k.startswith("blood")}
        elif not params["pet"]["autosampler"]:
            paths = {k: v for k, v in paths.items() if "autosampler" not in k}
        out += list(paths.values()) + list(truth_paths(truth_dir, participant, ses).values())
    return [str(p) for p in dict.fromkeys(out)]  # the warp is the participant's: listed once


def simulate_subject(bids_dir, truth_dir, participant, sessions=("pre", "post"), params=None,
                     planted=None):
    """Write one participant's BIDS files and ground truth for the baseline and follow-up sessions.

    Parameters
    ----------
    bids_dir, truth_dir : path-like
        Dataset root and ground-truth folder.
    participant : str
        Label without the ``sub-`` prefix.
    sessions : sequence of str
        Session labels: baseline and follow-up, or a crossover's four.
    params : dict or None
        Overrides of :data:`DEFAULTS`.
    planted : sequence of str or None
        The sessions carrying the planted effects (default: the second, the follow-up); a
        crossover plants them in the active condition's follow-up only.
    """
    params = merge_params(params)
    sessions = tuple(sessions)
    fc = subject_network_fc(params, participant, sessions, planted)
    h, planted = hierarchy_positions(params), planted_sessions(sessions, planted)
    vt = pet_region_truth(params, participant, sessions, planted)
    subj_aff = subject_affine(params["seed"], participant)
    warp = subject_warp(params, participant)
    for ses in sessions:
        rng = random_stream(params["seed"], participant, ses)
        to_mni = subj_aff @ session_pose(rng)  # the session's first draws; rng continues below
        bp, tp = bids_paths(bids_dir, participant, ses), truth_paths(truth_dir, participant, ses)
        _write_t1w(params, to_mni, warp, rng, bp)
        # the hierarchy signal has its own stream: every other draw is as without it
        hierarchy = (h, hierarchy_loading(params, ses in planted),
                     random_stream(params["seed"], participant, ses, "hierarchy"))
        _write_bold(params, to_mni, warp, fc[ses], hierarchy, rng, bp, tp)
        pet_to_mni = _write_pet(params, to_mni, warp, vt[ses], rng, bp, tp, ses)
        if ses == sessions[0]:
            write_nifti(warp.to_nifti(), tp["warp"])
        write_json({
            "convention": "world (scanner) mm of the image -> MNI mm of the template: "
                          "y = M @ [x, y, z, 1] (M: t1w_to_mni, bold_to_mni or pet_to_mni), "
                          "z = size * y, mni = z + u(z) with u the displacement field of the "
                          "warp file (mm, trilinear; prepost.simulate.Warp); the BOLD reference "
                          "(volume 0) shares the T1w scanner space; PET frames before motion",
            "t1w_to_mni": to_mni.round(12).tolist(),
            "bold_to_mni": to_mni.round(12).tolist(),
            "pet_to_mni": pet_to_mni.round(12).tolist(),
            "size": warp.size,
            "warp": tp["warp"].name,
        }, tp["geometry"])


def subject_affine(seed, participant):
    """The participant's head in MNI: per-axis scaling after a rotation and translation.

    Returns
    -------
    (4, 4) ndarray
        Head-in-reference-pose mm -> MNI mm, drawn from the participant's ``"anat"`` stream.
    """
    rng = random_stream(seed, participant, "anat")
    scale = np.exp(rng.normal(0, 0.04, 3))
    rot = rigid_matrix(np.concatenate([rng.normal(0, 4, 3), rng.normal(0, 0.05, 3)]))
    S = np.diag(np.append(scale, 1.0))
    return S @ rot


def session_pose(rng):
    """Head pose of one session in the scanner (rigid, 4x4), from the next six draws of ``rng``."""
    return rigid_matrix(np.concatenate([rng.normal(0, 3, 3), rng.normal(0, 0.03, 3)]))


def t1w_to_mni(participant, session, seed=DEFAULTS["seed"]):
    """True T1w world (mm) -> MNI mm matrix of a simulated participant and session: the affine
    part of the mapping, the whole of it when ``anat.warp_mm`` and ``anat.size_sd`` are 0
    (otherwise follow it with :func:`subject_warp`, as :func:`to_template` does).

    The BOLD reference volume shares the T1w world, so this also maps a simulated BOLD run to
    MNI; :func:`simulate_subject` writes the same matrix to the truth's ``geometry`` file.

    Parameters
    ----------
    participant : str
        Label without ``sub-``.
    session : str
        Session label, as passed to :func:`simulate_subject`.
    seed : int
        The study's ``seed`` parameter.

    Returns
    -------
    (4, 4) ndarray
    """
    return subject_affine(seed, participant) @ session_pose(random_stream(seed, participant, session))


# Box of the warp's grid in MNI mm: the template's head with a margin.
_WARP_BOX = ((-100.0, -136.0, -84.0), (100.0, 104.0, 112.0))


@dataclass(frozen=True)
class Warp:
    """A participant's anatomy against the template: brain size and a smooth nonlinear warp.

    A point ``y`` in the participant's affine frame (``y = t1w_to_mni @ x`` for a T1w world point
    ``x``) lies at the template point ``W(y) = z + u(z)`` with ``z = size * y``: ``size`` scales
    the brain about the MNI origin and ``u`` is a displacement field (mm) on a regular MNI grid,
    interpolated trilinearly. The identity is ``size = 1`` with a zero field.

    Parameters
    ----------
    size : float
        Isotropic scaling of the participant's brain against the template (1: no scaling).
    field : ndarray, shape (3, nx, ny, nz)
        Displacement ``u`` (MNI mm, RAS) at the grid points.
    affine : ndarray, shape (4, 4)
        Grid voxel -> MNI mm.
    """

    size: float
    field: np.ndarray
    affine: np.ndarray

    def _u(self, z):
        inv = np.linalg.inv(self.affine)
        ijk = inv[:3, :3] @ z + inv[:3, 3:4]
        return np.stack([ndimage.map_coordinates(c, ijk, order=1, mode="nearest", prefilter=False)
                         for c in self.field])

    def __call__(self, y):
        """Template (MNI mm) points, shape (3, N), of participant points ``y`` (3, N)."""
        z = self.size * np.asarray(y, float)
        return z + self._u(z)

    def inverse(self, mni, tol=1e-4, max_iter=50):
        """Participant points ``y`` (3, N) whose template points are ``mni`` (3, N).

        Fixed-point iteration ``z <- mni - u(z)``: a contraction while the field's gradient stays
        below 1, which the smooth fields of :func:`subject_warp` keep far below.
        """
        mni = np.asarray(mni, float)
        z = mni.copy()
        for _ in range(max_iter):
            z_new = mni - self._u(z)
            done = np.max(np.abs(z_new - z), initial=0.0) < tol
            z = z_new
            if done:
                break
        return z / self.size

    def to_nifti(self):
        """The displacement field as a NIfTI vector image (x, y, z, 1, 3; intent DISPVECT)."""
        img = nib.Nifti1Image(np.moveaxis(self.field, 0, -1)[:, :, :, None, :].astype(np.float32),
                              self.affine)
        img.header.set_intent("vector", (), name="displacement mm")
        img.header.set_xyzt_units("mm")
        return img

    @classmethod
    def from_truth(cls, paths):
        """The warp a session's truth records (``paths``: :func:`truth_paths` of the session)."""
        size = json.loads(Path(paths["geometry"]).read_text())["size"]
        img = nib.load(paths["warp"])
        field = np.moveaxis(np.asarray(img.dataobj, float)[:, :, :, 0, :], -1, 0)
        return cls(float(size), field, img.affine.copy())


def subject_warp(params, participant):
    """The participant's :class:`Warp`, drawn from its ``"warp"`` stream.

    ``anat.size_sd`` is the SD of the log brain-size factor; the field is white noise on a 4 mm
    MNI grid smoothed to ``anat.warp_fwhm_mm`` and scaled to an RMS displacement of
    ``anat.warp_mm`` over the brain. Both 0 give the identity.
    """
    a = params["anat"]
    rng = random_stream(params["seed"], participant, "warp")
    size = float(np.exp(rng.normal(0, a["size_sd"])))
    aff, shape = grid_affine(4.0, *_WARP_BOX)
    field = np.zeros((3,) + shape)
    if a["warp_mm"] > 0:
        sigma = a["warp_fwhm_mm"] / 2.355 / 4.0
        field = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), sigma,
                                                  mode="constant") for _ in range(3)])
        maps = mni_maps(4.0)
        brain = sample_world(maps["brain"], maps["affine"],
                             world_coords(aff, shape)).reshape(shape) > 0.5
        rms = np.sqrt(np.mean(np.sum(field[:, brain] ** 2, axis=0)))
        field *= a["warp_mm"] / rms
    return Warp(size, field, aff)


def to_template(to_mni, warp, world_xyz):
    """Template (MNI mm) points, shape (3, N), of image world points ``world_xyz`` (3, N): the
    image's affine ``to_mni`` then the participant's ``warp`` (None: the affine alone)."""
    m = np.asarray(to_mni)
    y = m[:3, :3] @ world_xyz + m[:3, 3:4]
    return y if warp is None else warp(y)


def _write_t1w(params, to_mni, warp, rng, bp):
    a = params["anat"]
    maps = mni_maps(a["voxel_mm"])
    aff, shape = grid_affine(a["voxel_mm"])
    xyz = to_template(to_mni, warp, world_coords(aff, shape))
    t1 = sample_world(maps["t1"], maps["affine"], xyz).reshape(shape)
    t1 = t1 * bias_field(shape, rng, a["bias_pct"])
    noise = a["noise_pct"] / 100
    t1 = np.hypot(t1 + rng.normal(0, noise, shape), rng.normal(0, noise, shape))  # Rician
    data = np.round(np.clip(t1, 0, None) * 1000).astype(np.int16)
    img = nib.Nifti1Image(data, aff)
    img.header.set_xyzt_units("mm", "sec")
    write_nifti(img, bp["t1w"])
    write_json({"Modality": "MR", "MagneticFieldStrength": 3, "Manufacturer": "Simulated",
                "MRAcquisitionType": "3D", "RepetitionTime": 2.3, "EchoTime": 0.00298,
                "InversionTime": 0.9, "FlipAngle": 9}, bp["t1w_json"])


def _write_bold(params, to_mni, warp, S, hierarchy, rng, bp, tp):
    b = params["bold"]
    T, t_r, vox = int(b["n_volumes"]), float(b["t_r"]), float(b["voxel_mm"])
    maps = mni_maps(vox)
    aff, shape = grid_affine(vox, lo=(-80.0, -116.0, -74.0), hi=(80.0, 84.0, 90.0))
    xyz = to_template(to_mni, warp, world_coords(aff, shape))
    gm, wm, csf, brain = (sample_world(maps[k], maps["affine"], xyz) for k in ("gm", "wm", "csf", "brain"))
    labels = sample_world(maps["labels"].astype(np.float32), maps["affine"], xyz, order=0).astype(int)
    table = schaefer400_table()

    s = network_signals(S, T, t_r, rng)
    e = _unit_band(rng, (T, len(table) + 1), t_r)
    h, g, hrng = hierarchy
    c = hierarchy_signal(s, t_r, hrng)
    parcels = parcel_series(S, table.network, h, g, s, c, e[:, :-1])
    sample_fc = fisher_z(np.corrcoef(parcels[int(b["dummy_volumes"]):].T))
    parcels = np.concatenate([e[:, -1:], parcels], axis=1)  # column 0: unlabelled grey matter

    inside = brain > 0.05
    base = 1000 * gm + 700 * wm + 1400 * csf
    base = np.where(inside, base, 40.0)
    vi = np.flatnonzero(inside)
    data = np.tile(base.astype(np.float32), (T, 1))
    data[:, vi] *= 1 + (b["signal_pct"] / 100) * gm[vi] * parcels[:, labels[vi]]
    if b["physio"]:
        phys = rng.standard_normal((T, 3))
        phys[:, 0] = _bandpass(phys[:, 0], t_r, (0.05, 0.24))
        phys = (phys - phys.mean(0)) / phys.std(0)
        load = rng.normal(1, 0.3, (3, vi.size)) * (0.003 * gm[vi] + 0.01 * wm[vi] + 0.02 * csf[vi])
        data[:, vi] += base[vi] * (phys @ load)
    # non-steady-state volumes (T1 saturation)
    for k in range(int(b["dummy_volumes"])):
        data[k] *= 1 + 0.6 * np.exp(-1.5 * k)
    motion = motion_trajectory(T, rng, b["motion_scale"], b["n_spikes"])
    vols = data.reshape((T,) + shape)
    moved = np.empty_like(vols)
    for t in range(T):
        moved[t] = _move(vols[t], aff, motion[t]) if np.any(motion[t]) else vols[t]
    tt = np.linspace(-1, 1, T)[:, None, None, None]
    drift = 1 + (b["drift_pct"] / 100) * (rng.normal(1, 0.2) * tt + rng.normal(0, 0.5) * (tt**2 - 1 / 3))
    moved = moved * drift + rng.normal(0, 10 * b["thermal_noise_pct"], moved.shape)
    out = np.clip(np.round(np.moveaxis(moved, 0, -1)), 0, 32767).astype(np.int16)
    img = nib.Nifti1Image(out, aff)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = t_r
    write_nifti(img, bp["bold"])
    write_json({"TaskName": "rest", "RepetitionTime": t_r, "EchoTime": 0.03, "FlipAngle": 80,
                "MagneticFieldStrength": 3, "Manufacturer": "Simulated",
                "PhaseEncodingDirection": "j-", "SkullStripped": False,
                "NumberOfVolumesDiscardedByScanner": 0}, bp["bold_json"])
    mot = pd.DataFrame(motion, columns=MOTION_COLUMNS)
    mot.insert(0, "non_steady_state", (np.arange(T) < int(b["dummy_volumes"])).astype(int))
    write_tsv(mot, tp["motion"], float_format="%.6f")
    R = parcel_fc_truth(S, table.network, h, g)
    Sdf = pd.DataFrame(network_fc_truth(R, table.network), index=NETWORKS, columns=NETWORKS)
    write_tsv(Sdf.reset_index(names="network"), tp["network_fc"], float_format="%.6f")
    write_tsv(pd.DataFrame(np.column_stack([s, c]), columns=[*NETWORKS, "hierarchy"]),
              tp["network_signals"], float_format="%.6f")
    write_tsv(pd.DataFrame(R, index=table.name, columns=table.name).reset_index(names="parcel"),
              tp["parcel_fc"], float_format="%.4f")
    write_tsv(pd.DataFrame(sample_fc, index=table.name, columns=table.name)
              .reset_index(names="parcel"), tp["sample_fc"], float_format="%.4f")


def _write_pet(params, to_mni, warp, truth, rng, bp, tp, session):
    p = params["pet"]
    vox = float(p["voxel_mm"])
    starts, durs = frame_timing(p["frames"])
    maps = mni_maps(vox)
    aff, shape = grid_affine(vox, lo=(-80.0, -116.0, -74.0), hi=(80.0, 84.0, 90.0))
    pose = rigid_matrix(np.concatenate([rng.normal(0, 2, 3), rng.normal(0, 0.02, 3)]))
    m2 = to_mni @ pose
    xyz = to_template(m2, warp, world_coords(aff, shape))
    gm, wm, csf = (sample_world(maps[k], maps["affine"], xyz) for k in ("gm", "wm", "csf"))
    labels = sample_world(maps["labels"].astype(np.float32), maps["affine"], xyz, order=0).astype(int)

    inp = _subject_input(rng)
    vb = p["vb"]
    table = schaefer400_table()
    # one noise-free tissue curve per parcel (index 0: unlabelled GM = subcortical) + WM
    vt_gm = np.concatenate([[truth["subcortical"][0]], truth["parcel_vt"]])
    k1_gm = np.concatenate([[truth["subcortical"][1]], truth["parcel_k1"]])
    curves = np.stack([one_tcm_frames(inp, k1, k1 / v, 0.0, starts, durs)
                       for k1, v in zip(k1_gm, vt_gm)])
    wm_curve = one_tcm_frames(inp, truth["wm"][1], truth["wm"][1] / truth["wm"][0], 0.0, starts, durs)
    blood = blood_frame_means(inp, starts, durs)
    act = (1 - vb) * (gm[:, None] * curves[labels] + wm[:, None] * wm_curve[None, :])
    act += vb * (gm + wm + csf)[:, None] * blood[None, :]
    vols = act.T.reshape((len(starts),) + shape)
    sigma = p["fwhm_mm"] / 2.355 / vox
    motion = motion_trajectory(len(starts), rng, p["motion_scale"], n_spikes=0,
                               trans_sd=0.25, rot_sd=0.002)
    motion[starts < 120] = 0.0  # the head settles after the injection
    lam = np.log(2) / (C11_HALF_LIFE_MIN * 60)
    out = np.empty(shape + (len(starts),), np.float32)
    for f in range(len(starts)):
        v = ndimage.gaussian_filter(vols[f], sigma)
        if np.any(motion[f]):
            v = _move(v, aff, motion[f])
        sd = p["noise_scale"] * np.sqrt(np.clip(v, 0, None) * np.exp(lam * (starts[f] + durs[f] / 2))
                                        / durs[f])
        noise = ndimage.gaussian_filter(rng.standard_normal(shape), 0.5) * 2.0  # mildly correlated
        out[..., f] = v + sd * noise
    img = nib.Nifti1Image(out, aff)
    img.header.set_xyzt_units("mm", "sec")
    write_nifti(img, bp["pet"])
    body_weight = float(np.round(rng.normal(75, 10), 1))
    write_json(_pet_sidecar(p, starts, durs, body_weight), bp["pet_json"])
    if p["blood"]:
        _write_blood(inp, starts[-1] + durs[-1], rng, bp, p["autosampler"])
    # truth
    write_json(inp, tp["input"])
    mot = pd.DataFrame(motion, columns=MOTION_COLUMNS)
    mot.insert(0, "frame_start", starts)
    write_tsv(mot, tp["pet_motion"], float_format="%.6f")
    pcc = table.is_pcc.to_numpy()
    is_def = (table.network == "Default").to_numpy()
    w = np.bincount(labels[gm > 0.5], minlength=len(table) + 1)[1:].astype(float)
    reg = [
        ("PCC", truth["parcel_k1"][pcc].mean(), _wmean(truth["parcel_vt"][pcc], w[pcc])),
        ("Default", truth["parcel_k1"][is_def].mean(), _wmean(truth["parcel_vt"][is_def], w[is_def])),
        ("cortical_gm", truth["parcel_k1"].mean(), _wmean(truth["parcel_vt"], w)),
        ("centrum_semiovale", truth["wm"][1], truth["wm"][0]),
    ]
    for n in NETWORKS:
        sel = (table.network == n).to_numpy()
        reg.append((f"network-{n}", truth["parcel_k1"][sel].mean(), _wmean(truth["parcel_vt"][sel], w[sel])))
    regions = pd.DataFrame(reg, columns=["region", "K1", "VT"])
    regions["k2"] = regions.K1 / regions.VT
    regions["vB"] = vb
    write_tsv(regions[["region", "K1", "k2", "VT", "vB"]], tp["pet_regions"], float_format="%.10g")
    pcc_par = np.flatnonzero(pcc)[0] + 1
    tacs = pd.DataFrame({
        "frame_start": starts, "frame_end": starts + durs,
        "PCC": (1 - vb) * curves[pcc_par] + vb * blood,
        "centrum_semiovale": (1 - vb) * wm_curve + vb * blood,
        "whole_blood": blood,
    })
    write_tsv(tacs, tp["pet_tacs"], float_format="%.8g")
    return m2


def _wmean(x, w):
    return float(np.sum(x * w) / np.sum(w)) if np.sum(w) > 0 else float(np.mean(x))


def _pet_sidecar(p, starts, durs, body_weight):
    return {
        "Modality": "PT", "Manufacturer": "Simulated", "ManufacturersModelName": "Simulated PET",
        "BodyPart": "Brain", "Units": "kBq/mL",
        "TracerName": "UCB-J", "TracerRadionuclide": "C11", "TracerMolecularWeight": 376.4,
        "TracerMolecularWeightUnits": "g/mol",
        "InjectedRadioactivity": float(p["injected_mbq"]), "InjectedRadioactivityUnits": "MBq",
        "InjectedMass": 1.5, "InjectedMassUnits": "ug",
        "SpecificRadioactivity": float(p["injected_mbq"]) / 1.5, "SpecificRadioactivityUnits": "MBq/ug",
        "ModeOfAdministration": "bolus", "BodyWeight": body_weight, "BodyWeightUnits": "kg",
        "TimeZero": "10:00:00", "ScanStart": 0, "InjectionStart": 0,
        "FrameTimesStart": [float(s) for s in starts], "FrameDuration": [float(d) for d in durs],
        "AcquisitionMode": "list mode", "ImageDecayCorrected": True, "ImageDecayCorrectionTime": 0,
        "ReconMethodName": "OSEM", "ReconMethodParameterLabels": ["subsets", "iterations"],
        "ReconMethodParameterUnits": ["none", "none"], "ReconMethodParameterValues": [16, 3],
        "ReconFilterType": "none", "ReconFilterSize": 0, "AttenuationCorrection": "CT-based",
        "ScatterCorrectionMethod": "model-based", "RandomsCorrectionMethod": "delayed window",
    }


_BLOOD_MANUAL_S = np.array([10, 20, 30, 45, 60, 75, 90, 120, 150, 180, 240, 300, 420, 600, 900,
                            1200, 1800, 2400, 3000, 3600, 4500, 5400], float)
_METAB_S = {300.0, 900.0, 1800.0, 3600.0, 5400.0}


def _write_blood(inp, scan_end_s, rng, bp, autosampler):
    cp, cb = input_functions(inp)
    t = _BLOOD_MANUAL_S[_BLOOD_MANUAL_S <= scan_end_s + 1]
    if t[-1] < scan_end_s:
        t = np.append(t, scan_end_s)
    tm = t / 60
    frac = hill_parent_fraction(tm - inp["delay_min"], *inp["parent_fraction_hill"])
    plasma = cp(tm) / frac * np.exp(rng.normal(0, 0.03, t.size))
    whole = inp["blood_plasma_ratio"] * cp(tm) / frac * np.exp(rng.normal(0, 0.03, t.size))
    pf = np.where(np.isin(t, list(_METAB_S)), np.clip(frac + rng.normal(0, 0.02, t.size), 0, 1), np.nan)
    df = pd.DataFrame({"time": t, "plasma_radioactivity": plasma,
                       "whole_blood_radioactivity": whole, "metabolite_parent_fraction": pf})
    write_tsv(df, bp["blood_manual"], float_format="%.6g")
    write_json(_blood_sidecar(True, True, True), bp["blood_manual_json"])
    if autosampler:
        ta = np.arange(0, 600 + 1e-9, 2.0)
        wa = cb(ta / 60) * np.exp(rng.normal(0, 0.05, ta.size))
        write_tsv(pd.DataFrame({"time": ta, "whole_blood_radioactivity": wa}),
                  bp["blood_autosampler"], float_format="%.6g")
        write_json(_blood_sidecar(False, True, False), bp["blood_autosampler_json"])


def _blood_sidecar(plasma, whole, metab):
    d = {
        "PlasmaAvail": plasma, "WholeBloodAvail": whole, "MetaboliteAvail": metab,
        "DispersionCorrected": False, "TimeZero": "10:00:00",
        "time": {"Description": "Time of sampling relative to TimeZero", "Units": "s"},
    }
    if plasma:
        d["plasma_radioactivity"] = {"Description": "Total plasma radioactivity", "Units": "kBq/mL"}
    if whole:
        d["whole_blood_radioactivity"] = {"Description": "Whole-blood radioactivity",
                                          "Units": "kBq/mL"}
    if metab:
        d.update({"MetaboliteMethod": "HPLC", "MetaboliteRecoveryCorrectionApplied": False,
                  "metabolite_parent_fraction": {"Description": "Parent fraction of plasma",
                                                 "Units": "unitless"}})
    return d


def simulate_dataset_files(bids_dir, truth_dir, participants, sessions=("pre", "post"), params=None):
    """Dataset-level files: dataset_description, participants.tsv, README and effects.json."""
    params = merge_params(params)
    bids_dir, truth_dir = Path(bids_dir), Path(truth_dir)
    dp = dataset_paths(bids_dir, truth_dir)
    write_json({"Name": "Simulated ketamine pre/post study (resting fMRI + [11C]UCB-J PET)",
                "BIDSVersion": "1.9.0", "DatasetType": "raw", "License": "CC0",
                "GeneratedBy": [{"Name": "prepost-simulate", "Version": __version__}]},
               dp["description"])
    write_tsv(participants, dp["participants"])
    (bids_dir / "README").write_text(
        "Simulated study written by prepost-simulate. Ground truth is in the sibling 'truth' folder.\n")
    write_json({
        "seed": params["seed"], "null_study": params["null_study"], "sessions": list(sessions),
        "effects": params["effects"], "variability": params["variability"],
        "networks": NETWORKS, "group_network_z_baseline": group_network_z().round(6).tolist(),
        "planted_network_dz": planted_effect_z(params["effects"]).round(6).tolist(),
        "hierarchy_positions": hierarchy_positions(params).round(6).tolist(),
        "planted_changes": planted_changes(params).round(6).to_dict(orient="records"),
        "parameters": params,
        "motion_convention": (
            "image_t(x) = image_ref(M_t @ x) in world mm; M_t = T(trans) Rz Ry Rx, rotations about "
            "the world origin; columns trans_* in mm and rot_* in radians; volume 0 is the reference"),
        "fc_convention": "fc.tsv.gz holds the expected Pearson r of every parcel pair; "
                         "network-fc.tsv holds tanh of its mean Fisher z over the parcel pairs of "
                         "the row and column networks (diagonal: within-network pairs); a parcel's "
                         "signal is its network's signal + loading x position x the hierarchy "
                         "signal (network-signals.tsv) + a unique part; planted_changes: the "
                         "group-level change of each measure",
        "pet_convention": "pet-regions.tsv holds true tissue K1 (mL/cm3/min), k2 (1/min), VT "
                          "(mL/cm3) and vB; parcel VT averaged over GM voxels",
    }, dp["effects"])
    truth_summary(truth_dir, participants.participant_id.str.removeprefix("sub-"), sessions)


def truth_summary(truth_dir, participants, sessions=("pre", "post")):
    """One tidy table of the study-level truth: participant, session, modality, measure, region, value."""
    rows, fc_z, ids = [], [], []
    for sub in participants:
        for ses in sessions:
            tp = truth_paths(truth_dir, sub, ses)
            if not tp["network_fc"].exists():
                continue
            fc_z.append(pd.read_csv(tp["sample_fc"], sep="\t", index_col=0).to_numpy(float))
            ids.append((sub, ses))
            S = pd.read_csv(tp["network_fc"], sep="\t", index_col=0)
            Z = np.arctanh(S.to_numpy())
            for i, a in enumerate(NETWORKS):
                rows.append((sub, ses, "fmri", "fc_within_z", a, Z[i, i]))
                rows += [(sub, ses, "fmri", "fc_between_z", f"{a}-{b}", Z[i, j])
                         for j, b in enumerate(NETWORKS) if j > i]
            reg = pd.read_csv(tp["pet_regions"], sep="\t")
            for r in reg.itertuples():
                rows.append((sub, ses, "pet", "VT", r.region, r.VT))
                rows.append((sub, ses, "pet", "K1", r.region, r.K1))
            mot = pd.read_csv(tp["motion"], sep="\t")
            rows.append((sub, ses, "fmri", "mean_fd", "global", float(np.mean(fd_power(mot)))))
    df = pd.DataFrame(rows, columns=["participant_id", "session", "modality", "measure", "region",
                                     "value"])
    if ids:
        nets = schaefer400_table().network.astype(str).to_numpy()
        df = pd.concat([df, gradient_truth(fc_z, ids, nets).assign(modality="fmri")[df.columns]],
                       ignore_index=True)
    df["participant_id"] = "sub-" + df.participant_id.astype(str)
    write_tsv(df, Path(truth_dir) / _TRUTH_TABLE, float_format="%.6f")
    return df


def fd_power(motion, radius=50.0):
    """Power framewise displacement (mm) from a motion table or (T, 6) array."""
    x = np.asarray(motion[MOTION_COLUMNS]
                   if isinstance(motion, pd.DataFrame) else motion, float)
    d = np.abs(np.diff(x, axis=0))
    d[:, 3:] *= radius
    return np.concatenate([[0.0], d.sum(1)])


def default_participants(n):
    """participants.tsv rows for ``n`` simulated participants (IDs 01..n)."""
    rng = np.random.default_rng(n)
    ids = [f"sub-{i + 1:02d}" for i in range(n)]
    return pd.DataFrame({"participant_id": ids,
                         "age": rng.integers(21, 45, n),
                         "sex": np.where(np.arange(n) % 2 == 0, "F", "M"),
                         "followup_days": np.where(np.arange(n) % 3 == 2, 7, 1)})


def simulate_study(out_dir, participants=11, sessions=("pre", "post"), params=None):
    """Write a whole simulated study: ``out_dir/bids`` and ``out_dir/truth``.

    ``participants`` is a count or a participants table (DataFrame with participant_id).
    """
    out_dir = Path(out_dir)
    table = default_participants(participants) if isinstance(participants, int) else participants
    for pid in table.participant_id:
        simulate_subject(out_dir / "bids", out_dir / "truth", pid.removeprefix("sub-"), sessions,
                         params)
    simulate_dataset_files(out_dir / "bids", out_dir / "truth", table, sessions, params)
    return out_dir


def main(argv=None):
    """Command-line entry point: ``prepost-simulate OUT_DIR [--participants N] ...``."""
    ap = argparse.ArgumentParser(prog="prepost-simulate", description=main.__doc__ and
                                 "Write the simulated pre/post ketamine study (BIDS + ground truth).")
    ap.add_argument("out_dir")
    ap.add_argument("--participants", type=int, default=11)
    ap.add_argument("--sessions", nargs=2, default=["pre", "post"], metavar=("BASELINE", "FOLLOWUP"))
    ap.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    ap.add_argument("--null", action="store_true", help="plant no effects")
    ap.add_argument("--params", help="JSON or YAML file with overrides of the simulation parameters")
    ap.add_argument("--volumes", type=int, help="BOLD volumes per run")
    ap.add_argument("--bold-voxel", type=float, help="BOLD voxel size (mm)")
    ap.add_argument("--pet-voxel", type=float, help="PET voxel size (mm)")
    args = ap.parse_args(argv)
    over = {}
    if args.params:
        import yaml

        over = yaml.safe_load(Path(args.params).read_text()) or {}
    over["seed"] = args.seed
    if args.null:
        over["null_study"] = True
    for key, sub, name in (("volumes", "bold", "n_volumes"), ("bold_voxel", "bold", "voxel_mm"),
                           ("pet_voxel", "pet", "voxel_mm")):
        if getattr(args, key) is not None:
            over.setdefault(sub, {})[name] = getattr(args, key)
    out = simulate_study(args.out_dir, args.participants, tuple(args.sessions), over)
    print(f"wrote {out / 'bids'} and {out / 'truth'}")


if __name__ == "__main__":
    main()
