# Input inventory: the files found for every participant and session, after the BIDS checks.


rule bids_inventory:
    input:
        files=all_inputs(),
        description=(
            rules.simulate_dataset.output.description
            if SIMULATED
            else f"{BIDS_DIR}/dataset_description.json"
        ),
    output:
        inventory=BIDS_OUT["inventory"],
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
        step="inventory",
        subjects=SUBJECTS,
        sessions=SESSIONS,
        task=TASK,
        tracer=TRACER,
        fmri=FMRI,
        pet=PET,
        filters=config["bids"]["filters"],
        bold_raw=config["fmri"]["source"] != "fmriprep",
    script:
        "../scripts/bids.py"


# Records the whole configuration; nothing depends on it, so a config change reruns only this rule.
rule dataset_description:
    input:
        inventory=rules.bids_inventory.output.inventory,
    output:
        description=BIDS_OUT["description"],
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
        step="description",
        source=config["bids_dir"] or "simulated",
        config=config,
    script:
        "../scripts/bids.py"
