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


def _runs(study, runs=("1", "2", "10"), echoes=None):
    """Turn sub-01 ses-pre's BOLD into runs (and echoes) of the same image and sidecar."""
    func = study / "sub-01/ses-pre/func"
    src = func / "sub-01_ses-pre_task-rest_bold.nii.gz"
    js = func / "sub-01_ses-pre_task-rest_bold.json"
    for run in runs:
        for echo in echoes or [None]:
            stem = f"sub-01_ses-pre_task-rest_run-{run}" + (f"_echo-{echo}" if echo else "")
            shutil.copy(src, func / f"{stem}_bold.nii.gz")
            shutil.copy(js, func / f"{stem}_bold.json")
    src.unlink()
    js.unlink()
    return func


def test_every_rest_run_is_found_in_run_order(study):
    func = _runs(study)
    (func / "sub-01_ses-pre_task-other_bold.nii.gz").write_bytes(b"not read")
    sf = bids.collect_study(study, ["01", "02"], ["pre", "post"])[("01", "pre")]
    assert [r.entities for r in sf.bold_runs] == [{"task": "rest", "run": r} for r in ("1", "2", "10")]
    assert [r.bold.name for r in sf.bold_runs] == [
        f"sub-01_ses-pre_task-rest_run-{r}_bold.nii.gz" for r in ("1", "2", "10")]
    assert sf.bold_runs[2].bold_json.name == "sub-01_ses-pre_task-rest_run-10_bold.json"
    assert (sf.bold, sf.bold_json) == (sf.bold_runs[0].bold, sf.bold_runs[0].bold_json)
    table = bids.inventory(bids.collect_study(study, ["01"], ["pre"]), study)
    assert table.bold[0].count(",") == 2 and table.bold_volumes[0].count(",") == 2


def test_each_run_is_checked(study):
    func = _runs(study)
    js = func / "sub-01_ses-pre_task-rest_run-10_bold.json"
    _edit_json(js, lambda m: m.pop("RepetitionTime"))
    (msg,) = _problems(study)
    assert str(js) in msg and "'RepetitionTime'" in msg


def test_runs_of_a_session_must_share_a_tr(study):
    import nibabel as nib

    func = _runs(study, runs=("1", "2"))
    img = func / "sub-01_ses-pre_task-rest_run-2_bold.nii.gz"
    im = nib.load(img)
    im.header.set_zooms(im.header.get_zooms()[:3] + (2.5,))
    nib.save(nib.Nifti1Image(np.asarray(im.dataobj), im.affine, im.header), img)
    _edit_json(func / "sub-01_ses-pre_task-rest_run-2_bold.json",
               lambda m: m.update(RepetitionTime=2.5))
    (msg,) = _problems(study)
    assert "expected one TR" in msg and "'bids.filters.bold'" in msg and "2.5" in msg


def test_bold_filters_select_runs(study):
    _runs(study)
    filters = {"bold": {"run": [1, 2]}}
    sf = bids.collect_study(study, ["01"], ["pre"], filters=filters)[("01", "pre")]
    assert [r.entities["run"] for r in sf.bold_runs] == ["1", "2"]
    with pytest.raises(ValidationReport) as info:
        bids.collect_study(study, ["01"], ["pre"], filters={"bold": {"run": None}})
    (msg,) = info.value.problems
    assert "resting BOLD run" in msg and "'bids.filters.bold'" in msg


def test_echoes_of_a_run_need_a_filter_unless_fmriprep_reads_them(study):
    _runs(study, runs=("1",), echoes=("1", "2"))
    (msg,) = _problems(study, subjects=("01",), sessions=("pre",))
    assert "echo-1" in msg and "echo-2" in msg and "'bids.filters.bold'" in msg
    sf = bids.collect_study(study, ["01"], ["pre"], filters={"bold": {"echo": 2}})[("01", "pre")]
    assert sf.bold.name == "sub-01_ses-pre_task-rest_run-1_echo-2_bold.nii.gz"
    # fMRIPrep mode: the echoes are one run (fMRIPrep combines them), and nothing raw is checked
    sf = bids.collect_study(study, ["01"], ["pre"], bold_raw=False)[("01", "pre")]
    assert [r.entities for r in sf.bold_runs] == [{"task": "rest", "run": "1"}]


def test_fmriprep_mode_needs_no_raw_bold(study):
    for path in study.glob("sub-*/ses-*/func/*"):
        path.unlink()
    assert any("resting BOLD" in p for p in _problems(study))
    got = bids.collect_study(study, ["01", "02"], ["pre", "post"], bold_raw=False)
    assert all(sf.bold_runs == [] and sf.bold is None for sf in got.values())


def test_several_t1w_name_the_filter(study):
    anat = study / "sub-02/ses-post/anat"
    t1w = anat / "sub-02_ses-post_T1w.nii.gz"
    shutil.copy(t1w, anat / "sub-02_ses-post_acq-mprage_T1w.nii.gz")
    (msg,) = _problems(study)
    assert "acq-mprage" in msg and "sub-02_ses-post_T1w.nii.gz" in msg
    assert "'bids.filters.t1w'" in msg
    got = bids.collect_study(study, ["02"], ["post"], filters={"t1w": {"acq": None}})
    assert got[("02", "post")].t1w == t1w


