"""Config and participants schemas: unknown keys, wrong types, required keys, filled defaults."""

import copy
from pathlib import Path

import pandas as pd
import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from prepost import simulate

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "workflow/schemas/config.schema.yaml")
PSCHEMA = str(ROOT / "workflow/schemas/participants.schema.yaml")


def _differences(a, b, path=""):
    """Key paths where two nested configs differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in a or key not in b:
                out.append(f"{where}: only in {'the first' if key in a else 'the second'}")
            else:
                out += _differences(a[key], b[key], where)
        return out
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_schema_defaults_equal_the_shipped_config():
    """Defaults live in one place: an empty config filled by the schema is the shipped config."""
    from_schema = {}
    validate(from_schema, SCHEMA, set_default=True)
    shipped = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    filled = copy.deepcopy(shipped)
    validate(filled, SCHEMA, set_default=True)
    assert _differences(filled, shipped) == []  # nothing the schema adds is left out of the file
    assert _differences(from_schema, shipped) == []


def test_simulator_defaults_equal_the_schema():
    from_schema = {}
    validate(from_schema, SCHEMA, set_default=True)
    assert _differences(simulate.DEFAULTS, from_schema["simulate"]) == []


def test_defaults_are_filled():
    cfg = {}
    validate(cfg, SCHEMA)
    assert cfg["sessions"] == {"baseline": "pre", "followup": "post"}
    assert cfg["simulate"]["bold"]["n_volumes"] == 300
    assert cfg["simulate"]["effects"]["pcc_vt_pct"] == 12.0
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


def test_participants_require_an_id_and_accept_any_header():
    with pytest.raises(WorkflowError, match="'participant_id' is a required property"):
        validate(pd.DataFrame({"age": [30]}), PSCHEMA)
    with pytest.raises(WorkflowError, match="minimum"):
        validate(pd.DataFrame({"participant_id": ["sub-01"], "age": [-3]}), PSCHEMA)
    # BIDS allows any column name: each enters formulas under its snake_case term
    validate(pd.DataFrame({"participant_id": ["sub-01"], "Follow Up": [1], "Gender": ["F"],
                           "weight_kg": [70.0]}), PSCHEMA)
