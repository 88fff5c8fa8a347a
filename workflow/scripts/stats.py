"""Statistics stage: the step named by the rule's ``params.step`` (see workflow/rules/stats.smk)."""

from prepost import logs
from prepost.io import write_json, write_tsv
from prepost import bids
from prepost.stats import covariates, crossover, group, hypotheses, parallel, power, stage

log = logs.setup(snakemake.log[0])
p = snakemake.params
inp, out = snakemake.input, snakemake.output


def run_group_table():
    qc = dict(p.qc)
    terms = covariates.covariate_table(bids.read_participants(inp.participants), inp.participants)
    for r in terms.itertuples():
        log.info("participants.tsv column %r -> formula term %r (%s, %d n/a)", r.column, r.term,
                 r.kind, r.n_missing)
    write_tsv(terms, out.covariates)
    table, exclusions = group.build_group_table(
        list(inp.tables), inp.participants, rules=qc["rules"],
        exclude_flagged=qc["exclude_flagged"], sessions=tuple(p.sessions))
    if p.conditions:  # crossover: condition, timepoint and period of every row
        table = crossover.annotate(table, dict(p.conditions), dict(p.orders))
    log.info("group table: %d rows, %d participants, %d measures; %d exclusion records",
             len(table), table.participant_id.nunique(), table.measure.nunique(),
             len(exclusions))
    for r in exclusions.itertuples():
        log.info("excluded %s ses-%s %s %s/%s: %s", r.participant_id, r.session, r.modality,
                 r.measure, r.region, r.reason)
    write_tsv(table, out.table)
    write_tsv(exclusions, out.exclusions)


def run_paired():
    cfg = dict(p.paired)
    res = group.paired_statistics(
        stage.read_group_table(inp.table), baseline=p.sessions[0], followup=p.sessions[1],
        family=cfg["family"], corrections=cfg["corrections"], n_perm=cfg["n_perm"],
        n_boot=cfg["n_boot"], seed=cfg["seed"], ci=cfg["ci"], max_exact=cfg["max_exact"],
        arms=dict(p.arms) if p.arms else None,
        conditions=dict(p.conditions) if p.conditions else None)
    log.info("paired tests: %d measure x region rows; %d incomplete pairs dropped in total",
             len(res), int(res.n_dropped.sum()))
    write_tsv(res, out.paired)


def run_interaction():
    cfg = dict(p.paired)
    table = stage.read_group_table(inp.table)
    common = dict(family=cfg["family"], corrections=cfg["corrections"], n_perm=cfg["n_perm"],
                  seed=cfg["seed"], ci=cfg["ci"])
    if p.conditions:
        res = crossover.contrast_table(
            table, dict(p.conditions), p.active, p.control, orders=dict(p.orders),
            n_boot=cfg["n_boot"], max_exact=cfg["max_exact"], **common)
        kind = ("exact sign flips" if res["perm_exact"].all() else
                f"{cfg['n_perm']} random sign flips where n > {cfg['max_exact']}")
    else:
        res = parallel.interaction_table(table, dict(p.arms), p.active, p.control,
                                         baseline=p.sessions[0], followup=p.sessions[1],
                                         **common)
        kind = ("exact relabelings" if res["perm_exact"].all() else
                f"{cfg['n_perm']} random relabelings where exact ones exceed 20,000")
    log.info("session x %s (%s - %s): %d measure x region rows; %s",
             "condition" if p.conditions else "arm", p.active, p.control, len(res), kind)
    write_tsv(res, out.interaction)


def run_mixed():
    res = group.mixed_models(stage.read_group_table(inp.table), p.measures, formula=p.formula,
                             baseline=p.sessions[0], ci=p.ci, references=dict(p.references))
    log.info("mixed models: %d fixed-effect rows (%s)", len(res), p.formula)
    write_tsv(res, out.mixed)


