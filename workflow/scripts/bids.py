"""BIDS inputs: check them and write the inventory (step "inventory"), or write the derivative
dataset description (step "description"). The rule names its step in ``params.step``."""

from pathlib import Path

from prepost import bids, logs


def run_inventory(sm, log):
    """Find and check every input file; one inventory row per participant and session."""
    p = sm.params
    bids_dir = Path(sm.input.description).parent
    study = bids.collect_study(bids_dir, p.subjects, p.sessions, task=p.task, tracer=p.tracer,
                               fmri=p.fmri, pet=p.pet, filters=p.filters, bold_raw=p.bold_raw)
    table = bids.inventory(study, bids_dir)
    bids.write_inventory(table, sm.output.inventory)
    log.info("%d sessions found and checked", len(table))


def run_description(sm, log):
    """dataset_description.json of the derivatives, with the whole configuration."""
    bids.write_derivative_description(sm.output.description, sm.params.source,
                                      dict(sm.params.config))


STEPS = {"inventory": run_inventory, "description": run_description}

log = logs.setup(snakemake.log[0])
if snakemake.params.step not in STEPS:
    raise ValueError(f"unknown step {snakemake.params.step!r}; known steps: {sorted(STEPS)}")
STEPS[snakemake.params.step](snakemake, log)