def _pet_files(study, sub="01", ses="pre"):
    return sorted((study / f"sub-{sub}/ses-{ses}/pet").glob("*"))


def _retrace(study, sub, ses, old="trc-UCBJ_", new="trc-FDG_", copy=False):
    for f in _pet_files(study, sub, ses):
        if old in f.name:
            (shutil.copy if copy else shutil.move)(f, f.with_name(f.name.replace(old, new)))


def test_tracer_is_taken_from_the_data(study):
    got = bids.collect_study(study, ["01", "02"], ["pre", "post"])
    assert {sf.tracer for sf in got.values()} == {"UCBJ"} and bids.study_tracer(got) == "UCBJ"
    for sub in ("01", "02"):
        for ses in ("pre", "post"):
            _retrace(study, sub, ses, new="")
    got = bids.collect_study(study, ["01", "02"], ["pre", "post"])
    assert bids.study_tracer(got) is None
    assert set(got[("01", "pre")].blood) == {"manual", "autosampler"}


def test_a_configured_tracer_absent_lists_the_pets_there(study):
    with pytest.raises(ValidationReport) as info:
        bids.collect_study(study, ["01"], ["pre"], tracer="FDG")
    (msg,) = info.value.problems
    assert "_trc-FDG_pet.nii.gz" in msg and "'bids.tracer'" in msg
    assert "found only sub-01_ses-pre_trc-UCBJ_pet.nii.gz" in msg


def test_sessions_must_agree_on_the_tracer(study):
    _retrace(study, "02", "post")
    (msg,) = _problems(study)
    assert "trc-FDG: sub-02_ses-post_trc-FDG_pet.nii.gz" in msg and "trc-UCBJ" in msg
    assert "'bids.tracer'" in msg


def test_several_pets_name_them_and_the_keys(study):
    _retrace(study, "01", "pre", copy=True)
    (msg,) = _problems(study)
    assert "sub-01_ses-pre_trc-FDG_pet.nii.gz" in msg and "sub-01_ses-pre_trc-UCBJ_pet.nii.gz" in msg
    assert "'bids.tracer'" in msg and "'bids.filters.pet'" in msg
    got = bids.collect_study(study, ["01", "02"], ["pre", "post"], tracer="UCBJ")
    assert got[("01", "pre")].pet.name == "sub-01_ses-pre_trc-UCBJ_pet.nii.gz"
    # the blood of the other tracer is not this scan's
    assert all("FDG" not in tsv.name for tsv, _ in got[("01", "pre")].blood.values())


def test_rec_filter_selects_the_pet(study):
    _retrace(study, "01", "pre", old="trc-UCBJ_pet", new="trc-UCBJ_rec-acstat_pet", copy=True)
    _retrace(study, "01", "pre", old="trc-UCBJ_pet", new="trc-UCBJ_rec-acdyn_pet")
    (msg,) = _problems(study)
    assert "rec-acdyn" in msg and "rec-acstat" in msg
    got = bids.collect_study(study, ["01"], ["pre"], filters={"pet": {"rec": "acdyn"}})
    sf = got[("01", "pre")]
    assert sf.pet.name == "sub-01_ses-pre_trc-UCBJ_rec-acdyn_pet.nii.gz"
    assert sf.pet_json.name == "sub-01_ses-pre_trc-UCBJ_rec-acdyn_pet.json"
    assert set(sf.blood) == {"manual", "autosampler"}


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


def _pet_json(study, sub="01", ses="pre"):
    return study / f"sub-{sub}/ses-{ses}/pet/sub-{sub}_ses-{ses}_trc-UCBJ_pet.json"


@pytest.mark.parametrize("scale, hint", [(1000.0, "milliseconds; divide them by 1000"),
                                         (1 / 60, "minutes; multiply them by 60")])
def test_frame_times_in_other_units(study, scale, hint):
    js = _pet_json(study)
    _edit_json(js, lambda m: m.update(FrameTimesStart=[t * scale for t in m["FrameTimesStart"]],
                                      FrameDuration=[t * scale for t in m["FrameDuration"]]))
    (msg,) = _problems(study)
    assert str(js) in msg and "expected seconds" in msg and hint in msg


def test_durations_holding_end_times_get_the_hint(study):
    js = _pet_json(study)

    def ends(m):
        m["FrameDuration"] = [s + d for s, d in zip(m["FrameTimesStart"], m["FrameDuration"])]

    _edit_json(js, ends)
    (msg,) = _problems(study)
    assert "non-overlapping" in msg and "look like frame end times" in msg
    assert "FrameDuration = end - start ([10, 10, 10, 10, ...])" in msg


