"""The published JSON Schema of reports/gate.json: generated from its declared shape, kept
fresh, and the committed verdict satisfies it (validated with the jsonschema package)."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest

from closedloop.artefacts.gate import json_schema
from closedloop.paths import GATE_SCHEMA
from tests.conftest import ROOT

SCHEMA_PATH = ROOT / GATE_SCHEMA


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def test_committed_schema_is_the_generated_one():
    assert SCHEMA_PATH.read_text() == json_schema(), (
        "schemas/gate.schema.json is stale: run `closedloop gate schema` and commit it"
    )


def test_schema_holds_the_contract(schema):
    jsonschema.Draft202012Validator.check_schema(schema)
    assert {"verdict", "checks"} <= set(schema["required"])
    assert schema["properties"]["verdict"]["enum"] == ["pass", "fail", "inconclusive"]
    check = schema["$defs"]["Check"]
    assert {"name", "passed", "value", "threshold", "reason", "status"} <= set(check["required"])
    assert {"model_hash", "champion", "split", "policy"} <= set(schema["properties"])


def test_committed_gate_json_is_valid(schema):
    jsonschema.validate(json.loads((ROOT / "reports/gate.json").read_text()), schema)


@pytest.mark.parametrize(
    "spoil",
    [
        lambda g: g.pop("verdict"),
        lambda g: g.update(verdict="maybe"),
        lambda g: g["checks"][0].pop("reason"),
        lambda g: g["checks"][0].update(value="0.5"),
        lambda g: g.update(extra=1),
    ],
    ids=["no verdict", "unknown verdict", "check without reason", "value as text", "extra key"],
)
def test_schema_refuses_what_breaks_the_contract(schema, spoil):
    gate = copy.deepcopy(json.loads((ROOT / "reports/gate.json").read_text()))
    spoil(gate)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(gate, schema)
