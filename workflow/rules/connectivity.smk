# Stage: connectivity. Parcel time series, FC matrices, network/graph/ALFF tables and the tidy
# per-session table from the fMRI stage's denoised BOLD; group tangent FC and aligned gradients.
# File names come from prepost.connectivity.stage.output_paths; inputs from the fMRI rules.
from prepost.connectivity import stage as pconn

CONN = config["connectivity"]
# {atlas file label: spec}; names, custom files and the hierarchy are checked now, at DAG time
CONN_ATLASES = pconn.atlas_specs(CONN, base_dir=workflow.basedir)
pconn.check_config(CONN, CONN_ATLASES)
# A session's measures combine its BOLD runs (fmri.combine_runs), so the names carry the
# session's entities and task but no run entity; with one run they are named as its BOLD.
CONN_SESSION = {"sub": "{subject}", "ses": "{session}"}
CONN_OUT = pconn.output_paths(
    RESULTS,
    space=SPACE,
    res=pfmri.resolution_label(FMRI_CFG["resolution_mm"]),
    **CONN_SESSION,
    task=TASK,
)
CONN_GROUP = pconn.group_output_paths(RESULTS)
CONN_WILDCARDS = {"atlas": "|".join(CONN_ATLASES)}
CONN_IDS = [(f"sub-{s}", ses) for s in SUBJECTS for ses in SESSIONS]  # expand() order
CONN_RUNS = {"subject": SUBJECTS, "session": SESSIONS}
# the fMRI stage's outputs that this stage reads: every run of the session
CONN_BOLD = pfmri.run_inputs(rules.fmri_denoise.output.bold, BOLD_RUNS)
CONN_MASK = pfmri.run_inputs(rules.fmri_denoise.input.mask, BOLD_RUNS)
CONN_RUN_QC = pfmri.run_inputs(rules.fmri_denoise.output.qc, BOLD_RUNS)
COMBINE_RUNS = FMRI_CFG["combine_runs"]
CONN_TIDY = expand(CONN_OUT["long"], **CONN_RUNS, atlas=CONN_ATLASES) + expand(
    CONN_GROUP["long"], atlas=CONN_ATLASES
)

if FMRI:
    TIDY_TABLES += CONN_TIDY
    STAGE_TARGETS["connectivity"] = (
        CONN_TIDY
        + expand(
            CONN_OUT["relmat"], **CONN_RUNS, atlas=CONN_ATLASES, meas=CONN["fc_kinds"]
        )
        + (
            expand(CONN_GROUP["tangent_mean"], atlas=CONN_ATLASES)
            if CONN["tangent"]
            else []
        )
        + (
            expand([CONN_OUT["alff_map"], CONN_OUT["falff_map"]], **CONN_RUNS)
            if CONN["alff"]["maps"]
            else []
        )
    )


rule connectivity_session_qc:
    input:
        qc=CONN_RUN_QC,
    output:
        qc=CONN_OUT["qc"],
    log:
        pconn.log_paths(RESULTS, "session_qc", **CONN_SESSION)["log"],
    group:
        "session"
    conda:
        "../../envs/connectivity.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        step="session_qc",
        run_keys=lambda wildcards: BOLD_RUNS[(wildcards.subject, wildcards.session)],
    script:
        "../scripts/connectivity.py"


