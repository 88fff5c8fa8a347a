"""PET stage: frame motion correction (step motion), PET->T1w coregistration (coreg), ROIs, TACs
with optional partial-volume correction and the arterial input (tacs), kinetic models and the tidy
table (kinetics), parametric maps in MNI space (maps). The rule names its step in
``params.step``."""

import nibabel as nib
import numpy as np
import pandas as pd

from prepost import anat, image, io, logs
from prepost.pet import qc, stage
from prepost.pet import tacs as ptacs
from prepost.pet.preproc import resample_to_grid


def read_tsv(path):
    return pd.read_csv(path, sep="\t", na_values="n/a")


def title(wc):
    return f"sub-{wc.subject} ses-{wc.session}"


def run_motion(inp, out, p, wc, threads):
    meta, starts, durations, units = stage.pet_sidecar(inp.pet_json, p.bids_dir, inp.pet)
    corrected, table, summary = stage.motion_step(inp.pet, starts, durations,
                                                  min_start_s=p.min_start_s, method=p.method,
                                                  fwhm_mm=p.fwhm_mm)
    io.write_nifti(corrected, out.pet)
    io.write_json({**meta, "Units": units, "MotionCorrection": summary, "Sources": [str(inp.pet)]},
                  out.pet_json)
    io.write_tsv(table, out.motion, float_format="%.6g")
    qc.plot_motion(table, out.png, title=f"{title(wc)}: PET frame motion")


def run_coreg(inp, out, p, wc, threads):
    starts, durations = stage.frames_of(inp.pet_json)
    summed, pet_in_t1w, cq = stage.coreg_step(inp.pet, starts, durations, inp.t1w, inp.mask,
                                              out.xfm, window_s=p.window_s, init=p.init,
                                              n_threads=threads)
    io.write_nifti(summed, out.summed)
    io.write_json(cq, out.qc)
    qc.plot_coregistration(nib.load(inp.t1w), pet_in_t1w, out.png,
                           title=f"{title(wc)}: summed PET on T1w "
                                 f"(MI {cq['mutual_information']:.3f})")


def run_tacs(inp, out, p, wc, threads):
    # ROIs, TACs and the arterial input each read back what the one before wrote, so their
    # numbers do not depend on being computed in one job
    xfm = anat.load_transforms(inp.xfm_sidecar)
    pet_rois, t1w_rois, report = stage.rois_step(
        p.rois, t1w=inp.t1w, brain_mask=inp.mask, gm=inp.gm, wm=inp.wm, csf=inp.csf,
        mni_to_t1w=xfm["inverse"], xfm=inp.xfm, pet_ref=nib.load(inp.summed),
        min_volume_ml=p.min_volume_ml)
    io.write_nifti(stage.stack_masks(pet_rois), out.probseg)
    io.write_nifti(stage.stack_masks(t1w_rois, np.uint8), out.mask_t1w)
    report.insert(0, "index", np.arange(1, len(report) + 1))
    io.write_tsv(report, out.table, float_format="%.4f")

    meta, starts, durations, units = stage.pet_sidecar(inp.pet_json)
    names = read_tsv(out.table)["name"].tolist()
    pet_rois = stage.unstack_masks(out.probseg, names)
    gtm = {}
    if p.pvc == "gtm":
        gtm = {"t1w_rois": stage.unstack_masks(out.mask_t1w, names), "xfm": inp.xfm,
               "tissue_maps": {k: nib.load(inp[k]) for k in ("gm", "wm", "csf")},
               "roi_config": p.rois}
    df, tmeta, corr, cmeta = stage.tacs_step(inp.pet, starts, durations, pet_rois, units=units,
                                             source=str(inp.pet), pvc_method=p.pvc,
                                             psf_fwhm_mm=p.psf_fwhm_mm, **gtm)
    ptacs.write_tacs(df, tmeta, out.tacs)
    if corr is not None:
        ptacs.write_tacs(corr, cmeta, out.pvc)

    recordings = {k.removeprefix("blood_"): v for k, v in inp.items() if k.startswith("blood_")}
    if recordings:
        b = p.blood
        delay_tac = read_tsv(out.tacs)[b["delay_roi"]].to_numpy() if b["fit_delay"] else None
        df, bmeta = stage.blood_step(recordings, scan_end_s=float(starts[-1] + durations[-1]),
                                     units=units, parent_fraction_model=b["parent_fraction_model"],
                                     grid_step_s=b["grid_step_s"], fit_delay=b["fit_delay"],
                                     delay_tac=delay_tac, frame_start_s=starts,
                                     frame_duration_s=durations)
        io.write_tsv(df, out.input, float_format="%.8g")
        io.write_json(bmeta, out.input_json)


