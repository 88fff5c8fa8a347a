# Validation, input functions and wildcard constraints shared by every stage.
# Everything here runs while Snakemake builds the DAG, so bad input fails before any job starts.
import re
from pathlib import Path

import pandas as pd
from snakemake.utils import validate

from prepost import bids as pbids
from prepost import simulate as psim
from prepost.errors import PrepostError
from prepost.scheduler import coalesce_reevaluation
from prepost.stats import crossover as pcross
from prepost.stats import parallel as pparallel

coalesce_reevaluation()  # Snakemake's own CPU stays flat over long runs (see prepost.scheduler)

validate(config, "../schemas/config.schema.yaml")


def _from_workflow(path):
    """A relative path that is not in the working directory is taken from the workflow folder."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return str(p)
    return str(Path(PREPOST_DIR) / p)


config["participants"] = _from_workflow(config["participants"])
PARTICIPANTS = pbids.read_participants(config["participants"])
validate(PARTICIPANTS.drop(columns="label"), "../schemas/participants.schema.yaml")
SUBJECTS = PARTICIPANTS.label.tolist()
# The design: a parallel study's arms, or a crossover's condition sessions and orders, come from
# config and participants.tsv, checked now.
DESIGN = config["design"]
PARALLEL = DESIGN["type"] == "parallel"
CROSSOVER = DESIGN["type"] == "crossover"
ARMS = (
    pparallel.participant_arms(
        PARTICIPANTS,
        config["participants"],
        DESIGN["arm_column"],
        DESIGN["active"],
        DESIGN["control"],
    )
    if PARALLEL
    else {}
)
# crossover: condition -> (baseline, followup) and participant -> condition given first
CONDITION_SESSIONS = pcross.condition_sessions(DESIGN) if CROSSOVER else {}
ORDERS = (
    pcross.participant_orders(
        PARTICIPANTS,
        config["participants"],
        DESIGN["order_column"],
        DESIGN["active"],
        DESIGN["control"],
    )
    if CROSSOVER
    else {}
)
SESSIONS = (
    [s for pair in CONDITION_SESSIONS.values() for s in pair]
    if CROSSOVER
    else [config["sessions"]["baseline"], config["sessions"]["followup"]]
)
if SESSIONS[0] == SESSIONS[1]:
    raise PrepostError(
        f"config 'sessions': expected two different labels, found {SESSIONS[0]!r} twice"
    )
# The baseline and follow-up of one change (paired tests, NBS, correlations, figures): the
# active condition's in a crossover.
PAIR = list(CONDITION_SESSIONS[DESIGN["active"]]) if CROSSOVER else SESSIONS
RESULTS = config["results_dir"].rstrip("/")
SIMULATED = not config["bids_dir"]
BIDS_DIR = f"{RESULTS}/simulated/bids" if SIMULATED else config["bids_dir"].rstrip("/")
TRUTH_DIR = f"{RESULTS}/simulated/truth"
# the inventory of the inputs and the derivatives' dataset_description.json
BIDS_OUT = pbids.output_paths(RESULTS)
TASK = config["bids"]["task"]
FMRI = config["modalities"]["fmri"]
PET = config["modalities"]["pet"]
LOGS = f"{RESULTS}/logs"

if SIMULATED:
    STUDY = None
    # the simulated PET images carry trc-UCBJ
    TRACER = config["bids"]["tracer"] or "UCBJ"
else:
    # A user's dataset: find and check every file now, at DAG time. In fMRIPrep mode the raw BOLD
    # is neither required nor checked (only the derivatives are read).
    STUDY = pbids.collect_study(
        BIDS_DIR,
        SUBJECTS,
        SESSIONS,
        task=TASK,
        tracer=config["bids"]["tracer"],
        fmri=FMRI,
        pet=PET,
        check_images=config["bids"]["check_images"],
        filters=config["bids"]["filters"],
        bold_raw=config["fmri"]["source"] != "fmriprep",
        pet_config=config["pet"],
    )
    # the trc- label of every derivative name: configured, or the one the PET images share
    TRACER = config["bids"]["tracer"] or pbids.study_tracer(STUDY)


wildcard_constraints:
    subject="|".join(re.escape(s) for s in SUBJECTS),
    session="|".join(re.escape(s) for s in SESSIONS),


def _session_files(wildcards):
    if SIMULATED:
        return psim.bids_paths(
            BIDS_DIR,
            wildcards.subject,
            wildcards.session,
            tracer=TRACER,
            task=TASK,
        )
    sf = STUDY[(wildcards.subject, wildcards.session)]
    out = {
        "t1w": sf.t1w,
        "bold": sf.bold,
        "bold_json": sf.bold_json,
        "pet": sf.pet,
        "pet_json": sf.pet_json,
    }
    for rec, (tsv, js) in sf.blood.items():
        out[f"blood_{rec}"], out[f"blood_{rec}_json"] = tsv, js
    return out


def get_t1w(wildcards):
    return str(_session_files(wildcards)["t1w"])


def get_bold(wildcards):
    f = _session_files(wildcards)
    return {"bold": str(f["bold"]), "bold_json": str(f["bold_json"])}


def get_pet(wildcards):
    f = _session_files(wildcards)
    return {"pet": str(f["pet"]), "pet_json": str(f["pet_json"])}


def get_blood(wildcards):
    """Blood recordings of a session: {recording: tsv, recording_json: json}."""
    f = _session_files(wildcards)
    if SIMULATED and not config["simulate"]["pet"]["blood"]:
        return {}
    out = {
        k.removeprefix("blood_"): str(v) for k, v in f.items() if k.startswith("blood_")
    }
    if SIMULATED and not config["simulate"]["pet"]["autosampler"]:
        out = {k: v for k, v in out.items() if not k.startswith("autosampler")}
    return out


# Whether the raw BOLD is read (fMRIPrep mode reads only the derivatives).
READ_RAW_BOLD = config["fmri"]["source"] != "fmriprep"


def bold_runs(subject, session):
    """The resting BOLD runs of a session (prepost.bids.BoldRun: entities, bold, bold_json)."""
    if SIMULATED:
        f = psim.bids_paths(BIDS_DIR, subject, session, tracer=TRACER, task=TASK)
        return [pbids.BoldRun({"task": TASK}, f["bold"], f["bold_json"])]
    return STUDY[(subject, session)].bold_runs


def get_session_inputs(wildcards):
    """Every input file of one participant and session that the configured modalities use."""
    files = [get_t1w(wildcards)]
    if FMRI and READ_RAW_BOLD:
        for run in bold_runs(wildcards.subject, wildcards.session):
            files += [str(run.bold), str(run.bold_json)]
    if PET:
        files += list(get_pet(wildcards).values()) + list(get_blood(wildcards).values())
    return files


def all_inputs():
    return [
        f
        for s in SUBJECTS
        for ses in SESSIONS
        for f in get_session_inputs(type("W", (), {"subject": s, "session": ses}))
    ]


# Each stage's .smk file registers its final targets here: STAGE_TARGETS["<stage>"] = [...]
STAGE_TARGETS = {}
# Tidy long tables (participant_id, session, modality, measure, region, value[, flag]) that the
# statistics stage joins; connectivity and PET append theirs.
TIDY_TABLES = []
SPACE = "MNI152NLin2009aSym"  # nilearn's bundled ICBM 2009a symmetric template


def all_outputs():
    """Final targets: the outputs of every stage that exists."""
    out = [BIDS_OUT["inventory"], BIDS_OUT["description"]]
    if SIMULATED:
        out.append(psim.dataset_paths(BIDS_DIR, TRUTH_DIR)["truth"])
    for targets in STAGE_TARGETS.values():
        out += list(targets)
    return out
