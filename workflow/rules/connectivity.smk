# Stage: connectivity. Parcel time series, FC matrices, network/graph/ALFF tables and the tidy
# per-session table from the fMRI stage's denoised BOLD; group tangent FC and aligned gradients.
from prepost.connectivity import stage as pconn

CONN = config["connectivity"]
# {atlas file label: spec}; names, custom files and the hierarchy are checked now, at DAG time
CONN_ATLASES = pconn.atlas_specs(CONN, base_dir=workflow.basedir)
pconn.check_config(CONN, CONN_ATLASES)
CONN_RES = pconn.resolution_label(config.get("fmri", {}).get("resolution_mm", 3))
CONN_FUNC = (
    f"{RESULTS}/sub-{{subject}}/ses-{{session}}/func/"
    f"sub-{{subject}}_ses-{{session}}_task-{TASK}_space-{SPACE}_res-{CONN_RES}"
)
CONN_ATLAS = f"{CONN_FUNC}_atlas-{{atlas}}"
CONN_GROUP = f"{RESULTS}/group/connectivity/atlas-{{atlas}}"
CONN_LOGS = f"{LOGS}/connectivity"
CONN_WILDCARDS = {"atlas": "|".join(CONN_ATLASES), "meas": "pearson|partial"}
CONN_IDS = [(f"sub-{s}", ses) for s in SUBJECTS for ses in SESSIONS]  # expand() order
CONN_RUNS = {"subject": SUBJECTS, "session": SESSIONS}
CONN_TIDY = expand(
    f"{CONN_ATLAS}_desc-connectivity_long.tsv", **CONN_RUNS, atlas=CONN_ATLASES
) + expand(f"{CONN_GROUP}_desc-gradients_long.tsv", atlas=CONN_ATLASES)

# the stage's targets join the workflow's when a rule of it produces the denoised BOLD
CONN_HAS_INPUT = any(
    "desc-denoised_bold" in str(f) for r in workflow.rules for f in r.output
)

if FMRI and CONN_HAS_INPUT:
    TIDY_TABLES += CONN_TIDY
    STAGE_TARGETS["connectivity"] = (
        CONN_TIDY
        + expand(
            f"{CONN_ATLAS}_meas-{{meas}}_relmat.tsv",
            **CONN_RUNS,
            atlas=CONN_ATLASES,
            meas=CONN["fc_kinds"],
        )
        + (
            expand(
                f"{CONN_GROUP}_meas-tangent_desc-groupmean_relmat.tsv",
                atlas=CONN_ATLASES,
            )
            if CONN["tangent"]
            else []
        )
        + (
            expand(
                f"{CONN_FUNC}_stat-{{stat}}_boldmap.nii.gz",
                **CONN_RUNS,
                stat=["alff", "falff"],
            )
            if CONN["alff"]["maps"]
            else []
        )
    )


rule connectivity_timeseries:
    input:
        bold=f"{CONN_FUNC}_desc-denoised_bold.nii.gz",
        mask=f"{CONN_FUNC}_desc-brain_mask.nii.gz",
        qc=f"{CONN_FUNC}_desc-denoised_qc.json",
    output:
        timeseries=f"{CONN_ATLAS}_timeseries.tsv",
        coverage=f"{CONN_ATLAS}_coverage.tsv",
    log:
        f"{CONN_LOGS}/sub-{{subject}}_ses-{{session}}_atlas-{{atlas}}_timeseries.log",
    benchmark:
        f"{RESULTS}/benchmarks/connectivity/sub-{{subject}}_ses-{{session}}_atlas-{{atlas}}_timeseries.tsv"
    wildcard_constraints:
        **CONN_WILDCARDS,
    group:
        "session"
    conda:
        "../../envs/connectivity.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 3000 * attempt,
        runtime=15,
    params:
        atlas=lambda wildcards: CONN_ATLASES[wildcards.atlas],
        min_coverage=CONN["min_coverage"],
    script:
        "../scripts/connectivity.py"


rule connectivity_fc:
    input:
        timeseries=f"{CONN_ATLAS}_timeseries.tsv",
        qc=f"{CONN_FUNC}_desc-denoised_qc.json",
    output:
        relmat=f"{CONN_ATLAS}_meas-{{meas}}_relmat.tsv",
    log:
        f"{CONN_LOGS}/sub-{{subject}}_ses-{{session}}_atlas-{{atlas}}_meas-{{meas}}_fc.log",
    benchmark:
        f"{RESULTS}/benchmarks/connectivity/sub-{{subject}}_ses-{{session}}_atlas-{{atlas}}_meas-{{meas}}_fc.tsv"
    wildcard_constraints:
        **CONN_WILDCARDS,
    group:
        "session"
    conda:
        "../../envs/connectivity.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        estimator=CONN["covariance_estimator"],
    script:
        "../scripts/connectivity.py"


