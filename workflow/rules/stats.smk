# Stage: stats. Group table with QC exclusions, paired tests per measure and region, mixed models,
# the Network-Based Statistic on Pearson matrices, change correlations and hypothesis verdicts.
# Inputs are the tidy tables of the stages (TIDY_TABLES) plus stats.extra_tables; with none of
# them, the rules still parse and no target of this stage is requested.
from prepost.stats import group as pgroup
from prepost.stats import hypotheses as phyp

STATS = f"{RESULTS}/group"
STATS_CFG = config["stats"]
STATS_TABLES = list(TIDY_TABLES) + [str(p) for p in STATS_CFG["extra_tables"]]
STATS_ON = bool(STATS_TABLES)

# Checked while the DAG is built: hypotheses, modelled measures and multimodal pairs must name
# measures that some stage produces, and the model formula must name participants.tsv columns.
STATS_HYPOTHESES = phyp.validate_hypotheses(
    STATS_CFG["hypotheses"], extra=STATS_CFG["extra_measures"]
)
phyp.validate_measures(
    [(f"[{i}]", m) for i, m in enumerate(STATS_CFG["mixed"]["measures"])],
    "stats.mixed.measures",
    extra=STATS_CFG["extra_measures"],
)
phyp.validate_measures(
    [
        (f"[{i}].{k}", pair[k])
        for i, pair in enumerate(STATS_CFG["multimodal"]["pairs"])
        for k in ("x", "y")
    ],
    "stats.multimodal.pairs",
    extra=STATS_CFG["extra_measures"],
)
pgroup.check_formula(
    STATS_CFG["mixed"]["formula"], ["value", "session", *PARTICIPANTS.columns]
)

# NBS: the Pearson matrices of the configured atlases (default: the connectivity stage's when fMRI
# is on), tested only when a rule of the workflow makes them (or they exist).
# The connectivity stage's file name when it is part of the workflow, else the plain BIDS name.
RELMAT_PATTERNS = (
    [f"{CONN_ATLAS}_meas-pearson_relmat.tsv"] if "CONN_ATLAS" in globals() else []
) + [
    f"{RESULTS}/sub-{{subject}}/ses-{{session}}/func/"
    f"sub-{{subject}}_ses-{{session}}_task-{TASK}_atlas-{{atlas}}_meas-pearson_relmat.tsv"
]
_conn_atlas = config.get("connectivity", {}).get("atlas")
_conn_atlas = _conn_atlas.get("name") if isinstance(_conn_atlas, dict) else _conn_atlas
NBS_CANDIDATES = STATS_CFG["nbs"]["atlases"] or [
    a
    for a in [_conn_atlas, *config.get("connectivity", {}).get("atlases", [])]
    if isinstance(a, str) and a
]
_producible = lambda f: Path(f).exists() or any(
    r.is_producer(f) for r in workflow.rules
)
# {atlas: relmat pattern}: the first pattern whose files all exist, else the first that a rule
# of the workflow makes
NBS_RELMAT = {
    a: next(
        (
            p
            for p in RELMAT_PATTERNS
            if all(
                Path(f).exists()
                for f in expand(p, subject=SUBJECTS, session=SESSIONS, atlas=a)
            )
        ),
        next(
            (
                p
                for p in RELMAT_PATTERNS
                if all(
                    _producible(f)
                    for f in expand(p, subject=SUBJECTS[:1], session=SESSIONS, atlas=a)
                )
            ),
            None,
        ),
    )
    for a in dict.fromkeys(NBS_CANDIDATES)
}
NBS_ATLASES = [
    a
    for a, p in NBS_RELMAT.items()
    if p and STATS_ON and (FMRI or STATS_CFG["nbs"]["atlases"])
]
NBS_OUT = f"{STATS}/nbs/atlas-{{atlas}}_meas-pearson"

STAGE_TARGETS["stats"] = (
    [
        f"{STATS}/group_table.tsv",
        f"{STATS}/exclusions.tsv",
        f"{STATS}/paired.tsv",
        f"{STATS}/mixed.tsv",
        f"{STATS}/multimodal.tsv",
        f"{STATS}/hypotheses.tsv",
    ]
    + expand(f"{NBS_OUT}_nbs.json", atlas=NBS_ATLASES)
    if STATS_ON
    else []
)


