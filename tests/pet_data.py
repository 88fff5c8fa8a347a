"""Test data of the PET unit tests, built once: the demo's frames, a Feng input curve and one
simulated session with the template priors carried onto its T1w grid."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn import datasets
from runner import AFFINE_ANATOMY

from prepost import registration
from prepost import simulate as sim
from prepost.pet import preproc

__all__ = ["FRAME_DURATION_S", "FRAME_START_S", "SCAN_END_S", "SMALL", "feng", "simulated_session",
           "template_priors"]

#: The demo's frames: 6x10 s, 3x20 s, 2x30 s, 2x60 s, 2x150 s, 16x300 s (90 min).
FRAME_START_S, FRAME_DURATION_S = sim.frame_timing(sim.DEFAULTS["pet"]["frames"])
SCAN_END_S = float(FRAME_START_S[-1] + FRAME_DURATION_S[-1])

#: One session at unit-test sizes: 3 mm anatomy, 4 mm PET.
SMALL = {"anat": {"voxel_mm": 3.0, **AFFINE_ANATOMY}, "bold": {"n_volumes": 20, "voxel_mm": 6.0},
         "pet": {"voxel_mm": 4.0}}


def feng(t_s, delay_s=0.0, scale=10.0):
    """Feng et al. (1993) arterial input (Bq/mL) at times ``t_s`` (s), delayed by ``delay_s``."""
    t = (np.asarray(t_s, float) - delay_s) / 60.0
    a1, a2, a3 = 851.1, 21.88, 20.81
    l1, l2, l3 = -4.134, -0.1191, -0.01043
    c = (a1 * t - a2 - a3) * np.exp(l1 * t) + a2 * np.exp(l2 * t) + a3 * np.exp(l3 * t)
    return np.where(t > 0, c, 0.0) * scale


def simulated_session(root, participant="01", session="pre"):
    """Simulate one session under ``root`` (bids/, truth/) at :data:`SMALL` sizes.

    Returns
    -------
    dict
        ``bids`` and ``truth`` paths (:func:`prepost.simulate.bids_paths`, ``truth_paths``),
        ``meta`` (PET sidecar), ``pet`` and ``t1w`` images, ``frame_start_s``,
        ``frame_duration_s`` and ``motion`` (the true frame motion table).
    """
    sim.simulate_subject(root / "bids", root / "truth", participant, sessions=(session,),
                         params=SMALL)
    bp = sim.bids_paths(root / "bids", participant, session)
    tp = sim.truth_paths(root / "truth", participant, session)
    meta = json.loads(bp["pet_json"].read_text())
    return {"bids": bp, "truth": tp, "meta": meta, "pet": nib.load(bp["pet"]),
            "t1w": nib.load(bp["t1w"]), "frame_start_s": np.array(meta["FrameTimesStart"]),
            "frame_duration_s": np.array(meta["FrameDuration"]),
            "motion": pd.read_csv(tp["pet_motion"], sep="\t")}


def template_priors(t1w, folder, participant="01", session="pre"):
    """nilearn's 1 mm brain mask and GM/WM priors on the T1w grid through the simulator's true
    T1w -> MNI matrix; returns ``{"brain", "gm", "wm"}`` images and ``mni2t1`` (the transform list)."""
    to_mni = sim.t1w_to_mni(participant, session)
    mni2t1 = [registration.write_ants_affine(to_mni, folder / "from-MNI_to-T1w.mat")]
    maps = {k: preproc.apply_ants_transforms(f(resolution=1), t1w, mni2t1)
            for k, f in (("brain", datasets.load_mni152_brain_mask),
                         ("gm", datasets.load_mni152_gm_template),
                         ("wm", datasets.load_mni152_wm_template))}
    return {**maps, "mni2t1": mni2t1, "to_mni": to_mni}
