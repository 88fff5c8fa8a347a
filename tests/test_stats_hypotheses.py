"""Hypotheses: DAG-time validation, verdict logic, and verdicts on planted and null studies."""

import numpy as np
import pandas as pd
import pytest

from prepost.errors import ConfigError
from prepost.stats import group, hypotheses as hyp

from test_stats_group import study_table

KETAMINE = [
    {"name": "within-Default FC decreases", "test": "paired", "measure": "fc_within",
     "region": "Default", "direction": "decrease"},
    {"name": "SomMot-Default FC increases", "test": "paired", "measure": "fc_between",
     "region": "SomMot-Default", "direction": "increase"},
    {"name": "gradient range decreases", "test": "paired", "measure": "gradient1_range",
     "region": "global", "direction": "decrease"},
    {"name": "no global VT change", "test": "paired", "measure": "VT_1tcm",
     "region": "cortical_gm", "direction": "none"},
    {"name": "PCC VT increases", "test": "paired", "measure": "VT_1tcm", "region": "PCC",
     "direction": "increase"},
    {"name": "dVT(PCC) tracks dALFF(Default)", "test": "correlation",
     "x": {"measure": "VT_1tcm", "region": "PCC"}, "y": {"measure": "alff", "region": "Default"},
     "direction": "any"},
]


@pytest.mark.parametrize("direction,estimate,p,ci,expected", [
    ("increase", 0.1, 0.01, (0.02, 0.2), "supported"),
    ("increase", -0.1, 0.01, (-0.2, -0.02), "opposite"),
    ("increase", 0.1, 0.2, (-0.05, 0.2), "not supported"),
    ("decrease", -0.1, 0.001, (-0.2, -0.02), "supported"),
    ("decrease", 0.1, 0.001, (0.02, 0.2), "opposite"),
    ("decrease", -0.1, 0.06, (-0.2, 0.01), "not supported"),
    ("none", 0.01, 0.6, (-0.05, 0.07), "supported"),
    ("none", 0.2, 0.01, (0.05, 0.3), "opposite"),
    # not significant by the permutation test, but the t interval excludes 0
    ("none", 0.1, 0.07, (0.01, 0.2), "not supported"),
    ("positive", 0.8, 0.003, (0.4, 0.95), "supported"),
    ("negative", 0.8, 0.003, (0.4, 0.95), "opposite"),
    ("any", -0.8, 0.003, (-0.95, -0.4), "supported"),
    ("any", 0.2, 0.5, (-0.4, 0.7), "not supported"),
    ("increase", np.nan, np.nan, (np.nan, np.nan), "not tested"),
])
def test_verdict_logic(direction, estimate, p, ci, expected):
    v, reason = hyp.verdict(direction, estimate, p, *ci, alpha=0.05)
    assert v == expected and reason


def test_none_with_equivalence_margin():
    assert hyp.verdict("none", 0.0, 0.9, -0.5, 0.5, margin=1.0)[0] == "supported"
    v, why = hyp.verdict("none", 0.0, 0.9, -1.5, 1.5, margin=1.0)
    assert v == "not supported" and "margin" in why


def test_validation_names_hypothesis_and_measure():
    assert len(hyp.validate_hypotheses(KETAMINE)) == 6
    bad = [dict(KETAMINE[0], measure="fc_withn")]
    with pytest.raises(ConfigError) as e:
        hyp.validate_hypotheses(bad)
    assert "within-Default FC decreases" in str(e.value) and "fc_withn" in str(e.value)
    # a measure of a custom stage is accepted once registered
    hyp.validate_hypotheses(bad, extra=["fc_withn"])
    with pytest.raises(ConfigError, match=r"y.measure.*'alf'"):
        hyp.validate_hypotheses([dict(KETAMINE[5], y={"measure": "alf", "region": "Default"})])
    with pytest.raises(ConfigError, match="direction"):
        hyp.validate_hypotheses([dict(KETAMINE[0], direction="up")])
    with pytest.raises(ConfigError, match="direction"):
        hyp.validate_hypotheses([dict(KETAMINE[5], direction="increase")])
    with pytest.raises(ConfigError, match="unique"):
        hyp.validate_hypotheses([KETAMINE[0], KETAMINE[0]])


def test_known_measures_cover_the_stages():
    for m in ("fc_within", "fc_between", "integration", "gradient1_range", "alff", "falff",
              "eigenvector_centrality", "VT_1tcm", "VT_logan", "VT_ma1", "K1_1tcm", "SUVR",
              "BPND_srtm", "DVR_logan", "mean_fd", "retained_s", "excluded", "fc_within_z", "VT"):
        assert m in hyp.KNOWN_MEASURES


def _evaluate(table, hyps=KETAMINE):
    paired = group.paired_statistics(table, n_boot=0)
    return hyp.evaluate_hypotheses(hyp.validate_hypotheses(hyps), table, paired, n_perm=2000), \
        paired


