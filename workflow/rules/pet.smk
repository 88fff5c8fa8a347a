# Stage: pet. Frame motion correction, PET->T1w coregistration, ROIs, TACs (optionally partial-volume
# corrected), metabolite-corrected arterial input, kinetic models, tidy per-session table and
# voxel-wise parametric maps in MNI space.
from prepost import anat as panat
from prepost.errors import InputError
from prepost.pet import roi as proi

PET_CFG = config["pet"]
# ROI definitions and the reference region are checked now, at DAG time
PET_ROI_NAMES = [r["name"] for r in proi.validate_roi_config(PET_CFG["rois"])]
if PET_CFG["reference_roi"] not in PET_ROI_NAMES:
    raise InputError(
        field="pet.reference_roi",
        expected=f"one of the ROI names {PET_ROI_NAMES}",
        found=repr(PET_CFG["reference_roi"]),
    )
PET_PLASMA_MODELS = {"1tcm", "2tcm", "logan", "ma1"}
# plasma-input models need arterial blood in every session
PET_BLOOD = PET and all(
    get_blood(type("W", (), {"subject": s, "session": ses}))
    for s in SUBJECTS
    for ses in SESSIONS
)
PET_MODELS = [m for m in PET_CFG["models"] if PET_BLOOD or m not in PET_PLASMA_MODELS]
PET_GTM = PET_CFG["pvc"] == "gtm"
PET_MAPS = ["SUVR", "BPNDsrtm"] + (["VTlogan"] if PET_BLOOD else [])
PET_ANAT = (
    f"{RESULTS}/sub-{{subject}}/ses-{{session}}/anat/sub-{{subject}}_ses-{{session}}"
)
PET_XFM = {
    f"xfm_{k}": str(v) for k, v in panat.transform_paths(PET_ANAT, space=SPACE).items()
}
PET_T = (
    f"{RESULTS}/sub-{{subject}}/ses-{{session}}/pet/sub-{{subject}}_ses-{{session}}"
    + (f"_trc-{TRACER}" if TRACER else "")
)
PET_MNI = f"{PET_T}_space-{SPACE}_res-2"
PET_LOGS = f"{LOGS}/pet/sub-{{subject}}_ses-{{session}}"
PET_BENCH = f"{RESULTS}/benchmarks/pet/sub-{{subject}}_ses-{{session}}"
PET_RUNS = {"subject": SUBJECTS, "session": SESSIONS}

if PET:
    TIDY_TABLES += expand(f"{PET_T}_desc-pet_long.tsv", **PET_RUNS)
    STAGE_TARGETS["pet"] = (
        expand(f"{PET_T}_desc-pet_long.tsv", **PET_RUNS)
        + expand(f"{PET_T}_desc-kinetics_table.tsv", **PET_RUNS)
        + expand(
            f"{PET_T}_desc-{{qc}}_qc.png", **PET_RUNS, qc=["motion", "coreg", "tacs"]
        )
        + (
            expand(f"{PET_MNI}_stat-{{stat}}_petmap.nii.gz", **PET_RUNS, stat=PET_MAPS)
            if PET_CFG["parametric_maps"]
            else []
        )
    )


rule pet_motion:
    input:
        unpack(get_pet),
    output:
        pet=f"{PET_T}_desc-mc_pet.nii.gz",
        pet_json=f"{PET_T}_desc-mc_pet.json",
        motion=f"{PET_T}_desc-motion_timeseries.tsv",
        png=f"{PET_T}_desc-motion_qc.png",
    log:
        f"{PET_LOGS}_motion.log",
    benchmark:
        f"{PET_BENCH}_motion.tsv"
    group:
        "session"
    conda:
        "../../envs/pet.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=20,
    params:
        bids_dir=BIDS_DIR,
        min_start_s=PET_CFG["motion"]["min_start_s"],
        method=PET_CFG["motion"]["method"],
        fwhm_mm=PET_CFG["motion"]["fwhm_mm"],
    script:
        "../scripts/pet.py"