def run_multimodal():
    cfg = dict(p.multimodal)
    res = group.multimodal_correlations(
        stage.read_group_table(inp.table), [dict(x) for x in cfg["pairs"]],
        methods=cfg["methods"], baseline=p.sessions[0], followup=p.sessions[1],
        change=cfg["change"], correction=cfg["correction"], n_perm=cfg["n_perm"],
        seed=cfg["seed"], max_exact=cfg["max_exact"])
    log.info("multimodal: %d pair x method rows", len(res))
    write_tsv(res, out.multimodal)


def run_hypotheses():
    corr = dict(p.correlation)
    res = hypotheses.evaluate_hypotheses(
        [dict(h) for h in p.hypotheses], stage.read_group_table(inp.table),
        stage.read_paired(inp.paired), baseline=p.sessions[0], followup=p.sessions[1],
        alpha=p.alpha, p_column=p.p_value, adjustment=p.adjustment, ci=p.ci,
        ci_level=p.ci_level, change=corr["change"], n_perm=corr["n_perm"], seed=corr["seed"],
        max_exact=corr["max_exact"],
        interaction_table=stage.read_paired(inp.interaction) if inp.interaction else None,
        default_arm=p.default_arm)
    for r in res.itertuples():
        log.info("hypothesis %r: %s (%s)", r.name, r.verdict, r.reason)
    write_tsv(res, out.hypotheses)


def run_power():
    curves, n_table, effects = power.plan(
        [dict(h) for h in p.hypotheses], stage.read_group_table(inp.table), dict(p.power),
        alpha=p.alpha, p_value=p.p_value, max_exact=p.max_exact, baseline=p.sessions[0],
        followup=p.sessions[1], arms=dict(p.arms) if p.arms else None, active=p.active,
        control=p.control, change=p.correlation["change"],
        corr_max_exact=p.correlation["max_exact"],
        conditions=dict(p.conditions) if p.conditions else None)
    for r in n_table.itertuples():
        log.info("power %r %s: effect size %.3g, n for %.0f %%: %s (t-test: %s)%s", r.name,
                 r.design or "-", r.effect_size, 100 * r.target, r.n_target, r.n_closed_form,
                 f"; {r.note}" if isinstance(r.note, str) and r.note else "")
    write_tsv(curves, out.power)
    write_tsv(n_table, out.power_n)


def run_nbs():
    cfg = dict(p.nbs)
    res = stage.nbs_stage(
        list(inp.baseline), list(inp.followup), list(p.subjects), inp.exclusions, atlas=p.atlas,
        sessions=tuple(p.sessions), thresh=cfg["thresh"], tail=cfg["tail"], size=cfg["size"],
        n_perm=cfg["n_perm"], max_exact=cfg["max_exact"], seed=cfg["seed"],
        arms=dict(p.arms) if getattr(p, "arms", None) else None,
        active=getattr(p, "active", None),
        control=(list(inp.control_baseline), list(inp.control_followup))
        if getattr(p, "crossover", False) else ())
    summary = res["summary"]
    if summary.get("note"):
        log.warning("NBS %s: %s", summary["atlas"], summary["note"])
    log.info("NBS %s: %d participants, %s, %d components, p = %s", summary["atlas"],
             len(summary["participants"]),
             "exact" if summary["exact"] else f"{summary['n_perm']} flips",
             len(summary["components"]), [c["p"] for c in summary["components"]])
    write_json(summary, out.summary)
    write_tsv(res["edges"], out.edges)
    for key in ("mean_baseline", "mean_followup", "t"):
        if hasattr(out, key):  # the interaction NBS writes no group means
            write_tsv(res[key], out[key], index=True)


STEPS = {"group_table": run_group_table, "paired": run_paired, "interaction": run_interaction,
         "mixed": run_mixed,
         "multimodal": run_multimodal, "hypotheses": run_hypotheses, "power": run_power,
         "nbs": run_nbs}
if p.step not in STEPS:
    raise ValueError(f"unknown step {p.step!r}; known steps: {', '.join(STEPS)}")
STEPS[p.step]()
