"""Anatomy of one participant and session (rule anat): bias correction, SyN normalisation to
MNI, brain mask, tissue probabilities, transforms and QC."""

from prepost import anat, image, logs

log = logs.setup(snakemake.log[0])
image.set_itk_threads(snakemake.threads)
p = snakemake.params
log.info("T1w %s -> %s (%s, template %s mm, N4 %s, refine %s, %d thread(s))",
         snakemake.input.t1w, p.space, p.transform, p.template_resolution, p.bias_correction,
         p.refine, snakemake.threads)
out = dict(snakemake.output.items())
res = anat.process_t1w(snakemake.input.t1w, transform_paths=out, space=p.space,
                       template_resolution=p.template_resolution, transform=p.transform,
                       reg_iterations=tuple(p.reg_iterations),
                       bias_correction=p.bias_correction, refine=p.refine,
                       n_threads=snakemake.threads, seed=p.seed)
anat.write_outputs(res, out)
qc = res["qc"]
log.info("template correlation %.3f, brain %.0f mL, %.1f s", qc["template_correlation"],
         qc["brain_volume_ml"], qc["seconds_total"])
