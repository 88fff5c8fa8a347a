"""Atlas loading: shipped Schaefer files, Seitzman spheres, custom atlases, hierarchy checks."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

import importlib.resources

from prepost.connectivity.atlas import (SEITZMAN_TO_YEO7, load_atlas, load_custom_atlas,
                                        schaefer_files, schaefer_table, validate_hierarchy)
from prepost.errors import ConfigError, InputError
from prepost.pet import roi
from prepost.simulate import NETWORKS, schaefer400_table


@pytest.mark.parametrize("n", [100, 200, 400])
def test_schaefer_tables_match_image(n):
    a = load_atlas(f"Schaefer{n}")
    assert a.kind == "labels" and a.n_parcels == n
    assert list(a.table["index"]) == list(range(1, n + 1))
    assert a.networks == NETWORKS
    assert set(a.table["hemi"]) == {"L", "R"}
    labels = np.unique(np.asarray(a.labels_img.dataobj).astype(int))
    assert set(labels) - {0} == set(range(1, n + 1))


def test_schaefer_files_are_package_data_read_by_every_stage():
    # one loader: connectivity, the PET ROIs and the simulator read the same package files
    root = importlib.resources.files("prepost.resources")
    img_path, lut_path = schaefer_files(400)
    assert img_path.parent == lut_path.parent == root / "atlases" / "schaefer_2018"
    a = load_atlas("Schaefer400")
    pet_img, pet_table = roi.load_atlas("Schaefer400")
    assert a.source == str(img_path)
    assert (pet_table["name"] == a.table["name"]).all()
    assert np.array_equal(np.asarray(pet_img.dataobj), np.asarray(a.labels_img.dataobj))
    ref = schaefer400_table()
    assert (ref[["index", "name", "network", "hemi"]] == schaefer_table(400)).all().all()
    # 7Networks_{LH,RH}_Default_pCunPCC_*: 11 left and 9 right precuneus/PCC parcels
    assert a.parcels_matching("pCunPCC").sum() == ref["is_pcc"].sum() == 20
    assert a.table.loc[a.parcels_matching("pCunPCC"), "network"].eq("Default").all()


def test_schaefer_rejects_other_resolution_and_size():
    with pytest.raises(ConfigError):
        load_atlas("Schaefer400", resolution_mm=2)
    with pytest.raises(ConfigError):
        load_atlas("Schaefer300")
    with pytest.raises(ConfigError):
        load_atlas("AAL")


def test_seitzman_spheres_and_network_mapping():
    a = load_atlas("Seitzman300", radius=4)
    assert a.kind == "spheres" and a.coords.shape == (300, 3) and a.radius == 4
    assert a.networks[:2] == ["Vis", "SomMot"]
    assert {"Vis", "SomMot", "DorsAttn", "SalVentAttn", "Cont", "Default"} <= set(a.networks)
    mapped = a.table.apply(lambda r: SEITZMAN_TO_YEO7[r.native_network] == r.network, axis=1)
    assert mapped.all()
    assert (a.table.loc[a.table.native_network == "DefaultMode", "network"] == "Default").all()
    native = load_atlas("Seitzman300", network_vocabulary="native")
    assert "DefaultMode" in native.networks


def _custom(tmp_path, img_labels=(1, 2, 3), tsv_labels=(1, 2, 3)):
    data = np.zeros((6, 6, 6), np.int16)
    for i, lab in enumerate(img_labels):
        data[2 * i:2 * i + 2] = lab
    img_path = tmp_path / "labels.nii.gz"
    nib.Nifti1Image(data, np.eye(4)).to_filename(img_path)
    tsv = tmp_path / "labels.tsv"
    pd.DataFrame({"index": list(tsv_labels), "name": [f"p{i}" for i in tsv_labels],
                  "network": ["A", "B", "A", "B"][:len(tsv_labels)]}).to_csv(tsv, sep="\t",
                                                                            index=False)
    return img_path, tsv


def test_custom_atlas_ok_and_mismatches_name_the_file(tmp_path):
    img, tsv = _custom(tmp_path)
    a = load_atlas("custom", custom_labels=img, custom_tsv=tsv)
    assert a.networks == ["A", "B"] and a.n_parcels == 3
    img, tsv = _custom(tmp_path, img_labels=(1, 2, 4), tsv_labels=(1, 2, 3))
    with pytest.raises(InputError) as e:
        load_custom_atlas(img, tsv)
    assert str(tsv) in str(e.value) and "4" in str(e.value)
    img, tsv = _custom(tmp_path, img_labels=(1, 2, 2), tsv_labels=(1, 2, 3))
    with pytest.raises(InputError) as e:
        load_custom_atlas(img, tsv)
    assert str(img) in str(e.value) and "3" in str(e.value)
    bad = tmp_path / "bad.tsv"
    bad.write_text("index\tname\n1\tx\n")
    with pytest.raises(InputError, match="network"):
        load_custom_atlas(img, bad)


def test_nilearn_fetcher_offline_is_a_clear_input_error(tmp_path, monkeypatch):
    from nilearn import datasets

    def offline(**kwargs):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(datasets, "fetch_atlas_schaefer_2018", offline)
    with pytest.raises(InputError, match="downloadable atlas"):
        load_atlas("nilearn:fetch_atlas_schaefer_2018", data_dir=tmp_path)
    with pytest.raises(ConfigError):
        load_atlas("nilearn:not_a_fetcher")


def test_hierarchy_validation():
    a = load_atlas("Schaefer100")
    assert validate_hierarchy(None, a) == {"lower": ["Vis", "SomMot"], "higher": ["Default", "Cont"]}
    assert validate_hierarchy({"lower": "Vis", "higher": ["Default"]}, a)["lower"] == ["Vis"]
    with pytest.raises(ConfigError, match="Auditory"):
        validate_hierarchy({"lower": ["Auditory"], "higher": ["Default"]}, a)
    with pytest.raises(ConfigError, match="one level"):
        validate_hierarchy({"lower": ["Vis"], "higher": ["Vis"]}, a)
    with pytest.raises(ConfigError):
        validate_hierarchy({"lower": []}, a)
