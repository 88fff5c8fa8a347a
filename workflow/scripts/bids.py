"""Check the BIDS inputs and write the inventory (rule bids_inventory) or the derivative
dataset description (rule dataset_description)."""

from pathlib import Path

from prepost import bids, logs

log = logs.setup(snakemake.log[0])
p = snakemake.params
if snakemake.rule == "bids_inventory":
    bids_dir = Path(snakemake.input.description).parent
    study = bids.collect_study(bids_dir, p.subjects, p.sessions, task=p.task, tracer=p.tracer,
                               fmri=p.fmri, pet=p.pet)
    table = bids.inventory(study, bids_dir)
    bids.write_inventory(table, snakemake.output.inventory)
    log.info("%d sessions found and checked", len(table))
else:
    bids.write_derivative_description(snakemake.output[0], p.source, dict(p.config))