# One job per session and atlas: the parcel time series, every FC kind and the session tables.
# Their work is seconds each, so one job saves the interpreter start and imports of three.
rule connectivity_session:
    input:
        bold=CONN_BOLD,
        mask=CONN_MASK,
        run_qc=CONN_RUN_QC,
        qc=rules.connectivity_session_qc.output.qc,
    output:
        timeseries=CONN_OUT["timeseries"],
        coverage=CONN_OUT["coverage"],
        relmats=expand(CONN_OUT["relmat"], meas=CONN["fc_kinds"], allow_missing=True),
        network=CONN_OUT["network"],
        graph=CONN_OUT["graph"],
        alff=CONN_OUT["alff"],
        long=CONN_OUT["long"],
    log:
        pconn.log_paths(RESULTS, "session", **CONN_SESSION, atlas="{atlas}")["log"],
    benchmark:
        pconn.log_paths(RESULTS, "session", **CONN_SESSION, atlas="{atlas}")[
            "benchmark"
        ]
    wildcard_constraints:
        **CONN_WILDCARDS,
    group:
        "session"
    conda:
        "../../envs/connectivity.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 3000 * attempt,
        runtime=20,
    params:
        step="session",
        atlas=lambda wildcards: CONN_ATLASES[wildcards.atlas],
        min_coverage=CONN["min_coverage"],
        fc_kinds=CONN["fc_kinds"],
        estimator=CONN["covariance_estimator"],
        participant_id=lambda wildcards: f"sub-{wildcards.subject}",
        hierarchy=CONN["hierarchy"],
        densities=CONN["graph_densities"],
        regions=CONN["regions"],
        band=CONN["alff"]["band"],
        combine_runs=COMBINE_RUNS,
    script:
        "../scripts/connectivity.py"


rule connectivity_alff_maps:
    input:
        bold=CONN_BOLD,
        mask=CONN_MASK,
        qc=CONN_RUN_QC,
    output:
        alff=CONN_OUT["alff_map"],
        falff=CONN_OUT["falff_map"],
    log:
        pconn.log_paths(RESULTS, "alff_maps", **CONN_SESSION)["log"],
    benchmark:
        pconn.log_paths(RESULTS, "alff_maps", **CONN_SESSION)["benchmark"]
    group:
        "session"
    conda:
        "../../envs/connectivity.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 3000 * attempt,
        runtime=15,
    params:
        step="alff_maps",
        band=CONN["alff"]["band"],
    script:
        "../scripts/connectivity.py"


rule connectivity_tangent:
    input:
        timeseries=expand(
            rules.connectivity_session.output.timeseries,
            **CONN_RUNS,
            allow_missing=True,
        ),
        qc=expand(rules.connectivity_session_qc.output.qc, **CONN_RUNS),
    output:
        relmats=expand(CONN_OUT["tangent"], **CONN_RUNS, allow_missing=True),
        groupmean=CONN_GROUP["tangent_mean"],
    log:
        pconn.log_paths(RESULTS, "tangent", atlas="{atlas}")["log"],
    benchmark:
        pconn.log_paths(RESULTS, "tangent", atlas="{atlas}")["benchmark"]
    wildcard_constraints:
        **CONN_WILDCARDS,
    conda:
        "../../envs/connectivity.yaml"
    threads: 2
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=30,
    params:
        step="tangent",
        estimator=CONN["covariance_estimator"],
    script:
        "../scripts/connectivity.py"


rule connectivity_gradients:
    input:
        timeseries=expand(
            rules.connectivity_session.output.timeseries,
            **CONN_RUNS,
            allow_missing=True,
        ),
        qc=expand(rules.connectivity_session_qc.output.qc, **CONN_RUNS),
    output:
        reference=CONN_GROUP["reference"],
        aligned=CONN_GROUP["aligned"],
        long=CONN_GROUP["long"],
    log:
        pconn.log_paths(RESULTS, "gradients", atlas="{atlas}")["log"],
    benchmark:
        pconn.log_paths(RESULTS, "gradients", atlas="{atlas}")["benchmark"]
    wildcard_constraints:
        **CONN_WILDCARDS,
    conda:
        "../../envs/connectivity.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 3000 * attempt,
        runtime=20,
    params:
        step="gradients",
        atlas=lambda wildcards: CONN_ATLASES[wildcards.atlas],
        ids=CONN_IDS,
        n_components=CONN["gradients"]["n_components"],
        sparsity=CONN["gradients"]["sparsity"],
        kernel=CONN["gradients"]["kernel"],
        regions=CONN["regions"],
    script:
        "../scripts/connectivity.py"
