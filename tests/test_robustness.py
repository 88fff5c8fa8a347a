"""Malformed inputs fail clearly and early and leave nothing behind.

Each case breaks a copy of the small simulated study (used as a user's BIDS dataset) or the
config, runs the workflow for real, and checks three things:
1. the error names the file (or config key), the field or value, and what was expected;
2. it is raised while the DAG is built, before any job runs;
3. nothing was written to the results folder.
Cases that only a rule reading the data can see are tested in the stage tests; see README
"When something is wrong with your data".
"""

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from runner import small_config, snakemake

PET = "sub-01/ses-pre/pet/sub-01_ses-pre_trc-UCBJ_pet"
BOLD = "sub-02/ses-post/func/sub-02_ses-post_task-rest_bold"
BLOOD = "sub-01/ses-pre/pet/sub-01_ses-pre_trc-UCBJ_recording-manual_blood"


def _json(bids, stem, fn):
    path = bids / f"{stem}.json"
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))
    return path


def _tsv(bids, stem, fn):
    path = bids / f"{stem}.tsv"
    df = fn(pd.read_csv(path, sep="\t"))
    df.to_csv(path, sep="\t", index=False, na_rep="n/a")
    return path


def _nifti(bids, stem, fn):
    path = bids / f"{stem}.nii.gz"
    img = nib.load(path)
    data, aff = fn(np.asarray(img.dataobj), img)
    out = nib.Nifti1Image(data, aff)
    out.header.set_xyzt_units("mm", "sec")
    if data.ndim == 4:
        out.header["pixdim"][4] = img.header["pixdim"][4]
    out.to_filename(path)
    return path


def _drop_frame(data, img):
    return data[..., :-1], img.affine


def _corrupt(bids):
    path = bids / f"{BOLD}.nii.gz"
    path.write_bytes(path.read_bytes()[:300])
    return path


def _participants(tmp_path, text):
    path = tmp_path / "participants.tsv"
    path.write_text(text)
    return {"participants": str(path)}


def _swap_frames(m):
    s = m["FrameTimesStart"]
    s[7], s[8] = s[8], s[7]


def _overlap(m):
    m["FrameTimesStart"][10] -= 10


HEADER = "participant_id\tage\tfollowup_days\n"

# name: (break the dataset -> path named in the error, config overrides, words the error must hold)
CASES = {
    "config unknown key": (None, {"fmri_typo": 1}, ["fmri_typo", "Additional properties"]),
    "config wrong type": (None, {"simulate": {"bold": {"n_volumes": "many"}}},
                          ["n_volumes", "'many' is not of type 'integer'"]),
    "sessions not in the data": (None, {"sessions": {"followup": "week2"}},
                                 ["ses-week2", "session 'week2'", "'sessions'"]),
    "unknown atlas": (None, {"connectivity": {"atlases": ["Schaefer500"]}},
                      ["Schaefer500", "connectivity.atlases"]),
    "k2' from an ROI that is not defined": (None, {"pet": {"k2prime": "cortex"}},
                                            ["pet.k2prime", "'cortex'", "cortical_gm"]),
    "hypothesis on a measure nothing produces": (
        None, {"stats": {"hypotheses": [{"name": "h1", "test": "paired", "measure": "fc_withn",
                                          "region": "Default", "direction": "decrease"}]}},
        ["fc_withn", "h1"]),
    "missing RepetitionTime": (lambda b: _json(b, BOLD, lambda m: m.pop("RepetitionTime")), {},
                               ["'RepetitionTime'", "missing", "positive number"]),
    "TR header/JSON mismatch": (lambda b: _json(b, BOLD, lambda m: m.update(RepetitionTime=3.0)),
                                {}, ["pixdim[4]", "expected 3.0 s"]),
    "3D BOLD": (lambda b: _nifti(b, BOLD, lambda d, i: (d[..., 0], i.affine)), {},
                ["'dim'", "expected a 4D image"]),
    "corrupt gzip": (_corrupt, {}, ["corrupt or unreadable"]),
    "malformed JSON sidecar": (lambda b: (b / f"{BOLD}.json").write_text("{bad") and b / f"{BOLD}.json",
                               {}, ["expected valid JSON"]),
    "PET with fewer frames than FrameTimesStart": (lambda b: (_nifti(b, PET, _drop_frame),
                                                              b / f"{PET}.json")[1], {},
                                                   ["'FrameTimesStart'", "expected 30 values"]),
    "PET frame-duration count mismatch": (
        lambda b: _json(b, PET, lambda m: m.update(FrameDuration=m["FrameDuration"][:-2])), {},
        ["'FrameDuration'", "expected 31 values", "found 29"]),
    "non-monotonic frame times": (lambda b: _json(b, PET, _swap_frames), {},
                                  ["'FrameTimesStart'", "increasing"]),
    "overlapping frames": (lambda b: _json(b, PET, _overlap), {}, ["non-overlapping", "frame 11"]),
    "PET units not a concentration": (lambda b: _json(b, PET, lambda m: m.update(Units="counts")),
                                      {}, ["'Units'", "radioactivity concentration", "'counts'"]),
    "missing required PET field": (lambda b: _json(b, PET, lambda m: m.pop("InjectedRadioactivity")),
                                   {}, ["'InjectedRadioactivity'", "BIDS-PET requires it"]),
    "blood plasma column missing": (
        lambda b: _tsv(b, BLOOD, lambda d: d.drop(columns="plasma_radioactivity")), {},
        ["'plasma_radioactivity'", "PlasmaAvail"]),
    "negative blood values": (
        lambda b: _tsv(b, BLOOD, lambda d: d.assign(whole_blood_radioactivity=-d.whole_blood_radioactivity)),
        {}, ["'whole_blood_radioactivity'", "non-negative"]),
    "blood ends before the scan": (lambda b: _tsv(b, BLOOD, lambda d: d[d.time <= 2400]), {},
                                   ["'time'", "end of the PET scan", "5400 s"]),
    "blood minutes labelled seconds": (
        lambda b: (_tsv(b, BLOOD.replace("manual", "autosampler"), lambda d: d.assign(time=d.time / 60)),
                   _tsv(b, BLOOD, lambda d: d.assign(time=d.time / 60)))[1],
        {}, ["'time'", "minutes"]),
}

