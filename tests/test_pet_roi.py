"""Declarative PET ROIs: config validation, sphere/atlas/tissue ROIs, centrum semiovale."""

import nibabel as nib
import numpy as np
import pytest
from nilearn import datasets
from pet_data import simulated_session, template_priors

from prepost.errors import InputError
from prepost.pet import roi


@pytest.fixture(scope="module")
def anat(tmp_path_factory):
    root = tmp_path_factory.mktemp("roisim")
    t1 = simulated_session(root)["t1w"]
    return {"t1w": t1, **template_priors(t1, root)}


def _build(anat, cfg, **kw):
    kw.setdefault("space", "t1w")
    return roi.build_rois(cfg, t1w_img=anat["t1w"], brain_mask_img=anat["brain"], gm_img=anat["gm"],
                          wm_img=anat["wm"], mni_to_t1w=anat["mni2t1"], **kw)


def test_validate_config_defaults_and_errors():
    out = roi.validate_roi_config(roi.EXAMPLE_CONFIG)
    assert [e["name"] for e in out] == ["PCC", "ACC", "cortical_gm", "whole_brain", "centrum_semiovale"]
    pcc = out[0]
    assert len(pcc["labels"]) >= 4 and pcc["intersect_gm"] is False
    assert out[3]["threshold"] == 0.5 and out[4]["wm_threshold"] == 0.9
    bad = [
        ({"name": "X", "type": "blob"}, r"rois\[X\]\.type"),
        ({"name": "X", "type": "sphere", "radius_mm": 5}, r"rois\[X\]\.center_mni"),
        ({"name": "X", "type": "sphere", "center_mni": [0, 0], "radius_mm": 5}, r"rois\[X\]\.center_mni"),
        ({"name": "X", "type": "sphere", "center_mni": [0, 0, 0], "radius_mm": -1}, r"rois\[X\]\.radius_mm"),
        ({"name": "X", "type": "atlas", "atlas": "Schaefer400", "pattern": "NoSuchParcel"}, r"rois\[X\]\.pattern"),
        ({"name": "X", "type": "atlas", "atlas": "AAL", "pattern": "PCC"}, r"rois\[X\]\.atlas"),
        ({"name": "X", "type": "tissue", "tissue": "bone"}, r"rois\[X\]\.tissue"),
        ({"name": "X", "type": "tissue", "tissue": "gm", "thresh": 0.3}, r"rois\[X\]\.thresh"),
        ({"name": "X", "type": "reference", "method": "cerebellum"}, r"rois\[X\]\.method"),
        ({"type": "tissue", "tissue": "gm"}, r"rois\[0\]\.name"),
    ]
    for entry, pat in bad:
        with pytest.raises(InputError, match=pat):
            roi.validate_roi_config([entry])
    with pytest.raises(InputError, match="unique"):
        roi.validate_roi_config([{"name": "A", "type": "tissue", "tissue": "gm"}] * 2)


def test_sphere_volume_matches_formula(anat):
    r = 10.0
    m = roi.sphere_mask([0, 30, 24], r)  # MNI 1 mm grid
    expected = 4 / 3 * np.pi * r**3 / 1000
    assert roi.roi_volume_ml(m) == pytest.approx(expected, rel=0.02)
    # in T1w space (3 mm voxels) through the MNI->T1w transform: volume / |det|
    rois, rep = _build(anat, [{"name": "S", "type": "sphere", "center_mni": [20, -20, 30], "radius_mm": 12}])
    exp_t1 = 4 / 3 * np.pi * 12**3 / 1000 / abs(np.linalg.det(anat["to_mni"][:3, :3]))
    assert rep.volume_ml[0] == pytest.approx(exp_t1, rel=0.12)  # voxelisation at 3 mm


