"""The BIDS input layer on the published BIDS-PET examples (bids-examples pet001-pet005).

Every JSON and TSV file is used as published; the images are synthetic and tiny (4x4x4 voxels,
as many frames as each PET sidecar lists), with a T1w and a resting BOLD run where an example has
none. A pre/post study needs two sessions: single-session examples are duplicated into
``ses-pre``/``ses-post`` (names gaining or changing their ``ses-``). Each test asserts what
:func:`prepost.bids.collect_study` decides with the default PET configuration, as the workflow
does when it builds the DAG; one runs ``snakemake -n`` on pet002.

Outcomes:
- pet001, pet003, pet004: refused, their FrameDuration holds frame end times (the message says
  so and what to write); accepted once the copy holds end - start;
- pet002: refused, the default SUVR window (3,600-5,400 s) lies beyond the end of sub-01's
  baseline scan (3,216 s), naming the sidecar, its end and ``pet.suvr_window_s``; accepted with
  a window inside every scan;
- pet005: accepted, each session has a single PET (``task-eyes`` in the intervention session);
  a ``bids.filters.pet`` that keeps one of the two names leaves the other session without a PET,
  refused naming the key.
"""

import json
import re
import shutil

import nibabel as nib
import numpy as np
import pytest
import yaml
from runner import ROOT, dry_run_jobs, snakemake

from prepost import bids
from prepost.errors import ValidationReport

CORPUS = ROOT.parent / "shared" / "realworld" / "bids-examples-pet"
PET_CONFIG = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["pet"]

pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason="real-world corpus not found")


def _image(path, shape, t_r=None):
    img = nib.Nifti1Image(np.ones(shape, np.float32), np.eye(4))
    if t_r is not None:
        img.header.set_zooms((1.0, 1.0, 1.0, t_r))
        img.header.set_xyzt_units("mm", "sec")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)


def copy_example(name, root, sessions=None):
    """``name``'s JSON/TSV files under ``root`` with synthetic images; returns the session labels.

    ``sessions`` maps each new session to the example's (None: no ``ses-`` level) for the
    examples of one session; by default the example's own sessions are kept.
    """
    src_root = CORPUS / name
    for src in src_root.rglob("*"):
        if not src.is_file():
            continue
        rel = src.relative_to(src_root)
        if len(rel.parts) == 1 or sessions is None:
            targets = [rel]
        else:
            targets = []
            for new, old in sessions.items():
                sub = rel.parts[0]
                if old is None:
                    if len(rel.parts) != 3:  # no ses- level: sub-X/<datatype>/file
                        continue
                    fname = rel.name.replace(f"{sub}_", f"{sub}_ses-{new}_", 1)
                    targets.append(rel.parent.parent / f"ses-{new}" / rel.parts[1] / fname)
                elif rel.parts[1] == f"ses-{old}":
                    fname = rel.name.replace(f"_ses-{old}_", f"_ses-{new}_")
                    targets.append(rel.parents[2] / f"ses-{new}" / rel.parent.name / fname)
        for t in targets:
            dst = root / t
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    labels = set()
    for js in root.glob("sub-*/ses-*/pet/*_pet.json"):
        frames = len(json.loads(js.read_text())["FrameDuration"])
        _image(js.with_name(js.name.replace(".json", ".nii.gz")), (4, 4, 4, frames))
        ses_dir = js.parents[1]
        labels.add(ses_dir.name[4:])
        stem = f"{ses_dir.parent.name}_{ses_dir.name}"
        anat = ses_dir / "anat"
        if not list(anat.glob("*_T1w.nii*")):
            # pet005's T1w header is (192, 512, 512, 1): one volume of a 4D image
            shape = (4, 4, 4, 1) if name == "pet005" else (4, 4, 4)
            _image(anat / f"{stem}_T1w.nii.gz", shape)
        func = ses_dir / "func"
        _image(func / f"{stem}_task-rest_bold.nii.gz", (4, 4, 4, 3), t_r=2.0)
        (func / f"{stem}_task-rest_bold.json").write_text(json.dumps({"RepetitionTime": 2.0}))
    return sorted(labels)


def collect(root, sessions, pet=None, **kwargs):
    subjects = sorted(p.name[4:] for p in root.glob("sub-*"))
    return bids.collect_study(root, subjects, sessions, pet_config=pet or PET_CONFIG, **kwargs)


def problems(root, sessions, **kwargs):
    with pytest.raises(ValidationReport) as info:
        collect(root, sessions, **kwargs)
    return info.value.problems