rule pet_coreg:
    input:
        pet=f"{PET_T}_desc-mc_pet.nii.gz",
        pet_json=f"{PET_T}_desc-mc_pet.json",
        t1w=f"{PET_ANAT}_desc-preproc_T1w.nii.gz",
        mask=f"{PET_ANAT}_desc-brain_mask.nii.gz",
    output:
        xfm=f"{PET_T}_from-pet_to-T1w_mode-image_xfm.mat",
        summed=f"{PET_T}_desc-summed_pet.nii.gz",
        qc=f"{PET_T}_desc-coreg_qc.json",
        png=f"{PET_T}_desc-coreg_qc.png",
    log:
        f"{PET_LOGS}_coreg.log",
    benchmark:
        f"{PET_BENCH}_coreg.tsv"
    group:
        "session"
    conda:
        "../../envs/pet.yaml"
    # one ITK thread: multi-threaded ANTs registration differs between runs
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 3000 * attempt,
        runtime=15,
    params:
        window_s=PET_CFG["coreg"]["window_s"],
        init=PET_CFG["coreg"]["init"],
    script:
        "../scripts/pet.py"


rule pet_rois:
    input:
        **PET_XFM,
        t1w=f"{PET_ANAT}_desc-preproc_T1w.nii.gz",
        mask=f"{PET_ANAT}_desc-brain_mask.nii.gz",
        gm=f"{PET_ANAT}_label-GM_probseg.nii.gz",
        wm=f"{PET_ANAT}_label-WM_probseg.nii.gz",
        csf=f"{PET_ANAT}_label-CSF_probseg.nii.gz",
        xfm=f"{PET_T}_from-pet_to-T1w_mode-image_xfm.mat",
        summed=f"{PET_T}_desc-summed_pet.nii.gz",
    output:
        probseg=f"{PET_T}_seg-study_probseg.nii.gz",
        mask_t1w=f"{PET_T}_space-T1w_seg-study_mask.nii.gz",
        table=f"{PET_T}_seg-study_rois.tsv",
    log:
        f"{PET_LOGS}_rois.log",
    benchmark:
        f"{PET_BENCH}_rois.tsv"
    group:
        "session"
    conda:
        "../../envs/pet.yaml"
    threads: 2
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=15,
    params:
        rois=PET_CFG["rois"],
        min_volume_ml=PET_CFG["min_volume_ml"],
    script:
        "../scripts/pet.py"


rule pet_tacs:
    input:
        **(
            {
                "mask_t1w": f"{PET_T}_space-T1w_seg-study_mask.nii.gz",
                "xfm": f"{PET_T}_from-pet_to-T1w_mode-image_xfm.mat",
                "gm": f"{PET_ANAT}_label-GM_probseg.nii.gz",
                "wm": f"{PET_ANAT}_label-WM_probseg.nii.gz",
                "csf": f"{PET_ANAT}_label-CSF_probseg.nii.gz",
            }
            if PET_GTM
            else {}
        ),
        pet=f"{PET_T}_desc-mc_pet.nii.gz",
        pet_json=f"{PET_T}_desc-mc_pet.json",
        probseg=f"{PET_T}_seg-study_probseg.nii.gz",
        table=f"{PET_T}_seg-study_rois.tsv",
    output:
        **(
            {
                "pvc": f"{PET_T}_seg-study_desc-gtm_tacs.tsv",
                "pvc_json": f"{PET_T}_seg-study_desc-gtm_tacs.json",
            }
            if PET_GTM
            else {}
        ),
        tacs=f"{PET_T}_seg-study_tacs.tsv",
        tacs_json=f"{PET_T}_seg-study_tacs.json",
    log:
        f"{PET_LOGS}_tacs.log",
    benchmark:
        f"{PET_BENCH}_tacs.tsv"
    group:
        "session"
    conda:
        "../../envs/pet.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=10,
    params:
        pvc=PET_CFG["pvc"],
        psf_fwhm_mm=PET_CFG["psf_fwhm_mm"],
        rois=PET_CFG["rois"],
    script:
        "../scripts/pet.py"


