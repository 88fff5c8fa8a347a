# Stage: report. One self-contained HTML page from the statistics stage's tables, the NBS
# matrices and, when the PET stage makes them, the time-activity curves.
REPORT_CFG = config["report"]
REPORT_HTML = f"{RESULTS}/report/report.html"
STAGE_TARGETS["report"] = [REPORT_HTML] if STATS_ON else []

# PET time-activity curves (and model curves), included only when a rule makes them.
_tac_fmt = lambda pattern, s, ses: pattern.format(
    results=RESULTS, subject=s, session=ses, tracer=TRACER or "UCBJ"
)
REPORT_TAC_KEYS = [(f"sub-{s}", ses) for s in SUBJECTS for ses in SESSIONS]
REPORT_TACS = (
    [_tac_fmt(REPORT_CFG["tacs"], s, ses) for s in SUBJECTS for ses in SESSIONS]
    if PET
    and REPORT_CFG["tacs"]
    and all(
        _producible(_tac_fmt(REPORT_CFG["tacs"], SUBJECTS[0], ses)) for ses in SESSIONS
    )
    else []
)
REPORT_TAC_FITS = (
    [_tac_fmt(REPORT_CFG["tac_fits"], s, ses) for s in SUBJECTS for ses in SESSIONS]
    if REPORT_TACS
    and REPORT_CFG["tac_fits"]
    and all(
        _producible(_tac_fmt(REPORT_CFG["tac_fits"], SUBJECTS[0], ses))
        for ses in SESSIONS
    )
    else []
)


rule report_html:
    input:
        group_table=f"{STATS}/group_table.tsv",
        exclusions=f"{STATS}/exclusions.tsv",
        paired=f"{STATS}/paired.tsv",
        mixed=f"{STATS}/mixed.tsv",
        multimodal=f"{STATS}/multimodal.tsv",
        hypotheses=f"{STATS}/hypotheses.tsv",
        participants=config["participants"],
        tables=STATS_TABLES,
        nbs_summary=expand(f"{NBS_OUT}_nbs.json", atlas=NBS_ATLASES),
        nbs_edges=expand(f"{NBS_OUT}_desc-nbs_edges.tsv", atlas=NBS_ATLASES),
        nbs_t=expand(f"{NBS_OUT}_stat-t_relmat.tsv", atlas=NBS_ATLASES),
        nbs_mean_baseline=expand(
            f"{NBS_OUT}_ses-{SESSIONS[0]}_desc-mean_relmat.tsv", atlas=NBS_ATLASES
        ),
        nbs_mean_followup=expand(
            f"{NBS_OUT}_ses-{SESSIONS[1]}_desc-mean_relmat.tsv", atlas=NBS_ATLASES
        ),
        tacs=REPORT_TACS,
        tac_fits=REPORT_TAC_FITS,
    output:
        html=report(
            REPORT_HTML,
            caption="../report/report.rst",
            category="Report",
        ),
    log:
        f"{LOGS}/report/report.log",
    benchmark:
        f"{RESULTS}/benchmarks/report/report.tsv"
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        config=config,
        sessions=SESSIONS,
        atlases=NBS_ATLASES,
        tac_keys=REPORT_TAC_KEYS if REPORT_TACS else [],
        title=REPORT_CFG["title"],
        fmri_measures=REPORT_CFG["fmri_measures"],
        pet_measures=REPORT_CFG["pet_measures"],
        max_panels=REPORT_CFG["max_panels"],
        tac_regions=REPORT_CFG["tac_regions"],
        alpha=config["stats"]["alpha"],
    script:
        "../scripts/report.py"
