"""Tests of prepost.pet.blood: BIDS-PET blood reading, checks, merging, parent fraction, input."""

import json

import numpy as np
import pandas as pd
import pytest

from pet_data import FRAME_DURATION_S as DUR
from pet_data import FRAME_START_S as FS
from pet_data import SCAN_END_S as SCAN_END
from pet_data import feng

from prepost import simulate as psim
from prepost.errors import InputError
from prepost.pet import blood as B
from prepost.pet import kinetics as K
from prepost.pet import stage


def hill(t_s, a=0.2, b=2.0, c=100.0):
    t = np.asarray(t_s, float) / 60.0
    return 1 - (1 - a) * t ** b / (c + t ** b)


def write(tmp_path, name, df, meta):
    tsv = tmp_path / f"sub-01_recording-{name}_blood.tsv"
    js = tmp_path / f"sub-01_recording-{name}_blood.json"
    df.to_csv(tsv, sep="\t", index=False, na_rep="n/a")
    js.write_text(json.dumps(meta))
    return tsv, js


MANUAL_META = {"PlasmaAvail": True, "WholeBloodAvail": True, "MetaboliteAvail": True,
               "MetaboliteMethod": "HPLC", "DispersionCorrected": False,
               "time": {"Units": "s"}, "plasma_radioactivity": {"Units": "kBq/mL"},
               "whole_blood_radioactivity": {"Units": "kBq/mL"},
               "metabolite_parent_fraction": {"Units": "unitless"}}
AUTO_META = {"PlasmaAvail": False, "WholeBloodAvail": True, "MetaboliteAvail": False,
             "DispersionCorrected": True, "time": {"Units": "s"},
             "whole_blood_radioactivity": {"Units": "Bq/mL"}}
T_MAN = np.array([180, 300, 480, 720, 900, 1200, 1800, 2400, 3600, 4500, 5400], float)
T_AUTO = np.arange(0.0, 601.0, 1.0)
PB = 1.1  # plasma / whole blood


def manual_df():
    return pd.DataFrame({"time": T_MAN, "plasma_radioactivity": feng(T_MAN) / 1000,
                         "whole_blood_radioactivity": feng(T_MAN) / PB / 1000,
                         "metabolite_parent_fraction": hill(T_MAN)})


def auto_df():
    return pd.DataFrame({"time": T_AUTO, "whole_blood_radioactivity": feng(T_AUTO) / PB})


def test_read_blood_converts_units(tmp_path):
    tsv, js = write(tmp_path, "manual", manual_df(), MANUAL_META)
    df = B.read_blood(tsv, js, scan_end_s=SCAN_END)
    np.testing.assert_allclose(df["plasma_radioactivity"], feng(T_MAN))  # kBq/mL -> Bq/mL
    assert df.attrs["source"] == str(tsv)
    # minutes declared: converted to seconds
    meta = dict(MANUAL_META, time={"Units": "min"})
    d = manual_df().assign(time=T_MAN / 60)
    tsv2, js2 = write(tmp_path, "min", d, meta)
    np.testing.assert_allclose(B.read_blood(tsv2, js2, scan_end_s=SCAN_END)["time"], T_MAN)


def test_read_blood_na_allowed(tmp_path):
    d = manual_df()
    d.loc[3, "metabolite_parent_fraction"] = np.nan
    tsv, js = write(tmp_path, "manual", d, MANUAL_META)
    assert np.isnan(B.read_blood(tsv, js)["metabolite_parent_fraction"].iloc[3])


