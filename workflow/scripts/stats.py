"""Statistics stage: one branch per rule of workflow/rules/stats.smk."""

import warnings

import numpy as np
import pandas as pd

from prepost import logs
from prepost.io import write_json, write_tsv
from prepost.connectivity import stage
from prepost.connectivity.fc import fisher_z
from prepost.stats import group, hypotheses

log = logs.setup(snakemake.log[0])
p = snakemake.params
inp, out = snakemake.input, snakemake.output
rule = snakemake.rule
baseline, followup = p.sessions


def read_group(path):
    return pd.read_csv(path, sep="\t", keep_default_na=False, na_values=["n/a"],
                       dtype={"participant_id": str, "session": str, "modality": str,
                              "measure": str, "region": str, "flag": str})


if rule == "stats_group_table":
    qc = dict(p.qc)
    table, exclusions = group.build_group_table(
        list(inp.tables), inp.participants, rules=qc["rules"],
        exclude_flagged=qc["exclude_flagged"], sessions=(baseline, followup))
    log.info("group table: %d rows, %d participants, %d measures; %d exclusion records",
             len(table), table.participant_id.nunique(), table.measure.nunique(),
             len(exclusions))
    for r in exclusions.itertuples():
        log.info("excluded %s ses-%s %s %s/%s: %s", r.participant_id, r.session, r.modality,
                 r.measure, r.region, r.reason)
    write_tsv(table, out.table)
    write_tsv(exclusions, out.exclusions)

elif rule == "stats_paired":
    cfg = dict(p.paired)
    table = read_group(inp.table)
    res = group.paired_statistics(
        table, baseline=baseline, followup=followup, family=cfg["family"],
        corrections=cfg["corrections"], n_perm=cfg["n_perm"], n_boot=cfg["n_boot"],
        seed=cfg["seed"], ci=cfg["ci"], max_exact=cfg["max_exact"])
    log.info("paired tests: %d measure x region rows; %d incomplete pairs dropped in total",
             len(res), int(res.n_dropped.sum()))
    write_tsv(res, out.paired)

elif rule == "stats_mixed":
    table = read_group(inp.table)
    res = group.mixed_models(table, p.measures, formula=p.formula, baseline=baseline, ci=p.ci)
    log.info("mixed models: %d fixed-effect rows (%s)", len(res), p.formula)
    write_tsv(res, out.mixed)

elif rule == "stats_multimodal":
    cfg = dict(p.multimodal)
    table = read_group(inp.table)
    res = group.multimodal_correlations(
        table, [dict(x) for x in cfg["pairs"]], methods=cfg["methods"], baseline=baseline,
        followup=followup, change=cfg["change"], correction=cfg["correction"],
        n_perm=cfg["n_perm"], seed=cfg["seed"], max_exact=cfg["max_exact"])
    log.info("multimodal: %d pair x method rows", len(res))
    write_tsv(res, out.multimodal)

elif rule == "stats_hypotheses":
    table = read_group(inp.table)
    paired = pd.read_csv(inp.paired, sep="\t", na_values=["n/a"], keep_default_na=False,
                         dtype={"region": str})
    corr = dict(p.correlation)
    res = hypotheses.evaluate_hypotheses(
        [dict(h) for h in p.hypotheses], table, paired, baseline=baseline, followup=followup,
        alpha=p.alpha, p_column=p.p_value, adjustment=p.adjustment, ci=p.ci,
        ci_level=p.ci_level, change=corr["change"], n_perm=corr["n_perm"], seed=corr["seed"],
        max_exact=corr["max_exact"])
    for r in res.itertuples():
        log.info("hypothesis %r: %s (%s)", r.name, r.verdict, r.reason)
    write_tsv(res, out.hypotheses)

elif rule == "stats_nbs":
    cfg = dict(p.nbs)
    exc = pd.read_csv(inp.exclusions, sep="\t", keep_default_na=False)
    whole = exc[(exc.measure == "*") & exc.modality.isin(["fmri", "all"])]
    dropped = sorted(set(whole.participant_id))
    keep = [i for i, s in enumerate(p.subjects) if s not in dropped]
    if dropped:
        log.info("NBS: leaving out %s (an fMRI session excluded by QC)", dropped)
    mats = {k: [stage.read_relmat(getattr(inp, k)[i]) for i in keep]
            for k in ("baseline", "followup")}
    labels = list(stage.read_relmat(inp.baseline[0]).index.astype(str))
    for k, ms in mats.items():
        for i, m in zip(keep, ms):
            if list(m.index.astype(str)) != labels:
                raise ValueError(f"{getattr(inp, k)[i]}: parcels differ from {inp.baseline[0]}")
    shape = (0, len(labels), len(labels))
    pre = np.stack([m.to_numpy() for m in mats["baseline"]]) if keep else np.empty(shape)
    post = np.stack([m.to_numpy() for m in mats["followup"]]) if keep else np.empty(shape)
    # a run excluded upstream has an all-missing matrix: leave its participant out
    off = ~np.eye(pre.shape[1], dtype=bool)
    empty = [k for k in range(len(keep))
             if not np.isfinite(pre[k][off]).any() or not np.isfinite(post[k][off]).any()]
    if empty:
        gone = [p.subjects[keep[k]] for k in empty]
        log.info("NBS: leaving out %s (a matrix with no values)", gone)
        dropped = sorted(set(dropped) | set(gone))
        sel = [k for k in range(len(keep)) if k not in empty]
        pre, post, keep = pre[sel], post[sel], [keep[k] for k in sel]
    summary, edges, t = group.nbs_matrices(
        pre, post, labels, thresh=cfg["thresh"], tail=cfg["tail"], size=cfg["size"],
        n_perm=cfg["n_perm"], max_exact=cfg["max_exact"], seed=cfg["seed"])
    summary.update(atlas=snakemake.wildcards.atlas, participants=[p.subjects[i] for i in keep],
                   left_out=dropped, baseline=baseline, followup=followup,
                   statistic="paired t of Fisher z (arctanh) of Pearson r, followup - baseline")
    if summary.get("note"):
        log.warning("NBS %s: %s", summary["atlas"], summary["note"])
    log.info("NBS %s: %d participants, %s, %d components, p = %s", summary["atlas"],
             len(keep), "exact" if summary["exact"] else f"{summary['n_perm']} flips",
             len(summary["components"]), [c["p"] for c in summary["components"]])
    write_json(summary, out.summary)
    write_tsv(edges, out.edges)
    for key, Z in (("mean_baseline", pre), ("mean_followup", post)):
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # mean of no participant: NaN
            mz = np.nanmean(fisher_z(Z, diagonal=None), axis=0) if len(Z) else \
                np.full((len(labels),) * 2, np.nan)
        mean = pd.DataFrame(np.tanh(mz), index=labels, columns=labels)
        mean.index.name = "parcel"
        write_tsv(mean, getattr(out, key), index=True)
    t.index.name = "parcel"
    write_tsv(t, out.t, index=True)

else:
    raise ValueError(f"unknown rule {rule}")
