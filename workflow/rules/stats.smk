# Stage: stats. Group table with QC exclusions, paired tests per measure and region, mixed models,
# the Network-Based Statistic on Pearson matrices, change correlations and hypothesis verdicts.
# Inputs are the tidy tables of the stages (TIDY_TABLES) plus stats.extra_tables; with none of
# them, the rules still parse and no target of this stage is requested.
from prepost.errors import ConfigError
from prepost.stats import covariates as pcov
from prepost.stats import group as pgroup
from prepost.stats import hypotheses as phyp
from prepost.stats import stage as pstats

STATS_CFG = config["stats"]
# parallel and crossover designs test the session x arm (condition) interaction
INTERACTION = PARALLEL or CROSSOVER
CONTROL_PAIR = list(CONDITION_SESSIONS[DESIGN["control"]]) if CROSSOVER else []
STATS_TABLES = list(TIDY_TABLES) + [str(p) for p in STATS_CFG["extra_tables"]]
STATS_ON = bool(STATS_TABLES)

# Checked while the DAG is built: hypotheses, modelled measures and multimodal pairs must name
# measures that some stage produces, and the model formula must name participants.tsv columns.
STATS_HYPOTHESES = phyp.validate_hypotheses(
    STATS_CFG["hypotheses"],
    extra=STATS_CFG["extra_measures"],
    arms=[DESIGN["active"], DESIGN["control"]] if INTERACTION else None,
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
# participants.tsv columns enter formulas under their formula terms ('Age' -> age)
STATS_TERMS = pcov.covariate_terms(PARTICIPANTS.columns, source=config["participants"])
pgroup.check_formula(
    STATS_CFG["mixed"]["formula"],
    [
        "value",
        "session",
        *STATS_TERMS.values(),
        *(pcross.CONDITION_COLUMNS if CROSSOVER else ()),
    ],
    terms=STATS_TERMS,
)

# NBS: the Pearson matrices of the connectivity stage (stats.nbs.atlases, or every atlas of it)
_nbs_unknown = sorted(set(STATS_CFG["nbs"]["atlases"]) - set(CONN_ATLASES))
if _nbs_unknown:
    raise ConfigError(
        None,
        "stats.nbs.atlases",
        f"atlases of connectivity.atlases {list(CONN_ATLASES)}",
        _nbs_unknown,
    )
NBS_ATLASES = (
    list(STATS_CFG["nbs"]["atlases"] or CONN_ATLASES) if FMRI and STATS_ON else []
)
NBS_RELMAT = CONN_OUT["relmat"]
NBS_OUT = pstats.nbs_output_paths(
    RESULTS, atlas="{atlas}", baseline=PAIR[0], followup=PAIR[1]
)
# parallel and crossover designs: the NBS of the session x arm (condition) interaction as well
NBS_INTERACTION_OUT = pstats.nbs_output_paths(
    RESULTS,
    atlas="{atlas}",
    baseline=PAIR[0],
    followup=PAIR[1],
    interaction=True,
)
STATS_OUT = pstats.output_paths(RESULTS, interaction=INTERACTION)
# NBS tests the pre/post change of one arm: the active one in a parallel design
NBS_SUBJECTS = [
    s for s in SUBJECTS if not PARALLEL or ARMS[f"sub-{s}"] == DESIGN["active"]
]
STATS_LOG = lambda step: pstats.log_paths(RESULTS, step)

STAGE_TARGETS["stats"] = (
    list(STATS_OUT.values())
    + expand(NBS_OUT["summary"], atlas=NBS_ATLASES)
    + (expand(NBS_INTERACTION_OUT["summary"], atlas=NBS_ATLASES) if INTERACTION else [])
    if STATS_ON
    else []
)


rule stats_group_table:
    input:
        tables=STATS_TABLES,
        participants=config["participants"],
    output:
        table=STATS_OUT["table"],
        exclusions=report(
            STATS_OUT["exclusions"],
            caption="../report/exclusions.rst",
            category="Statistics",
        ),
        covariates=STATS_OUT["covariates"],
    log:
        STATS_LOG("group_table")["log"],
    benchmark:
        STATS_LOG("group_table")["benchmark"]
    conda:
        "../../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        step="group_table",
        qc=STATS_CFG["qc"],
        sessions=SESSIONS,
        conditions=CONDITION_SESSIONS or None,
        orders=ORDERS or None,
    script:
        "../scripts/stats.py"


rule stats_paired:
    input:
        table=rules.stats_group_table.output.table,
    output:
        paired=report(
            STATS_OUT["paired"],
            caption="../report/paired.rst",
            category="Statistics",
        ),
    log:
        STATS_LOG("paired")["log"],
    benchmark:
        STATS_LOG("paired")["benchmark"]
    conda:
        "../../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        step="paired",
        paired=STATS_CFG["paired"],
        sessions=PAIR,
        arms=ARMS or None,
        conditions=CONDITION_SESSIONS or None,
    script:
        "../scripts/stats.py"


rule stats_mixed:
    input:
        table=rules.stats_group_table.output.table,
    output:
        mixed=STATS_OUT["mixed"],
    log:
        STATS_LOG("mixed")["log"],
    benchmark:
        STATS_LOG("mixed")["benchmark"]
    conda:
        "../../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        step="mixed",
        formula=STATS_CFG["mixed"]["formula"],
        measures=STATS_CFG["mixed"]["measures"],
        ci=STATS_CFG["paired"]["ci"],
        sessions=PAIR,
        # reference levels: the control condition and the baseline timepoint of a crossover
        references=(
            {"condition": DESIGN["control"], "timepoint": pcross.TIMEPOINTS[0]}
            if CROSSOVER
            else {}
        ),
    script:
        "../scripts/stats.py"


rule stats_multimodal:
    input:
        table=rules.stats_group_table.output.table,
    output:
        multimodal=report(
            STATS_OUT["multimodal"],
            caption="../report/multimodal.rst",
            category="Statistics",
        ),
    log:
        STATS_LOG("multimodal")["log"],
    benchmark:
        STATS_LOG("multimodal")["benchmark"]
    conda:
        "../../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        step="multimodal",
        multimodal=STATS_CFG["multimodal"],
        sessions=PAIR,
    script:
        "../scripts/stats.py"


if INTERACTION:

    rule stats_interaction:
        input:
            table=rules.stats_group_table.output.table,
        output:
            interaction=report(
                STATS_OUT["interaction"],
                caption="../report/interaction.rst",
                category="Statistics",
            ),
        log:
            STATS_LOG("interaction")["log"],
        benchmark:
            STATS_LOG("interaction")["benchmark"]
        conda:
            "../../envs/stats.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=30,
        params:
            step="interaction",
            paired=STATS_CFG["paired"],
            sessions=PAIR,
            arms=ARMS or None,
            conditions=CONDITION_SESSIONS or None,
            orders=ORDERS or None,
            active=DESIGN["active"],
            control=DESIGN["control"],
        script:
            "../scripts/stats.py"


rule stats_hypotheses:
    input:
        table=STATS_OUT["table"],
        paired=rules.stats_paired.output.paired,
        interaction=STATS_OUT["interaction"] if INTERACTION else [],
    output:
        hypotheses=report(
            STATS_OUT["hypotheses"],
            caption="../report/hypotheses.rst",
            category="Statistics",
        ),
    log:
        STATS_LOG("hypotheses")["log"],
    benchmark:
        STATS_LOG("hypotheses")["benchmark"]
    conda:
        "../../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        step="hypotheses",
        hypotheses=STATS_HYPOTHESES,
        default_arm=DESIGN["active"] if INTERACTION else None,
        alpha=STATS_CFG["alpha"],
        p_value=STATS_CFG["p_value"],
        adjustment=STATS_CFG["hypothesis_adjustment"],
        ci=STATS_CFG["hypothesis_ci"],
        ci_level=STATS_CFG["paired"]["ci"],
        correlation={
            k: STATS_CFG["multimodal"][k]
            for k in ("change", "n_perm", "max_exact", "seed")
        },
        sessions=PAIR,
    script:
        "../scripts/stats.py"


if INTERACTION:

    rule stats_nbs_interaction:
        input:
            baseline=expand(
                NBS_RELMAT,
                subject=SUBJECTS,
                session=PAIR[0],
                meas="pearson",
                allow_missing=True,
            ),
            followup=expand(
                NBS_RELMAT,
                subject=SUBJECTS,
                session=PAIR[1],
                meas="pearson",
                allow_missing=True,
            ),
            # crossover: the control condition's sessions of the same participants
            control_baseline=expand(
                NBS_RELMAT,
                subject=SUBJECTS,
                session=CONTROL_PAIR[:1],
                meas="pearson",
                allow_missing=True,
            ),
            control_followup=expand(
                NBS_RELMAT,
                subject=SUBJECTS,
                session=CONTROL_PAIR[1:],
                meas="pearson",
                allow_missing=True,
            ),
            exclusions=rules.stats_group_table.output.exclusions,
        output:
            **NBS_INTERACTION_OUT,
        log:
            STATS_LOG("nbs_interaction_atlas-{atlas}")["log"],
        benchmark:
            STATS_LOG("nbs_interaction_atlas-{atlas}")["benchmark"]
        wildcard_constraints:
            atlas="|".join(NBS_ATLASES) or "[A-Za-z0-9]+",
        conda:
            "../../envs/stats.yaml"
        threads: 1
        resources:
            mem_mb=lambda wildcards, attempt: 4000 * attempt,
            runtime=60,
        params:
            step="nbs",
            atlas=lambda wildcards: wildcards.atlas,
            nbs=STATS_CFG["nbs"],
            subjects=[f"sub-{s}" for s in SUBJECTS],
            sessions=PAIR,
            arms=ARMS or None,
            active=DESIGN["active"],
            crossover=CROSSOVER,
        script:
            "../scripts/stats.py"


rule stats_power:
    input:
        table=rules.stats_group_table.output.table,
    output:
        power=report(
            STATS_OUT["power"],
            caption="../report/power.rst",
            category="Statistics",
        ),
        power_n=STATS_OUT["power_n"],
    log:
        STATS_LOG("power")["log"],
    benchmark:
        STATS_LOG("power")["benchmark"]
    conda:
        "../../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        step="power",
        hypotheses=STATS_HYPOTHESES,
        power=STATS_CFG["power"],
        alpha=STATS_CFG["alpha"],
        p_value=STATS_CFG["p_value"],
        max_exact=STATS_CFG["paired"]["max_exact"],
        correlation={k: STATS_CFG["multimodal"][k] for k in ("change", "max_exact")},
        sessions=PAIR,
        arms=ARMS or None,
        conditions=CONDITION_SESSIONS or None,
        active=DESIGN["active"] if INTERACTION else None,
        control=DESIGN["control"] if INTERACTION else None,
    script:
        "../scripts/stats.py"


rule stats_nbs:
    input:
        baseline=expand(
            NBS_RELMAT,
            subject=NBS_SUBJECTS,
            session=PAIR[0],
            meas="pearson",
            allow_missing=True,
        ),
        followup=expand(
            NBS_RELMAT,
            subject=NBS_SUBJECTS,
            session=PAIR[1],
            meas="pearson",
            allow_missing=True,
        ),
        exclusions=rules.stats_group_table.output.exclusions,
    output:
        summary=report(
            NBS_OUT["summary"],
            caption="../report/nbs.rst",
            category="Statistics",
        ),
        edges=NBS_OUT["edges"],
        t=NBS_OUT["t"],
        mean_baseline=NBS_OUT["mean_baseline"],
        mean_followup=NBS_OUT["mean_followup"],
    log:
        STATS_LOG("nbs_atlas-{atlas}")["log"],
    benchmark:
        STATS_LOG("nbs_atlas-{atlas}")["benchmark"]
    wildcard_constraints:
        atlas="|".join(NBS_ATLASES) or "[A-Za-z0-9]+",
    conda:
        "../../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=60,
    params:
        step="nbs",
        atlas=lambda wildcards: wildcards.atlas,
        nbs=STATS_CFG["nbs"],
        subjects=[f"sub-{s}" for s in NBS_SUBJECTS],
        sessions=PAIR,
    script:
        "../scripts/stats.py"
