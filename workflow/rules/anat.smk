# Stage: anat. Per participant and session: N4 bias correction, antspyx SyN normalisation to the
# bundled MNI152 2009 template, brain mask and GM/WM/CSF probabilities carried back from the
# template, the T1w on the template grid, the transforms and a QC record.
from prepost import anat as panat

ANAT = config["anat"]
# every output of rule anat, named from BIDS entities (wildcards for sub and ses)
ANAT_OUT = panat.output_paths(
    RESULTS,
    sub="{subject}",
    ses="{session}",
    space=SPACE,
    template_resolution=ANAT["template_resolution"],
)

if FMRI or PET:
    STAGE_TARGETS["anat"] = expand(
        list(ANAT_OUT.values()),
        subject=SUBJECTS,
        session=SESSIONS,
    )


rule anat:
    input:
        t1w=get_t1w,
    output:
        **ANAT_OUT,
    log:
        f"{LOGS}/anat/sub-{{subject}}_ses-{{session}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/anat/sub-{{subject}}_ses-{{session}}.tsv"
    group:
        "session"
    conda:
        "../../envs/anat.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: attempt
        * (3000 if ANAT["template_resolution"] == 2 else 8000),
        runtime=lambda wildcards, attempt: attempt * 30,
    params:
        space=SPACE,
        template_resolution=ANAT["template_resolution"],
        transform=ANAT["transform"],
        reg_iterations=ANAT["reg_iterations"],
        bias_correction=ANAT["bias_correction"],
        refine=ANAT["refine"],
        seed=ANAT["seed"],
    script:
        "../scripts/anat.py"
