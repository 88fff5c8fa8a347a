"""Fuzzing the sidecar and TSV readers: random content raises the project's own errors only.

A reader may accept what it is given or raise a PrepostError (with the file named); a bare
KeyError, IndexError, ValueError or TypeError traceback is a bug.
"""

import json
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prepost import bids
from prepost.connectivity.stage import read_qc, read_relmat
from prepost.errors import PrepostError
from prepost.fmri.confounds import read_confounds
from prepost.pet.blood import read_blood
from prepost.pet.tacs import read_tacs

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8),
                                                                        children, max_size=4),
    max_leaves=12)
BLOOD_KEYS = ["PlasmaAvail", "WholeBloodAvail", "MetaboliteAvail", "time", "TimeZero",
              "plasma_radioactivity", "whole_blood_radioactivity", "metabolite_parent_fraction"]
blood_json = st.dictionaries(st.sampled_from(BLOOD_KEYS), json_values, max_size=8)
cells = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers().map(str),
                  st.sampled_from(["n/a", "", "NaN", "-1", "x", "1e999", " "]),
                  st.text(alphabet=string.printable.replace("\t", "").replace("\n", ""),
                          max_size=6))
columns = st.lists(st.sampled_from(["time", "plasma_radioactivity", "whole_blood_radioactivity",
                                    "metabolite_parent_fraction", "frame_start", "frame_end",
                                    "PCC", "trans_x", "participant_id", "age", "x y", ""]),
                   min_size=1, max_size=5)


@st.composite
def tsv_text(draw):
    cols = draw(columns)
    rows = draw(st.lists(st.lists(cells, min_size=len(cols), max_size=len(cols)), max_size=6))
    if draw(st.booleans()) and rows:  # ragged rows
        rows[0] = rows[0][:-1]
    return "\n".join(["\t".join(cols)] + ["\t".join(r) for r in rows]) + "\n"


def _only_project_errors(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except PrepostError as exc:
        assert str(exc)
    # anything else propagates and fails the test


@SETTINGS
@given(content=st.one_of(json_values.map(json.dumps), st.text(max_size=40)))
def test_read_json(tmp_path, content):
    path = tmp_path / "x_bold.json"
    path.write_text(content)
    _only_project_errors(bids.read_json, path)


@SETTINGS
@given(text=tsv_text())
def test_read_participants(tmp_path, text):
    path = tmp_path / "participants.tsv"
    path.write_text(text)
    _only_project_errors(bids.read_participants, path)


@SETTINGS
@given(text=tsv_text(), meta=blood_json)
def test_blood_check_and_reader(tmp_path, text, meta):
    tsv = tmp_path / "sub-01_ses-pre_recording-manual_blood.tsv"
    js = tsv.with_suffix(".json")
    tsv.write_text(text)
    js.write_text(json.dumps(meta))
    problems = []
    bids.check_blood(tsv, js, problems)  # collects, never raises
    assert all(isinstance(p, str) for p in problems)
    _only_project_errors(read_blood, tsv, js, scan_end_s=5400)


@SETTINGS
@given(text=tsv_text())
def test_table_readers(tmp_path, text):
    for name, reader in (("x_desc-confounds_timeseries.tsv", read_confounds),
                         ("x_tacs.tsv", read_tacs), ("x_relmat.tsv", read_relmat)):
        path = tmp_path / name
        path.write_text(text)
        _only_project_errors(reader, path)


@SETTINGS
@given(content=st.one_of(json_values.map(json.dumps), st.text(max_size=40)))
def test_qc_reader(tmp_path, content):
    path = tmp_path / "x_qc.json"
    path.write_text(content)
    _only_project_errors(read_qc, path)
