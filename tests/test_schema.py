"""Config and participants schemas: unknown keys, wrong types, required keys, filled defaults."""

from pathlib import Path

import pandas as pd
import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "workflow/schemas/config.schema.yaml")
PSCHEMA = str(ROOT / "workflow/schemas/participants.schema.yaml")


def test_shipped_config_is_valid_and_complete():
    cfg = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    filled = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    validate(filled, SCHEMA)
    assert filled == cfg  # every default is spelled out in the shipped config


def test_defaults_are_filled():
    cfg = {}
    validate(cfg, SCHEMA)
    assert cfg["sessions"] == {"baseline": "pre", "followup": "post"}
    assert cfg["simulate"]["bold"]["n_volumes"] == 150
    assert cfg["simulate"]["effects"]["pcc_vt_pct"] == 5.0
    assert cfg["bids_dir"] == ""


def test_unknown_key_is_rejected_with_its_name():
    with pytest.raises(WorkflowError, match="n_volume"):
        validate({"simulate": {"bold": {"n_volume": 10}}}, SCHEMA)
    with pytest.raises(WorkflowError, match="sesions"):
        validate({"sesions": {}}, SCHEMA)


def test_wrong_type_is_rejected():
    with pytest.raises(WorkflowError, match="'many' is not of type 'integer'"):
        validate({"simulate": {"bold": {"n_volumes": "many"}}}, SCHEMA)


def test_session_label_with_path_characters():
    with pytest.raises(WorkflowError, match="does not match"):
        validate({"sessions": {"baseline": "../pre"}}, SCHEMA)


def test_participants_require_an_id_and_reject_bad_headers():
    with pytest.raises(WorkflowError, match="'participant_id' is a required property"):
        validate(pd.DataFrame({"age": [30]}), PSCHEMA)
    with pytest.raises(WorkflowError, match="Follow Up"):
        validate(pd.DataFrame({"participant_id": ["sub-01"], "Follow Up": [1]}), PSCHEMA)
    validate(pd.DataFrame({"participant_id": ["sub-01"], "weight_kg": [70.0]}), PSCHEMA)
