"""Report stage: the step named by the rule's ``params.step`` (html: the self-contained report)."""

from prepost import logs
from prepost.report import build_report

log = logs.setup(snakemake.log[0])
p = snakemake.params
inp = snakemake.input


def run_html():
    nbs = {
        atlas: {"summary": inp.nbs_summary[i], "edges": inp.nbs_edges[i], "t": inp.nbs_t[i],
                "mean_baseline": inp.nbs_mean_baseline[i], "mean_followup": inp.nbs_mean_followup[i],
                **({"interaction": inp.nbs_interaction[i]} if len(inp.nbs_interaction) else {})}
        for i, atlas in enumerate(p.atlases)
    }
    keys = [tuple(k) for k in p.tac_keys]
    tacs = dict(zip(keys, inp.tacs)) if len(inp.tacs) else None
    fits = dict(zip(keys, inp.tac_fits)) if len(inp.tac_fits) else None
    problems = build_report(
        snakemake.output.html, group_table=inp.group_table, exclusions=inp.exclusions,
        paired=inp.paired, hypotheses=inp.hypotheses, mixed=inp.mixed, multimodal=inp.multimodal,
        participants=inp.participants, config=dict(p.config), sessions=tuple(p.sessions), nbs=nbs,
        tacs=tacs, tac_fits=fits, input_files=list(inp), title=p.title,
        fmri_measures=p.fmri_measures, pet_measures=p.pet_measures, max_panels=p.max_panels,
        tac_regions=p.tac_regions, alpha=p.alpha, truth=inp.truth or None,
        effects=inp.effects or None, reference_roi=p.reference_roi,
        interaction=inp.interaction or None, power=inp.power, power_n=inp.power_n)
    for prob in problems:
        log.warning("report: %s", prob)
    log.info("report written: %s (%d problems)", snakemake.output.html, len(problems))


STEPS = {"html": run_html}
if p.step not in STEPS:
    raise ValueError(f"unknown step {p.step!r}; known steps: {', '.join(STEPS)}")
STEPS[p.step]()
