# Stage: fmri. Per participant and session: BOLD preprocessing into MNI space (built in, or read
# from fMRIPrep derivatives), fMRIPrep-style confounds, and denoising with a QC record that the
# connectivity stage reads.
from prepost.fmri import stage as pfmri

FMRI_CFG = config["fmri"]
FMRI_DENOISE = FMRI_CFG["denoise"]
BOLD_FILTERS = (config["bids"].get("filters") or {}).get("bold")
# The entities of a BOLD run: every per-run fMRI derivative name carries them (one place to add
# one). {bold_run} is the run's key (prepost.fmri.stage.run_key): its entities from task- on,
# "rest" or "rest_acq-mb_run-1", so a run of task- only keeps its usual name.
BOLD_RUN = {"sub": "{subject}", "ses": "{session}", "task": "{bold_run}"}
FMRI_OUT = pfmri.output_paths(
    RESULTS,
    space=SPACE,
    res=pfmri.resolution_label(FMRI_CFG["resolution_mm"]),
    **BOLD_RUN,
)
FUNC_LOGS = f"{LOGS}/fmri/sub-{{subject}}_ses-{{session}}_task-{{bold_run}}"
FUNC_BENCH = (
    f"{RESULTS}/benchmarks/fmri/sub-{{subject}}_ses-{{session}}_task-{{bold_run}}"
)
FMRIPREP = FMRI and FMRI_CFG["source"] == "fmriprep"
# fMRIPrep input: every run is found and checked now, at DAG time; all problems named at once
FMRIPREP_FILES = (
    pfmri.check_fmriprep(
        FMRI_CFG["fmriprep_dir"],
        [(s, ses) for s in SUBJECTS for ses in SESSIONS],
        task=TASK,
        filters=BOLD_FILTERS,
        space=FMRI_CFG["fmriprep_space"],
        res=FMRI_CFG["fmriprep_res"],
        strategy=FMRI_DENOISE["strategy"],
        gsr=FMRI_DENOISE["gsr"],
    )
    if FMRIPREP
    else {}
)


# raw BOLD runs of each session (built-in preprocessing); the simulated study has one per session
BOLD_RAW = {
    (s, ses): pfmri.raw_bold_runs(
        [] if SIMULATED else STUDY[(s, ses)].bold_runs,
        task=TASK,
        default=(
            get_bold(type("W", (), {"subject": s, "session": ses}))
            if SIMULATED
            else None
        ),
    )
    for s in SUBJECTS
    for ses in SESSIONS
    if FMRI and not FMRIPREP
}
# {(subject, session): [run keys]}: every rest run of a session, each preprocessed on its own
BOLD_RUNS = {
    key: list(runs) for key, runs in (FMRIPREP_FILES if FMRIPREP else BOLD_RAW).items()
}


wildcard_constraints:
    bold_run="|".join(
        re.escape(k) for k in sorted({k for v in BOLD_RUNS.values() for k in v})
    ),


# the outputs both preprocessing rules (built in, fMRIPrep import) write
FMRI_PREPROC = {k: v for k, v in FMRI_OUT["preproc"].items() if k != "boldref"}

if FMRI:
    STAGE_TARGETS["fmri"] = [
        p.format(subject=s, session=ses, bold_run=k)
        for (s, ses), keys in BOLD_RUNS.items()
        for k in keys
        for p in list(FMRI_PREPROC.values()) + list(FMRI_OUT["denoise"].values())
    ]


if not FMRIPREP:

    rule fmri_preproc:
        input:
            unpack(
                lambda wildcards: BOLD_RAW[(wildcards.subject, wildcards.session)][
                    wildcards.bold_run
                ]
            ),
            t1w=rules.anat.output.preproc,
            t1w_mask=rules.anat.output.brain_mask,
            gm=rules.anat.output.GM,
            wm=rules.anat.output.WM,
            csf=rules.anat.output.CSF,
            xfm=rules.anat.output.sidecar,
            xfm_files=[rules.anat.output.affine, rules.anat.output.warp],
        output:
            **FMRI_OUT["preproc"],
        log:
            f"{FUNC_LOGS}_preproc.log",
        benchmark:
            f"{FUNC_BENCH}_preproc.tsv"
        group:
            "session"
        conda:
            "../../envs/fmri.yaml"
        threads: 1
        resources:
            mem_mb=lambda wildcards, attempt: attempt
            * (3000 if FMRI_CFG["resolution_mm"] >= 3 else 8000),
            runtime=lambda wildcards, attempt: attempt * 30,
        params:
            step="preproc",
            bids_dir=BIDS_DIR,
            resolution_mm=FMRI_CFG["resolution_mm"],
            dummy_scans=FMRI_CFG["dummy_scans"],
            slice_timing=FMRI_CFG["slice_timing"],
            acompcor_variance=FMRI_CFG["acompcor_variance"],
            fd_threshold=FMRI_CFG["motion_outliers"]["fd_threshold"],
            dvars_threshold=FMRI_CFG["motion_outliers"]["dvars_threshold"],
            censor_fd_threshold=FMRI_DENOISE["fd_threshold"],
            seed=ANAT["seed"],
        script:
            "../scripts/fmri.py"

else:

    rule fmri_import_fmriprep:
        input:
            unpack(
                lambda wildcards: {
                    k: v
                    for k, v in FMRIPREP_FILES[(wildcards.subject, wildcards.session)][
                        wildcards.bold_run
                    ].items()
                    if k in ("bold", "confounds", "confounds_json", "mask")
                }
            ),
        output:
            **FMRI_PREPROC,
        log:
            f"{FUNC_LOGS}_import.log",
        benchmark:
            f"{FUNC_BENCH}_import.tsv"
        group:
            "session"
        conda:
            "../../envs/fmri.yaml"
        threads: 1
        resources:
            mem_mb=lambda wildcards, attempt: 3000 * attempt,
            runtime=15,
        params:
            step="import_fmriprep",
            resolution_mm=FMRI_CFG["resolution_mm"],
            space=SPACE,
            fmriprep_space=FMRI_CFG["fmriprep_space"],
            t_r=lambda wildcards: FMRIPREP_FILES[
                (wildcards.subject, wildcards.session)
            ][wildcards.bold_run]["t_r"],
            censor_fd_threshold=FMRI_DENOISE["fd_threshold"],
        script:
            "../scripts/fmri.py"


# the rule that makes the preprocessed run: built in, or the fMRIPrep import
FMRI_PREPROC_RULE = rules.fmri_import_fmriprep if FMRIPREP else rules.fmri_preproc


rule fmri_denoise:
    input:
        bold=FMRI_PREPROC_RULE.output.bold,
        mask=FMRI_PREPROC_RULE.output.mask,
        confounds=FMRI_PREPROC_RULE.output.confounds,
        confounds_json=FMRI_PREPROC_RULE.output.confounds_json,
        preproc_qc=FMRI_PREPROC_RULE.output.qc,
    output:
        **FMRI_OUT["denoise"],
    log:
        f"{FUNC_LOGS}_denoise.log",
    benchmark:
        f"{FUNC_BENCH}_denoise.tsv"
    group:
        "session"
    conda:
        "../../envs/fmri.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: attempt
        * (3000 if FMRI_CFG["resolution_mm"] >= 3 else 8000),
        runtime=15,
    params:
        **FMRI_DENOISE,
        step="denoise",
    script:
        "../scripts/fmri.py"
