"""participants.tsv as BIDS allows it: any column names, n/a, and formula terms for the statistics.

Real files from bids-examples (pet002, pet005) and tables with the capitalised headers real
studies use (``Age``, ``Gender``, ``body weight (kg)``).
"""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prepost import bids
from prepost.errors import ConfigError, InputError, ValidationReport
from prepost.io import write_tsv
from prepost.stats import covariates, group, stage

# the real-world corpus beside the clone (../shared/realworld)
REAL = Path(__file__).resolve().parents[2] / "shared" / "realworld" / "bids-examples-pet"
needs_real = pytest.mark.skipif(not (REAL / "pet002" / "participants.tsv").exists(),
                                reason="bids-examples PET corpus not available")


@needs_real
def test_real_bids_examples_participants(tmp_path):
    p2 = tmp_path / "pet002.tsv"
    shutil.copy(REAL / "pet002" / "participants.tsv", p2)
    df = bids.read_participants(p2)
    assert list(df.columns) == ["participant_id", "height", "weight", "age", "gender", "label"]
    assert df.label.tolist() == ["01", "02"]
    np.testing.assert_allclose(df.age, [21.5086, 20.7255])
    assert df.gender.tolist() == ["F", "F"]
    p5 = tmp_path / "pet005.tsv"
    shutil.copy(REAL / "pet005" / "participants.tsv", p5)
    df = bids.read_participants(p5)
    assert list(df.columns) == ["participant_id", "weight", "sex", "label"]
    assert covariates.covariate_terms(df.columns) == {"weight": "weight", "sex": "sex"}
    # the same table with capitalised headers and an n/a cell, as many studies write it
    text = (REAL / "pet002" / "participants.tsv").read_text().splitlines()
    text[0] = "participant_id\tHeight\tBody Weight (kg)\tAge\tGender"
    text[2] = text[2].replace("20.7255", "n/a")
    p = tmp_path / "participants.tsv"
    p.write_text("\n".join(text) + "\n")
    df = bids.read_participants(p)
    assert df.Age.isna().tolist() == [False, True] and df.Age.iloc[0] == pytest.approx(21.5086)
    table = covariates.covariate_table(df, str(p))
    assert table.to_dict("list") == {
        "column": ["Height", "Body Weight (kg)", "Age", "Gender"],
        "term": ["height", "body_weight_kg", "age", "gender"],
        "kind": ["numeric", "numeric", "numeric", "categorical"],
        "n_missing": [0, 0, 1, 0]}


def test_formula_terms():
    cases = {"Age": "age", "Gender": "gender", "body weight (kg)": "body_weight_kg",
             "BodyWeight": "body_weight", "BMIScore": "bmi_score", "followup_days": "followup_days",
             "2nd visit": "x_2nd_visit", "class": "class_", "log": "log_", " MMSE ": "mmse"}
    assert {k: covariates.formula_term(k) for k in cases} == cases


def test_errors_name_file_line_column_and_expectation(tmp_path):
    p = tmp_path / "participants.tsv"
    p.write_text("participant_id\tAge\tfollowup_days\tGender\n"
                 "sub-01\t31\t7\tF\nsub-02\t-2\tn/a\tM\nsub-03\tforty\t1\tn/a\n")
    with pytest.raises(ValidationReport) as e:
        bids.read_participants(p)
    msg = str(e.value)
    assert f"{p}: line 3, column 'Age': expected a number of years >= 0 or n/a, found '-2'" in msg
    assert f"{p}: line 4, column 'Age'" in msg and "'forty'" in msg
    # two columns with one term: both named
    p.write_text("participant_id\tAge\tage\nsub-01\t3\t3\n")
    with pytest.raises(InputError) as e:
        bids.read_participants(p)
    assert "'Age', 'age'" in str(e.value) and str(p) in str(e.value) and "rename" in str(e.value)
    # a covariate named like a group-table column
    p.write_text("participant_id\tSession\nsub-01\t1\n")
    with pytest.raises(InputError, match="Session"):
        bids.read_participants(p)
    p.write_text("participant_id\tage\tage\nsub-01\t3\t3\n")
    with pytest.raises(InputError, match="each column name once"):
        bids.read_participants(p)


