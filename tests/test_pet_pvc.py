"""Partial-volume correction (GTM) on a phantom built the simulator's way."""

import nibabel as nib
import numpy as np

from prepost.pet import pvc, roi, tacs


def test_gtm_recovers_compartment_concentrations():
    """A phantom built the simulator's way (tissue fractions sampled on a coarse PET grid, then
    blurred there) : the GTM undoes the partial-volume loss the ROI means show."""
    from scipy import ndimage

    t1_aff = np.diag([2.0, 2.0, 2.0, 1.0])
    t1_aff[:3, 3] = -56
    x, y, z = np.indices((56, 56, 56)) * 2.0 - 56
    r = np.sqrt(x ** 2 + y ** 2 + z ** 2)
    gm = np.clip((36 - r) / 4, 0, 1) * np.clip((r - 20) / 4, 0, 1)  # a soft grey-matter shell
    wm = np.clip((24 - r) / 4, 0, 1)                                  # white-matter core
    csf = np.clip(1 - gm - wm, 0, 1) * (r < 44)
    roi_gm = (gm > 0.5).astype(np.float32)
    roi_ant = ((x > 14) & (r < 40)).astype(np.float32)  # an atlas-like region, GM more active
    roi_wm = (wm > 0.9).astype(np.float32)
    roi_brain = (r < 44).astype(np.float32)
    truth = {"gm": 20.0, "gm_ant": 30.0, "wm": 5.0, "csf": 1.0}
    pet_aff = np.diag([4.0, 4.0, 4.0, 1.0])
    pet_aff[:3, 3] = -56
    # simulator-like forward model on the 4 mm grid
    xs = np.indices((28, 28, 28)).reshape(3, -1) * 2.0  # PET voxel centres in T1w voxel units
    samp = lambda a: ndimage.map_coordinates(ndimage.gaussian_filter(a, 0.6), xs, order=1).reshape(28, 28, 28)  # noqa: E731
    act = (samp(gm * (x <= 14)) * truth["gm"] + samp(gm * (x > 14)) * truth["gm_ant"]
           + samp(wm) * truth["wm"] + samp(csf) * truth["csf"])
    frame = ndimage.gaussian_filter(act, 5.0 / 2.3548 / 4.0)
    pet = nib.Nifti1Image(np.stack([frame, 0.5 * frame], -1).astype(np.float32), pet_aff)
    rois_t1 = {n: nib.Nifti1Image(m, t1_aff) for n, m in
               (("ant", roi_ant), ("gm", roi_gm), ("wm", roi_wm), ("brain", roi_brain))}
    tissue = {k: nib.Nifti1Image(v.astype(np.float32), t1_aff) for k, v in
              (("gm", gm), ("wm", wm), ("csf", csf))}
    specs = roi.validate_roi_config([
        {"name": "ant", "type": "sphere", "center_mni": [0, 0, 0], "radius_mm": 1},
        {"name": "gm", "type": "tissue", "tissue": "gm"},
        {"name": "wm", "type": "tissue", "tissue": "wm"},
        {"name": "brain", "type": "tissue", "tissue": "brain"}])
    pet_rois, _ = roi.masks_to_pet(rois_t1, nib.Nifti1Image(frame.astype(np.float32), pet_aff),
                                   np.eye(4), min_volume_ml=0.1)
    raw, _ = tacs.extract_tacs(pet, pet_rois, [0, 60], [60, 60])
    fr, table, overlap = pvc.gtm_compartments(rois_t1, tissue, min_compartment_ml=0.5)
    # effective resolution: the 5 mm blur and the 1.2 mm-sigma anti-aliasing before sampling
    fwhm = np.hypot(5.0, 1.2 * 2.3548)
    corr, _, info = pvc.gtm_correct(raw, specs, fr, table, overlap, t1_aff, pet, None, fwhm)
    gm_true = (truth["gm"] * (gm * (x <= 14) * roi_gm).sum()
               + truth["gm_ant"] * (gm * (x > 14) * roi_gm).sum()) / (gm * roi_gm).sum()
    for name, want in (("ant", truth["gm_ant"]), ("gm", gm_true), ("wm", truth["wm"])):
        assert abs(corr[name][0] / want - 1) < 0.05, (name, corr[name][0], want)
        assert abs(corr[name][1] / corr[name][0] - 0.5) < 1e-6  # linear in the data
    assert raw["ant"][0] / truth["gm_ant"] < 0.85  # partial-volume loss before correction
    assert info["condition_number"] < 1000