def test_a_single_static_frame_is_accepted_with_its_frame_times(study):
    import nibabel as nib

    pet = study / "sub-02/ses-post/pet/sub-02_ses-post_trc-UCBJ_pet.nii.gz"
    img = nib.load(pet)
    nib.Nifti1Image(np.asarray(img.dataobj)[..., -1], img.affine).to_filename(pet)
    _edit_json(_pet_json(study, "02", "post"),
               lambda m: m.update(FrameTimesStart=[5100.0], FrameDuration=[300.0]))
    pet_cfg = {"models": ["logan", "suvr"], "tstar_s": 1800, "suvr_window_s": [5100, None],
               "coreg": {"window_s": [1200, None]}, "motion": {"min_start_s": 120.0}}
    got = bids.collect_study(study, ["01", "02"], ["pre", "post"], pet_config=pet_cfg)
    sf = got[("02", "post")]
    assert (sf.pet_frame_start_s, sf.pet_frame_duration_s) == ([5100.0], [300.0])
    assert len(got[("01", "pre")].pet_frame_start_s) == 31


@pytest.mark.parametrize("value, units, bq", [(550, "MBq", 550e6), (10, "mCi", 3.7e8),
                                              (2.5e5, "kBq", 2.5e8), (300, "uCi", 1.11e7),
                                              (3e8, "Bq", 3e8), (1, "GBq", 1e9)])
def test_injected_radioactivity_in_bq(value, units, bq):
    meta = {"InjectedRadioactivity": value, "InjectedRadioactivityUnits": units}
    assert bids.injected_bq(meta) == pytest.approx(bq)


def test_injected_radioactivity_needs_known_units(study):
    assert bids.injected_bq({}) is None
    with pytest.raises(InputError, match="InjectedRadioactivityUnits"):
        bids.injected_bq({"InjectedRadioactivity": 5})
    js = _pet_json(study)
    _edit_json(js, lambda m: m.update(InjectedRadioactivityUnits="MBq/mL"))
    (msg,) = _problems(study)
    assert str(js) in msg and "'InjectedRadioactivityUnits'" in msg and "'MBq/mL'" in msg


# a 90 min dynamic scan: 10 frames of 60 s, then 16 of 300 s (ends at 5400 s)
DYN_START = [60.0 * i for i in range(10)] + [600.0 + 300.0 * i for i in range(16)]
DYN_DUR = [60.0] * 10 + [300.0] * 16
PROTOCOL = {"models": ["1tcm", "logan", "srtm", "suvr"], "parametric_maps": False,
            "tstar_s": 1800, "suvr_window_s": [3600, 5400], "coreg": {"window_s": [1200, None]},
            "motion": {"min_start_s": 120.0}}


def _protocol(start=DYN_START, dur=DYN_DUR, blood=False, **pet):
    found = []
    bids.check_protocol(start, dur, {**PROTOCOL, **pet}, "x_pet.json", found, blood=blood)
    return found


@pytest.mark.parametrize("pet, key", [
    ({"suvr_window_s": [3600, 6000]}, "pet.suvr_window_s"),
    ({"suvr_window_s": [5400, None]}, "pet.suvr_window_s"),
    ({"tstar_s": 4800}, "pet.tstar_s"),
    ({"tstar_s": None, "tstar_frames": 30}, "pet.tstar_frames"),
    ({"coreg": {"window_s": [6000, None]}}, "pet.coreg.window_s"),
    ({"motion": {"min_start_s": 5200}}, "pet.motion.min_start_s"),
])
def test_protocol_outside_the_scan_names_the_key_and_the_end(pet, key):
    assert _protocol() == []
    (msg,) = _protocol(**pet)
    assert msg.startswith("x_pet.json") and f"'{key}'" in msg and "5400 s" in msg


def test_protocol_checks_only_what_is_configured():
    # t* only for the linear plots (plasma Logan maps count when blood is there)
    assert _protocol(models=["srtm", "suvr"], tstar_s=5000) == []
    (msg,) = _protocol(models=["srtm"], tstar_s=5000, parametric_maps=True,
                       suvr_window_s=[6000, 7000])
    assert "'pet.suvr_window_s'" in msg
    (msg,) = _protocol(models=["srtm"], tstar_s=5000, parametric_maps=True, blood=True)
    assert "'pet.tstar_s'" in msg and "logan" in msg
    # SUVR window only for SUVR (model or maps)
    assert _protocol(models=["1tcm"], suvr_window_s=[6000, 7000]) == []
    # a static scan: its SUVR window is the whole scan and dynamic-only steps are left out
    # (prepost.pet.stage.plan_study), so the default window and t* are no problem
    static = {"start": [3000.0], "dur": [600.0]}
    assert _protocol(**static, suvr_window_s=[3000, None], tstar_s=4000) == []
    assert _protocol(**static) == []


@pytest.mark.parametrize("filters, ok", [
    ({"run": 1}, True), ({"run": "01"}, True), ({"run": [2, 1]}, True), ({"run": 2}, False),
    ({"run": None}, False), ({"rec": None}, True), ({"rec": "acdyn"}, False), ({}, True)])
def test_entity_filters(filters, ok):
    assert bids.matches({"task": "rest", "run": "01"}, filters) is ok