def test_formula_check_names_the_term_of_a_column(tmp_path):
    terms = {"Age": "age", "Body Weight (kg)": "body_weight_kg"}
    group.check_formula("value ~ session + age + body_weight_kg", ["value", "session", *terms.values()],
                        terms=terms)
    with pytest.raises(ConfigError) as e:
        group.check_formula("value ~ session + Age", ["value", "session", *terms.values()], terms=terms)
    assert "'Age' is written 'age'" in str(e.value) and "stats.mixed.formula" in str(e.value)


def _study(tmp_path, n=10, seed=7):
    """A participants.tsv with capitalised headers and n/a cells, and one tidy PET measure."""
    rng = np.random.default_rng(seed)
    ids = [f"sub-{i:02d}" for i in range(1, n + 1)]
    age = rng.uniform(20, 60, n).round(1)
    weight = rng.uniform(50, 100, n).round(1)
    sex = np.array(["F", "M"] * (n // 2))
    part = pd.DataFrame({"participant_id": ids, "Age": age, "Body Weight (kg)": weight,
                         "Gender": sex})
    part.loc[3, "Age"] = np.nan  # written as n/a
    ppath = tmp_path / "participants.tsv"
    write_tsv(part, ppath)
    rows = []
    for i, pid in enumerate(ids):
        u = rng.normal(0, 1.0)
        for ses, d in (("pre", 0.0), ("post", 1.5)):
            v = 10 + d + 0.05 * age[i] + 0.02 * weight[i] + (sex[i] == "M") * 0.7 + u + rng.normal(0, 0.3)
            rows.append({"participant_id": pid, "session": ses, "modality": "pet", "measure": "VT",
                         "region": "PCC", "value": v})
    tpath = tmp_path / "tacs_tidy.tsv"
    write_tsv(pd.DataFrame(rows), tpath)
    return ppath, tpath, part, pd.DataFrame(rows)


def test_mixed_model_with_mapped_columns_matches_statsmodels(tmp_path):
    smf = pytest.importorskip("statsmodels.formula.api")
    ppath, tpath, part, tidy = _study(tmp_path)
    formula = "value ~ session + age + body_weight_kg + gender"
    group.check_formula(formula, ["value", "session", *covariates.covariate_terms(
        bids.read_participants(ppath).columns).values()])
    table, _ = group.build_group_table([tpath], ppath, rules=[], sessions=("pre", "post"))
    gpath = stage.output_paths(tmp_path)["table"]
    Path(gpath).parent.mkdir(parents=True)
    write_tsv(table, gpath)
    got = group.mixed_models(stage.read_group_table(gpath), ["VT"], formula=formula, baseline="pre")
    # the same model straight from statsmodels, columns renamed by hand
    data = tidy.merge(part.rename(columns={"Age": "age", "Body Weight (kg)": "body_weight_kg",
                                           "Gender": "gender"}), on="participant_id")
    data["session"] = pd.Categorical(data["session"], categories=["pre", "post"])
    ref = smf.mixedlm(formula, data, groups="participant_id", missing="drop").fit(reml=True)
    got = got.set_index("term")
    assert set(got.index) == set(ref.fe_params.index)
    assert "age" in got.index and "body_weight_kg" in got.index and "gender[T.M]" in got.index
    np.testing.assert_allclose(got.loc[ref.fe_params.index, "estimate"], ref.fe_params, rtol=1e-6)
    np.testing.assert_allclose(got.loc[ref.fe_params.index, "se"], ref.bse_fe, rtol=1e-5)
    assert got["n_obs"].iloc[0] == ref.nobs == 18  # the participant with Age n/a is dropped
