"""Every JSON artefact has one declared shape: it round-trips to the same bytes, and a missing,
malformed or mis-shaped file is one line that names the file and what is wrong."""

from __future__ import annotations

import json

import pytest

from closedloop.artefacts.card import ModelCard
from closedloop.artefacts.champion import ChampionEntry, write_no_champion
from closedloop.artefacts.drift import DriftReport
from closedloop.artefacts.evaluation import Comparison, Metrics
from closedloop.artefacts.gate import GateReport
from closedloop.artefacts.snapshot import SnapshotSchema
from closedloop.errors import DataError
from tests.conftest import ROOT
from tests.fixtures import CHAMPION, SCHEMA, card

COMMITTED = ROOT / "reports"


def committed(name: str) -> dict:
    return json.loads((COMMITTED / name).read_text())


# (model, a well-formed instance as JSON, a key path to spoil, a bad value, words the error has)
CASES = {
    "metrics.json": (Metrics, lambda: committed("metrics.json"), ["val", "n"], "184", "val.n"),
    "comparison.json": (
        Comparison,
        lambda: committed("comparison.json"),
        ["splits", "production", "overall", "accuracy", "candidate"],
        None,
        "splits.production.overall.accuracy.candidate",
    ),
    "drift.json": (
        DriftReport,
        lambda: committed("drift.json"),
        ["columns", "wind", "kind"],
        "x",
        "columns.wind.kind",
    ),
    "gate.json": (
        GateReport,
        lambda: committed("gate.json"),
        ["checks", 0, "status"],
        "ok",
        "checks[0].status",
    ),
    "schema.json": (
        SnapshotSchema,
        lambda: SCHEMA,
        ["splits", "val", "rows"],
        1.5,
        "splits.val.rows",
    ),
    "card.json": (ModelCard, card, ["weights_sha256"], "xyz", "weights_sha256"),
    "entry.json": (ChampionEntry, lambda: CHAMPION, ["commit"], "HEAD", "commit"),
}


@pytest.fixture(params=sorted(CASES))
def case(request, tmp_path):
    model, good, key, bad, words = CASES[request.param]
    return tmp_path / request.param, model, good(), key, bad, words


def test_round_trip_gives_the_same_bytes(case):
    path, model, good, *_ = case
    path.write_text(json.dumps(good, indent=2, sort_keys=True) + "\n")
    first = path.read_bytes()
    read = model.read(path)
    read.write(path)
    assert path.read_bytes() == first
    assert model.read(path) == read


def test_the_committed_reports_are_written_as_they_would_be(tmp_path):
    """reports/*.json in git are exactly what the writers produce from their content."""
    for name in ("metrics.json", "comparison.json", "drift.json", "gate.json"):
        model = CASES[name][0]
        model.read(COMMITTED / name).write(tmp_path / name)
        assert (tmp_path / name).read_bytes() == (COMMITTED / name).read_bytes(), name


def one_line(e: pytest.ExceptionInfo, *words: str) -> str:
    message = str(e.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, message
    return message


def test_missing_file_is_one_line(case):
    path, model, *_ = case
    with pytest.raises(DataError) as e:
        model.read(path)
    one_line(e, str(path), "missing", "dvc repro")


@pytest.mark.parametrize("text", ["{not json", "", "\xff\xfe"])
def test_malformed_file_is_one_line(case, text):
    path, model, *_ = case
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(DataError) as e:
        model.read(path)
    one_line(e, str(path))


def test_wrong_shape_names_the_key(case):
    path, model, good, key, bad, words = case
    spoilt = json.loads(json.dumps(good))
    node = spoilt
    for k in key[:-1]:
        node = node[k]
    node[key[-1]] = bad
    path.write_text(json.dumps(spoilt))
    with pytest.raises(DataError) as e:
        model.read(path)
    one_line(e, str(path), words)


def test_missing_and_unknown_keys_name_the_key(case):
    path, model, good, *_ = case
    if model is Metrics:  # keyed by split: the keys that must be there are a split's
        good = {"val": good["val"]}
        spoil = lambda d, k=None, v=None: {"val": edit(d["val"], k, v)}  # noqa: E731
        first = "n"
    else:
        spoil = edit
        first = sorted(good)[0]
    path.write_text(json.dumps(spoil(good, first)))
    with pytest.raises(DataError) as e:
        model.read(path)
    one_line(e, str(path), first, "missing")
    path.write_text(json.dumps(spoil(good, "colour", "red")))
    with pytest.raises(DataError) as e:
        model.read(path)
    one_line(e, str(path), "colour")


def edit(obj: dict, key: str, value=None) -> dict:
    """``obj`` without ``key``, or with ``key`` set to ``value``."""
    out = {k: v for k, v in obj.items() if k != key}
    return out if value is None else {**out, key: value}


def test_a_list_is_not_an_artefact(case):
    path, model, *_ = case
    path.write_text("[1, 2]")
    with pytest.raises(DataError) as e:
        model.read(path)
    one_line(e, str(path), "expected a JSON object, got list")


def test_metric_names_come_from_the_registry(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"val": {"n": 3, "acuracy": 0.5}}))
    with pytest.raises(DataError) as e:
        Metrics.read(path)
    one_line(e, "acuracy", "unknown metric")
    path.write_text(json.dumps({"val": {"n": 0}}))  # an empty split has no values
    assert Metrics.read(path)["val"].value("accuracy") is None


def test_numbers_are_not_coerced_and_nan_is_refused(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text('{"val": {"n": 3, "accuracy": NaN}}')
    with pytest.raises(DataError) as e:
        Metrics.read(path)
    one_line(e, "val.accuracy", "finite")
    path.write_text('{"val": {"n": 3.0, "accuracy": 0.5}}')
    with pytest.raises(DataError) as e:
        Metrics.read(path)
    one_line(e, "val.n", "integer")


def test_gate_verdict_must_follow_its_checks(tmp_path):
    gate = committed("gate.json")  # every check passes
    path = tmp_path / "gate.json"
    path.write_text(json.dumps({**gate, "verdict": "fail"}))
    with pytest.raises(DataError) as e:
        GateReport.read(path)
    one_line(e, "verdict is 'fail' but the checks give 'pass'")
    check = {**gate["checks"][0], "passed": False}
    path.write_text(json.dumps({**gate, "checks": [check]}))
    with pytest.raises(DataError) as e:
        GateReport.read(path)
    one_line(e, "checks[0]", "passed is False but status is 'pass'")


def test_no_champion_is_its_own_shape(tmp_path):
    path = tmp_path / "entry.json"
    write_no_champion(path)
    assert json.loads(path.read_text()) == {"present": False}
    assert ChampionEntry.read(path) is None
    path.write_text(json.dumps({"present": False, "version": "v1.0.0"}))
    with pytest.raises(DataError) as e:
        ChampionEntry.read(path)
    one_line(e, "present")
