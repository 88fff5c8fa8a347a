"""Provenance sidecars: parameters, sources and versions, merged into existing sidecars."""

import json

from prepost import provenance


def test_record_creates_and_merges_sidecars(tmp_path):
    tsv = tmp_path / "sub-01_desc-x_timeseries.tsv"
    tsv.write_text("a\n1\n")
    existing = tmp_path / "sub-01_desc-x_timeseries.json"
    existing.write_text(json.dumps({"a": {"Description": "kept"}}))
    nii = tmp_path / "sub-01_bold.nii.gz"
    nii.write_bytes(b"x")
    written = provenance.record([tsv, nii, tmp_path / "missing.tsv"], rule="demo",
                                params={"band": (0.01, 0.08), "f": len}, inputs=["b", "a"])
    assert sorted(p.name for p in written) == ["sub-01_bold.json", "sub-01_desc-x_timeseries.json"]
    meta = json.loads(existing.read_text())
    assert meta["a"] == {"Description": "kept"}
    prov = meta["Provenance"]
    assert prov["Rule"] == "demo" and prov["Parameters"]["band"] == [0.01, 0.08]
    assert prov["Parameters"]["f"] == "<function len>"
    assert prov["Sources"] == ["a", "b"]
    assert prov["Software"]["numpy"] != "not installed"


def test_sidecar_names():
    assert provenance.sidecar_path("a/x_bold.nii.gz").name == "x_bold.json"
    assert provenance.sidecar_path("a/x_relmat.tsv").name == "x_relmat.json"
    assert provenance.sidecar_path("a/x.png").name == "x.json"
