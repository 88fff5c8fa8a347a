"""fMRI stage, one run: built-in preprocessing (rule fmri_preproc), import of fMRIPrep
derivatives (fmri_import_fmriprep) and denoising (fmri_denoise); the rule names its step in
``params.step``."""

import json

from prepost import bids, image, io, logs
from prepost.fmri import confounds as fconf
from prepost.fmri import stage


def run_preproc(inp, out, p, wildcards):
    meta = bids.sidecar(p.bids_dir, inp.bold)
    meta = meta[0] if isinstance(meta, tuple) else meta  # (merged dict, files used)
    res = stage.preprocess_bold(
        inp.bold, inp.t1w, inp.t1w_mask, {"GM": inp.gm, "WM": inp.wm, "CSF": inp.csf}, inp.xfm,
        t_r=meta.get("RepetitionTime"), slice_timing=meta.get("SliceTiming"),
        dummy_scans=p.dummy_scans, slice_timing_correction=p.slice_timing,
        resolution_mm=p.resolution_mm, acompcor_variance=p.acompcor_variance,
        fd_threshold=p.fd_threshold, dvars_threshold=p.dvars_threshold, seed=p.seed,
        n_threads=snakemake.threads)
    io.write_nifti(res["bold"], out.bold)
    io.write_nifti(res["mask"], out.mask)
    io.write_nifti(res["boldref"], out.boldref)
    fconf.write_confounds(res["confounds"], res["metadata"], out.confounds)
    io.write_json(res["qc"], out.qc)
    stage.plot_fd(res["confounds"], out.fd_plot, fd_threshold=p.censor_fd_threshold,
                  title=_run_label(wildcards))
    log.info("preprocessed in %.1f s", res["qc"]["seconds"]["total"])


def run_import_fmriprep(inp, out, p, wildcards):
    # TR of the derivative (its JSON, else its header), read when the DAG was built
    qc = stage.import_fmriprep(inp.bold, inp.confounds, out.bold, out.mask, out.confounds,
                               mask=inp.get("mask"), resolution_mm=p.resolution_mm, t_r=p.t_r)
    if p.fmriprep_space != p.space:
        log.warning("fMRIPrep space %s written under the label %s", p.fmriprep_space, p.space)
    qc.update(fmriprep_space=p.fmriprep_space, space=p.space)
    io.write_json(qc, out.qc)
    df, _ = fconf.read_confounds(out.confounds)
    stage.plot_fd(df, out.fd_plot, fd_threshold=p.censor_fd_threshold,
                  title=f"{_run_label(wildcards)} (fMRIPrep)")


def run_denoise(inp, out, p, wildcards):
    pre = json.loads(open(inp.preproc_qc).read())
    extra = {k: pre[k] for k in ("coregistration_abs_corr", "coregistration_mattes_mi",
                                 "motion_reference_volume", "max_fd", "dummy_source",
                                 "slice_timing_corrected", "source") if k in pre}
    extra["bold_run"] = wildcards.bold_run
    img, qc = stage.denoise_run(
        inp.bold, inp.mask, inp.confounds, strategy=p.strategy, gsr=p.gsr,
        fd_threshold=p.fd_threshold, dvars_threshold=p.dvars_threshold,
        min_segment=p.min_segment, low_pass=p.low_pass, high_pass=p.high_pass,
        smoothing_fwhm=p.smoothing_fwhm, min_retained_s=p.min_retained_s, extra_qc=extra)
    io.write_nifti(img, out.bold)
    io.write_json(qc, out.qc)


def _run_label(wildcards):
    # a run named by its task alone (one run per session) keeps the short title
    extra = f"_task-{wildcards.bold_run}" if "_" in wildcards.bold_run else ""
    return f"sub-{wildcards.subject}_ses-{wildcards.session}{extra}"


STEPS = {"preproc": run_preproc, "import_fmriprep": run_import_fmriprep, "denoise": run_denoise}

log = logs.setup(snakemake.log[0])
step = snakemake.params.step
if step not in STEPS:
    raise ValueError(f"unknown fMRI step {step!r}; known steps: {sorted(STEPS)}")
image.set_itk_threads(snakemake.threads)
STEPS[step](snakemake.input, snakemake.output, snakemake.params, snakemake.wildcards)
