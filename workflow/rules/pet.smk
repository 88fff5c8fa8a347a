# Stage: pet. Frame motion correction, PET->T1w coregistration, ROIs, TACs (optionally partial-volume
# corrected), metabolite-corrected arterial input, kinetic models, tidy per-session table and
# voxel-wise parametric maps in MNI space at the anatomy's template resolution.
from snakemake.logging import logger

from prepost.errors import InputError
from prepost.pet import roi as proi
from prepost.pet import stage as pstage

PET_CFG = config["pet"]
# ROI definitions and the reference region are checked now, at DAG time
PET_ROI_NAMES = [r["name"] for r in proi.validate_roi_config(PET_CFG["rois"])]
if PET_CFG["reference_roi"] not in PET_ROI_NAMES:
    raise InputError(
        field="pet.reference_roi",
        expected=f"one of the ROI names {PET_ROI_NAMES}",
        found=repr(PET_CFG["reference_roi"]),
    )
if (
    "logan_ref" in PET_CFG["models"]
    and isinstance(PET_CFG["k2prime"], str)
    and PET_CFG["k2prime"] not in PET_ROI_NAMES + ["srtm"]
):
    raise InputError(
        field="pet.k2prime",
        expected=f"srtm, a number (1/min), null or one of the ROI names {PET_ROI_NAMES}",
        found=repr(PET_CFG["k2prime"]),
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
PET_MAPS = (
    ["SUVR", "BPNDsrtm"]
    + (["VTlogan"] if PET_BLOOD else [])
    + (["SUV"] if "suv" in PET_MODELS else [])
)


# every scan's frames, now: the simulated study's from its config, a user's from the sidecars
PET_FRAMES = (
    {}
    if not PET
    else (
        {
            (s, ses): (
                *psim.frame_timing(config["simulate"]["pet"]["frames"]),
                "simulate",
            )
            for s in SUBJECTS
            for ses in SESSIONS
        }
        if SIMULATED
        else pstage.scan_frames(STUDY)
    )
)
# what the scans support (static scans: SUV/SUVR only), said now; per-session windows and t*
PET_PLAN = pstage.plan_study(
    PET_FRAMES,
    models=PET_MODELS,
    maps=PET_MAPS,
    suvr_window_s=PET_CFG["suvr_window_s"],
    coreg_window_s=PET_CFG["coreg"]["window_s"],
    motion_min_start_s=PET_CFG["motion"]["min_start_s"],
    tstar_s=PET_CFG["tstar_s"],
    tstar_frames=PET_CFG["tstar_frames"],
)
for _msg in PET_PLAN["messages"]:
    logger.warning(_msg)
PET_MODELS, PET_MAPS = PET_PLAN["models"], PET_PLAN["maps"]
# a static scan fits no plasma-input model: no arterial input is built
PET_BLOOD = PET_BLOOD and PET_PLAN["kind"] == "dynamic"
# body weights for the SUV from pet.weight_column (the sidecar's BodyWeight comes first)
PET_WEIGHTS = pstage.participant_weights(
    PARTICIPANTS, PET_CFG["weight_column"], source=config["participants"]
)
# SUV needs the dose and body weight of every scan; a user's sidecars are read now (the
# simulated ones carry both and are written by the simulation)
if PET and "suv" in PET_MODELS and not SIMULATED:
    pstage.check_study_suv(
        STUDY,
        BIDS_DIR,
        PET_WEIGHTS,
        participants=config["participants"],
        weight_column=PET_CFG["weight_column"],
    )
# every PET file name, from its entities (wildcards for participant and session)
PET_OUT = pstage.output_paths(
    RESULTS,
    sub="{subject}",
    ses="{session}",
    trc=TRACER,
    space=SPACE,
    res=ANAT["template_resolution"],
    maps=PET_MAPS,
)
PET_LOGS = f"{LOGS}/pet/sub-{{subject}}_ses-{{session}}"
PET_BENCH = f"{RESULTS}/benchmarks/pet/sub-{{subject}}_ses-{{session}}"
PET_RUNS = {"subject": SUBJECTS, "session": SESSIONS}
# the T1w -> MNI transforms (forward for the maps, inverse for atlas ROIs) and their sidecar
PET_XFM = {
    f"xfm_{k}": rules.anat.output[k]
    for k in ("affine", "warp", "inverse_affine", "inverse_warp", "sidecar")
}

if PET:
    TIDY_TABLES += expand(PET_OUT["long"], **PET_RUNS)
    STAGE_TARGETS["pet"] = expand(
        [
            PET_OUT[k]
            for k in ["long", "kinetics", "motion_qc", "coreg_png", "tacs_qc"]
            + ([f"map_{m}" for m in PET_MAPS] if PET_CFG["parametric_maps"] else [])
        ],
        **PET_RUNS,
    )


rule pet_motion:
    input:
        unpack(get_pet),
    output:
        pet=PET_OUT["pet"],
        pet_json=PET_OUT["pet_json"],
        motion=PET_OUT["motion"],
        png=PET_OUT["motion_qc"],
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
        step="motion",
        bids_dir=BIDS_DIR,
        min_start_s=pstage.session_param(PET_PLAN, "motion_min_start_s"),
        method=PET_CFG["motion"]["method"],
        fwhm_mm=PET_CFG["motion"]["fwhm_mm"],
    script:
        "../scripts/pet.py"


rule pet_coreg:
    input:
        pet=rules.pet_motion.output.pet,
        pet_json=rules.pet_motion.output.pet_json,
        t1w=rules.anat.output.preproc,
        mask=rules.anat.output.brain_mask,
    output:
        xfm=PET_OUT["xfm"],
        summed=PET_OUT["summed"],
        qc=PET_OUT["coreg_qc"],
        png=PET_OUT["coreg_png"],
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
        step="coreg",
        window_s=pstage.session_param(PET_PLAN, "coreg_window_s"),
        init=PET_CFG["coreg"]["init"],
    script:
        "../scripts/pet.py"


# One job per session for the ROIs in PET space, their TACs (optionally partial-volume corrected)
# and the metabolite-corrected arterial input: each is seconds of work, and each depends on the
# one before (the input's delay is fitted to a TAC).
rule pet_tacs:
    input:
        # the session's blood recordings as blood_<recording> (none without blood)
        unpack(
            lambda wildcards: (
                {f"blood_{k}": v for k, v in get_blood(wildcards).items()}
                if PET_BLOOD
                else {}
            )
        ),
        **PET_XFM,
        t1w=rules.anat.output.preproc,
        mask=rules.anat.output.brain_mask,
        gm=rules.anat.output.GM,
        wm=rules.anat.output.WM,
        csf=rules.anat.output.CSF,
        xfm=rules.pet_coreg.output.xfm,
        summed=rules.pet_coreg.output.summed,
        pet=rules.pet_motion.output.pet,
        pet_json=rules.pet_motion.output.pet_json,
    output:
        **({"pvc": PET_OUT["pvc"], "pvc_json": PET_OUT["pvc_json"]} if PET_GTM else {}),
        **(
            {"input": PET_OUT["input"], "input_json": PET_OUT["input_json"]}
            if PET_BLOOD
            else {}
        ),
        probseg=PET_OUT["probseg"],
        mask_t1w=PET_OUT["mask_t1w"],
        table=PET_OUT["rois"],
        tacs=PET_OUT["tacs"],
        tacs_json=PET_OUT["tacs_json"],
    log:
        f"{PET_LOGS}_tacs.log",
    benchmark:
        f"{PET_BENCH}_tacs.tsv"
    group:
        "session"
    conda:
        "../../envs/pet.yaml"
    threads: 2
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=20,
    params:
        step="tacs",
        rois=PET_CFG["rois"],
        min_volume_ml=PET_CFG["min_volume_ml"],
        pvc=PET_CFG["pvc"],
        psf_fwhm_mm=PET_CFG["psf_fwhm_mm"],
        blood={
            k: PET_CFG["blood"][k]
            for k in ("parent_fraction_model", "grid_step_s", "fit_delay", "delay_roi")
        },
    script:
        "../scripts/pet.py"


rule pet_kinetics:
    input:
        **({"pvc": rules.pet_tacs.output.pvc} if PET_GTM else {}),
        **({"input": rules.pet_tacs.output.input} if PET_BLOOD else {}),
        # the SUV's dose, body weight and unit are read from the PET sidecar
        **(
            {"pet_json": rules.pet_motion.output.pet_json}
            if "suv" in PET_MODELS
            else {}
        ),
        tacs=rules.pet_tacs.output.tacs,
    output:
        table=PET_OUT["kinetics"],
        long=PET_OUT["long"],
        fits=PET_OUT["fits"],
        png=PET_OUT["tacs_qc"],
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
        step="kinetics",
        participant_id=lambda wildcards: f"sub-{wildcards.subject}",
        models=PET_MODELS,
        pvc=PET_CFG["pvc"],
        reference_roi=PET_CFG["reference_roi"],
        tstar_s=pstage.session_param(PET_PLAN, "tstar_s"),
        tstar_frames=pstage.session_param(PET_PLAN, "tstar_frames"),
        suvr_window_s=pstage.session_param(PET_PLAN, "suvr_window_s"),
        weight_kg=lambda wildcards: PET_WEIGHTS[wildcards.subject],
        vb=PET_CFG["vb"],
        vt_bounds=PET_CFG["vt_bounds"],
        bp_bounds=PET_CFG["bp_bounds"],
        k2prime=PET_CFG["k2prime"],
        plot_regions=PET_CFG["plot_regions"],
    script:
        "../scripts/pet.py"


rule pet_maps:
    input:
        **PET_XFM,
        **({"input": rules.pet_tacs.output.input} if PET_BLOOD else {}),
        pet=rules.pet_motion.output.pet,
        pet_json=rules.pet_motion.output.pet_json,
        xfm=rules.pet_coreg.output.xfm,
        mni_ref=rules.anat.output.mni_t1w,
        tacs=rules.pet_tacs.output.tacs,
    output:
        **{stat: PET_OUT[f"map_{stat}"] for stat in PET_MAPS},
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
        step="maps",
        template_resolution=ANAT["template_resolution"],
        reference_roi=PET_CFG["reference_roi"],
        suvr_window_s=pstage.session_param(PET_PLAN, "suvr_window_s"),
        tstar_s=pstage.session_param(PET_PLAN, "tstar_s"),
        tstar_frames=pstage.session_param(PET_PLAN, "tstar_frames"),
        maps=PET_MAPS,
        weight_kg=lambda wildcards: PET_WEIGHTS[wildcards.subject],
        vb=PET_CFG["vb"],
        k2a_range=PET_CFG["srtm_basis"]["k2a_range"],
        n_basis=PET_CFG["srtm_basis"]["n"],
    script:
        "../scripts/pet.py"