@pytest.mark.parametrize("case,field", [
    ("missing_column", "metabolite_parent_fraction"),
    ("negative", "plasma_radioactivity"),
    ("non_numeric", "whole_blood_radioactivity"),
    ("not_increasing", "time"),
    ("fraction_percent", "metabolite_parent_fraction"),
    ("missing_flag", "MetaboliteAvail"),
    ("bad_units", "plasma_radioactivity.Units"),
])
def test_read_blood_errors_name_file_and_field(tmp_path, case, field):
    d = manual_df().astype(object)
    meta = json.loads(json.dumps(MANUAL_META))
    if case == "missing_column":
        d = d.drop(columns="metabolite_parent_fraction")
    elif case == "negative":
        d.loc[4, "plasma_radioactivity"] = -1.0
    elif case == "non_numeric":
        d.loc[2, "whole_blood_radioactivity"] = "abc"
    elif case == "not_increasing":
        d.loc[5, "time"] = 100.0
    elif case == "fraction_percent":
        d["metabolite_parent_fraction"] = d["metabolite_parent_fraction"] * 100
    elif case == "missing_flag":
        del meta["MetaboliteAvail"]
    elif case == "bad_units":
        meta["plasma_radioactivity"]["Units"] = "furlongs"
    tsv, js = write(tmp_path, "manual", d, meta)
    with pytest.raises(InputError) as e:
        B.read_blood(tsv, js)
    assert e.value.field == field
    assert e.value.file in (str(tsv), str(js))
    assert "sub-01_recording-manual_blood" in str(e.value) and field in str(e.value)


def test_undeclared_column_not_required(tmp_path):
    tsv, js = write(tmp_path, "autosampler", auto_df(), AUTO_META)
    df = B.read_blood(tsv, js)
    assert list(df.columns) == ["time", "whole_blood_radioactivity"]


def test_minutes_vs_seconds_detected(tmp_path):
    d = manual_df().assign(time=T_MAN / 60)  # minutes labelled seconds
    tsv, js = write(tmp_path, "manual", d, MANUAL_META)
    with pytest.raises(InputError) as e:
        B.read_blood(tsv, js, scan_end_s=SCAN_END)
    assert e.value.field == "time" and "minutes" in str(e.value) and str(tsv) in str(e.value)
    with pytest.raises(InputError, match="seconds labelled minutes"):
        B.check_time_units(T_MAN * 60, SCAN_END, "x_blood.tsv")
    B.check_time_units(T_MAN, SCAN_END, "x_blood.tsv")  # fine


def test_short_coverage(tmp_path):
    d = manual_df().iloc[:-3]  # ends at 2400 s
    tsv, js = write(tmp_path, "manual", d, MANUAL_META)
    with pytest.raises(InputError) as e:
        B.read_blood(tsv, js, scan_end_s=SCAN_END)
    assert e.value.field == "time" and str(tsv) in str(e.value) and "scan end" in str(e.value)
    B.check_blood_covers_scan([5300.0], SCAN_END, "x")  # within tolerance
    with pytest.raises(InputError):
        B.check_blood_covers_scan([5300.0], SCAN_END, "x", tolerance_s=10)


def test_time_zero(tmp_path):
    pet = tmp_path / "sub-01_pet.json"
    pet.write_text(json.dumps({"TimeZero": "10:15:00"}))
    assert B.check_time_zero({"TimeZero": "10:15:00.4"}, pet, source="b.json") == pytest.approx(36900.0)
    B.check_time_zero({}, pet, source="b.json")  # blood without TimeZero: nothing to compare
    with pytest.raises(InputError) as e:
        B.check_time_zero({"TimeZero": "10:17:00"}, pet, source="sub-01_blood.json")
    msg = str(e.value)
    assert "sub-01_blood.json" in msg and str(pet) in msg and "10:17:00" in msg and "10:15:00" in msg
    assert e.value.field == "TimeZero"
    with pytest.raises(InputError, match="TimeZero"):
        B.check_time_zero({}, {"InjectionStart": 0}, pet_source="p.json")
    with pytest.raises(InputError, match="hh:mm:ss"):
        B.check_time_zero({"TimeZero": "quarter past ten"}, pet, source="b.json")