PARTICIPANT_CASES = {
    "duplicate participant ID": (HEADER + "sub-01\t30\t1\nsub-02\t31\t7\nsub-01\t32\t1\n",
                                 ["participant_id", "unique", "'sub-01' twice"]),
    "ID with path characters": (HEADER + "sub-01\t30\t1\nsub-../etc\t31\t7\n",
                                ["participant_id", "letters and digits", "'sub-../etc'"]),
    "ID with a space": (HEADER + "sub-01\t30\t1\nsub-0 2\t31\t7\n", ["'sub-0 2'"]),
    "participant with no files": (HEADER + "sub-01\t30\t1\nsub-02\t31\t7\nsub-03\t33\t1\n",
                                  ["sub-03", "participants.tsv", "found none"]),
}


@pytest.fixture
def user_bids(small_study, tmp_path):
    bids = tmp_path / "bids"
    shutil.copytree(small_study / "bids", bids)
    return bids


def _run_and_check(tmp_path, bids, overrides, words, named=None):
    cfg = small_config(tmp_path, bids_dir=str(bids), **overrides)
    # a real run, not a dry run: the error must come before any job starts
    res = snakemake("--cores", "1", "--configfile", str(cfg), cwd=tmp_path, check=False)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    for w in words:
        assert w in out, f"{w!r} not in:\n{out[-2500:]}"
    if named is not None:
        assert str(named) in out, f"{named} not named in:\n{out[-2500:]}"
    assert "Select jobs to execute" not in out
    results = tmp_path / "results"
    assert not results.exists() or not any(p.is_file() for p in results.rglob("*"))


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_malformed_input_fails_at_dag_time(case, user_bids, tmp_path):
    breaker, overrides, words = CASES[case]
    named = breaker(user_bids) if breaker else None
    _run_and_check(tmp_path, user_bids, overrides, words, named)


@pytest.mark.parametrize("case", list(PARTICIPANT_CASES), ids=list(PARTICIPANT_CASES))
def test_malformed_participants_fail_at_dag_time(case, user_bids, tmp_path):
    text, words = PARTICIPANT_CASES[case]
    cfg_part = tmp_path / "p.tsv"
    cfg_part.write_text(text)
    _run_and_check(tmp_path, user_bids, {"participants": str(cfg_part)}, words,
                   named=cfg_part if "files" not in case else None)


def test_the_catalogue_has_at_least_twenty_cases():
    assert len(CASES) + len(PARTICIPANT_CASES) >= 20


@pytest.mark.slow
def test_bad_voxels_fail_their_first_rule_and_the_others_complete(user_bids, tmp_path):
    """NaN voxels and a zero-filled volume only show in the data: the first rule reading it stops
    with the file named, leaves no output, and --keep-going lets the other sessions finish."""
    def with_nan(d, img):
        d = d.astype(np.float32)
        d[3, 3, 3, 5] = np.nan
        return d, img.affine

    def with_zero_volume(d, img):
        d = d.copy()
        d[..., 7] = 0
        return d, img.affine

    nan_bold = _nifti(user_bids, "sub-02/ses-pre/func/sub-02_ses-pre_task-rest_bold", with_nan)
    zero_bold = _nifti(user_bids, "sub-01/ses-post/func/sub-01_ses-post_task-rest_bold",
                       with_zero_volume)
    cfg = small_config(tmp_path, bids_dir=str(user_bids), modalities={"pet": False},
                       fmri={"resolution_mm": 6})
    res_dir = tmp_path / "results"
    target = ("{r}/sub-{s}/ses-{e}/func/sub-{s}_ses-{e}_task-rest_space-MNI152NLin2009aSym"
              "_res-6_desc-preproc_bold.nii.gz")
    targets = {(s, e): target.format(r=res_dir, s=s, e=e) for s in ("01", "02")
               for e in ("pre", "post")}
    res = snakemake(*targets.values(), "--cores", "2", "--keep-going", "--configfile", str(cfg),
                    cwd=tmp_path, check=False)
    assert res.returncode != 0
    logs = "".join(p.read_text() for p in (res_dir / "logs").rglob("*.log"))
    assert str(nan_bold) in logs and "NaN/inf voxels" in logs
    assert str(zero_bold) in logs and "zero-filled volume" in logs and "index 7" in logs
    from pathlib import Path

    for key, path in targets.items():
        broken = key in {("02", "pre"), ("01", "post")}
        assert Path(path).exists() != broken, key
        if broken:  # no half-written file of the failed job
            assert not list(Path(path).parent.glob(f"sub-{key[0]}_ses-{key[1]}_*desc-preproc*"))
