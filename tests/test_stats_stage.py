"""The statistics stage module: file names, and NBS from the connectivity stage's matrix files
(participants left out by QC or with empty matrices, group means, edge t against scipy)."""

import numpy as np
import pandas as pd
from scipy import stats

from prepost.connectivity.stage import relmat_frame
from prepost.io import write_tsv
from prepost.stats import stage


def _corr(rng, n=5):
    x = rng.standard_normal((40, n))
    return np.corrcoef(x, rowvar=False)


def test_output_paths_follow_the_bids_entities():
    out = stage.nbs_output_paths("res", atlas="Schaefer100", baseline="pre", followup="post")
    assert out["summary"] == "res/group/nbs/atlas-Schaefer100_meas-pearson_nbs.json"
    assert out["mean_followup"] == "res/group/nbs/ses-post_atlas-Schaefer100_meas-pearson_desc-mean_relmat.tsv"
    assert stage.output_paths("res")["table"] == "res/group/group_table.tsv"


def test_nbs_stage_leaves_out_excluded_and_empty_participants(tmp_path):
    rng = np.random.default_rng(3)
    names = [f"p{i}" for i in range(5)]
    subjects = [f"sub-0{i}" for i in range(1, 6)]
    files = {"pre": [], "post": []}
    mats = {"pre": [], "post": []}
    for k, sub in enumerate(subjects):
        for ses in ("pre", "post"):
            m = _corr(rng)
            if sub == "sub-05" and ses == "post":
                m = np.full_like(m, np.nan)  # a run excluded upstream
            f = tmp_path / f"{sub}_{ses}.tsv"
            write_tsv(relmat_frame(m, names), f)
            files[ses].append(f)
            mats[ses].append(m)
    exclusions = pd.DataFrame([{"participant_id": "sub-04", "session": "post", "modality": "fmri",
                                "measure": "*", "region": "*"}])
    res = stage.nbs_stage(files["pre"], files["post"], subjects, exclusions, atlas="A",
                          sessions=("pre", "post"), thresh=3.0, tail="both", size="extent",
                          n_perm=100, max_exact=16, seed=0)
    s = res["summary"]
    assert s["participants"] == ["sub-01", "sub-02", "sub-03"]
    assert s["left_out"] == ["sub-04", "sub-05"] and s["n_subjects"] == 3
    off = ~np.eye(5, dtype=bool)
    zpre = np.arctanh(np.where(off, np.stack(mats["pre"][:3]), 0.0))
    zpost = np.arctanh(np.where(off, np.stack(mats["post"][:3]), 0.0))
    expected = np.tanh(zpre.mean(axis=0))
    np.testing.assert_allclose(res["mean_baseline"].to_numpy()[off], expected[off], atol=1e-6)
    t_ref = stats.ttest_rel(zpost[:, 0, 1], zpre[:, 0, 1]).statistic
    np.testing.assert_allclose(res["t"].loc["p0", "p1"], t_ref, rtol=1e-6)
