"""Write the simulated study: one participant (rule simulate_subject) or the dataset-level files."""

from pathlib import Path

from prepost import bids, logs, simulate

log = logs.setup(snakemake.log[0])
p = snakemake.params
if snakemake.rule == "simulate_subject":
    sub = snakemake.wildcards.subject
    log.info("simulating sub-%s, sessions %s", sub, p.sessions)
    simulate.simulate_subject(p.bids_dir, p.truth_dir, sub, tuple(p.sessions), dict(p.sim))
else:
    out = snakemake.output
    bids_dir, truth_dir = Path(out.description).parent, Path(out.effects).parent
    table = bids.read_participants(p.participants).drop(columns="label")
    simulate.simulate_dataset_files(bids_dir, truth_dir, table, tuple(p.sessions), dict(p.sim))
    # the simulated dataset must pass the same checks as a user's dataset
    bids.collect_study(bids_dir, table.participant_id.str[4:].tolist(), p.sessions)
    log.info("dataset written and checked: %d participants", len(table))
