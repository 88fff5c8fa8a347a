# Stage: report. One self-contained HTML page from the statistics stage's tables, the NBS
# matrices and, when the PET stage runs, the time-activity curves and model fits of its rules.
from prepost.report import stage as preport

REPORT_CFG = config["report"]
REPORT_OUT = preport.output_paths(RESULTS)
STAGE_TARGETS["report"] = [REPORT_OUT["html"]] if STATS_ON else []
REPORT_TAC_KEYS = [
    (f"sub-{s}", ses) for s in SUBJECTS for ses in SESSIONS
]  # expand() order
REPORT_TACS = (
    expand(rules.pet_tacs.output.tacs, subject=SUBJECTS, session=SESSIONS)
    if PET
    else []
)
REPORT_TAC_FITS = (
    expand(rules.pet_kinetics.output.fits, subject=SUBJECTS, session=SESSIONS)
    if PET
    else []
)
# The self-check: the simulated study's truth, or a simulated dataset's sibling truth folder
# (prepost-simulate writes OUT/bids and OUT/truth). Only when a stage reads those images: tables
# from stats.extra_tables alone are not the simulated study's, and must not simulate it.
REPORT_TRUTH = psim.dataset_paths(
    BIDS_DIR, TRUTH_DIR if SIMULATED else Path(BIDS_DIR).parent / "truth"
)
REPORT_TRUTH = (
    {k: str(REPORT_TRUTH[k]) for k in ("truth", "effects")}
    if (FMRI or PET)
    and (SIMULATED or all(REPORT_TRUTH[k].exists() for k in ("truth", "effects")))
    else {"truth": [], "effects": []}
)
REPORT_NBS = {
    k: expand(f, atlas=NBS_ATLASES) for k, f in rules.stats_nbs.output.items()
}


rule report_html:
    input:
        group_table=rules.stats_group_table.output.table,
        exclusions=rules.stats_group_table.output.exclusions,
        paired=rules.stats_paired.output.paired,
        mixed=rules.stats_mixed.output.mixed,
        multimodal=rules.stats_multimodal.output.multimodal,
        hypotheses=rules.stats_hypotheses.output.hypotheses,
        interaction=STATS_OUT["interaction"] if INTERACTION else [],
        power=rules.stats_power.output.power,
        power_n=rules.stats_power.output.power_n,
        participants=config["participants"],
        tables=STATS_TABLES,
        nbs_summary=REPORT_NBS["summary"],
        nbs_edges=REPORT_NBS["edges"],
        nbs_t=REPORT_NBS["t"],
        nbs_mean_baseline=REPORT_NBS["mean_baseline"],
        nbs_mean_followup=REPORT_NBS["mean_followup"],
        nbs_interaction=(
            expand(NBS_INTERACTION_OUT["summary"], atlas=NBS_ATLASES)
            if INTERACTION
            else []
        ),
        tacs=REPORT_TACS,
        tac_fits=REPORT_TAC_FITS,
        truth=REPORT_TRUTH["truth"],
        effects=REPORT_TRUTH["effects"],
    output:
        html=report(
            REPORT_OUT["html"],
            caption="../report/report.rst",
            category="Report",
        ),
    log:
        REPORT_OUT["log"],
    benchmark:
        REPORT_OUT["benchmark"]
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        step="html",
        config=config,
        sessions=PAIR,
        atlases=NBS_ATLASES,
        tac_keys=REPORT_TAC_KEYS if PET else [],
        title=REPORT_CFG["title"],
        fmri_measures=REPORT_CFG["fmri_measures"],
        pet_measures=REPORT_CFG["pet_measures"],
        max_panels=REPORT_CFG["max_panels"],
        tac_regions=REPORT_CFG["tac_regions"],
        alpha=config["stats"]["alpha"],
        reference_roi=config["pet"]["reference_roi"],
    script:
        "../scripts/report.py"
