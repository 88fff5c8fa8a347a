"""Methods text of the report, generated from the configuration."""

from __future__ import annotations

__all__ = ["CITATIONS", "methods_paragraphs", "software_sentence"]

#: References cited by the methods text (key -> reference).
CITATIONS = {
    "schaefer": "Schaefer A et al. (2018) Local-global parcellation of the human cerebral cortex "
                "from intrinsic functional connectivity MRI. Cereb Cortex 28:3095-3114.",
    "power": "Power JD et al. (2012) Spurious but systematic correlations in functional "
             "connectivity MRI networks arise from subject motion. NeuroImage 59:2142-2154.",
    "margulies": "Margulies DS et al. (2016) Situating the default-mode network along a "
                 "principal gradient of macroscale cortical organization. PNAS 113:12574-12579.",
    "zou": "Zou QH et al. (2008) An improved approach to detection of amplitude of "
           "low-frequency fluctuation (ALFF) for resting-state fMRI: fractional ALFF. "
           "J Neurosci Methods 172:137-141.",
    "finnema": "Finnema SJ et al. (2018) Kinetic evaluation and test-retest reproducibility of "
               "[11C]UCB-J, a novel radioligand for positron emission tomography imaging of "
               "synaptic vesicle glycoprotein 2A in humans. J Cereb Blood Flow Metab "
               "38:2041-2052.",
    "logan": "Logan J et al. (1990) Graphical analysis of reversible radioligand binding from "
             "time-activity measurements. J Cereb Blood Flow Metab 10:740-747.",
    "nbs": "Zalesky A, Fornito A, Bullmore ET (2010) Network-based statistic: identifying "
           "differences in brain networks. NeuroImage 53:1197-1207.",
    "bh": "Benjamini Y, Hochberg Y (1995) Controlling the false discovery rate: a practical and "
          "powerful approach to multiple testing. J R Stat Soc B 57:289-300.",
    "holm": "Holm S (1979) A simple sequentially rejective multiple test procedure. Scand J "
            "Stat 6:65-70.",
    "hills": "Hills M, Armitage P (1979) The two-period cross-over clinical trial. Br J Clin "
             "Pharmacol 8:7-20.",
    "lakens": "Lakens D (2013) Calculating and reporting effect sizes to facilitate cumulative "
              "science: a practical primer for t-tests and ANOVAs. Front Psychol 4:863.",
    "nilearn": "Abraham A et al. (2014) Machine learning for neuroimaging with scikit-learn. "
               "Front Neuroinform 8:14 (nilearn).",
    "statsmodels": "Seabold S, Perktold J (2010) statsmodels: econometric and statistical "
                   "modeling with Python. Proc 9th Python in Science Conference.",
    "snakemake": "Mölder F et al. (2021) Sustainable data analysis with Snakemake. F1000Research "
                 "10:33.",
}

_METHOD_NAMES = {"fdr_bh": "Benjamini-Hochberg FDR", "holm": "Holm", "bonferroni": "Bonferroni",
                 "fdr_by": "Benjamini-Yekutieli FDR", "hommel": "Hommel", "sidak": "Sidak",
                 "holm-sidak": "Holm-Sidak", "none": "no"}
_P_NAMES = {"p_perm": "the exact sign-flip permutation test",
            "p_t": "the paired t-test", "p_wilcoxon": "the Wilcoxon signed-rank test"}


def _g(cfg, *keys, default=None):
    for k in keys:
        if not isinstance(cfg, dict) or k not in cfg:
            return default
        cfg = cfg[k]
    return cfg


def software_sentence(versions):
    """'prepost 0.1.0, snakemake 9.0, ...' from ``{name: version}``."""
    return ", ".join(f"{k} {v}" for k, v in versions.items() if v != "not installed")


