"""The anat rule runs for real on a small simulated study (one participant, two sessions, 3 mm
T1w): every contract file, transforms that carry the template onto the T1w, and the QC."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from runner import snakemake

SPACE = "MNI152NLin2009aSym"
SESSIONS = ("pre", "post")



def config(root, modalities=None, **anat):
    (root / "participants.tsv").write_text("participant_id\tage\tfollowup_days\nsub-01\t30\t1\n")
    cfg = {"participants": str(root / "participants.tsv"), "results_dir": str(root / "results"),
           "simulate": {"anat": {"voxel_mm": 3.0}, "bold": {"n_volumes": 20, "voxel_mm": 6.0},
                        "pet": {"voxel_mm": 6.0}},
           "anat": anat, "modalities": modalities or {}}
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def anat_targets(results):
    from prepost import anat

    out = []
    for ses in SESSIONS:
        out += list(anat.output_paths(results, sub="01", ses=ses, space=SPACE).values())
    return out


def test_anat_targets_are_registered_when_fmri_or_pet(tmp_path):
    cfg = config(tmp_path)
    out = snakemake("-n", "--cores", "1", "--configfile", str(cfg), cwd=tmp_path).stdout
    assert "rule anat:" in out or "\nanat " in out
    cfg = config(tmp_path, modalities={"fmri": False, "pet": False})
    out = snakemake("-n", "--cores", "1", "--configfile", str(cfg), cwd=tmp_path).stdout
    assert "rule anat:" not in out and "\nanat " not in out


def test_schema_rejects_an_unknown_transform(tmp_path):
    cfg = config(tmp_path, transform="BSpline")
    res = snakemake("-n", "--cores", "1", "--configfile", str(cfg), cwd=tmp_path, check=False)
    assert res.returncode != 0 and "BSpline" in res.stdout + res.stderr


@pytest.mark.slow
def test_anat_rule_writes_the_contract(tmp_path):
    from prepost import anat

    from prepost import simulate

    # a schedule other than the default shows the config reaches the registration
    cfg = config(tmp_path, reg_iterations=[30, 20, 0])
    results = tmp_path / "results"
    targets = anat_targets(results)
    snakemake(*targets, "--cores", "2", "--configfile", str(cfg), cwd=tmp_path)
    for t in targets:
        assert Path(t).is_file(), t
    tpl = anat.template_images(2)
    for ses in SESSIONS:
        out = anat.output_paths(results, sub="01", ses=ses, space=SPACE)
        qc = json.loads(Path(out["qc"]).read_text())
        assert qc["template"] == SPACE and qc["template_correlation"] > 0.8
        assert 1000 < qc["brain_volume_ml"] < 2200
        # the T1w on the template grid matches the template
        mni = nib.load(out["mni_t1w"])
        assert mni.shape == tpl["t1w"].shape and np.allclose(mni.affine, tpl["t1w"].affine)
        inside = tpl["brain"].get_fdata() > 0.5
        r = np.corrcoef(mni.get_fdata()[inside], tpl["t1w"].get_fdata()[inside])[0, 1]
        assert r > 0.8
        # tissue maps on the T1w grid: probabilities, GM mostly inside the brain mask
        t1 = nib.load(out["preproc"])
        mask = nib.load(out["brain_mask"]).get_fdata() > 0
        gm = nib.load(out["GM"]).get_fdata()
        assert gm.shape == t1.shape and 0 <= gm.min() and gm.max() <= 1
        assert gm[mask].sum() > 0.95 * gm.sum()
        # the transforms carry the template brain mask onto the T1w brain mask
        back = anat.apply_to_t1w(tpl["brain"], out["sidecar"], t1).get_fdata() > 0.5
        assert anat.dice(back, mask) > 0.95
        assert json.loads(Path(out["sidecar"]).read_text())["Settings"]["reg_iterations"] == [
            30, 20, 0]
        # ... and onto the simulated participant's true brain (its affine, size and warp)
        tp = simulate.truth_paths(results / "simulated/truth", "01", ses)
        geo = json.loads(tp["geometry"].read_text())
        true = simulate.mni_maps_on_grid(t1.affine, t1.shape, np.asarray(geo["t1w_to_mni"]),
                                         keys=("brain",), warp=simulate.Warp.from_truth(tp))
        assert anat.dice(mask, true["brain"] > 0.5) > 0.93
