"""BIDS input layer: discovery, sidecar checks, and messages that name the file and the field."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from prepost import bids
from prepost.errors import InputError, ValidationReport


@pytest.fixture
def study(small_study, tmp_path):
    """A private copy of the small simulated dataset that a test may break."""
    dst = tmp_path / "bids"
    shutil.copytree(small_study / "bids", dst)
    return dst


def _problems(bids_dir, subjects=("01", "02"), sessions=("pre", "post")):
    with pytest.raises(ValidationReport) as info:
        bids.collect_study(bids_dir, list(subjects), list(sessions))
    return info.value.problems


def _edit_json(path, fn):
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))


def test_finds_every_simulated_file(small_study):
    study = bids.collect_study(small_study / "bids", ["01", "02"], ["pre", "post"])
    sf = study[("01", "post")]
    assert sf.t1w.name == "sub-01_ses-post_T1w.nii.gz"
    assert sf.bold.name == "sub-01_ses-post_task-rest_bold.nii.gz"
    assert sf.bold_json.name == "sub-01_ses-post_task-rest_bold.json"
    assert sf.pet.name == "sub-01_ses-post_trc-UCBJ_pet.nii.gz"
    assert set(sf.blood) == {"manual", "autosampler"}


def test_missing_session_names_folder_and_config_field(study):
    shutil.rmtree(study / "sub-02" / "ses-post")
    (msg,) = _problems(study)
    assert "sub-02/ses-post" in msg and "session 'post'" in msg and "'sessions'" in msg


def test_missing_sidecar_field_names_file_and_field(study):
    js = study / "sub-01/ses-pre/func/sub-01_ses-pre_task-rest_bold.json"
    _edit_json(js, lambda m: m.pop("RepetitionTime"))
    (msg,) = _problems(study)
    assert str(js) in msg and "'RepetitionTime'" in msg and "missing" in msg


@pytest.mark.parametrize("field", bids.PET_REQUIRED)
def test_each_required_pet_field(study, field):
    js = study / "sub-02/ses-post/pet/sub-02_ses-post_trc-UCBJ_pet.json"
    _edit_json(js, lambda m: m.pop(field))
    problems = _problems(study)
    assert any(str(js) in p and f"'{field}'" in p for p in problems)


def test_frame_timing_length_mismatch(study):
    js = study / "sub-01/ses-post/pet/sub-01_ses-post_trc-UCBJ_pet.json"
    _edit_json(js, lambda m: m.update(FrameDuration=m["FrameDuration"][:-1]))
    (msg,) = _problems(study)
    assert str(js) in msg and "'FrameDuration'" in msg and "expected 31 values" in msg
    assert "found 30" in msg


def test_overlapping_and_non_monotonic_frames(study):
    js = study / "sub-01/ses-pre/pet/sub-01_ses-pre_trc-UCBJ_pet.json"

    def overlap(m):
        m["FrameTimesStart"][5] -= 5

    _edit_json(js, overlap)
    (msg,) = _problems(study)
    assert "non-overlapping" in msg and "frame 6" in msg

    def swap(m):
        s = m["FrameTimesStart"]
        s[3], s[4] = s[4], s[3]

    _edit_json(js, swap)
    assert any("increasing" in p for p in _problems(study))


def test_pet_units_must_be_a_concentration(study):
    js = study / "sub-01/ses-pre/pet/sub-01_ses-pre_trc-UCBJ_pet.json"
    _edit_json(js, lambda m: m.update(Units="counts"))
    (msg,) = _problems(study)
    assert "'Units'" in msg and "'counts'" in msg and "kBq/mL" in msg


def test_participant_without_data(study):
    (msg,) = _problems(study, subjects=("01", "02", "99"))
    assert "sub-99" in msg and "participants.tsv" in msg


def test_every_problem_is_reported_at_once(study):
    _edit_json(study / "sub-01/ses-pre/func/sub-01_ses-pre_task-rest_bold.json",
               lambda m: m.pop("RepetitionTime"))
    _edit_json(study / "sub-02/ses-pre/pet/sub-02_ses-pre_trc-UCBJ_pet.json",
               lambda m: m.pop("TracerName"))
    assert len(_problems(study, subjects=("01", "02", "77"))) == 3


def test_tr_mismatch_between_header_and_json(study):
    js = study / "sub-02/ses-pre/func/sub-02_ses-pre_task-rest_bold.json"
    _edit_json(js, lambda m: m.update(RepetitionTime=2.5))
    (msg,) = _problems(study)
    assert "pixdim[4]" in msg and "2.5" in msg and "2.0" in msg


def test_3d_bold_is_rejected(study):
    import nibabel as nib

    path = study / "sub-01/ses-post/func/sub-01_ses-post_task-rest_bold.nii.gz"
    img = nib.load(path)
    nib.Nifti1Image(np.asarray(img.dataobj)[..., 0], img.affine).to_filename(path)
    (msg,) = _problems(study)
    assert str(path) in msg and "4D" in msg


def test_corrupt_gzip_is_named(study):
    path = study / "sub-02/ses-post/pet/sub-02_ses-post_trc-UCBJ_pet.nii.gz"
    path.write_bytes(path.read_bytes()[:200])
    problems = _problems(study)
    assert any(str(path) in p and "corrupt" in p for p in problems)


def test_blood_column_declared_but_missing(study):
    tsv = study / "sub-01/ses-pre/pet/sub-01_ses-pre_trc-UCBJ_recording-manual_blood.tsv"
    df = pd.read_csv(tsv, sep="\t")
    df.drop(columns="plasma_radioactivity").to_csv(tsv, sep="\t", index=False)
    (msg,) = _problems(study)
    assert str(tsv) in msg and "'plasma_radioactivity'" in msg and "PlasmaAvail" in msg


def test_negative_blood_values(study):
    tsv = study / "sub-02/ses-post/pet/sub-02_ses-post_trc-UCBJ_recording-manual_blood.tsv"
    df = pd.read_csv(tsv, sep="\t")
    df.loc[3, "whole_blood_radioactivity"] = -1.0
    df.to_csv(tsv, sep="\t", index=False, na_rep="n/a")
    (msg,) = _problems(study)
    assert "'whole_blood_radioactivity'" in msg and "non-negative" in msg and "row 4" in msg


def test_sidecar_inheritance(study):
    """A top-level task-rest_bold.json supplies fields the run-level sidecar lacks."""
    for js in study.glob("sub-*/ses-*/func/*_bold.json"):
        _edit_json(js, lambda m: m.pop("RepetitionTime"))
    (study / "task-rest_bold.json").write_text(json.dumps({"RepetitionTime": 2.0}))
    study_files = bids.collect_study(study, ["01", "02"], ["pre", "post"])
    meta, used = bids.sidecar(study, study_files[("01", "pre")].bold)
    assert meta["RepetitionTime"] == 2.0 and len(used) == 2


def test_ambiguous_runs_are_an_error(study):
    src = study / "sub-01/ses-pre/func/sub-01_ses-pre_task-rest_bold.nii.gz"
    shutil.copy(src, src.with_name("sub-01_ses-pre_task-rest_run-2_bold.nii.gz"))
    (msg,) = _problems(study)
    assert "exactly one" in msg and "run-2" in msg


@pytest.mark.parametrize("bad", ["sub-../x", "sub-0 1", "sub-a/b", "01", "sub-"])
def test_participant_ids_with_path_characters_are_rejected(tmp_path, bad):
    tsv = tmp_path / "participants.tsv"
    tsv.write_text(f"participant_id\tage\nsub-01\t30\n{bad}\t31\n")
    with pytest.raises(ValidationReport) as info:
        bids.read_participants(tsv)
    assert str(tsv) in str(info.value) and "participant_id" in str(info.value)
    assert repr(bad) in str(info.value)


BAD_FILES = {  # name: (file, content, reader, error, message)
    "duplicate participant": ("participants.tsv", "participant_id\nsub-01\nsub-02\nsub-01\n",
                              bids.read_participants, ValidationReport,
                              "unique IDs, found 'sub-01' twice"),
    "no participant_id column": ("participants.tsv", "subject\tage\nsub-01\t3\n",
                                 bids.read_participants, InputError, "participant_id"),
    "malformed JSON": ("x_bold.json", "{not json", bids.read_json, InputError, "valid JSON"),
}


@pytest.mark.parametrize("case", list(BAD_FILES), ids=list(BAD_FILES))
def test_bad_file_is_an_input_error_naming_it(tmp_path, case):
    name, content, reader, error, message = BAD_FILES[case]
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(error, match=message) as info:
        reader(path)
    assert str(path) in str(info.value)


def test_blood_ending_before_the_scan(study):
    tsv = study / "sub-01/ses-post/pet/sub-01_ses-post_trc-UCBJ_recording-manual_blood.tsv"
    df = pd.read_csv(tsv, sep="\t")
    df[df.time <= 1800].to_csv(tsv, sep="\t", index=False, na_rep="n/a")
    (msg,) = _problems(study)
    assert str(tsv) in msg and "'time'" in msg and "5400 s" in msg and "1800 s" in msg


def test_blood_times_in_minutes_labelled_seconds(study):
    for rec in ("manual", "autosampler"):
        tsv = study / f"sub-02/ses-pre/pet/sub-02_ses-pre_trc-UCBJ_recording-{rec}_blood.tsv"
        df = pd.read_csv(tsv, sep="\t")
        df["time"] = df.time / 60
        df.to_csv(tsv, sep="\t", index=False, na_rep="n/a")
    (msg,) = _problems(study)
    assert "minutes" in msg and "'time'" in msg
