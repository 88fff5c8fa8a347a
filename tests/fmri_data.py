"""One small simulated BOLD run (participant 01, session pre) for the fMRI unit tests, with its
true motion and the simulator's tissue maps sampled on the BOLD grid."""

from __future__ import annotations

import nibabel as nib
import pandas as pd
from runner import AFFINE_ANATOMY

VOXEL_MM = 4.0


def sim_params(n_volumes):
    """Simulator sizes of the run: 3 mm T1w, ``VOXEL_MM`` BOLD, a short coarse PET."""
    return {"anat": {"voxel_mm": 3.0, **AFFINE_ANATOMY}, "bold": {"n_volumes": int(n_volumes), "voxel_mm": VOXEL_MM},
            "pet": {"voxel_mm": 6.0, "frames": [[3, 60], [4, 300]]}}


def simulated_run(root, *, n_volumes, tissues=()):
    """Simulate participant 01 under ``root`` and return its pre-session BOLD run.

    Returns
    -------
    dict
        ``img`` (BOLD image), ``motion`` (true motion table), ``to_mni`` (T1w -> MNI matrix),
        ``truth`` (truth file paths) and ``tissue`` (``tissues`` maps on the BOLD grid).
    """
    from prepost import simulate as sim

    params = sim_params(n_volumes)
    sim.simulate_subject(root / "bids", root / "truth", "01", params=params)
    img = nib.load(sim.bids_paths(root / "bids", "01", "pre")["bold"])
    truth = sim.truth_paths(root / "truth", "01", "pre")
    to_mni = sim.t1w_to_mni("01", "pre", seed=sim.merge_params(params)["seed"])
    tissue = sim.mni_maps_on_grid(img.affine, img.shape[:3], to_mni, voxel_mm=VOXEL_MM,
                                  keys=tuple(tissues)) if tissues else {}
    return {"img": img, "motion": pd.read_csv(truth["motion"], sep="\t"), "to_mni": to_mni,
            "truth": truth, "tissue": tissue}