def run_kinetics(inp, out, p, wc, threads):
    tables = {"none": (read_tsv(inp.tacs), str(inp.tacs))}
    if p.pvc == "gtm":
        tables["gtm"] = (read_tsv(inp.pvc), str(inp.pvc))
    input_df = read_tsv(inp.input) if "input" in inp.keys() else None
    suv = {}
    if "pet_json" in inp.keys():
        meta, _, _, units = stage.pet_sidecar(inp.pet_json)
        dose, weight = stage.check_suv_inputs(meta, p.weight_kg, source=inp.pet_json)
        suv = {"injected_dose_bq": dose, "weight_kg": weight, "units": units}
    kin = stage.kinetics_step(tables, input_df=input_df, models=p.models,
                              reference_roi=p.reference_roi, tstar_s=p.tstar_s,
                              tstar_frames=p.tstar_frames, suvr_window_s=p.suvr_window_s, vb=p.vb,
                              vt_bounds=p.vt_bounds, bp_bounds=p.bp_bounds, k2prime=p.k2prime, **suv)
    io.write_tsv(kin, out.table, float_format="%.6g")
    long = stage.long_table(kin, p.participant_id, wc.session, p.pvc)
    io.write_tsv(long, out.long, float_format="%.6g")
    main, _ = tables[p.pvc]
    curves = stage.model_curves(main, kin[kin.pvc == p.pvc], input_df, p.reference_roi)
    fits = next(iter(curves.values())) if curves else main[["frame_start", "frame_end"]]
    io.write_tsv(fits, out.fits, float_format="%.8g")
    qc.plot_tac_fits(main, curves, out.png, regions=p.plot_regions,
                     title=f"{title(wc)}: TACs (pvc {p.pvc}) and model fits")


def run_maps(inp, out, p, wc, threads):
    starts, durations = stage.frames_of(inp.pet_json)
    xfm = anat.load_transforms(inp.xfm_sidecar)
    ref = nib.load(inp.mni_ref)
    pet_mni = stage.pet_to_mni(inp.pet, inp.xfm, xfm["forward"], ref)
    brain = anat.template_images(p.template_resolution)["brain"]
    mask = resample_to_grid(brain, ref, order=0) if brain.shape != ref.shape else brain
    input_df = read_tsv(inp.input) if "input" in inp.keys() else None
    ref_tac = read_tsv(inp.tacs)[p.reference_roi].to_numpy(float)
    suv = None
    if "SUV" in p.maps:
        meta, _, _, units = stage.pet_sidecar(inp.pet_json)
        dose, weight = stage.check_suv_inputs(meta, p.weight_kg, source=inp.pet_json)
        suv = {"injected_dose_bq": dose, "weight_kg": weight, "units": units}
    maps, _ = stage.maps_step(pet_mni, starts, durations, mask, reference_tac=ref_tac,
                              input_df=input_df, suvr_window_s=p.suvr_window_s,
                              tstar_s=p.tstar_s, tstar_frames=p.tstar_frames, vb=p.vb,
                              k2a_range=p.k2a_range, n_basis=p.n_basis, maps=p.maps, suv=suv)
    for name, img in maps.items():
        io.write_nifti(img, out[name])


STEPS = {"motion": run_motion, "coreg": run_coreg, "tacs": run_tacs, "kinetics": run_kinetics,
         "maps": run_maps}


def main(smk):
    logs.setup(smk.log[0])
    step = smk.params.step
    if step not in STEPS:
        raise ValueError(f"unknown PET step {step!r}; known steps: {sorted(STEPS)}")
    image.set_itk_threads(smk.threads)
    STEPS[step](smk.input, smk.output, smk.params, smk.wildcards, smk.threads)


main(snakemake)  # noqa: F821
