"""Assemble the self-contained HTML report."""

from __future__ import annotations

import base64
import html
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from prepost.connectivity.fc import fisher_z
from prepost.io import atomic_path
from prepost.provenance import package_versions
from prepost.report import figures as fg
from prepost.report.methods import CITATIONS, methods_paragraphs
from prepost.report.provenance import config_hash, file_checksums
from prepost.stats.group import change_column, change_scores

__all__ = ["build_report", "img_tag", "table_html"]

log = logging.getLogger("prepost.report")

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#222;
background:#fafafa}
main{max-width:1180px;margin:0 auto;padding:16px 28px 60px;background:#fff}
h1{font-size:1.6em;margin:.4em 0}h2{border-bottom:2px solid #ddd;padding-bottom:4px;
margin-top:1.8em}h3{margin-top:1.2em}
nav ul{columns:3;font-size:.9em}img{max-width:100%;height:auto;display:block;margin:8px 0}
table{border-collapse:collapse;font-size:.78em;margin:8px 0}th,td{border:1px solid #ddd;
padding:2px 6px;text-align:right}th{background:#f0f0f0}td.l,th.l{text-align:left}
.scroll{overflow-x:auto;max-height:520px;overflow-y:auto}
.supported{background:#d9f2d9}.opposite{background:#f8d0d0}.not-supported{background:#f3f3f3}
.not-tested{background:#fff6d5}.note{color:#666;font-size:.85em}
code{font-size:.85em;word-break:break-all}.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:120px}
.card b{display:block;font-size:1.5em}
"""


def img_tag(png, alt):
    """``<img>`` with the PNG embedded as base64."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _figure(make, alt, problems):
    try:
        return img_tag(fg.to_png(make()), alt)
    except Exception as exc:  # noqa: BLE001 - one failed figure must not lose the report
        log.warning("figure %r failed: %s: %s", alt, type(exc).__name__, exc)
        problems.append(f"{alt}: {type(exc).__name__}: {exc}")
        return f'<p class="note">Figure "{html.escape(alt)}" could not be drawn: ' \
               f"{html.escape(type(exc).__name__)}: {html.escape(str(exc))}</p>"


def table_html(df, columns=None, digits=4, max_rows=None, left=()):
    """An HTML table (values escaped; floats to ``digits`` significant digits)."""
    if df is None or len(df) == 0:
        return '<p class="note">(none)</p>'
    d = df if columns is None else df[[c for c in columns if c in df.columns]]
    if max_rows is not None and len(d) > max_rows:
        d = d.head(max_rows)
    left = set(left) | {c for c in d.columns if d[c].dtype == object}

    def fmt(v):
        if isinstance(v, (float, np.floating)):
            return "n/a" if not np.isfinite(v) else f"{v:.{digits}g}"
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return "n/a"
        return html.escape(str(v))

    head = "".join(f'<th class="{"l" if c in left else ""}">{html.escape(str(c))}</th>'
                   for c in d.columns)
    body = "".join("<tr>" + "".join(f'<td class="{"l" if c in left else ""}">{fmt(v)}</td>'
                                    for c, v in zip(d.columns, row)) + "</tr>"
                   for row in d.itertuples(index=False))
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>' \
           f"</table></div>"


def _read(x, **kw):
    if x is None:
        return None
    if isinstance(x, pd.DataFrame):
        return x
    return pd.read_csv(x, sep="\t", keep_default_na=False, na_values=["n/a", ""], **kw)


def _hypothesis_table(h):
    if h is None or h.empty:
        return '<p class="note">No hypotheses configured.</p>'
    rows = []
    for r in h.itertuples():
        cls = str(r.verdict).replace(" ", "-")
        est = "n/a" if not np.isfinite(r.estimate) else f"{r.estimate:.3g}"
        ci = "n/a" if not np.isfinite(r.ci_low) else f"[{r.ci_low:.3g}, {r.ci_high:.3g}]"
        p = "n/a" if not np.isfinite(r.p) else f"{r.p:.3g}"
        pa = "n/a" if not np.isfinite(r.p_adjusted) else f"{r.p_adjusted:.3g}"
        rows.append(
            f'<tr class="{cls}"><td class="l">{html.escape(str(r.name))}</td>'
            f'<td class="l">{html.escape(str(r.measure))}</td>'
            f'<td class="l">{html.escape(str(r.region))}</td>'
            f'<td class="l">{html.escape(str(r.direction))}</td>'
            f'<td class="l">{html.escape(str(r.estimate_label))}</td><td>{est}</td><td>{ci}</td>'
            f"<td>{int(r.n)}</td><td>{p}</td><td>{pa}</td>"
            f'<td class="l"><b>{html.escape(str(r.verdict))}</b></td>'
            f'<td class="l">{html.escape(str(r.reason))}</td></tr>')
    head = "".join(f'<th class="l">{c}</th>' for c in (
        "hypothesis", "measure", "region", "predicted", "estimate of", "estimate", "interval",
        "n", "p", "p adjusted", "verdict", "why"))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


@dataclass
class _Study:
    """The statistics stage's tables and the report settings every section reads."""

    gt: pd.DataFrame
    exc: pd.DataFrame | None
    pt: pd.DataFrame | None
    hy: pd.DataFrame | None
    mx: pd.DataFrame | None
    mm: pd.DataFrame | None
    parts: pd.DataFrame | None
    baseline: str
    followup: str
    alpha: float
    max_panels: int
    problems: list = field(default_factory=list)
    ix: pd.DataFrame | None = None  # session x arm tests (parallel design)
    arms: dict | None = None
    active: str | None = None
    control: str | None = None
    crossover: bool = False
    conditions: dict | None = None  # crossover: condition -> (baseline, followup)

    def has_measure(self, measure):
        return bool(len(self.gt)) and bool((self.gt["measure"] == measure).any())


def _read_study(group_table, exclusions, paired, hypotheses, mixed, multimodal, participants,
                sessions, alpha, max_panels):
    s = _Study(gt=_read(group_table, dtype={"region": str, "atlas": str, "flag": str}),
               exc=_read(exclusions, dtype={"region": str}),
               pt=_read(paired, dtype={"region": str, "atlas": str}),
               hy=_read(hypotheses, dtype={"region": str}), mx=_read(mixed, dtype={"region": str}),
               mm=_read(multimodal),
               parts=(_read(participants, dtype={"participant_id": str})
                      if participants is not None else None),
               baseline=sessions[0], followup=sessions[1], alpha=alpha, max_panels=max_panels)
    for t in (s.gt, s.pt, s.mx):
        if t is not None and "atlas" in t.columns:
            t["atlas"] = t["atlas"].fillna("")
    return s


def _covariates_html(s):
    p = s.parts[s.parts["participant_id"].isin(s.gt["participant_id"])] if len(s.gt) else s.parts
    summ = []
    for c in p.columns:
        if c in ("participant_id", "label"):
            continue
        if pd.api.types.is_numeric_dtype(p[c]):
            summ.append({"covariate": c, "summary": f"mean {p[c].mean():.3g}, SD "
                         f"{p[c].std():.3g}, range {p[c].min():g}-{p[c].max():g}"})
        else:
            summ.append({"covariate": c, "summary": ", ".join(
                f"{k}: {v}" for k, v in p[c].value_counts().sort_index().items())})
    return "<h3>Covariates</h3>" + table_html(pd.DataFrame(summ))


def _cohort_section(s, config):
    """Counts, covariates, participants per modality and session, exclusions, motion."""
    gt = s.gt
    n_sub = gt["participant_id"].nunique() if len(gt) else 0
    cards = [("participants", n_sub), ("measures", gt["measure"].nunique() if len(gt) else 0),
             ("values", len(gt)), ("exclusions", len(s.exc) if s.exc is not None else 0)]
    cohort = '<div class="cards">' + "".join(
        f'<div class="card"><b>{v}</b>{k}</div>' for k, v in cards) + "</div>"
    if s.parts is not None and len(s.parts):
        cohort += _covariates_html(s)
    if len(gt):
        counts = gt.groupby(["modality", "session"])["participant_id"].nunique().unstack(
            fill_value=0).reset_index()
        cohort += "<h3>Participants with data, per modality and session (after QC)</h3>" + \
            table_html(counts)
    cohort += "<h3>Exclusions</h3>" + table_html(s.exc, left=("reason",))
    qc_rules = ((config.get("stats") or {}).get("qc") or {}).get("rules") or []
    fd_thr = next((r["value"] for r in qc_rules if r["measure"] == "mean_fd"
                   and r["op"] in (">", ">=")), None)
    if s.has_measure("mean_fd"):
        cohort += _figure(lambda: fg.qc_motion(gt, s.baseline, s.followup, "mean_fd", fd_thr),
                          "mean framewise displacement per participant", s.problems)
    return [("cohort", "Cohort and quality control", cohort)]


def _glass_brain(atlas, labels, mean_pre, mean_post, edges, alpha):
    coords = fg.parcel_centroids(atlas, labels)
    if coords is None:
        raise ValueError(f"parcel labels of {atlas} not found in the atlas table")
    clip = 0.999999
    D = (fisher_z(mean_post.to_numpy(float), diagonal=None, clip=clip)
         - fisher_z(mean_pre.to_numpy(float), diagonal=None, clip=clip))
    np.fill_diagonal(D, np.nan)
    node = np.nanmean(D, axis=1)
    E = None
    sig = edges[edges["p"] < alpha] if edges is not None and len(edges) else None
    if sig is not None and len(sig):
        pos = {lab: i for i, lab in enumerate(labels)}
        E = np.zeros((len(labels),) * 2)
        for e in sig.itertuples():
            i, j = pos[str(e.parcel_i)], pos[str(e.parcel_j)]
            E[i, j] = E[j, i] = e.t
    return fg.glass_brain(coords, node, E, title="parcel mean FC change (Δz)")


def _nbs_interaction_html(path, s):
    """The session x arm NBS of a parallel design: settings and components."""
    try:
        summary = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc_:
        s.problems.append(f"NBS interaction: {exc_}")
        return ""
    note = f" {html.escape(summary['note'])}." if summary.get("note") else ""
    if s.crossover:
        return (f"<h3>Network-Based Statistic: session x condition</h3><p>Paired t of the "
                f"contrast of changes, {html.escape(str(s.active))} minus "
                f"{html.escape(str(s.control))}, in {summary.get('n_subjects', 0)} participants; "
                f"primary threshold {summary['thresh']:g} ({summary['tail']}), size "
                f"{summary['size']}, {'exact over' if summary['exact'] else 'Monte Carlo with'} "
                f"{summary['n_perm']} sign flips of the contrast.{note}</p>"
                + table_html(pd.DataFrame(summary.get("components", []))))
    return (f"<h3>Network-Based Statistic: session x arm</h3><p>Welch t of the change, "
            f"{html.escape(str(s.active))} ({summary.get('n_active', 0)}) minus "
            f"{html.escape(str(s.control))} ({summary.get('n_control', 0)}); primary threshold "
            f"{summary['thresh']:g} ({summary['tail']}), size {summary['size']}, "
            f"{'exact over' if summary['exact'] else 'Monte Carlo with'} {summary['n_perm']} "
            f"relabelings of the arms.{note}</p>"
            + table_html(pd.DataFrame(summary.get("components", []))))


def _connectivity_sections(s, nbs):
    """Per atlas: group-mean FC matrices, the NBS components and the glass brain."""
    sections = []
    for atlas, files in (nbs or {}).items():
        try:
            mean_pre = pd.read_csv(files["mean_baseline"], sep="\t", index_col=0,
                                   na_values=["n/a"])
            mean_post = pd.read_csv(files["mean_followup"], sep="\t", index_col=0,
                                    na_values=["n/a"])
            tmat = pd.read_csv(files["t"], sep="\t", index_col=0, na_values=["n/a"])
            summary = json.loads(Path(files["summary"]).read_text())
            edges = _read(files["edges"])
        except (OSError, ValueError, KeyError) as exc_:
            s.problems.append(f"NBS {atlas}: {exc_}")
            continue
        body = _figure(lambda: fg.fc_matrices(mean_pre, mean_post, tmat, s.baseline, s.followup,
                                              title=f"atlas {atlas}"),
                       f"FC matrices {atlas}", s.problems)
        comps = pd.DataFrame(summary.get("components", []))
        body += (f"<h3>Network-Based Statistic</h3><p>{summary['n_subjects']} participants, "
                 f"primary threshold {summary['thresh']:g} ({summary['tail']}), size "
                 f"{summary['size']}, {'exact over' if summary['exact'] else 'Monte Carlo with'} "
                 f"{summary['n_perm']} sign flips; parcels left out (missing): "
                 f"{len(summary.get('dropped_parcels', []))}; participants left out: "
                 f"{html.escape(', '.join(summary.get('left_out', [])) or 'none')}.</p>")
        body += table_html(comps)
        if files.get("interaction"):
            body += _nbs_interaction_html(files["interaction"], s)
        labels = [str(x) for x in mean_pre.index]
        glass = _figure(lambda: _glass_brain(atlas, labels, mean_pre, mean_post, edges, s.alpha),
                        f"glass brain {atlas}", s.problems)
        body += ("<h3>Glass brain</h3><p class=\"note\">Parcels: mean change of their Fisher-z "
                 f"FC with every other parcel; edges: NBS components with p &lt; {s.alpha}."
                 "</p>" + glass)
        sections.append((f"fc-{atlas}", f"Functional connectivity: {atlas}", body))
    return sections


_CHECK_COLUMNS = ["name", "planted", "realised", "estimate", "ci_low", "ci_high", "covered",
                  "n", "verdict", "expected", "agrees", "power", "power_adjusted", "note"]
_ACCURACY_COLUMNS = ["measure", "atlas", "regions", "n_participants", "session_r_min",
                     "session_r_mean", "bias_pct", "error_sd_pct", "change_bias_mean",
                     "change_bias_t", "change_r", "change_sd_estimate", "change_sd_truth"]


def _self_check_section(s, truth, effects, reference_roi, p_value="p_perm"):
    """The simulated study scored against its truth (only when the truth is given)."""
    if truth is None or effects is None:
        return []
    from prepost import validate

    tr = _read(truth, dtype={"region": str, "participant_id": str})
    eff = json.loads(Path(effects).read_text()) if not isinstance(effects, dict) else effects
    changes = eff.get("planted_changes")
    eff = eff.get("effects", eff)
    body = ('<p>The data are simulated: the simulator\'s truth is known, so the report scores '
            "itself. <i>planted</i> is the group-level change the configured effects make (Fisher "
            "z for network FC, the hierarchy compression's share included; the principal "
            "gradient's measures as noise-free runs of this length give them; VT units for VT; "
            "0 for a PET-fMRI correlation, drawn independently); <i>realised</i> is the "
            "mean true change over the participants each test used (the session-to-session "
            "variability makes it differ from the planted one); an interval should hold the "
            "realised change about 95 % of the time, and each verdict should be the one the "
            "planted change calls for. <i>power</i> is the chance that a study of this size "
            "finds the planted change, given the spread of the participants' estimated changes "
            "here (session variability and every estimation error; it assumes the estimate is "
            "unbiased, which the accuracy table below checks); <i>power_adjusted</i> the same at "
            "alpha divided by the number of hypotheses, a lower bound after Holm's adjustment: a "
            "planted change with low power is often not supported, and that is not a fault of "
            "the estimate. The estimators never read the truth.</p>")
    if s.hy is not None and len(s.hy):
        chk = validate.self_check(s.hy, s.gt, tr, eff, s.baseline, s.followup, reference_roi,
                                  arms=s.arms, active=s.active, control=s.control,
                                  conditions=s.conditions, changes=changes,
                                  p_value=p_value)
        scored = chk[chk["covered"].notna()]
        judged = chk[chk["agrees"].notna()]
        body += ('<div class="cards">'
                 f'<div class="card"><b>{int(scored["covered"].astype(bool).sum())} of '
                 f'{len(scored)}</b>intervals hold the truth</div>'
                 f'<div class="card"><b>{int(judged["agrees"].astype(bool).sum())} of '
                 f'{len(judged)}</b>verdicts as planted</div></div>')
        body += _figure(lambda: fg.self_check(chk), "self-check", s.problems)
        body += table_html(chk, _CHECK_COLUMNS)
    acc = validate.session_accuracy(s.gt, tr, s.baseline, s.followup)
    if len(acc):
        body += ("<h3>Accuracy per session and of the change</h3><p>Estimates of every session "
                 "against the truth: network FC over the 28 network pairs (Fisher z), the "
                 "principal gradient's range and network positions (their truth: the "
                 "noise-free parcel signals'), VT over the regions with a truth. <i>session_r_min</i>: the worst session's correlation "
                 "with the truth; <i>bias_pct</i> and <i>error_sd_pct</i>: mean and SD of the per "
                 "cent errors of VT over sessions and regions; "
                 "<i>change_bias_mean</i> (t over participants) and <i>change_r</i>: the "
                 "follow-up minus baseline change against the true change, pooled over "
                 "participants and regions.</p>" + table_html(acc, _ACCURACY_COLUMNS))
    return [("self-check", "Self-check against the simulated truth", body)]


def _paired_section(s, measures, anchor, name):
    """Paired (spaghetti) plots of ``measures``, one figure per measure present."""
    body = ""
    for m in measures:
        if s.has_measure(m):
            body += _figure(lambda m=m: fg.paired_panels(s.gt, m, s.baseline, s.followup,
                                                         s.max_panels, s.pt),
                            f"paired plot {m}", s.problems)
    return [(anchor, name, body)] if body else []


def _gradient_section(s):
    if not s.has_measure("gradient1_position"):
        return []
    return [("gradients", "Principal gradient", _figure(
        lambda: fg.gradient_positions(s.gt, s.baseline, s.followup), "gradient positions",
        s.problems))]


def _tac_section(s, tacs, tac_fits, tac_regions):
    """Group-mean PET time-activity curves per session, model fits dashed."""
    if not tacs:
        return []

    def draw():
        t = {k: _read(v) for k, v in tacs.items()}
        f = {k: _read(v) for k, v in (tac_fits or {}).items()} or None
        return fg.tac_curves(t, list(tac_regions), s.baseline, s.followup, fits=f)

    return [("tacs", "PET time-activity curves", _figure(draw, "TACs", s.problems))]


_INTERACTION_COLUMNS = ["modality", "atlas", "measure", "region", "n_active", "n_control",
                        "mean_change_active", "mean_change_control", "diff", "ci_t_low",
                        "ci_t_high", "hedges_g", "p_t", "p_wilcoxon", "p_perm", "p_perm_fdr_bh",
                        "p_perm_holm", "family", "note"]
_CROSSOVER_COLUMNS = ["modality", "atlas", "measure", "region", "n", "mean_change_active",
                      "mean_change_control", "diff", "ci_t_low", "ci_t_high", "cohens_dz",
                      "diff_active_first", "diff_control_first", "diff_period_adjusted", "p_t",
                      "p_wilcoxon", "p_perm", "p_perm_fdr_bh", "p_perm_holm", "family", "note"]
_PAIRED_COLUMNS = ["arm", "modality", "atlas", "measure", "region", "n", "n_dropped", "mean_pre",
                   "mean_post", "mean_diff", "pct_change", "cohens_dz", "ci_t_low", "ci_t_high",
                   "p_t", "p_wilcoxon", "p_perm", "p_perm_fdr_bh", "p_perm_holm", "family", "note"]


def _statistics_section(s):
    """Paired tests (those surviving correction first) and the mixed models' session terms."""
    body = ""
    pt, mx = s.pt, s.mx
    if pt is not None and len(pt):
        pcol = next((c for c in ("p_perm_fdr_bh", "p_perm_holm") if c in pt.columns), "p_perm")
        sig = pt[pt[pcol] < s.alpha]
        body += (f"<h3>Paired tests surviving correction ({pcol} &lt; {s.alpha})</h3>"
                 + table_html(sig, _PAIRED_COLUMNS))
        body += "<h3>All paired tests</h3>" + table_html(
            pt.sort_values([c for c in ("arm", "modality", "measure", "region")
                            if c in pt.columns]), _PAIRED_COLUMNS)
    if s.ix is not None and len(s.ix) and s.crossover:
        pcol = next((c for c in ("p_perm_fdr_bh", "p_perm_holm") if c in s.ix.columns), "p_perm")
        body += (f"<h3>Session x condition: {html.escape(str(s.active))} minus "
                 f"{html.escape(str(s.control))} change, within participants</h3><p>Mean "
                 "contrast of each participant's changes per measure and region (sign flips of "
                 "the contrast, paired t, Wilcoxon signed-rank, Cohen's d_z); <i>diff_*_first</i>: "
                 "the mean contrast of those given each condition first, and their average "
                 "(adjusted for a period effect), sorted by "
                 f"{pcol}.</p>" + table_html(s.ix.sort_values(pcol), _CROSSOVER_COLUMNS))
    elif s.ix is not None and len(s.ix):
        pcol = next((c for c in ("p_perm_fdr_bh", "p_perm_holm") if c in s.ix.columns), "p_perm")
        body += (f"<h3>Session x arm: {html.escape(str(s.active))} minus "
                 f"{html.escape(str(s.control))} change</h3><p>Difference of the arms' mean "
                 "changes per measure and region (studentized permutation of the arm labels, "
                 "Welch t, Mann-Whitney, Hedges' g), sorted by "
                 f"{pcol}.</p>"
                 + table_html(s.ix.sort_values(pcol), _INTERACTION_COLUMNS))
    if mx is not None and len(mx):
        formulas = ", ".join(dict.fromkeys(mx["formula"].astype(str)))
        body += ("<h3>Mixed models (session term)</h3>"
                 f"<p>Random intercept per participant; {html.escape(formulas)}.</p>"
                 + table_html(mx[mx["term"].astype(str).str.startswith(
                     ("session", "timepoint"))].drop(columns=["formula"])))
        body += "<details><summary>All fixed effects</summary>" + table_html(mx) + \
            "</details>"
    return [("statistics", "Statistics", body or '<p class="note">none</p>')]


def _measure_spec(label):
    """``{'measure', 'region', 'atlas'}`` of a multimodal label ``measure(region[, atlas])``."""
    m, rest = str(label).split("(", 1)
    reg = rest.rstrip(")").split(", ")
    return {"measure": m, "region": reg[0], "atlas": reg[1] if len(reg) > 1 else None}


def _multimodal_section(s):
    """The change-correlation table and a scatter plot per pair (first method)."""
    mm = s.mm
    if mm is None or not len(mm):
        return []
    body = table_html(mm)
    delta = change_scores(s.gt, s.baseline, s.followup,
                          kind=str(mm["change"].iloc[0]) if "change" in mm else "difference")
    first = mm[mm["method"] == mm["method"].iloc[0]]
    for r in first.itertuples():
        (cx, _), (cy, _) = (change_column(delta, _measure_spec(r.x)),
                            change_column(delta, _measure_spec(r.y)))
        if cx is None or cy is None:
            continue
        body += _figure(lambda cx=cx, cy=cy, r=r: fg.change_scatter(
            delta[cx], delta[cy], r.x, r.y, r.r, r.p_perm, r.method),
            f"scatter {r.name}", s.problems)
    return [("multimodal", "Multimodal: correlations of changes", body)]


_POWER_N_COLUMNS = ["name", "design", "test", "effect_size", "target", "n_target",
                    "n_target_bonferroni", "n_closed_form", "note"]


def _power_section(s, curves, n_table):
    """Power curves of a replication and the n each hypothesis needs (``stats_power``)."""
    curves, n_table = _read(curves, dtype={"region": str}), _read(n_table, dtype={"region": str})
    if curves is None or n_table is None:
        return []
    body = ("<p>How many participants would a replication need? Each hypothesis with a "
            "predicted change is simulated at every n with this study's mean and SD of the "
            "change (a control arm, where the study had none, changes by 0 with the same SD), "
            "each predicted association with this study's correlation of the changes, and "
            "judged by the same test and alpha as the hypotheses above: power is the share of "
            "simulated studies with a <i>supported</i> verdict (band: Wilson 95 % Monte Carlo "
            "interval). <i>pre/post</i>: n participants scanned twice; <i>parallel</i>: n per "
            "arm, active against control; <i>crossover</i>: n participants given both "
            "conditions, judged on the contrast of their changes (its SD: the crossover study's "
            "own, else that of two independent changes). <i>n_target</i>: the smallest n planned with power at "
            "least the target; <i>n_target_bonferroni</i>: at alpha / m over the m planned "
            "hypotheses (the hypotheses' own correction needs no more); <i>n_closed_form</i>: the "
            "t-test's closed form at the same effect size (Fisher's z for a correlation). This "
            "study's effect sizes are taken "
            "at face value: from a small study they are uncertain, and optimistic when they "
            "were found significant.</p>")
    if len(curves):
        target = float(n_table["target"].dropna().iloc[0]) if n_table["target"].notna().any() \
            else 0.8
        body += _figure(lambda: fg.power_curves(curves, target), "power curves", s.problems)
    body += table_html(n_table, _POWER_N_COLUMNS)
    return [("power", "Power planning", body)]


def _methods_section(s, config, versions, nbs):
    n_sub = s.gt["participant_id"].nunique() if len(s.gt) else 0
    paras, cites = methods_paragraphs(config, versions, n_participants=n_sub,
                                      nbs_atlases=list((nbs or {}).keys()))
    methods = "".join(f"<p>{html.escape(p)}</p>" for p in paras)
    methods += "<h3>References</h3><ol>" + "".join(
        f"<li>{html.escape(CITATIONS[k])}</li>" for k in cites) + "</ol>"
    methods += "<h3>Software versions</h3>" + table_html(
        pd.DataFrame({"package": list(versions), "version": list(versions.values())}))
    return [("methods", "Methods", methods)]


def _provenance_section(s, config, input_files):
    """Configuration and its hash, input checksums and the figures that failed."""
    sums = file_checksums(input_files)
    prov = (f"<p>Configuration sha256 (canonical JSON): <code>{config_hash(config)}</code></p>"
            f"<details><summary>Configuration</summary><pre>"
            f"{html.escape(json.dumps(config, indent=1, sort_keys=True, default=str))}</pre>"
            f"</details><h3>Input checksums (sha256)</h3>" + table_html(sums, left=("file",
                                                                              "sha256")))
    if s.problems:
        prov += "<h3>Problems while drawing</h3><ul>" + "".join(
            f"<li>{html.escape(p)}</li>" for p in s.problems) + "</ul>"
    return [("provenance", "Provenance", prov)]


def _page(sections, title, baseline, followup, chash):
    nav = "<nav><ul>" + "".join(f'<li><a href="#{a}">{html.escape(t)}</a></li>'
                                for a, t, _ in sections) + "</ul></nav>"
    body = "".join(f'<section id="{a}"><h2>{html.escape(t)}</h2>{b}</section>'
                   for a, t, b in sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body><main>"
            f"<h1>{html.escape(title)}</h1><p class=\"note\">Baseline '{html.escape(baseline)}'"
            f", follow-up '{html.escape(followup)}'; every change is follow-up minus baseline. "
            f"Configuration sha256 {chash[:12]}.</p>{nav}{body}</main></body></html>")


def _write_page(page, out_path):
    with atomic_path(out_path) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
        # a web page is for reading: the usual file mode (umask applied), not a private one
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)


def build_report(out_path, *, group_table, exclusions, paired, hypotheses, config,
                 sessions=("pre", "post"), mixed=None, multimodal=None, participants=None,
                 nbs=None, tacs=None, tac_fits=None, input_files=(), title="Pre/post study",
                 fmri_measures=(), pet_measures=(), max_panels=12, tac_regions=(),
                 alpha=0.05, versions=None, truth=None, effects=None, reference_roi=None,
                 interaction=None, power=None, power_n=None):
    """Write the report to ``out_path`` and return its problems (figures that failed).

    Parameters
    ----------
    out_path : path-like
        The HTML file.
    group_table, exclusions, paired, hypotheses, mixed, multimodal : path-like or DataFrame
        Outputs of the statistics stage (mixed and multimodal optional).
    config : dict
        The workflow configuration: methods text and its hash.
    sessions : (str, str)
        Baseline and follow-up labels.
    participants : path-like or DataFrame or None
        participants.tsv (cohort summary).
    nbs : dict or None
        ``{atlas: {'summary': json, 'edges': tsv, 't': tsv, 'mean_baseline': tsv,
        'mean_followup': tsv[, 'interaction': json]}}``: FC matrices, NBS (and the session x
        arm NBS of a parallel design) and the glass brain.
    tacs, tac_fits : dict or None
        ``{(participant, session): tsv}`` of TACs (and model curves) to plot.
    input_files : sequence of path-like
        Files whose sha256 goes into the provenance section.
    title : str
    fmri_measures, pet_measures : sequence of str
        Measures shown as paired plots.
    max_panels : int
        Most regions per paired plot.
    tac_regions : sequence of str
        TAC columns to plot.
    alpha : float
        Significance level (highlighting).
    versions : dict or None
        Software versions; None reads the installed ones.
    truth, effects : path-like or None
        The simulator's ``truth.tsv`` and ``effects.json``: when both are given, a self-check
        section scores the hypotheses and every session against them.
    reference_roi : str or None
        Reference region of DVR and BPND (their truth).
    interaction : path-like or DataFrame or None
        The session x arm table of a parallel design (``config['design']`` names the arms).
    power, power_n : path-like or DataFrame or None
        Power curves and the n per hypothesis (:mod:`prepost.stats.power`): a power-planning
        section.

    Returns
    -------
    problems : list of str
    """
    s = _read_study(group_table, exclusions, paired, hypotheses, mixed, multimodal, participants,
                    sessions, alpha, max_panels)
    s.ix = _read(interaction, dtype={"region": str, "atlas": str})
    design = config.get("design") or {}
    s.crossover = design.get("type") == "crossover"
    if s.crossover:
        s.active, s.control = design.get("active"), design.get("control")
        s.conditions = {c: (v["baseline"], v["followup"])
                        for c, v in (design.get("sessions") or {}).items()}
    if design.get("type") == "parallel" and len(s.gt):
        col = design.get("arm_column", "arm")
        parts = s.parts if s.parts is not None else pd.DataFrame(columns=["participant_id", col])
        s.arms = dict(zip(parts["participant_id"].astype(str), parts[col].astype(str))) \
            if col in parts.columns else {}
        s.active, s.control = design.get("active"), design.get("control")
    versions = versions or package_versions()
    # (anchor, title, html) in page order; provenance comes last so it lists every problem
    sections = (_cohort_section(s, config)
                + [("hypotheses", "Hypotheses", _hypothesis_table(s.hy))]
                + _self_check_section(s, truth, effects, reference_roi,
                                      (config.get("stats") or {}).get("p_value", "p_perm"))
                + _connectivity_sections(s, nbs)
                + _paired_section(s, fmri_measures, "fmri", "fMRI measures, paired")
                + _gradient_section(s)
                + _tac_section(s, tacs, tac_fits, tac_regions)
                + _paired_section(s, pet_measures, "pet", "PET measures, paired")
                + _statistics_section(s)
                + _multimodal_section(s)
                + _power_section(s, power, power_n)
                + _methods_section(s, config, versions, nbs))
    sections += _provenance_section(s, config, input_files)
    _write_page(_page(sections, title, s.baseline, s.followup, config_hash(config)), out_path)
    return s.problems
