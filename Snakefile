# Pre/post multimodal brain imaging workflow: resting fMRI + dynamic [11C]UCB-J PET.
# The study protocol lives in config/config.yaml; the science lives in the prepost package (src/).
import os

from snakemake.utils import min_version

min_version("9.0")


# This workflow's folder, also when another workflow imports it as a module (workflow.basedir is
# then the importing workflow's folder).
PREPOST_DIR = os.path.dirname(os.path.abspath(workflow.snakefile))


# The shipped protocol is the base; --configfile/--config override it key by key. Used as a
# module, the importing workflow's config replaces it (module ... config: config).
configfile: os.path.join(PREPOST_DIR, "config", "config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/bids.smk"
include: "workflow/rules/anat.smk"
include: "workflow/rules/fmri.smk"
include: "workflow/rules/connectivity.smk"
include: "workflow/rules/pet.smk"
include: "workflow/rules/stats.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_outputs(),