rule stats_group_table:
    input:
        tables=STATS_TABLES,
        participants=config["participants"],
    output:
        table=f"{STATS}/group_table.tsv",
        exclusions=report(
            f"{STATS}/exclusions.tsv",
            caption="../report/exclusions.rst",
            category="Statistics",
        ),
    log:
        f"{LOGS}/stats/group_table.log",
    benchmark:
        f"{RESULTS}/benchmarks/stats/group_table.tsv"
    conda:
        "../../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        qc=STATS_CFG["qc"],
        sessions=SESSIONS,
    script:
        "../scripts/stats.py"


rule stats_paired:
    input:
        table=f"{STATS}/group_table.tsv",
    output:
        paired=report(
            f"{STATS}/paired.tsv",
            caption="../report/paired.rst",
            category="Statistics",
        ),
    log:
        f"{LOGS}/stats/paired.log",
    benchmark:
        f"{RESULTS}/benchmarks/stats/paired.tsv"
    conda:
        "../../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        paired=STATS_CFG["paired"],
        sessions=SESSIONS,
    script:
        "../scripts/stats.py"


rule stats_mixed:
    input:
        table=f"{STATS}/group_table.tsv",
    output:
        mixed=f"{STATS}/mixed.tsv",
    log:
        f"{LOGS}/stats/mixed.log",
    benchmark:
        f"{RESULTS}/benchmarks/stats/mixed.tsv"
    conda:
        "../../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        formula=STATS_CFG["mixed"]["formula"],
        measures=STATS_CFG["mixed"]["measures"],
        ci=STATS_CFG["paired"]["ci"],
        sessions=SESSIONS,
    script:
        "../scripts/stats.py"


rule stats_multimodal:
    input:
        table=f"{STATS}/group_table.tsv",
    output:
        multimodal=report(
            f"{STATS}/multimodal.tsv",
            caption="../report/multimodal.rst",
            category="Statistics",
        ),
    log:
        f"{LOGS}/stats/multimodal.log",
    benchmark:
        f"{RESULTS}/benchmarks/stats/multimodal.tsv"
    conda:
        "../../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        multimodal=STATS_CFG["multimodal"],
        sessions=SESSIONS,
    script:
        "../scripts/stats.py"


rule stats_hypotheses:
    input:
        table=f"{STATS}/group_table.tsv",
        paired=f"{STATS}/paired.tsv",
    output:
        hypotheses=report(
            f"{STATS}/hypotheses.tsv",
            caption="../report/hypotheses.rst",
            category="Statistics",
        ),
    log:
        f"{LOGS}/stats/hypotheses.log",
    benchmark:
        f"{RESULTS}/benchmarks/stats/hypotheses.tsv"
    conda:
        "../../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        hypotheses=STATS_HYPOTHESES,
        alpha=STATS_CFG["alpha"],
        p_value=STATS_CFG["p_value"],
        adjustment=STATS_CFG["hypothesis_adjustment"],
        ci=STATS_CFG["hypothesis_ci"],
        ci_level=STATS_CFG["paired"]["ci"],
        correlation={
            k: STATS_CFG["multimodal"][k]
            for k in ("change", "n_perm", "max_exact", "seed")
        },
        sessions=SESSIONS,
    script:
        "../scripts/stats.py"


rule stats_nbs:
    input:
        baseline=lambda wildcards: expand(
            NBS_RELMAT[wildcards.atlas],
            subject=SUBJECTS,
            session=SESSIONS[0],
            atlas=wildcards.atlas,
        ),
        followup=lambda wildcards: expand(
            NBS_RELMAT[wildcards.atlas],
            subject=SUBJECTS,
            session=SESSIONS[1],
            atlas=wildcards.atlas,
        ),
        exclusions=f"{STATS}/exclusions.tsv",
    output:
        summary=report(
            f"{NBS_OUT}_nbs.json",
            caption="../report/nbs.rst",
            category="Statistics",
        ),
        edges=f"{NBS_OUT}_desc-nbs_edges.tsv",
        t=f"{NBS_OUT}_stat-t_relmat.tsv",
        mean_baseline=f"{NBS_OUT}_ses-{SESSIONS[0]}_desc-mean_relmat.tsv",
        mean_followup=f"{NBS_OUT}_ses-{SESSIONS[1]}_desc-mean_relmat.tsv",
    log:
        f"{LOGS}/stats/nbs_atlas-{{atlas}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/stats/nbs_atlas-{{atlas}}.tsv"
    wildcard_constraints:
        atlas="|".join(NBS_ATLASES) or "[A-Za-z0-9]+",
    conda:
        "../../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=60,
    params:
        nbs=STATS_CFG["nbs"],
        subjects=[f"sub-{s}" for s in SUBJECTS],
        sessions=SESSIONS,
    script:
        "../scripts/stats.py"