def test_merge_recordings():
    man, aut = manual_df(), auto_df()
    man[["plasma_radioactivity", "whole_blood_radioactivity"]] *= 1000
    aut = pd.concat([aut, aut.iloc[[10]]]).sort_values("time")  # duplicated time
    m = B.merge_recordings(man, aut, manual_source="man.tsv", autosampler_source="auto.tsv")
    assert np.all(np.diff(m["time"]) > 0)
    early = m[m["time"] <= 600]
    # autosampler whole blood kept, plasma from the manual ratio
    np.testing.assert_allclose(early["plasma_radioactivity"], early["whole_blood_radioactivity"] * PB, rtol=1e-12)
    np.testing.assert_allclose(early["whole_blood_radioactivity"], feng(early["time"]) / PB, rtol=1e-12)
    late = m[m["time"] > 600]
    np.testing.assert_allclose(late["plasma_radioactivity"], feng(late["time"]), rtol=1e-12)
    # all parent fractions kept, including the ones inside the autosampler window
    pf = m.dropna(subset=["metabolite_parent_fraction"])
    np.testing.assert_allclose(pf["time"], T_MAN)
    assert set(m.loc[m["time"].isin([180.0, 300.0, 480.0]), "recording"]) == {"both"}
    assert len(m) == len(T_AUTO) + np.sum(T_MAN > 600)
    with pytest.raises(InputError) as e:
        B.merge_recordings(man.drop(columns="whole_blood_radioactivity"), aut, manual_source="man.tsv")
    assert "man.tsv" in str(e.value)


@pytest.mark.parametrize("model,params", [
    ("hill", {"a": 0.2, "b": 2.0, "c": 100.0}),
    ("exponential", {"b": 0.08, "c": 0.25}),
    ("biexponential", {"a": 0.4, "b": 0.5, "c": 0.02}),
])
def test_parent_fraction_recovery(model, params):
    t = np.array([60, 120, 180, 300, 480, 720, 900, 1200, 1800, 2400, 3600, 4500, 5400], float)
    f = B.parent_fraction_model(model, params)(t)
    fit = B.fit_parent_fraction(t, f, model)
    for k, v in params.items():
        assert fit["params"][k] == pytest.approx(v, rel=1e-3), (k, fit["params"])
    assert fit["function"](0.0) == pytest.approx(1.0)
    # noisy: recover within a few SE, SE finite
    rng = np.random.default_rng(1)
    fit2 = B.fit_parent_fraction(t, np.clip(f + rng.normal(0, 0.01, t.size), 0, 1), model)
    assert all(np.isfinite(v) for v in fit2["se"].values())
    assert np.max(np.abs(fit2["function"](t) - f)) < 0.03
    assert np.isfinite(fit2["aic"])


def test_parent_fraction_errors():
    with pytest.raises(InputError, match="parent fraction model"):
        B.fit_parent_fraction([1, 2, 3, 4], [1, 0.9, 0.8, 0.7], "gamma", source="m.tsv")
    with pytest.raises(InputError, match="at least 4"):
        B.fit_parent_fraction([1, 2], [1, 0.9], "hill", source="m.tsv")


def test_metabolite_corrected_input():
    m = B.merge_recordings(manual_df() * [1, 1000, 1000, 1], auto_df())
    inp = B.metabolite_corrected_input(m, model="hill", grid_step=1.0, scan_end_s=SCAN_END)
    assert inp["time"].iloc[0] == 0 and inp["time"].iloc[-1] == SCAN_END
    assert np.allclose(np.diff(inp["time"]), 1.0)
    t = inp["time"].to_numpy()
    late = t > 700
    # parent plasma = plasma * hill fraction; plasma linear between sparse late samples
    np.testing.assert_allclose(inp["parent_fraction"], hill(t), atol=1e-4)
    np.testing.assert_allclose(inp["parent_plasma"][late], feng(t[late]) * hill(t[late]), rtol=0.03)
    np.testing.assert_allclose(inp["whole_blood"][t <= 600], feng(t[t <= 600]) / PB, rtol=1e-9)
    shifted = B.metabolite_corrected_input(m, model="hill", delay=12.0, scan_end_s=SCAN_END)
    np.testing.assert_allclose(shifted["parent_plasma"].to_numpy()[112:], inp["parent_plasma"].to_numpy()[100:-12])
    with pytest.raises(InputError, match="scan end"):
        B.metabolite_corrected_input(m[m["time"] < 3000], model="hill", scan_end_s=SCAN_END, source="b.tsv")
    with pytest.raises(InputError, match="plasma_radioactivity"):
        B.metabolite_corrected_input(auto_df(), model=None, source="auto.tsv")


