"""The simulated study: one participant's files (step "subject") or the dataset-level files and
their checks (step "dataset"). The rule names its step in ``params.step``."""

from pathlib import Path

from prepost import bids, logs, simulate


def run_subject(sm, log):
    """Write one participant's BIDS files and ground truth."""
    p = sm.params
    sim = dict(p.sim)
    if not p.planted:  # the control arm of a parallel design: same noise, no effect
        sim["null_study"] = True
    log.info("simulating sub-%s, sessions %s, effects %s", sm.wildcards.subject, p.sessions,
             "none" if sim["null_study"] else f"planted in {list(p.planted)}")
    simulate.simulate_subject(p.bids_dir, p.truth_dir, sm.wildcards.subject, tuple(p.sessions),
                              sim, planted=list(p.planted))


def run_dataset(sm, log):
    """Write dataset_description, participants.tsv, effects.json and truth.tsv, then check the
    dataset as a user's would be."""
    p, out = sm.params, sm.output
    bids_dir, truth_dir = Path(out.description).parent, Path(out.effects).parent
    table = bids.read_participants(p.participants).drop(columns="label")
    simulate.simulate_dataset_files(bids_dir, truth_dir, table, tuple(p.sessions), dict(p.sim))
    bids.collect_study(bids_dir, table.participant_id.str[4:].tolist(), p.sessions)
    log.info("dataset written and checked: %d participants", len(table))


STEPS = {"subject": run_subject, "dataset": run_dataset}

log = logs.setup(snakemake.log[0])
if snakemake.params.step not in STEPS:
    raise ValueError(f"unknown step {snakemake.params.step!r}; known steps: {sorted(STEPS)}")
STEPS[snakemake.params.step](snakemake, log)
