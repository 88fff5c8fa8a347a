# Stage: fmri. Per participant and session: BOLD preprocessing into MNI space (built in, or read
# from fMRIPrep derivatives), fMRIPrep-style confounds, and denoising with a QC record that the
# connectivity stage reads.
from prepost.fmri import stage as pfmri

FMRI_CFG = config["fmri"]
FMRI_DENOISE = FMRI_CFG["denoise"]
# The entities of a BOLD run: every fMRI derivative name carries them (one place to add one).
BOLD_RUN = {"sub": "{subject}", "ses": "{session}", "task": TASK}
FMRI_OUT = pfmri.output_paths(
    RESULTS,
    space=SPACE,
    res=pfmri.resolution_label(FMRI_CFG["resolution_mm"]),
    **BOLD_RUN,
)
FUNC_LOGS = f"{LOGS}/fmri/sub-{{subject}}_ses-{{session}}"
FUNC_BENCH = f"{RESULTS}/benchmarks/fmri/sub-{{subject}}_ses-{{session}}"
FMRIPREP = FMRI and FMRI_CFG["source"] == "fmriprep"
# fMRIPrep input: every file is looked up now, at DAG time; missing ones are all named at once
FMRIPREP_FILES = (
    pfmri.check_fmriprep(
        FMRI_CFG["fmriprep_dir"],
        {
            (s, ses): {k: v.format(subject=s, session=ses) for k, v in BOLD_RUN.items()}
            for s in SUBJECTS
            for ses in SESSIONS
        },
        space=FMRI_CFG["fmriprep_space"],
        res=FMRI_CFG["fmriprep_res"],
    )
    if FMRIPREP
    else {}
)
# the outputs both preprocessing rules (built in, fMRIPrep import) write
FMRI_PREPROC = {k: v for k, v in FMRI_OUT["preproc"].items() if k != "boldref"}

if FMRI:
    STAGE_TARGETS["fmri"] = expand(
        list(FMRI_PREPROC.values()) + list(FMRI_OUT["denoise"].values()),
        subject=SUBJECTS,
        session=SESSIONS,
    )


if not FMRIPREP:

    rule fmri_preproc:
        input:
            unpack(get_bold),
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
                lambda wildcards: FMRIPREP_FILES[
                    (wildcards.subject, wildcards.session)
                ]
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