def test_fit_delay_recovers_shift():
    t = np.arange(0.0, SCAN_END + 1, 1.0)
    base = pd.DataFrame({"time": t, "plasma": feng(t), "parent_fraction": 1.0, "parent_plasma": feng(t),
                         "whole_blood": feng(t) / PB})
    true = B.shift_input(base, 12.0)
    tac = K.one_tcm_model(t, true["parent_plasma"], true["whole_blood"], FS, DUR, 0.3, 0.015, 0.05)
    res = B.fit_delay(base, tac, FS, DUR, delays_s=np.arange(0.0, 25.0, 1.0))
    assert res["delay_s"] == pytest.approx(12.0)
    assert res["fit"].fit_ok


def test_metabolite_corrected_input_matches_truth_on_clean_samples(tmp_path):
    """Manual + autosampler recordings sampled from the simulator's input without noise: the
    metabolite-corrected plasma equals the true parent input up to interpolation error."""
    inp = {"feng": [400.0, 8.0, 2.5, -4.0, -0.25, -0.015], "delay_min": 0.25,
           "parent_fraction_hill": [0.15, 1.8, 12.0], "blood_plasma_ratio": 0.9}
    cp, cb = psim.input_functions(inp)
    tm = np.array([10, 20, 30, 45, 60, 75, 90, 120, 150, 180, 240, 300, 420, 600, 900, 1200, 1800,
                   2400, 3000, 3600, 4500, 5400], float)
    frac = psim.hill_parent_fraction(tm / 60 - inp["delay_min"], *inp["parent_fraction_hill"])
    pf = np.where(np.isin(tm, [300, 900, 1800, 3600, 5400]), frac, np.nan)
    man = pd.DataFrame({"time": tm, "plasma_radioactivity": cp(tm / 60) / frac,
                        "whole_blood_radioactivity": 0.9 * cp(tm / 60) / frac,
                        "metabolite_parent_fraction": pf})
    ta = np.arange(0, 601, 2.0)
    auto = pd.DataFrame({"time": ta, "whole_blood_radioactivity": cb(ta / 60)})
    rec = {}
    for label, df, avail in (("manual", man, (True, True, True)), ("autosampler", auto, (False, True, False))):
        tsv, js = tmp_path / f"{label}_blood.tsv", tmp_path / f"{label}_blood.json"
        df.to_csv(tsv, sep="\t", index=False, na_rep="n/a")
        meta = {"PlasmaAvail": avail[0], "WholeBloodAvail": avail[1], "MetaboliteAvail": avail[2],
                "time": {"Units": "s"}}
        for c in df.columns[1:]:
            meta[c] = {"Units": "kBq/mL"} if "radioactivity" in c else {"Units": "unitless"}
        if avail[2]:
            meta.update(MetaboliteMethod="HPLC", MetaboliteRecoveryCorrectionApplied=False)
        js.write_text(json.dumps(meta))
        rec[label], rec[f"{label}_json"] = str(tsv), str(js)
    df, meta = stage.blood_step(rec, scan_end_s=5400.0, units="kBq/mL", parent_fraction_model="hill",
                                grid_step_s=1.0, fit_delay=False)
    t = df["time"].to_numpy()
    true = cp(t / 60)
    after = t >= 120  # past the peak: between-sample interpolation of a smooth curve
    rel = np.abs(df["parent_plasma"].to_numpy()[after] / true[after] - 1)
    assert np.median(rel) < 0.01 and rel.max() < 0.04
    auc = np.trapezoid(df["parent_plasma"], t) / np.trapezoid(true, t)
    assert abs(auc - 1) < 0.02
    assert meta["parent_plasma"]["Units"] == "kBq/mL"
