"""Pre-registered hypotheses of a pre/post study, checked at DAG time and judged on the data.

A hypothesis is a dict from the config:

``{name, test: paired, measure, region, direction: increase|decrease|none[, modality]}``
    A change of one measure in one region from baseline to follow-up.
``{name, test: interaction, measure, region, direction: increase|decrease|none[, modality]}``
    In a parallel design (``design.type: parallel``), the difference between the arms' changes
    (active minus control: the session x arm interaction), from the interaction table
    (:mod:`prepost.stats.parallel`); in a crossover (``design.type: crossover``), the mean
    within-participant contrast of the conditions' changes (:mod:`prepost.stats.crossover`).
    ``arm`` of a paired hypothesis names the arm or condition (default ``design.active``).
``{name, test: correlation, x: {measure, region}, y: {measure, region},
direction: positive|negative|any|none[, method]}``
    An association of the two changes across participants.

Verdicts (:func:`verdict`) use the hypothesis's p-value, adjusted across the hypotheses of the
study (Holm by default), at level ``alpha``:

``increase`` / ``decrease`` / ``positive`` / ``negative``
    *supported* when significant in the predicted direction, *opposite* when significant in the
    other direction, *not supported* otherwise.
``any`` (correlation)
    *supported* when significant, *not supported* otherwise.
``none`` (no change / no association)
    *supported* when not significant **and** the confidence interval of the mean change
    (or of the correlation) includes 0 and, when ``margin`` is given, lies within
    ``[-margin, +margin]`` (an equivalence bound: per cent of the baseline mean for a paired
    test, correlation units for a correlation); *opposite* when significant (a change was
    found); *not supported* when not significant but the interval excludes 0 or exceeds the
    margin (the data do not show an absence of change).

A hypothesis whose measure or region is absent from the data is *not tested*, with the reason.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from prepost.errors import ConfigError
from prepost.stats.group import change_column, change_scores
from prepost.stats.multimodal import change_correlation
from prepost.stats.paired import correct

__all__ = [
    "KNOWN_MEASURES",
    "PAIRED_DIRECTIONS",
    "CORRELATION_DIRECTIONS",
    "VERDICTS",
    "known_measures",
    "validate_hypotheses",
    "validate_measures",
    "verdict",
    "evaluate_hypotheses",
]

_FMRI_MEASURES = (
    "fc_within", "fc_between", "integration", "segregation", "global_fc", "gs_amplitude",
    "alff", "falff", "strength", "eigenvector_centrality", "participation_coefficient",
    "modularity", "louvain_modularity", "gradient1_range", "gradient1_variance",
    "gradient1_position",
)
_QC_MEASURES = ("mean_fd", "retained_s", "excluded", "n_retained", "dvars", "tsnr")
_PET_MODEL_PARAMS = {
    "1tcm": ("VT", "K1", "k2", "vB"),
    "2tcm": ("VT", "K1", "k2", "k3", "k4", "vB", "VND", "BPND"),
    "logan": ("VT", "DVR", "BPND"),
    "ma1": ("VT",),
    "srtm": ("BPND", "R1", "k2", "DVR"),
}
_PET_STATIC = ("SUV", "SUVR")
_TRUTH_MEASURES = ("fc_within_z", "fc_between_z", "VT", "K1")

#: Measure names some stage of the workflow writes into its tidy table: the connectivity stage
#: (fMRI measures and QC), the PET stage (``<parameter>_<model>``, SUV, SUVR) and the simulator's
#: ground truth. Hypotheses, mixed models and multimodal pairs must name one of them (or one
#: listed in ``stats.extra_measures``).
KNOWN_MEASURES = tuple(dict.fromkeys(
    _FMRI_MEASURES + _QC_MEASURES
    + tuple(f"{p}_{m}" for m, ps in _PET_MODEL_PARAMS.items() for p in ps)
    + _PET_STATIC + _TRUTH_MEASURES))

PAIRED_DIRECTIONS = ("increase", "decrease", "none")
CORRELATION_DIRECTIONS = ("positive", "negative", "any", "none")
VERDICTS = ("supported", "not supported", "opposite", "not tested")


def known_measures(extra=()):
    """:data:`KNOWN_MEASURES` plus ``extra`` names."""
    return tuple(dict.fromkeys((*KNOWN_MEASURES, *extra)))


def _spec_error(i, name, field, expected, found=None):
    return ConfigError(None, f"stats.hypotheses[{i}] ({name!r}).{field}", expected, found)


def validate_measures(specs, where, extra=()):
    """Check that each ``{'measure': ...}`` of ``specs`` names a known measure.

    ``where`` labels the config entry in the error (e.g. ``'stats.multimodal.pairs[0].x'``).
    """
    known = known_measures(extra)
    for label, spec in specs:
        m = spec.get("measure") if isinstance(spec, dict) else spec
        if m not in known:
            raise ConfigError(None, f"{where}{label}", "a measure some stage produces (one of "
                              f"{', '.join(known)}; add others to stats.extra_measures)",
                              repr(m))


def validate_hypotheses(hypotheses, extra=(), arms=None):
    """Check hypotheses from the config; raise :class:`ConfigError` naming the culprit.

    Every hypothesis needs a unique ``name``, a ``test`` of 'paired', 'interaction' or
    'correlation', a ``direction`` allowed for that test, and measures from
    :func:`known_measures`. ``arms`` gives the two arm labels of a parallel design (active,
    control); without them an ``interaction`` test or an ``arm`` is an error.

    Returns
    -------
    list of dict
        The hypotheses with defaults filled (``modality`` None, ``method`` 'spearman',
        ``margin`` None).
    """
    known = known_measures(extra)
    out, names = [], set()
    for i, h in enumerate(hypotheses):
        name = h.get("name")
        if not name:
            raise _spec_error(i, name, "name", "a name")
        if name in names:
            raise _spec_error(i, name, "name", "a unique name", "a duplicate")
        names.add(name)
        test = h.get("test", "paired")
        h = {"modality": None, "atlas": None, "arm": None, "method": "spearman",
             "margin": None, **h, "test": test}
        if test in ("paired", "interaction"):
            for k in ("measure", "region"):
                if not h.get(k):
                    raise _spec_error(i, name, k, f"a value for a {test} hypothesis")
            if h["measure"] not in known:
                raise _spec_error(i, name, "measure", "a measure some stage produces (one of "
                                  f"{', '.join(known)}; add others to stats.extra_measures)",
                                  repr(h["measure"]))
            if h.get("direction") not in PAIRED_DIRECTIONS:
                raise _spec_error(i, name, "direction", " or ".join(PAIRED_DIRECTIONS),
                                  h.get("direction"))
        elif test == "correlation":
            for k in ("x", "y"):
                spec = h.get(k)
                if not isinstance(spec, dict) or not spec.get("measure") or \
                        not spec.get("region"):
                    raise _spec_error(i, name, k, "{measure, region}", spec)
                if spec["measure"] not in known:
                    raise _spec_error(i, name, f"{k}.measure", "a measure some stage produces "
                                      f"(one of {', '.join(known)}; add others to "
                                      "stats.extra_measures)", repr(spec["measure"]))
            if h.get("direction") not in CORRELATION_DIRECTIONS:
                raise _spec_error(i, name, "direction", " or ".join(CORRELATION_DIRECTIONS),
                                  h.get("direction"))
            if h["method"] not in ("spearman", "pearson"):
                raise _spec_error(i, name, "method", "spearman or pearson", h["method"])
        else:
            raise _spec_error(i, name, "test", "paired, interaction or correlation", test)
        if test == "interaction" and not arms:
            raise _spec_error(i, name, "test", "paired or correlation in a pre/post design "
                              "(interaction needs design.type: parallel or crossover)", test)
        if h.get("arm") and h["arm"] not in (arms or ()):
            raise _spec_error(i, name, "arm", " or ".join(repr(a) for a in arms)
                              + " in a parallel or crossover design" if arms else
                              "no arm in a pre/post design", repr(h["arm"]))
        out.append(h)
    return out


def verdict(direction, estimate, p, ci_low, ci_high, alpha=0.05, margin=None):
    """Judge one hypothesis.

    Parameters
    ----------
    direction : str
        'increase', 'decrease', 'none' (paired) or 'positive', 'negative', 'any', 'none'
        (correlation).
    estimate : float
        Mean change (paired) or correlation coefficient.
    p : float
        The (adjusted) p-value.
    ci_low, ci_high : float
        Confidence interval of the estimate (used by 'none').
    alpha : float
        Significance level.
    margin : float or None
        Equivalence bound of 'none', in the units of ``ci_low``/``ci_high``.

    Returns
    -------
    verdict : str
        One of :data:`VERDICTS`.
    reason : str
        Why, in words.
    """
    if p is None or not np.isfinite(p) or estimate is None or not np.isfinite(estimate):
        return "not tested", "no p-value or estimate (too few complete pairs?)"
    sig = p < alpha
    sign = "positive" if estimate > 0 else "negative" if estimate < 0 else "zero"
    if direction in ("increase", "positive"):
        want = 1
    elif direction in ("decrease", "negative"):
        want = -1
    elif direction == "any":
        return ("supported", f"p = {p:.3g} < {alpha}") if sig else \
            ("not supported", f"p = {p:.3g} >= {alpha}")
    elif direction == "none":
        if sig:
            return "opposite", f"a {sign} effect was found (p = {p:.3g} < {alpha})"
        lo, hi = float(ci_low), float(ci_high)
        if not (np.isfinite(lo) and np.isfinite(hi)):
            return "not tested", "no confidence interval"
        if not lo <= 0 <= hi:
            return "not supported", (f"p = {p:.3g} >= {alpha} but the interval [{lo:.3g}, "
                                     f"{hi:.3g}] excludes 0")
        if margin is not None and (lo < -margin or hi > margin):
            return "not supported", (f"p = {p:.3g} >= {alpha} but the interval [{lo:.3g}, "
                                     f"{hi:.3g}] exceeds the margin +/-{margin:g}")
        extra = f" within +/-{margin:g}" if margin is not None else ""
        return "supported", (f"p = {p:.3g} >= {alpha} and the interval [{lo:.3g}, {hi:.3g}] "
                             f"includes 0{extra}")
    else:
        raise ConfigError(None, "direction", "increase, decrease, positive, negative, any or "
                          "none", direction)
    est_sign = np.sign(estimate)
    if sig and est_sign == want:
        return "supported", f"{sign} effect, p = {p:.3g} < {alpha}"
    if sig and est_sign == -want:
        return "opposite", f"{sign} effect, opposite to the prediction, p = {p:.3g} < {alpha}"
    return "not supported", f"p = {p:.3g} >= {alpha}"


def _fisher_ci(r, n, ci):
    from scipy import stats

    if not np.isfinite(r) or n < 4:
        return np.nan, np.nan
    z = np.arctanh(np.clip(r, -0.999999, 0.999999))
    se = 1.0 / np.sqrt(n - 3)
    q = stats.norm.ppf(0.5 + ci / 2)
    return float(np.tanh(z - q * se)), float(np.tanh(z + q * se))


RESULT_COLUMNS = ["name", "test", "measure", "region", "arm", "direction", "estimate",
                  "estimate_label",
                  "ci_low", "ci_high", "n", "p", "p_source", "p_adjusted", "adjustment",
                  "alpha", "effect_size", "verdict", "reason"]


def _one_row(table, h, what):
    """The row of ``table`` a hypothesis names, or ``(None, reason)``."""
    if table is None:
        return None, f"no {what}: the design has none (design.type: parallel or crossover makes one)"
    sel = (table["measure"] == h["measure"]) & (table["region"].astype(str) == str(h["region"]))
    for k in ("modality", "atlas", "arm"):
        if h.get(k) and k in table.columns:
            sel &= table[k].fillna("").astype(str) == h[k]
    hit = table[sel]
    if len(hit) == 1:
        return hit.iloc[0], ""
    where = {k: sorted(hit[k].fillna("").astype(str).unique())
             for k in ("modality", "atlas") if k in hit.columns}
    return None, (f"not in the {what}" if hit.empty else
                  f"{len(hit)} rows match ({where}); give 'modality' or 'atlas'")


def evaluate_hypotheses(hypotheses, group_table, paired_table, baseline="pre", followup="post",
                        alpha=0.05, p_column="p_perm", adjustment="holm", ci="t", ci_level=0.95,
                        change="difference", interaction_table=None, default_arm=None,
                        **corr_kwargs):
    """Judge every hypothesis.

    Parameters
    ----------
    hypotheses : list of dict
        Validated hypotheses (:func:`validate_hypotheses`).
    group_table : pandas.DataFrame
        Group table (for correlations of changes).
    paired_table : pandas.DataFrame
        Output of :func:`prepost.stats.group.paired_statistics`.
    alpha : float
        Significance level.
    p_column : str
        p-value of a paired hypothesis: 'p_perm' (exact sign-flip), 'p_t' or 'p_wilcoxon'.
        A correlation uses its permutation p-value.
    adjustment : str
        Correction across the hypotheses (:func:`prepost.stats.paired.correct`), or 'none'.
    ci : {'t', 'boot'}
        Interval of the mean change used by 'none' hypotheses.
    ci_level : float
        Confidence level of the correlation interval (Fisher z).
    change : {'difference', 'percent'}
        Change score of correlations.
    interaction_table : pandas.DataFrame or None
        Output of :func:`prepost.stats.parallel.interaction_table` (parallel designs): judges
        ``test: interaction`` hypotheses on the difference of the arms' changes, with the same
        ``p_column`` (Welch t for ``p_t``, Mann-Whitney for ``p_wilcoxon``) and the Welch interval.
    default_arm : str or None
        In a parallel design (a paired table with an ``arm`` column), the arm a paired
        hypothesis without ``arm`` is judged in (the active one).
    **corr_kwargs
        Passed to :func:`prepost.stats.multimodal.change_correlation`.

    Returns
    -------
    pandas.DataFrame
        One row per hypothesis with the columns of ``RESULT_COLUMNS``.
    """
    rows = []
    delta = None
    for h in hypotheses:
        base = {"name": h["name"], "test": h["test"], "direction": h["direction"], "arm": "",
                "alpha": alpha, "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan,
                "n": 0, "p": np.nan, "effect_size": np.nan, "reason": ""}
        if h["test"] == "interaction":
            base.update(measure=h["measure"], region=h["region"], p_source=p_column,
                        estimate_label="difference of mean changes (active - control)")
            r, base["reason"] = _one_row(interaction_table, h, "interaction table")
            if r is not None:
                # a crossover's contrast table counts participants (n) and gives d_z
                crossed = "n" in r.index
                base.update(estimate=r["diff"], ci_low=r["ci_t_low"], ci_high=r["ci_t_high"],
                            n=int(r["n"] if crossed else r["n_active"] + r["n_control"]),
                            p=r[p_column], effect_size=r["cohens_dz" if crossed else "hedges_g"])
                if h.get("margin") is not None and np.isfinite(r["mean_pre"]):
                    base["margin_abs"] = abs(float(h["margin"]) / 100.0 * r["mean_pre"])
        elif h["test"] == "paired":
            base.update(measure=h["measure"], region=h["region"], estimate_label="mean change",
                        p_source=p_column, arm=h.get("arm") or default_arm or "")
            r, base["reason"] = _one_row(paired_table, {**h, "arm": h.get("arm") or default_arm},
                                         "paired statistics")
            if r is not None:
                lo, hi = (r["ci_t_low"], r["ci_t_high"]) if ci == "t" else \
                    (r["ci_boot_low"], r["ci_boot_high"])
                base.update(estimate=r["mean_diff"], ci_low=lo, ci_high=hi, n=int(r["n"]),
                            p=r[p_column], effect_size=r["cohens_dz"])
                if h.get("margin") is not None and np.isfinite(r["mean_pre"]):
                    base["margin_abs"] = abs(float(h["margin"]) / 100.0 * r["mean_pre"])
        else:
            if delta is None:
                delta = change_scores(group_table, baseline, followup, kind=change)
            x, y = h["x"], h["y"]
            base.update(measure=f"{x['measure']} ~ {y['measure']}",
                        region=f"{x['region']} ~ {y['region']}",
                        estimate_label=f"{h['method']} r", p_source="p_perm")
            (cx, wx), (cy, wy) = change_column(delta, x), change_column(delta, y)
            missing = [w for w in (wx, wy) if w]
            if missing:
                base["reason"] = "; ".join(missing)
            else:
                alt = "two-sided"
                res = change_correlation(delta[cx].to_numpy(float), delta[cy].to_numpy(float),
                                         method=h["method"], alternative=alt, **corr_kwargs)
                lo, hi = _fisher_ci(res["r"], res["n"], ci_level)
                base.update(estimate=res["r"], ci_low=lo, ci_high=hi, n=res["n"],
                            p=res["p_perm"], effect_size=res["r"])
                if h.get("margin") is not None:
                    base["margin_abs"] = float(h["margin"])
        rows.append(base)
    out = pd.DataFrame(rows)
    if out.empty:
        return pd.DataFrame(columns=RESULT_COLUMNS)
    if adjustment and adjustment != "none":
        out["p_adjusted"] = correct(out["p"].to_numpy(float), method=adjustment)
    else:
        out["p_adjusted"] = out["p"]
    out["adjustment"] = adjustment or "none"
    verdicts, reasons = [], []
    for r in out.itertuples():
        if r.reason:
            verdicts.append("not tested")
            reasons.append(r.reason)
            continue
        margin = getattr(r, "margin_abs", None)
        margin = None if margin is None or not np.isfinite(margin) else margin
        v, why = verdict(r.direction, r.estimate, r.p_adjusted, r.ci_low, r.ci_high,
                         alpha=alpha, margin=margin)
        verdicts.append(v)
        reasons.append(why)
    out["verdict"] = verdicts
    out["reason"] = reasons
    return out[RESULT_COLUMNS]