def methods_paragraphs(config, versions, n_participants=None, nbs_atlases=()):
    """Methods paragraphs (plain text, one string each) and the citation keys they use.

    Parameters
    ----------
    config : dict
        The workflow configuration (validated, defaults filled).
    versions : dict
        ``{package: version}`` (:func:`prepost.provenance.package_versions`).
    n_participants : int or None
        Number of participants in the group table.
    nbs_atlases : sequence of str
        Atlases whose matrices went into the NBS.

    Returns
    -------
    paragraphs : list of str
    cites : list of str
        Keys of :data:`CITATIONS`, in order of first use.
    """
    cites = []

    def cite(*keys):
        for k in keys:
            if k not in cites:
                cites.append(k)
        return "[" + ", ".join(str(cites.index(k) + 1) for k in keys) + "]"

    ses = _g(config, "sessions", default={}) or {}
    base, fu = ses.get("baseline", "pre"), ses.get("followup", "post")
    st = _g(config, "stats", default={}) or {}
    paras = []
    who = f"{n_participants} participants" if n_participants is not None else "the participants"
    mods = _g(config, "modalities", default={}) or {}
    used = [m for m, name in (("fmri", "resting-state fMRI"), ("pet", "dynamic PET"))
            if mods.get(m, True)]
    data = "simulated data (the workflow's study simulator with planted effects)" if not \
        config.get("bids_dir") else f"the BIDS dataset {config.get('bids_dir')}"
    scans = " and ".join(n for m, n in (("fmri", "resting-state fMRI"), ("pet", "dynamic PET"))
                         if m in used)
    paras.append(
        f"Data. {who[0].upper() + who[1:]} were scanned at baseline (session '{base}') and "
        f"follow-up ('{fu}'){' with ' + scans if scans else ''} ({data}). Every difference is "
        "follow-up minus baseline.")
    conn = _g(config, "connectivity", default={}) or {}
    atlases = conn.get("atlases") or list(nbs_atlases)
    if "fmri" in used:
        parts = ["Functional connectivity was computed as the Pearson correlation of parcel time "
                 "series and Fisher z-transformed (arctanh)"]
        if atlases:
            parts.append(f" in the {', '.join(atlases)} parcellation(s) "
                         f"{cite('schaefer') if any('Schaefer' in a for a in atlases) else ''}")
        parts.append(f"; network summaries, ALFF/fALFF {cite('zou')} and the principal "
                     f"connectivity gradient {cite('margulies')} were derived per session.")
        paras.append("fMRI. " + "".join(parts))
    if "pet" in used:
        paras.append(
            f"PET. [11C]UCB-J total distribution volume (VT) was estimated per region with the "
            f"one-tissue compartment model and metabolite-corrected arterial input "
            f"{cite('finnema')} and Logan graphical analysis {cite('logan')}; outcome measures "
            "with a failed fit were flagged and excluded.")
    qc = _g(st, "qc", default={}) or {}
    rules = qc.get("rules") or []
    if rules:
        names = {"fmri": "fMRI", "pet": "PET", "all": "All"}
        txt = "; ".join(f"{names.get(r['exclude'], r['exclude'])} data of a session were "
                        f"excluded when {r['measure']} {r['op']} {r['value']}" for r in rules)
        paras.append(f"Quality control. {txt[0].upper() + txt[1:]}"
                     f"{' (framewise displacement after ' + cite('power') + ')' if any(r['measure'] == 'mean_fd' for r in rules) else ''}. "
                     + ("Values flagged by a stage (e.g. failed kinetic fits) were excluded. "
                        if qc.get("exclude_flagged", True) else "")
                     + "Each exclusion is listed with its reason.")
    pa = _g(st, "paired", default={}) or {}
    corr = [_METHOD_NAMES.get(m, m) for m in pa.get("corrections", ["fdr_bh", "holm"])]
    fam = ", ".join(pa.get("family", ["modality", "measure"]))
    paras.append(
        "Statistics. Each measure and region was tested with the paired t-test, the Wilcoxon "
        f"signed-rank test and an exact sign-flip permutation test of the mean change (all 2^n "
        f"sign patterns for n <= {pa.get('max_exact', 16)}, otherwise {pa.get('n_perm', 10000)} "
        f"random patterns); effect sizes are Cohen's dz and Hedges' g_av {cite('lakens')}, with "
        f"t and BCa bootstrap ({pa.get('n_boot', 10000)} resamples) {int(100 * pa.get('ci', 0.95))} % "
        f"intervals. p-values were corrected ({' and '.join(corr)} {cite('bh', 'holm')}) within "
        f"families defined by {fam} (and atlas). A linear mixed model with a random intercept per "
        f"participant ({_g(st, 'mixed', 'formula', default='value ~ session')}) was fitted with "
        f"statsmodels {cite('statsmodels')}.")
    design = config.get("design") or {}
    if design.get("type") == "parallel":
        act, ctl = design.get("active", "active"), design.get("control", "control")
        paras.append(
            f"Design. Parallel arms ({act} and {ctl}, participants.tsv column "
            f"'{design.get('arm_column', 'arm')}'); the paired tests above ran within each arm. "
            f"The effect of {act} is the difference between the arms' mean changes (the session x "
            "arm interaction), tested per measure and region with a studentized permutation test "
            "of the arm labels (Welch's t permuted; exact over all relabelings up to 20,000, "
            f"otherwise {pa.get('n_perm', 10000)} random ones), Welch's t-test with its interval, "
            "the Mann-Whitney test and Hedges' g, corrected within the same families; the "
            f"Network-Based Statistic tests the {act} arm's change and, with Welch's t of each "
            "edge's change and relabelings of the arms, the interaction.")
    if design.get("type") == "crossover":
        act, ctl = design.get("active", "active"), design.get("control", "control")
        ses = design.get("sessions") or {}
        labels = "; ".join(f"{c}: {ses[c]['baseline']} -> {ses[c]['followup']}"
                           for c in (act, ctl) if c in ses)
        paras.append(
            f"Design. Crossover: every participant had both conditions ({labels}), in the order "
            f"given by participants.tsv column '{design.get('order_column', 'order')}'; the "
            "paired tests above ran within each condition. The effect of "
            f"{act} is the mean within-participant contrast of changes, ({act} follow-up - "
            f"baseline) - ({ctl} follow-up - baseline), tested per measure and region with "
            "exact sign flips of the contrast (as the paired tests), the paired t-test and the "
            "Wilcoxon signed-rank test, with Cohen's d_z, corrected within the same families; "
            "the mean contrast of each order and their average (robust to a period effect "
            f"{cite('hills')}) are given beside it. The Network-Based Statistic tests the "
            f"{act} condition's change and, with the paired t of each edge's contrast and sign "
            "flips, the interaction.")
    nbs = _g(st, "nbs", default={}) or {}
    if nbs_atlases:
        paras.append(
            f"Network-Based Statistic {cite('nbs')}: paired t of the Fisher-z change per edge, "
            f"primary threshold |t| > {nbs.get('thresh', 3.0)} (tail: {nbs.get('tail', 'both')}), "
            f"component size by {nbs.get('size', 'extent')}, family-wise error from the largest "
            f"component under every sign flip (exact for n <= {nbs.get('max_exact', 16)}).")
    mm = _g(st, "multimodal", default={}) or {}
    if mm.get("pairs"):
        paras.append(
            f"Multimodal. Changes ({mm.get('change', 'difference')}) were correlated across "
            f"participants ({' and '.join(mm.get('methods', ['spearman']))}) with permutation "
            f"p-values (exact over all n! pairings for n <= {mm.get('max_exact', 8)}, otherwise "
            f"{mm.get('n_perm', 10000)} permutations) and "
            f"{_METHOD_NAMES.get(mm.get('correction', 'fdr_bh'))} correction across pairs.")
    hyps = st.get("hypotheses") or []
    if hyps:
        paras.append(
            f"Hypotheses. {len(hyps)} hypotheses were set in the configuration before analysis and "
            f"judged on {_P_NAMES.get(st.get('p_value', 'p_perm'), st.get('p_value'))} with "
            f"{_METHOD_NAMES.get(st.get('hypothesis_adjustment', 'holm'))} adjustment across them at "
            f"alpha = {st.get('alpha', 0.05)}. A predicted change or association is supported when "
            "significant in the predicted direction and 'opposite' when significant in the other; "
            "a predicted absence of change is supported when not significant and the "
            "confidence interval of the change includes 0.")
    pw = _g(st, "power", default=None)
    if hyps and pw:
        designs = {"prepost": "n participants scanned before and after",
                   "parallel": "n per arm against a control arm",
                   "crossover": "n participants given both conditions, the contrast of their "
                                "changes"}
        paras.append(
            "Power planning. The power of each hypothesis with a predicted change or "
            "association for a replication ("
            + "; ".join(designs[d] for d in pw.get("designs", ["prepost"]) if d in designs)
            + f") was estimated by Monte Carlo ({pw.get('simulations', 1000)} simulated studies "
            "per n) with the same test and alpha, each participant's change drawn "
            + ("from this study's changes, centred and resampled"
               if pw.get("sampling") == "resample" else
               "from a normal distribution with this study's mean and SD of the change (a "
               "bivariate normal with its Pearson r for a correlation)")
            + "; Wilson intervals give the Monte Carlo error, and the t-test's closed form "
            "(statsmodels) is given beside it.")
    paras.append(f"Software. {software_sentence(versions)}; workflow managed by Snakemake "
                 f"{cite('snakemake')}, figures with matplotlib and nilearn {cite('nilearn')}.")
    return paras, cites