rule connectivity_measures:
    input:
        timeseries=f"{CONN_ATLAS}_timeseries.tsv",
        qc=f"{CONN_FUNC}_desc-denoised_qc.json",
    output:
        network=f"{CONN_ATLAS}_desc-network_fc.tsv",
        graph=f"{CONN_ATLAS}_desc-graph_measures.tsv",
        alff=f"{CONN_ATLAS}_desc-alff_measures.tsv",
        long=f"{CONN_ATLAS}_desc-connectivity_long.tsv",
    log:
        f"{CONN_LOGS}/sub-{{subject}}_ses-{{session}}_atlas-{{atlas}}_measures.log",
    benchmark:
        f"{RESULTS}/benchmarks/connectivity/sub-{{subject}}_ses-{{session}}_atlas-{{atlas}}_measures.tsv"
    wildcard_constraints:
        **CONN_WILDCARDS,
    group:
        "session"
    conda:
        "../../envs/connectivity.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        atlas=lambda wildcards: CONN_ATLASES[wildcards.atlas],
        participant_id=lambda wildcards: f"sub-{wildcards.subject}",
        hierarchy=CONN["hierarchy"],
        densities=CONN["graph_densities"],
        regions=CONN["regions"],
        band=CONN["alff"]["band"],
    script:
        "../scripts/connectivity.py"


rule connectivity_alff_maps:
    input:
        bold=f"{CONN_FUNC}_desc-denoised_bold.nii.gz",
        mask=f"{CONN_FUNC}_desc-brain_mask.nii.gz",
        qc=f"{CONN_FUNC}_desc-denoised_qc.json",
    output:
        alff=f"{CONN_FUNC}_stat-alff_boldmap.nii.gz",
        falff=f"{CONN_FUNC}_stat-falff_boldmap.nii.gz",
    log:
        f"{CONN_LOGS}/sub-{{subject}}_ses-{{session}}_alff_maps.log",
    benchmark:
        f"{RESULTS}/benchmarks/connectivity/sub-{{subject}}_ses-{{session}}_alff_maps.tsv"
    group:
        "session"
    conda:
        "../../envs/connectivity.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 3000 * attempt,
        runtime=15,
    params:
        band=CONN["alff"]["band"],
    script:
        "../scripts/connectivity.py"


rule connectivity_tangent:
    input:
        timeseries=expand(
            f"{CONN_ATLAS}_timeseries.tsv", **CONN_RUNS, allow_missing=True
        ),
        qc=expand(f"{CONN_FUNC}_desc-denoised_qc.json", **CONN_RUNS),
    output:
        relmats=expand(
            f"{CONN_ATLAS}_meas-tangent_relmat.tsv", **CONN_RUNS, allow_missing=True
        ),
        groupmean=f"{CONN_GROUP}_meas-tangent_desc-groupmean_relmat.tsv",
    log:
        f"{CONN_LOGS}/atlas-{{atlas}}_tangent.log",
    benchmark:
        f"{RESULTS}/benchmarks/connectivity/atlas-{{atlas}}_tangent.tsv"
    wildcard_constraints:
        **CONN_WILDCARDS,
    conda:
        "../../envs/connectivity.yaml"
    threads: 2
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=30,
    params:
        estimator=CONN["covariance_estimator"],
    script:
        "../scripts/connectivity.py"


rule connectivity_gradients:
    input:
        timeseries=expand(
            f"{CONN_ATLAS}_timeseries.tsv", **CONN_RUNS, allow_missing=True
        ),
        qc=expand(f"{CONN_FUNC}_desc-denoised_qc.json", **CONN_RUNS),
    output:
        reference=f"{CONN_GROUP}_desc-reference_gradients.tsv",
        aligned=f"{CONN_GROUP}_desc-aligned_gradients.tsv",
        long=f"{CONN_GROUP}_desc-gradients_long.tsv",
    log:
        f"{CONN_LOGS}/atlas-{{atlas}}_gradients.log",
    benchmark:
        f"{RESULTS}/benchmarks/connectivity/atlas-{{atlas}}_gradients.tsv"
    wildcard_constraints:
        **CONN_WILDCARDS,
    conda:
        "../../envs/connectivity.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 3000 * attempt,
        runtime=20,
    params:
        atlas=lambda wildcards: CONN_ATLASES[wildcards.atlas],
        ids=CONN_IDS,
        n_components=CONN["gradients"]["n_components"],
        sparsity=CONN["gradients"]["sparsity"],
        kernel=CONN["gradients"]["kernel"],
        regions=CONN["regions"],
    script:
        "../scripts/connectivity.py"
