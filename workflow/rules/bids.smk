# Input inventory: the files found for every participant and session, after the BIDS checks.


rule bids_inventory:
    input:
        files=all_inputs(),
        description=f"{BIDS_DIR}/dataset_description.json",
    output:
        inventory=f"{RESULTS}/qc/bids_inventory.tsv",
    log:
        f"{LOGS}/bids/inventory.log",
    benchmark:
        f"{RESULTS}/benchmarks/bids/inventory.tsv"
    conda:
        "../../envs/bids.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        subjects=SUBJECTS,
        sessions=SESSIONS,
        task=TASK,
        tracer=TRACER,
        fmri=FMRI,
        pet=PET,
    script:
        "../scripts/bids.py"


# Records the whole configuration; nothing depends on it, so a config change reruns only this rule.
rule dataset_description:
    input:
        f"{RESULTS}/qc/bids_inventory.tsv",
    output:
        f"{RESULTS}/dataset_description.json",
    log:
        f"{LOGS}/bids/dataset_description.log",
    benchmark:
        f"{RESULTS}/benchmarks/bids/dataset_description.tsv"
    conda:
        "../../envs/bids.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        source=config["bids_dir"] or "simulated",
        config=config,
    script:
        "../scripts/bids.py"
