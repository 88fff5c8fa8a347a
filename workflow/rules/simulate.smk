# The simulated study: the embedded default when config 'bids_dir' is empty.
# Defined only when simulating: a user's raw data must never look like this rule's output.
if SIMULATED:

    rule simulate_subject:
        output:
            psim.subject_outputs(
                BIDS_DIR, TRUTH_DIR, "{subject}", SESSIONS, config["simulate"]
            ),
        log:
            f"{LOGS}/simulate/sub-{{subject}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/simulate/sub-{{subject}}.tsv"
        conda:
            "../../envs/simulate.yaml"
        threads: 1
        resources:
            mem_mb=3000,
            runtime=10,
        params:
            step="subject",
            sim=config["simulate"],
            # the sessions with the planted effects: the follow-up (of the active condition
            # in a crossover); none in a parallel design's control arm
            planted=lambda wildcards: (
                []
                if PARALLEL and ARMS[f"sub-{wildcards.subject}"] != DESIGN["active"]
                else PAIR[1:]
            ),
            sessions=SESSIONS,
            # the dataset roots, derived from the outputs (first: a BIDS file, last: a truth file)
            bids_dir=lambda wildcards, output: str(Path(output[0]).parents[3]),
            truth_dir=lambda wildcards, output: str(Path(output[-1]).parents[1]),
        script:
            "../scripts/simulate.py"

    rule simulate_dataset:
        input:
            expand(
                psim.truth_paths(TRUTH_DIR, "{subject}", "{session}")["pet_regions"],
                subject=SUBJECTS,
                session=SESSIONS,
            ),
        output:
            **psim.dataset_paths(BIDS_DIR, TRUTH_DIR),
        log:
            f"{LOGS}/simulate/dataset.log",
        benchmark:
            f"{RESULTS}/benchmarks/simulate/dataset.tsv"
        conda:
            "../../envs/simulate.yaml"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=5,
        params:
            step="dataset",
            sim=config["simulate"],
            sessions=SESSIONS,
            participants=config["participants"],
        script:
            "../scripts/simulate.py"
