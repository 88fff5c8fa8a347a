"""Power planning: how many participants a replication needs.

From a finished study's own measurements (its group table) or from effect sizes given in config,
the power of every directional hypothesis is estimated by Monte Carlo for the designs a
replication may take:

* ``prepost``: n participants scanned before and after, judged by the paired test the workflow
  runs (``stats.p_value``: the sign-flip permutation test, exact up to ``max_exact``
  participants, the paired t-test or the Wilcoxon signed-rank test);
* ``parallel``: n participants per arm, the active arm's change against a control arm's, judged
  by the session x arm tests of :func:`prepost.stats.parallel.arm_test` (studentized
  permutation of the arm labels, Welch t or Mann-Whitney);
* ``crossover``: n participants given both conditions, the contrast of their changes (active
  minus control) judged by the paired tests of :func:`prepost.stats.crossover.contrast_test`.
  The contrast's SD is the crossover study's own; from another design, that of two independent
  changes, ``sqrt(sd_active^2 + sd_control^2)`` (no within-participant correlation of the
  changes: conservative when a participant's changes under both conditions go together).

A correlation of changes between modalities (``test: correlation``) is planned as n participants
with both changes, drawn from a bivariate normal with the study's Pearson r, and judged by the
permutation test of :func:`prepost.stats.multimodal.change_correlation`.

A simulated study counts as a success when the workflow's verdict would be *supported*: the
two-sided p-value is below alpha and the estimate has the predicted sign. Power is the share of
successes, given with its Wilson 95 % Monte Carlo interval, and with Bonferroni's alpha / m over
the m planned hypotheses (a lower bound of the power under the Holm or Benjamini-Hochberg
correction the hypotheses table applies).

Each participant's change is drawn from a normal distribution with the study's mean and SD of
the change (``sampling='normal'``), or resampled from the study's own changes, centred and
shifted back to their mean (``'resample'``: keeps their skew and tails). A control arm the study
did not have changes by ``control_mean`` (0: a placebo that changes nothing) with the active
arm's SD: the same session-to-session variability. The study's effect is taken at face value:
a small pilot's effect size is itself uncertain (and, when selected for being significant,
inflated), so the n found is optimistic for effects near the pilot's.

The closed-form n of the t-tests (:class:`statsmodels.stats.power.TTestPower`,
:class:`~statsmodels.stats.power.TTestIndPower`) is given beside each Monte Carlo n.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from prepost.errors import ConfigError
from prepost.stats.group import change_column, change_scores
from prepost.stats.paired import count_extreme, sign_flips
from prepost.stats.parallel import _welch_t, arm_labels, relabelings

__all__ = ["DESIGNS", "POWER_COLUMNS", "N_COLUMNS", "study_effects", "simulated_pvalues",
           "simulated_correlation_pvalues", "power_curves", "n_for_power", "plan", "main"]

#: Replication designs that can be planned.
DESIGNS = ("prepost", "parallel", "crossover")
_SAMPLING = ("normal", "resample")
_P_KINDS = ("p_perm", "p_t", "p_wilcoxon")

POWER_COLUMNS = ["name", "measure", "region", "direction", "design", "test", "n", "power",
                 "power_low", "power_high", "power_bonferroni", "simulations", "alpha",
                 "alpha_bonferroni", "effect_size", "mean_active", "sd_active", "mean_control",
                 "sd_control", "sd_contrast", "source", "sampling"]
N_COLUMNS = ["name", "measure", "region", "direction", "design", "test", "target",
             "effect_size", "n_target", "n_target_bonferroni", "n_closed_form", "n_max", "note"]


# --------------------------------------------------------------------------------------------
# Effects
# --------------------------------------------------------------------------------------------
def _sample(values):
    v = np.asarray(values, float)
    return v[np.isfinite(v)]


def study_effects(hypotheses, table=None, baseline="pre", followup="post", arms=None,
                  active=None, control=None, effects=None, control_mean=0.0,
                  change="difference", conditions=None):
    """The changes each directional hypothesis is planned from.

    Parameters
    ----------
    hypotheses : list of dict
        Validated hypotheses (:func:`prepost.stats.hypotheses.validate_hypotheses`).
    table : pandas.DataFrame or None
        The study's group table; None when every hypothesis has its size in ``effects``.
    baseline, followup : str
        Session labels.
    arms : mapping or None
        ``participant_id -> arm`` of a parallel study; a paired hypothesis is planned from the
        arm it names (default ``active``) and an interaction from both arms.
    active, control : str or None
        Arm labels of a parallel study.
    effects : mapping or None
        ``{hypothesis name: {mean, sd[, control_mean, control_sd, contrast_sd]}}``: sizes in
        place of the study's (in the measure's units; ``mean`` is the active arm's mean change;
        ``contrast_sd`` the SD of a participant's contrast of changes in a crossover, default
        ``sqrt(sd^2 + control_sd^2)``); ``{r}`` for a correlation.
    control_mean : float
        Mean change of a planned control arm when the study had none.
    change : {'difference', 'percent'}
        Change score of correlations (``stats.multimodal.change``).
    conditions : mapping or None
        ``condition -> (baseline, followup)`` of a crossover study: the conditions' changes
        take the place of a parallel study's arms (``active``/``control`` name them).

    Returns
    -------
    list of dict
        Per hypothesis: ``name``, ``measure``, ``region``, ``direction``, ``active`` and
        ``control`` (the study's changes, or None), ``mean_active``, ``sd_active``,
        ``mean_control``, ``sd_control``, ``source`` ('study' or 'config') and ``note`` (why
        it cannot be planned, else ''), ``sd_contrast`` (and ``contrast``, a crossover
        study's own contrasts of changes). A correlation has ``method``, ``r`` (Pearson r of the
        changes: the bivariate normal it is planned from) and ``pairs`` (the study's changes,
        shape (2, n), or None).
    """
    effects = dict(effects or {})
    unknown = sorted(set(effects) - {h["name"] for h in hypotheses})
    if unknown:
        raise ConfigError(None, "stats.power.effects", "names of stats.hypotheses", unknown)
    delta = corr_delta = None
    out = []
    for h in hypotheses:
        row = {"name": h["name"], "direction": h["direction"], "active": None, "control": None,
               "mean_active": np.nan, "sd_active": np.nan, "mean_control": np.nan,
               "sd_control": np.nan, "source": "", "note": "",
               "measure": h.get("measure", ""), "region": h.get("region", "")}
        out.append(row)
        if h["test"] == "correlation":
            row.update(measure=f"{h['x']['measure']} ~ {h['y']['measure']}",
                       region=f"{h['x']['region']} ~ {h['y']['region']}",
                       method=h.get("method", "spearman"), r=np.nan, pairs=None)
            if h["direction"] == "none":
                row["note"] = ("direction 'none': power is planned for a predicted association "
                               "(positive, negative or any)")
            elif h["name"] in effects:
                r = effects[h["name"]].get("r")
                if r is None or not -1 < float(r) < 1:
                    raise ConfigError(None, f"stats.power.effects[{h['name']!r}]",
                                      "a mapping with r, a correlation strictly between -1 and 1",
                                      effects[h["name"]])
                row.update(source="config", r=float(r))
            elif table is None:
                row["note"] = "no group table and no size in stats.power.effects"
            else:
                if corr_delta is None:
                    corr_delta = change_scores(table, baseline, followup, kind=change)
                (cx, wx), (cy, wy) = change_column(corr_delta, h["x"]), \
                    change_column(corr_delta, h["y"])
                if wx or wy:
                    row["note"] = "; ".join(w for w in (wx, wy) if w)
                    continue
                xy = corr_delta[[cx, cy]].to_numpy(float)
                if arms:  # the active arm's participants, as planned for a replication
                    xy = xy[arm_labels(arms, corr_delta.index) == active]
                xy = xy[np.isfinite(xy).all(axis=1)]
                if len(xy) < 4 or np.ptp(xy[:, 0]) == 0 or np.ptp(xy[:, 1]) == 0:
                    row["note"] = f"fewer than 4 complete, varying pairs of changes ({len(xy)})"
                    continue
                row.update(source="study", r=float(np.corrcoef(xy.T)[0, 1]), pairs=xy.T)
            continue
        if h["direction"] not in ("increase", "decrease"):
            row["note"] = (f"direction {h['direction']!r}: power is planned for a predicted "
                           "increase or decrease")
            continue
        if h["name"] in effects:
            e = dict(effects[h["name"]])
            missing = [k for k in ("mean", "sd") if k not in e]
            if missing or float(e["sd"]) <= 0:
                raise ConfigError(None, f"stats.power.effects[{h['name']!r}]",
                                  "a mapping with mean and a positive sd (and optionally "
                                  "control_mean, control_sd)", e)
            row.update(source="config", mean_active=float(e["mean"]), sd_active=float(e["sd"]),
                       mean_control=float(e.get("control_mean", control_mean)),
                       sd_control=float(e.get("control_sd", e["sd"])))
            row["sd_contrast"] = float(e.get("contrast_sd", np.hypot(row["sd_active"],
                                                                     row["sd_control"])))
            continue
        if table is None:
            row["note"] = "no group table and no size in stats.power.effects"
            continue
        if delta is None:
            delta = {c: change_scores(table, *pair) for c, pair in conditions.items()} \
                if conditions else change_scores(table, baseline, followup)
        named = h.get("arm") or active
        # a crossover's conditions are read as a parallel study's arms
        col, why = change_column(delta[named] if conditions else delta, h)
        if why:
            row["note"] = why
            continue
        if conditions:
            a = _sample(delta[named][col])
            c = _sample(delta[control][col]) if named == active else None
            if c is not None:  # the crossover's own contrasts, participant by participant
                both = delta[active][col] - delta[control][col]
                row["contrast"] = _sample(both)
        elif arms:
            values = delta[col]
            arm = arm_labels(arms, values.index)
            a = _sample(values[arm == named])
            c = _sample(values[arm == control]) if named == active else None
        else:
            if h["test"] == "interaction":
                row["note"] = "an interaction needs a study with two arms"
                continue
            a, c = _sample(delta[col]), None
        if len(a) < 3 or (c is not None and len(c) < 3):
            row["note"] = (f"fewer than 3 changes in an arm of the study ({len(a)} active"
                           + ("" if c is None else f", {len(c)} control") + ")")
            continue
        row.update(source="study", active=a, control=c, mean_active=float(a.mean()),
                   sd_active=float(a.std(ddof=1)))
        if c is not None:
            row.update(mean_control=float(c.mean()), sd_control=float(c.std(ddof=1)))
        else:
            row.update(mean_control=float(control_mean), sd_control=row["sd_active"])
        contrast = row.get("contrast")
        row["sd_contrast"] = (float(contrast.std(ddof=1)) if contrast is not None
                              and len(contrast) >= 3 else
                              float(np.hypot(row["sd_active"], row["sd_control"])))
    return out


def _draw(rng, mean, sd, sample, shape, sampling):
    if sampling == "resample" and sample is not None:
        # the study's changes, centred and scaled to the unbiased SD, around the planned mean
        resid = (sample - sample.mean()) * np.sqrt(len(sample) / (len(sample) - 1))
        return mean + resid[rng.integers(0, len(resid), size=shape)]
    return mean + sd * rng.standard_normal(shape)


# --------------------------------------------------------------------------------------------
# The workflow's tests, many simulated studies at once
# --------------------------------------------------------------------------------------------
def simulated_pvalues(active, control=None, p_value="p_perm", n_perm=2000, max_exact=16,
                      max_relabelings=20000, seed=0):
    """Two-sided p-values of many studies at once, by the workflow's tests.

    Parameters
    ----------
    active : array (k, n)
        k simulated studies of n changes each (the active arm's in a parallel design).
    control : array (k, m) or None
        The control arm's changes (parallel design), or None (paired design).
    p_value : {'p_perm', 'p_t', 'p_wilcoxon'}
        The test ``stats.p_value`` names: permutation, t or rank test of the design.
    n_perm : int
        Random sign flips (paired) or relabelings (parallel) where the exact set is larger than
        ``max_exact`` (2^n flips) or ``max_relabelings``.
    max_exact, max_relabelings : int
        As ``stats.paired.max_exact`` and :func:`prepost.stats.parallel.relabelings`.
    seed : int
        Seed of the random flips or relabelings (shared by the k studies).

    Returns
    -------
    p : array (k,)
    estimate : array (k,)
        Mean change (paired) or difference of the arms' mean changes.
    """
    if p_value not in _P_KINDS:
        raise ConfigError(None, "stats.p_value", " or ".join(_P_KINDS), p_value)
    a = np.atleast_2d(np.asarray(active, float))
    if control is None:
        est = a.mean(axis=1)
        if p_value == "p_t":
            return stats.ttest_1samp(a, 0.0, axis=1).pvalue, est
        if p_value == "p_wilcoxon":
            return stats.wilcoxon(a, axis=1, method="auto").pvalue, est
        n = a.shape[1]
        flips, exact = sign_flips(n, n_perm=n_perm, max_exact=max_exact, seed=seed)
        flips = flips.astype(float)
        count = np.zeros(len(a), dtype=np.int64)
        chunk = max(1, 2**22 // len(flips))
        for s in range(0, len(a), chunk):
            null = flips @ a[s:s + chunk].T / n
            count[s:s + chunk] = count_extreme(null, est[s:s + chunk], "two-sided")
        p = count / len(flips) if exact else (1 + count) / (1 + len(flips))
        return p, est
    c = np.atleast_2d(np.asarray(control, float))
    est = a.mean(axis=1) - c.mean(axis=1)
    if p_value == "p_t":
        return stats.ttest_ind(a, c, axis=1, equal_var=False).pvalue, est
    if p_value == "p_wilcoxon":
        return stats.mannwhitneyu(a, c, axis=1, alternative="two-sided").pvalue, est
    na, nc = a.shape[1], c.shape[1]
    masks, _ = relabelings(na, nc, n_perm=n_perm, max_exact=max_relabelings, seed=seed)
    observed = np.r_[np.ones(na), np.zeros(nc)][None]
    pooled = np.concatenate([a, c], axis=1).T  # (n, k)
    p = np.empty(len(a))
    chunk = max(1, 2**22 // len(masks))
    for s in range(0, len(a), chunk):
        x = pooled[:, s:s + chunk]
        null = np.nan_to_num(_welch_t(masks, x, na, nc), nan=0.0)
        obs = _welch_t(observed, x, na, nc)[0]
        # the observed labeling is one of the relabelings, as in arm_test
        p[s:s + chunk] = count_extreme(null, obs, "two-sided") / len(masks)
    return p, est


def simulated_correlation_pvalues(x, y, method="spearman", n_perm=2000, max_exact=8, seed=0):
    """Two-sided permutation p-values of many correlations at once, as
    :func:`prepost.stats.multimodal.change_correlation` computes one.

    Parameters
    ----------
    x, y : array (k, n)
        k simulated studies of n pairs of changes.
    method : {'spearman', 'pearson'}
    n_perm, max_exact, seed
        As :func:`~prepost.stats.multimodal.change_correlation` (all ``n!`` pairings up to
        ``max_exact``; the random pairings are shared by the k studies).

    Returns
    -------
    p, r : arrays (k,)
    """
    from prepost.stats.multimodal import _permutations

    x, y = np.atleast_2d(np.asarray(x, float)), np.atleast_2d(np.asarray(y, float))
    if method == "spearman":
        x, y = stats.rankdata(x, axis=1), stats.rankdata(y, axis=1)
    xc, yc = x - x.mean(axis=1, keepdims=True), y - y.mean(axis=1, keepdims=True)
    denom = np.sqrt((xc * xc).sum(axis=1) * (yc * yc).sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (xc * yc).sum(axis=1) / denom
    n = x.shape[1]
    perms, exact = _permutations(n, n_perm, max_exact, seed)
    count = np.zeros(len(x), dtype=np.int64)
    chunk = max(1, 2**23 // (len(perms) * n))
    for s in range(0, len(x), chunk):
        with np.errstate(divide="ignore", invalid="ignore"):
            null = np.einsum("kpn,kn->pk", yc[s:s + chunk][:, perms], xc[s:s + chunk]) \
                / denom[s:s + chunk]
        count[s:s + chunk] = count_extreme(np.nan_to_num(null), r[s:s + chunk], "two-sided")
    p = count / len(perms) if exact else (1 + count) / (1 + len(perms))
    return np.where(np.isfinite(r), p, np.nan), r


def _draw_pairs(rng, r, pairs, shape, sampling):
    if sampling == "resample" and pairs is not None:
        idx = rng.integers(0, pairs.shape[1], size=shape)
        return pairs[0][idx], pairs[1][idx]
    x = rng.standard_normal(shape)
    return x, r * x + np.sqrt(1 - r * r) * rng.standard_normal(shape)


def _wilson(k, n):
    from statsmodels.stats.proportion import proportion_confint

    lo, hi = proportion_confint(k, n, alpha=0.05, method="wilson")
    return float(lo), float(hi)


def _sd_contrast(e):
    """SD of a participant's contrast of changes: the effect's own, else two independent
    changes'."""
    sd = e.get("sd_contrast")
    return float(sd) if sd is not None and np.isfinite(sd) else \
        float(np.hypot(e["sd_active"], e["sd_control"]))


def _effect_size(e, design):
    if "method" in e:
        return e["r"]
    if design == "prepost":
        return e["mean_active"] / e["sd_active"]
    if design == "crossover":
        return (e["mean_active"] - e["mean_control"]) / _sd_contrast(e)
    sd = np.sqrt((e["sd_active"] ** 2 + e["sd_control"] ** 2) / 2.0)
    return (e["mean_active"] - e["mean_control"]) / sd


def power_curves(effects, designs=DESIGNS, n=(10, 20, 30, 40, 50, 60, 70, 80, 90, 100),
                 simulations=2000, alpha=0.05, p_value="p_perm", n_perm=2000, max_exact=16,
                 sampling="normal", seed=0, corr_max_exact=8):
    """Monte Carlo power of each planned hypothesis, design and sample size.

    A correlation of changes is planned as n participants with both changes (``prepost``
    only), drawn from a bivariate normal with the study's Pearson r (or its pairs, resampled),
    and judged by the permutation test of its method
    (:func:`simulated_correlation_pvalues`); 'any' direction succeeds with either sign.

    Parameters
    ----------
    effects : list of dict
        :func:`study_effects`; hypotheses with a ``note`` are left out.
    designs : sequence of {'prepost', 'parallel', 'crossover'}
        Designs of the replication. An interaction hypothesis is not planned as ``prepost``.
    n : sequence of int
        Participants (``prepost``, ``crossover``) or participants per arm (``parallel``).
    simulations : int
        Simulated studies per design and n.
    alpha : float
        Significance level of a verdict (``stats.alpha``).
    p_value, n_perm, max_exact
        See :func:`simulated_pvalues`.
    corr_max_exact : int
        ``stats.multimodal.max_exact``: all ``n!`` pairings of a correlation up to this n.
    sampling : {'normal', 'resample'}
        How each participant's change is drawn (see the module's notes).
    seed : int
        Seed of the draws and of the random flips or relabelings.

    Returns
    -------
    pandas.DataFrame
        One row per hypothesis, design and n with the columns of ``POWER_COLUMNS``.
    """
    designs = list(designs)
    bad = [d for d in designs if d not in DESIGNS]
    if bad or not designs:
        raise ConfigError(None, "stats.power.designs", f"one or more of {list(DESIGNS)}",
                          designs)
    if sampling not in _SAMPLING:
        raise ConfigError(None, "stats.power.sampling", " or ".join(_SAMPLING), sampling)
    sizes = sorted({int(x) for x in n})
    if not sizes or sizes[0] < 3:
        raise ConfigError(None, "stats.power.n", "sample sizes of at least 3", list(n))
    if int(simulations) < 100:
        raise ConfigError(None, "stats.power.simulations", "at least 100 simulated studies",
                          simulations)
    planned = [e for e in effects if not e["note"]]
    m = max(1, len(planned))
    rows = []
    for i, e in enumerate(planned):
        corr = "method" in e
        want = {"increase": 1.0, "positive": 1.0, "decrease": -1.0, "negative": -1.0}.get(
            e["direction"])  # None: 'any' sign
        for j, design in enumerate(designs):
            if design == "prepost" and e.get("test_is_interaction"):
                continue
            if design in ("parallel", "crossover") and corr:
                continue  # a correlation of changes needs n participants with both, in any arm
            for size in sizes:
                # one stream per hypothesis, design and n: adding one leaves the others as they were
                rng = np.random.default_rng([seed, i, j, size])
                if corr:
                    x, y = _draw_pairs(rng, e["r"], e["pairs"], (simulations, size), sampling)
                    p, est = simulated_correlation_pvalues(
                        x, y, e["method"], n_perm=n_perm, max_exact=corr_max_exact,
                        seed=seed + size)
                    test = "p_perm"
                else:
                    c = None
                    if design == "crossover" and sampling == "resample" \
                            and e.get("contrast") is None and e["active"] is not None:
                        # no crossover study: two independent changes per participant
                        a = _draw(rng, e["mean_active"], e["sd_active"], e["active"],
                                  (simulations, size), sampling) - _draw(
                            rng, e["mean_control"], e["sd_control"],
                            e["control"] if e["control"] is not None else e["active"],
                            (simulations, size), sampling)
                    elif design == "crossover":
                        # each participant's contrast of changes, active minus control
                        a = _draw(rng, e["mean_active"] - e["mean_control"], _sd_contrast(e),
                                  e.get("contrast"), (simulations, size), sampling)
                    else:
                        a = _draw(rng, e["mean_active"], e["sd_active"], e["active"],
                                  (simulations, size), sampling)
                    if design == "parallel":
                        c = _draw(rng, e["mean_control"], e["sd_control"],
                                  e["control"] if e["control"] is not None else e["active"],
                                  (simulations, size), sampling)
                    p, est = simulated_pvalues(a, c, p_value=p_value, n_perm=n_perm,
                                               max_exact=max_exact, seed=seed + size)
                    test = p_value
                right = np.ones(len(p), bool) if want is None else np.sign(est) == want
                k = int(np.count_nonzero((p < alpha) & right))
                lo, hi = _wilson(k, simulations)
                rows.append({
                    "name": e["name"], "measure": e["measure"], "region": e["region"],
                    "direction": e["direction"], "design": design, "test": test, "n": size,
                    "power": k / simulations, "power_low": lo, "power_high": hi,
                    "power_bonferroni": float(np.mean((p < alpha / m) & right)),
                    "simulations": int(simulations), "alpha": alpha, "alpha_bonferroni": alpha / m,
                    "effect_size": _effect_size(e, design), "mean_active": e["mean_active"],
                    "sd_active": e["sd_active"],
                    "mean_control": e["mean_control"] if design != "prepost" else np.nan,
                    "sd_control": e["sd_control"] if design != "prepost" else np.nan,
                    "sd_contrast": _sd_contrast(e) if design == "crossover" else np.nan,
                    "source": e["source"],
                    "sampling": sampling if e.get("active") is not None
                    or e.get("pairs") is not None else "normal"})
    return pd.DataFrame(rows, columns=POWER_COLUMNS)


def _closed_form_n(es, design, alpha, target, correlation=False):
    """n of the t-test (per arm in parallel) for a verdict in the predicted direction; for a
    correlation, Fisher's z approximation ``n = ((z_(1-alpha/2) + z_power) / atanh(r))^2 + 3``."""
    from statsmodels.stats.power import TTestIndPower, TTestPower

    if not np.isfinite(es) or es <= 0:
        return np.nan
    if correlation:
        z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(target)
        return float(np.ceil((z / np.arctanh(min(es, 0.999999))) ** 2 + 3))
    # two-sided test at alpha, success only in the predicted direction: one tail at alpha / 2
    kw = {"effect_size": es, "alpha": alpha / 2, "power": target, "alternative": "larger"}
    try:
        n = TTestPower().solve_power(**kw) if design in ("prepost", "crossover") else \
            TTestIndPower().solve_power(ratio=1.0, **kw)
    except Exception:  # noqa: BLE001 - statsmodels' root finder gives up on tiny effects
        return np.nan
    n = float(np.squeeze(n))
    return float(np.ceil(n)) if np.isfinite(n) else np.nan


def n_for_power(curves, target=0.8):
    """The smallest n of the grid that reaches ``target`` power, per hypothesis and design.

    ``n_target`` uses the per-hypothesis alpha, ``n_target_bonferroni`` alpha / m;
    ``n_closed_form`` is the closed-form n of the t-test at the same effect size (paired:
    ``TTestPower``; parallel: ``TTestIndPower``, equal arms), rounded up. NaN with a note when
    the grid's largest n falls short.
    """
    rows = []
    if curves.empty:
        return _n_table(rows)
    for (name, design), g in curves.groupby(["name", "design"], sort=False):
        g = g.sort_values("n")
        first = g.iloc[0]
        hit = g[g["power"] >= target]
        hit_b = g[g["power_bonferroni"] >= target]
        sign = {"increase": 1, "positive": 1, "decrease": -1, "negative": -1}
        es = float(first["effect_size"])
        es = abs(es) if first["direction"] == "any" else es * sign[first["direction"]]
        note = ""
        if hit.empty:
            note = (f"power {g['power'].iloc[-1]:.2f} at n = {int(g['n'].iloc[-1])}, the "
                    f"largest n planned")
        if es <= 0:
            note = "the study's change is opposite to the prediction"
        rows.append({"name": name, "measure": first["measure"], "region": first["region"],
                     "direction": first["direction"], "design": design, "test": first["test"],
                     "target": target, "effect_size": float(first["effect_size"]),
                     "n_target": float(hit["n"].iloc[0]) if len(hit) else np.nan,
                     "n_target_bonferroni": float(hit_b["n"].iloc[0]) if len(hit_b) else np.nan,
                     "n_closed_form": _closed_form_n(es, design, float(first["alpha"]), target,
                                                     correlation="~" in str(first["measure"])),
                     "n_max": int(g["n"].iloc[-1]), "note": note})
    return _n_table(rows)


def _n_table(rows):
    out = pd.DataFrame(rows, columns=N_COLUMNS)
    for col in ("n_target", "n_target_bonferroni", "n_closed_form", "n_max"):
        out[col] = pd.to_numeric(out[col]).astype("Int64")
    return out


def plan(hypotheses, table, cfg, *, alpha, p_value, max_exact, baseline="pre",
         followup="post", arms=None, active=None, control=None, change="difference",
         corr_max_exact=8, conditions=None):
    """Both power tables from the ``stats.power`` config: ``(curves, n_table, effects)``."""
    interaction = {h["name"] for h in hypotheses if h["test"] == "interaction"}
    effects = study_effects(hypotheses, table, baseline, followup, arms=arms, active=active,
                            control=control, effects=cfg.get("effects"),
                            control_mean=cfg.get("control_mean", 0.0), change=change,
                            conditions=conditions)
    for e in effects:
        e["test_is_interaction"] = e["name"] in interaction
    curves = power_curves(effects, designs=cfg["designs"], n=cfg["n"],
                          simulations=cfg["simulations"], alpha=alpha, p_value=p_value,
                          n_perm=cfg["n_perm"], max_exact=max_exact, sampling=cfg["sampling"],
                          seed=cfg["seed"], corr_max_exact=corr_max_exact)
    # hypotheses that cannot be planned keep a row that says why
    skipped = [{"name": e["name"], "measure": e["measure"], "region": e["region"],
                "direction": e["direction"], "design": "", "test": p_value,
                "target": cfg["target"], "note": e["note"]} for e in effects if e["note"]]
    ntab = n_for_power(curves, cfg["target"])
    return curves, _n_table(ntab.to_dict("records") + skipped), effects


def main(argv=None):
    """Command-line entry point: ``prepost-power GROUP_TABLE --configfile ...``."""
    import argparse
    from pathlib import Path

    from prepost.bids import read_participants
    from prepost.io import write_tsv
    from prepost.stats.crossover import condition_sessions
    from prepost.stats.hypotheses import validate_hypotheses
    from prepost.stats.parallel import participant_arms
    from prepost.stats.stage import read_group_table
    from prepost.validate import study_config

    ap = argparse.ArgumentParser(
        prog="prepost-power",
        description="Power of each hypothesis for a replication (pre/post, or parallel with a "
                    "control arm) at n = 10 ... 100, by Monte Carlo with the workflow's tests, "
                    "from a finished study's group table or sizes in stats.power.effects.")
    ap.add_argument("group_table", nargs="?", type=Path,
                    help="the study's group/group_table.tsv (omit when stats.power.effects "
                         "sizes every hypothesis)")
    ap.add_argument("--configfile", nargs="+", default=[], type=Path,
                    help="the study's config files (hypotheses, design, stats.power)")
    ap.add_argument("--snakefile", type=Path, default=Path("Snakefile"),
                    help="the workflow's Snakefile: its config/config.yaml gives the defaults")
    ap.add_argument("--participants", type=Path,
                    help="participants.tsv of a parallel study (default: the config's)")
    ap.add_argument("--out", "-o", type=Path,
                    help="folder of power.tsv and power_n.tsv (default: the group table's)")
    ap.add_argument("--designs", nargs="+", choices=DESIGNS)
    ap.add_argument("--n", nargs="+", type=int, help="sample sizes (per arm for parallel)")
    ap.add_argument("--simulations", type=int)
    ap.add_argument("--sampling", choices=_SAMPLING)
    ap.add_argument("--seed", type=int)
    args = ap.parse_args(argv)
    for f in [args.group_table, args.snakefile, *args.configfile]:
        if f is not None and not f.is_file():
            ap.error(f"{f}: no such file")
    cfg = study_config(args.snakefile, args.configfile)
    st = cfg["stats"]
    pcfg = dict(st.get("power") or {})
    for key in ("designs", "n", "simulations", "sampling", "seed"):
        if getattr(args, key) is not None:
            pcfg[key] = getattr(args, key)
    sessions = [cfg["sessions"]["baseline"], cfg["sessions"]["followup"]]
    design = cfg.get("design") or {}
    two = design.get("type") in ("parallel", "crossover")
    hyps = validate_hypotheses(st["hypotheses"], extra=st.get("extra_measures", ()),
                               arms=[design["active"], design["control"]] if two else None)
    arms = conditions = None
    active, control = (design["active"], design["control"]) if two else (None, None)
    if design.get("type") == "crossover":
        conditions = condition_sessions(design)
        sessions = list(conditions[active])
    if design.get("type") == "parallel":
        path = args.participants or Path(cfg["participants"])
        if not path.is_file():
            ap.error(f"{path}: no such file (participants.tsv of the parallel study: give "
                     "--participants)")
        arms = participant_arms(read_participants(path), path, design.get("arm_column", "arm"),
                                active, control)
    table = read_group_table(args.group_table) if args.group_table else None
    curves, ntab, _ = plan(hyps, table, pcfg, alpha=st["alpha"], p_value=st["p_value"],
                           max_exact=st["paired"]["max_exact"], baseline=sessions[0],
                           followup=sessions[1], arms=arms, active=active, control=control,
                           change=st["multimodal"]["change"],
                           corr_max_exact=st["multimodal"]["max_exact"],
                           conditions=conditions)
    out = args.out or (args.group_table.parent if args.group_table else Path("."))
    out.mkdir(parents=True, exist_ok=True)
    write_tsv(curves, out / "power.tsv")
    write_tsv(ntab, out / "power_n.tsv")
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(ntab[["name", "design", "effect_size", "n_target", "n_target_bonferroni",
                    "n_closed_form", "note"]].to_string(index=False))
    print(f"written: {out / 'power.tsv'}, {out / 'power_n.tsv'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