def test_planted_study_supports_the_network_hypotheses():
    table = study_table(n=11, seed=1)
    res, paired = _evaluate(table)
    v = dict(zip(res.name, res.verdict))
    assert v["within-Default FC decreases"] == "supported"
    assert v["SomMot-Default FC increases"] == "supported"
    assert v["PCC VT increases"] == "supported"
    assert v["no global VT change"] == "supported"
    assert v["gradient range decreases"] == "not supported"
    # Holm across the six hypotheses
    from statsmodels.stats.multitest import multipletests
    np.testing.assert_allclose(res.p_adjusted, multipletests(res.p, method="holm")[1])
    row = res.set_index("name").loc["within-Default FC decreases"]
    assert row.estimate < 0 and row.ci_high < 0 and row.n == 11


def test_planted_effects_reversed_give_opposite():
    table = study_table(n=11, seed=1, effects={("fmri", "fc_within", "Default"): 0.10,
                                              ("pet", "VT_1tcm", "cortical_gm"): 2.0})
    res, _ = _evaluate(table)
    v = dict(zip(res.name, res.verdict))
    assert v["within-Default FC decreases"] == "opposite"
    assert v["no global VT change"] == "opposite"


def test_null_study_nothing_survives_fdr():
    table = study_table(n=11, seed=7, null=True)
    res, paired = _evaluate(table)
    tested = paired[paired.modality != "qc"]
    assert (tested.p_perm_fdr_bh.dropna() >= 0.05).all()
    assert (tested.p_perm_holm.dropna() >= 0.05).all()
    v = dict(zip(res.name, res.verdict))
    assert all(v[h["name"]] != "supported" for h in KETAMINE if h["direction"] != "none")


def test_missing_measure_or_region_is_not_tested():
    table = study_table(n=6)
    hyps = [dict(KETAMINE[0], region="Limbic", name="limbic"),
            dict(KETAMINE[5], name="centrality",
                 y={"measure": "eigenvector_centrality", "region": "PCC"})]
    res, _ = _evaluate(table, hyps)
    assert list(res.verdict) == ["not tested", "not tested"]
    assert "not in the paired statistics" in res.reason.iloc[0]
    assert "eigenvector_centrality(PCC)" in res.reason.iloc[1]


def test_correlation_hypothesis_on_planted_association():
    rng = np.random.default_rng(5)
    n = 11
    dx = rng.standard_normal(n)
    dy = dx + 0.2 * rng.standard_normal(n)
    rows = []
    for i in range(n):
        s = f"sub-{i:02d}"
        rows += [(s, "pre", "pet", "VT_1tcm", "PCC", 20.0), (s, "post", "pet", "VT_1tcm", "PCC",
                                                             20 + dx[i]),
                 (s, "pre", "fmri", "alff", "Default", 1.0), (s, "post", "fmri", "alff",
                                                              "Default", 1 + dy[i])]
    t = pd.DataFrame(rows, columns=group.TIDY_COLUMNS)
    h = [dict(KETAMINE[5], direction="positive"), dict(KETAMINE[5], name="neg",
                                                       direction="negative")]
    res, _ = _evaluate(t, h)
    assert list(res.verdict) == ["supported", "opposite"]
    assert (res.ci_low > 0).all() and (res.estimate > 0.8).all()


def test_two_atlases_need_an_atlas_key():
    t = study_table(n=6)
    fm = t[t.modality == "fmri"]
    t = pd.concat([t.assign(atlas=np.where(t.modality == "fmri", "Schaefer100", "")),
                   fm.assign(atlas="Schaefer400")], ignore_index=True)
    table = group.read_tidy([t])
    hyps = [KETAMINE[0], dict(KETAMINE[0], name="s400", atlas="Schaefer400"),
            dict(KETAMINE[5], name="corr", y={"measure": "alff", "region": "Default",
                                              "atlas": "Schaefer100"})]
    res, paired = _evaluate(table, hyps)
    assert set(paired[paired.measure == "fc_within"].atlas) == {"Schaefer100", "Schaefer400"}
    assert list(res.verdict[:1]) == ["not tested"] and "give 'modality' or 'atlas'" in \
        res.reason.iloc[0]
    assert res.verdict.iloc[1] != "not tested" and res.verdict.iloc[2] != "not tested"


def test_registry_covers_the_measure_names_of_the_stage_modules():
    pet = pytest.importorskip("prepost.pet.stage")
    conn = pytest.importorskip("prepost.connectivity.stage")
    missing = set(pet.MEASURES.values()) - set(hyp.KNOWN_MEASURES)
    missing |= set(conn.QC_MEASURES) - set(hyp.KNOWN_MEASURES)
    assert not missing