rule pet_blood:
    input:
        unpack(get_blood),
        **(
            {"tacs": f"{PET_T}_seg-study_tacs.tsv"}
            if PET_CFG["blood"]["fit_delay"]
            else {}
        ),
        pet_json=f"{PET_T}_desc-mc_pet.json",
    output:
        input=f"{PET_T}_desc-input_blood.tsv",
        input_json=f"{PET_T}_desc-input_blood.json",
    log:
        f"{PET_LOGS}_blood.log",
    benchmark:
        f"{PET_BENCH}_blood.tsv"
    group:
        "session"
    conda:
        "../../envs/pet.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        model=PET_CFG["blood"]["parent_fraction_model"],
        grid_step_s=PET_CFG["blood"]["grid_step_s"],
        fit_delay=PET_CFG["blood"]["fit_delay"],
        delay_roi=PET_CFG["blood"]["delay_roi"],
    script:
        "../scripts/pet.py"


rule pet_kinetics:
    input:
        **({"pvc": f"{PET_T}_seg-study_desc-gtm_tacs.tsv"} if PET_GTM else {}),
        **({"input": f"{PET_T}_desc-input_blood.tsv"} if PET_BLOOD else {}),
        tacs=f"{PET_T}_seg-study_tacs.tsv",
        pet_json=f"{PET_T}_desc-mc_pet.json",
    output:
        table=f"{PET_T}_desc-kinetics_table.tsv",
        long=f"{PET_T}_desc-pet_long.tsv",
        fits=f"{PET_T}_seg-study_desc-fits_tacs.tsv",
        png=f"{PET_T}_desc-tacs_qc.png",
    log:
        f"{PET_LOGS}_kinetics.log",
    benchmark:
        f"{PET_BENCH}_kinetics.tsv"
    group:
        "session"
    conda:
        "../../envs/pet.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        participant_id=lambda wildcards: f"sub-{wildcards.subject}",
        models=PET_MODELS,
        pvc=PET_CFG["pvc"],
        reference_roi=PET_CFG["reference_roi"],
        tstar_s=PET_CFG["tstar_s"],
        suvr_window_s=PET_CFG["suvr_window_s"],
        vb=PET_CFG["vb"],
        vt_bounds=PET_CFG["vt_bounds"],
        bp_bounds=PET_CFG["bp_bounds"],
        plot_regions=PET_CFG["plot_regions"],
    script:
        "../scripts/pet.py"


rule pet_maps:
    input:
        **PET_XFM,
        **({"input": f"{PET_T}_desc-input_blood.tsv"} if PET_BLOOD else {}),
        pet=f"{PET_T}_desc-mc_pet.nii.gz",
        pet_json=f"{PET_T}_desc-mc_pet.json",
        xfm=f"{PET_T}_from-pet_to-T1w_mode-image_xfm.mat",
        mni_ref=f"{PET_ANAT}_space-{SPACE}_res-2_desc-preproc_T1w.nii.gz",
        tacs=f"{PET_T}_seg-study_tacs.tsv",
    output:
        **{stat: f"{PET_MNI}_stat-{stat}_petmap.nii.gz" for stat in PET_MAPS},
    log:
        f"{PET_LOGS}_maps.log",
    benchmark:
        f"{PET_BENCH}_maps.tsv"
    group:
        "session"
    conda:
        "../../envs/pet.yaml"
    threads: 2
    resources:
        mem_mb=lambda wildcards, attempt: 6000 * attempt,
        runtime=15,
    params:
        reference_roi=PET_CFG["reference_roi"],
        suvr_window_s=PET_CFG["suvr_window_s"],
        tstar_s=PET_CFG["tstar_s"],
        vb=PET_CFG["vb"],
        k2a_range=PET_CFG["srtm_basis"]["k2a_range"],
        n_basis=PET_CFG["srtm_basis"]["n"],
    script:
        "../scripts/pet.py"