def test_atlas_roi_pcc_in_gm(anat):
    rois, rep = _build(anat, [{"name": "PCC", "type": "atlas", "atlas": "Schaefer400",
                               "pattern": "Default_pCunPCC", "intersect_gm": True}])
    m = rois["PCC"].get_fdata() > 0.5
    assert 5 < rep.volume_ml[0] < 60
    assert anat["gm"].get_fdata()[m].min() > 0.5
    # centroid near the PCC (MNI y ~ -55, z ~ 30, near the midline)
    ijk = np.argwhere(m).mean(0)
    c = anat["to_mni"] @ np.r_[anat["t1w"].affine[:3, :3] @ ijk + anat["t1w"].affine[:3, 3], 1]
    assert abs(c[0]) < 10 and -75 < c[1] < -40 and 15 < c[2] < 50


def test_centrum_semiovale_in_white_matter(anat):
    mask, info = roi.centrum_semiovale_mask(anat["wm"], anat["mni2t1"])
    m = mask.get_fdata() > 0.5
    assert m.any()
    assert 5 < info["volume_ml"] < 80  # measured ~37 mL
    # truth-space WM probability: sample the MNI WM template at the MNI position of each voxel
    wm_mni = datasets.load_mni152_wm_template(resolution=1)
    ijk = np.argwhere(m)
    xyz = anat["t1w"].affine[:3, :3] @ ijk.T + anat["t1w"].affine[:3, 3:4]
    mni = anat["to_mni"][:3, :3] @ xyz + anat["to_mni"][:3, 3:4]
    vox = np.linalg.inv(wm_mni.affine)[:3, :3] @ mni + np.linalg.inv(wm_mni.affine)[:3, 3:4]
    from scipy import ndimage
    p = ndimage.map_coordinates(wm_mni.get_fdata(), vox, order=1)
    assert p.mean() > 0.9
    # central superior: above the ventricles, within 35 mm of the midline
    assert mni[2].min() >= info["z_min_mni"] - 3 and np.abs(mni[0]).max() <= 38
    assert 0 < info["steps"]["after_exclusion"] <= info["steps"]["eroded"] < info["steps"]["wm_thresholded"]


def test_empty_or_small_roi_raises_naming_it(anat):
    with pytest.raises(InputError, match=r"rois\[outside\]\.volume"):
        _build(anat, [{"name": "outside", "type": "sphere", "center_mni": [0, 0, 250], "radius_mm": 5}])
    with pytest.raises(InputError, match=r"rois\[tiny\]\.volume"):
        _build(anat, [{"name": "tiny", "type": "sphere", "center_mni": [30, -20, 30], "radius_mm": 4,
                       "min_volume_ml": 2.0}])
    with pytest.raises(InputError, match="pet_ref_img"):
        _build(anat, [{"name": "gm", "type": "tissue", "tissue": "gm"}], space="pet")


def test_pet_space_fractions_and_mni_space(anat):
    t1 = anat["t1w"]
    aff = np.diag([4.0, 4.0, 4.0, 1.0]); aff[:3, 3] = [-80, -116, -74]
    pet_ref = nib.Nifti1Image(np.zeros((41, 51, 42), np.float32), aff)
    cfg = [{"name": "gm", "type": "tissue", "tissue": "gm"}, {"name": "brain", "type": "tissue", "tissue": "brain"}]
    rois, rep = _build(anat, cfg, space="pet", pet_ref_img=pet_ref, pet_to_t1w=np.eye(4))
    w = rois["gm"].get_fdata()
    assert w.min() >= 0 and w.max() <= 1 and ((w > 0) & (w < 1)).any()
    assert rep.volume_ml.to_numpy() == pytest.approx(rep.volume_t1w_ml.to_numpy(), rel=0.02)
    # ROIs kept in MNI space: PCC built directly on the MNI grid
    rois_m, rep_m = _build(anat, [{"name": "PCC", "type": "atlas", "atlas": "Schaefer400",
                                   "pattern": "Default_pCunPCC"}], space="mni")
    assert rois_m["PCC"].shape == datasets.load_mni152_template(resolution=2).shape
    assert rep_m.volume_ml[0] == pytest.approx(rep_m.volume_t1w_ml[0] * abs(np.linalg.det(anat["to_mni"][:3, :3])), rel=0.1)