def fix_durations(root):
    """Write FrameDuration = end - start in every PET sidecar of the copy."""
    for js in root.glob("sub-*/ses-*/pet/*_pet.json"):
        meta = json.loads(js.read_text())
        meta["FrameDuration"] = [e - s for s, e in zip(meta["FrameTimesStart"],
                                                       meta["FrameDuration"])]
        js.write_text(json.dumps(meta))


ONE_SESSION = {"pet001": "01", "pet003": "01", "pet004": None}


@pytest.mark.parametrize("name", sorted(ONE_SESSION))
def test_durations_holding_end_times_are_refused_with_the_hint(tmp_path, name):
    root = tmp_path / name
    sessions = copy_example(name, root, {"pre": ONE_SESSION[name], "post": ONE_SESSION[name]})
    assert sessions == ["post", "pre"]
    found = problems(root, ["pre", "post"])
    assert len(found) == 2  # one per session, nothing else
    for ses, msg in zip(("pre", "post"), found):
        assert re.search(rf"sub-01_ses-{ses}_(trc-CIMBI36_)?pet\.json", msg), msg
        assert "non-overlapping" in msg and "look like frame end times" in msg
        assert "FrameDuration = end - start" in msg
    fix_durations(root)
    study = collect(root, ["pre", "post"])
    sf = study[("01", "pre")]
    assert sf.pet_frame_start_s[-1] + sf.pet_frame_duration_s[-1] == (
        13800 - 6600 if name == "pet003" else 14100 - 6900)
    assert bids.study_tracer(study) == ("CIMBI36" if name == "pet001" else None)
    assert set(sf.blood) == ({"manual"} if name == "pet003" else {"autosampler", "manual"})


def test_pet002_suvr_window_beyond_the_scan_names_it_and_the_key(tmp_path):
    root = tmp_path / "pet002"
    copy_example("pet002", root)
    (msg,) = problems(root, ["baseline", "rescan"])
    assert "sub-01_ses-baseline_pet.json" in msg and "3216 s" in msg
    assert "'pet.suvr_window_s'" in msg and "[3600, 5400]" in msg
    inside = {**PET_CONFIG, "suvr_window_s": [1800, None]}
    study = collect(root, ["baseline", "rescan"], pet=inside)
    assert len(study) == 4 and bids.study_tracer(study) is None
    assert study[("01", "baseline")].pet_frame_start_s[-1] == 2916


def test_pet002_refused_and_accepted_by_the_workflow(tmp_path):
    root = tmp_path / "bids"
    copy_example("pet002", root)

    def dry_run(**pet):
        cfg = {"bids_dir": str(root), "participants": str(tmp_path / "participants.tsv"),
               "results_dir": str(tmp_path / "results"),
               "sessions": {"baseline": "baseline", "followup": "rescan"},
               "modalities": {"fmri": False, "pet": True},
               "pet": {"models": ["srtm", "logan_ref", "suvr"], "parametric_maps": False, **pet}}
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
        return snakemake("-n", "--cores", "1", "--configfile", str(tmp_path / "config.yaml"),
                         "--until", "pet_kinetics", cwd=tmp_path, check=False)

    # the covariates of the default statistics (pet002's own table is the participants stage's)
    (tmp_path / "participants.tsv").write_text(
        "participant_id\tage\tfollowup_days\nsub-01\t21\t7\nsub-02\t20\t7\n")
    res = dry_run()
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "sub-01_ses-baseline_pet.json" in out
    assert "'pet.suvr_window_s'" in out and "3216 s" in out
    res = dry_run(suvr_window_s=[2400, 3216])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert dry_run_jobs(res)["pet_kinetics"] == 4
    assert "trc-" not in res.stdout


def test_pet005_one_pet_per_session_whatever_its_task(tmp_path):
    root = tmp_path / "pet005"
    copy_example("pet005", root)
    study = collect(root, ["baseline", "intervention"])
    assert study[("01", "intervention")].pet.name == "sub-01_ses-intervention_task-eyes_pet.nii.gz"
    assert study[("01", "baseline")].pet.name == "sub-01_ses-baseline_pet.nii.gz"
    for want, empty in (({"task": None}, "intervention"), ({"task": "eyes"}, "baseline")):
        (msg,) = problems(root, ["baseline", "intervention"], filters={"pet": want})
        assert f"ses-{empty}/pet" in msg and "expected a PET image" in msg
        assert "'bids.filters.pet'" in msg


def test_injected_radioactivity_of_every_example_in_bq():
    for js in sorted(CORPUS.glob("pet00*/**/*_pet.json")):
        meta = json.loads(js.read_text())
        assert meta["InjectedRadioactivityUnits"] == "MBq"
        assert bids.injected_bq(meta, js) == pytest.approx(meta["InjectedRadioactivity"] * 1e6)
