# Stage: fmri. Per participant and session: BOLD preprocessing into MNI space (built in, or read
# from fMRIPrep derivatives), fMRIPrep-style confounds, and denoising with a QC record that the
# connectivity stage reads.
from prepost.fmri import stage as pfmri

FMRI_CFG = config["fmri"]
FMRI_DENOISE = FMRI_CFG["denoise"]
FMRI_RES = pfmri.resolution_label(FMRI_CFG["resolution_mm"])
FUNC = (
    f"{RESULTS}/sub-{{subject}}/ses-{{session}}/func/"
    f"sub-{{subject}}_ses-{{session}}_task-{TASK}"
)
FUNC_MNI = f"{FUNC}_space-{SPACE}_res-{FMRI_RES}"
FUNC_LOGS = f"{LOGS}/fmri/sub-{{subject}}_ses-{{session}}"
FUNC_BENCH = f"{RESULTS}/benchmarks/fmri/sub-{{subject}}_ses-{{session}}"
FMRIPREP = FMRI and FMRI_CFG["source"] == "fmriprep"
# fMRIPrep input: every file is looked up now, at DAG time; missing ones are all named at once
FMRIPREP_FILES = (
    pfmri.check_fmriprep(
        FMRI_CFG["fmriprep_dir"],
        SUBJECTS,
        SESSIONS,
        TASK,
        FMRI_CFG["fmriprep_space"],
        FMRI_CFG["fmriprep_res"],
    )
    if FMRIPREP
    else {}
)
FUNC_PREPROC = {
    "bold": f"{FUNC_MNI}_desc-preproc_bold.nii.gz",
    "mask": f"{FUNC_MNI}_desc-brain_mask.nii.gz",
    "confounds": f"{FUNC}_desc-confounds_timeseries.tsv",
    "confounds_json": f"{FUNC}_desc-confounds_timeseries.json",
    "qc": f"{FUNC}_desc-preproc_qc.json",
    "fd_plot": f"{FUNC}_desc-fd_plot.png",
}
FUNC_DENOISED = {
    "bold": f"{FUNC_MNI}_desc-denoised_bold.nii.gz",
    "qc": f"{FUNC_MNI}_desc-denoised_qc.json",
}

if FMRI:
    STAGE_TARGETS["fmri"] = expand(
        list(FUNC_PREPROC.values()) + list(FUNC_DENOISED.values()),
        subject=SUBJECTS,
        session=SESSIONS,
    )


if not FMRIPREP:

    rule fmri_preproc:
        input:
            unpack(get_bold),
            t1w=ANAT_OUT["preproc"],
            t1w_mask=ANAT_OUT["brain_mask"],
            gm=ANAT_OUT["GM"],
            wm=ANAT_OUT["WM"],
            csf=ANAT_OUT["CSF"],
            xfm=ANAT_XFM["sidecar"],
            xfm_files=[ANAT_XFM[k] for k in ("affine", "warp")],
        output:
            **FUNC_PREPROC,
            boldref=f"{FUNC_MNI}_boldref.nii.gz",
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
            bids_dir=BIDS_DIR,
            resolution_mm=FMRI_CFG["resolution_mm"],
            dummy_scans=FMRI_CFG["dummy_scans"],
            slice_timing=FMRI_CFG["slice_timing"],
            acompcor_variance=FMRI_CFG["acompcor_variance"],
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
            **FUNC_PREPROC,
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
            resolution_mm=FMRI_CFG["resolution_mm"],
            space=SPACE,
            fmriprep_space=FMRI_CFG["fmriprep_space"],
        script:
            "../scripts/fmri.py"


rule fmri_denoise:
    input:
        bold=FUNC_PREPROC["bold"],
        mask=FUNC_PREPROC["mask"],
        confounds=FUNC_PREPROC["confounds"],
        confounds_json=FUNC_PREPROC["confounds_json"],
        preproc_qc=FUNC_PREPROC["qc"],
    output:
        **FUNC_DENOISED,
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
    script:
        "../scripts/fmri.py"
