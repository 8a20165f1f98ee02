"""Rollouts: sticky assignment, the decision on simulated traffic, its reports and --apply."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from closedloop.config import compose
from closedloop.rollout.apply import apply
from closedloop.rollout.assign import assign, unit
from closedloop.rollout.decide import decide, srm_check
from closedloop.rollout.records import from_frames
from closedloop.rollout.report import markdown, write
from tests.conftest import ROOT, assert_one_line_error
from tests.fixtures import rollout_traffic


def params(*overrides: str) -> dict:
    return compose(list(overrides), conf_dir=ROOT / "conf")


CANARY = params("rollout=canary", "rollout.share=0.25")["rollout"]
SHADOW = params("rollout=shadow")["rollout"]


# ------------------------------------------------------------------ assignment
def test_canary_share_of_10000_keys_passes_the_srm_test_and_is_sticky():
    keys = [f"user-{i}" for i in range(10_000)]
    arms = [assign(k, 0.1, "salt-1") for k in keys]
    frame = pd.DataFrame({"arm": arms})
    srm = srm_check(frame, 0.1, CANARY["srm_alpha"])
    assert srm.passed, srm
    assert 0.09 < srm.observed_share < 0.11
    assert [assign(k, 0.1, "salt-1") for k in keys] == arms  # same key, same arm
    # ... in another process too (sha256, not Python's salted hash())
    code = "from closedloop.rollout.assign import assign; print([assign(f'user-{i}', 0.1, 'salt-1') for i in range(50)])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(arms[:50])


def test_ramping_keeps_the_canary_population_and_a_salt_redraws_it():
    keys = [f"k{i}" for i in range(2000)]
    at5 = {k for k in keys if assign(k, 0.05, "s") == "candidate"}
    at25 = {k for k in keys if assign(k, 0.25, "s") == "candidate"}
    assert at5 <= at25 and len(at25) > len(at5)
    other = {k for k in keys if assign(k, 0.25, "another salt") == "candidate"}
    assert len(other & at25) < 0.5 * len(at25)
    assert unit("request-1", "s") == unit("request-1", "s")
    assert assign("x", 0.0, "s") == "champion" and assign("x", 1.0, "s") == "candidate"
    with pytest.raises(ValueError):
        assign("x", 1.5, "s")


def test_srm_check_flags_a_skewed_split():
    frame = pd.DataFrame({"arm": ["candidate"] * 1200 + ["champion"] * 8800})
    assert not srm_check(frame, 0.1, 0.001).passed


# -------------------------------------------------------------- decision cases
def test_a_clearly_better_candidate_passes_and_ramps():
    r = decide(rollout_traffic(1, accuracy=(0.80, 0.90)), CANARY)
    assert (r.outcome, r.action, r.next_mode, r.next_share) == ("pass", "ramp", "canary", 0.5)
    assert all(g.status == "safe" for g in r.guardrails)
    accuracy = next(g for g in r.guardrails if g.metric == "accuracy")
    assert accuracy.harm < 0 and accuracy.harm_high < accuracy.margin


def test_a_clearly_worse_candidate_fails_early_before_the_planned_sample():
    traffic = rollout_traffic(2, accuracy=(0.80, 0.60), error=(0.01, 0.05))
    early = traffic[traffic["ts"] < traffic["ts"].min() + pd.Timedelta(hours=3)]
    r = decide(early, CANARY)
    assert r.exposure["candidate"] < CANARY["min_requests"] and r.window.hours < CANARY["min_hours"]
    assert (r.outcome, r.action, r.next_mode) == ("fail", "rollback", "off")
    assert {g.metric for g in r.guardrails if g.status == "harm"} >= {"error_rate"}


def test_a_tiny_difference_is_inconclusive_and_holds():
    r = decide(rollout_traffic(3, accuracy=(0.80, 0.785)), CANARY)
    assert (r.outcome, r.action, r.next_share) == ("inconclusive", "hold", 0.25)
    accuracy = next(g for g in r.guardrails if g.metric == "accuracy")
    assert accuracy.status == "unclear" and accuracy.harm_low < accuracy.margin < accuracy.harm_high
    assert "never ramps on an inconclusive step" in r.reason


def test_too_early_is_inconclusive_even_when_everything_looks_fine():
    traffic = rollout_traffic(4, accuracy=(0.80, 0.90))
    r = decide(traffic[traffic["ts"] < traffic["ts"].min() + pd.Timedelta(hours=12)], CANARY)
    assert (r.outcome, r.action) == ("inconclusive", "hold")
    assert r.reason.startswith("Too early")


def test_a_sample_ratio_mismatch_is_refused():
    r = decide(rollout_traffic(5, accuracy=(0.80, 0.90), assigned_share=0.23), CANARY)
    assert (r.outcome, r.action, r.next_share) == ("invalid", "hold", 0.25)
    assert not r.srm.passed and r.srm.p_value < CANARY["srm_alpha"]


def test_a_slower_candidate_fails_on_p99_latency():
    r = decide(rollout_traffic(6, accuracy=(0.80, 0.90), latency_ms=(40, 60)), CANARY)
    assert r.outcome == "fail"
    latency = next(g for g in r.guardrails if g.metric == "latency_p99")
    assert latency.status == "harm" and latency.candidate > 1.2 * latency.champion


def test_shadow_mode_pairs_the_same_requests_then_moves_to_a_canary():
    better = decide(rollout_traffic(7, mode="shadow", accuracy=(0.80, 0.90)), SHADOW)
    assert (better.outcome, better.next_mode, better.next_share) == ("pass", "canary", 0.05)
    accuracy = next(g for g in better.guardrails if g.metric == "accuracy")
    assert (
        accuracy.discordant["c"] > accuracy.discordant["b"]
    )  # candidate right where champion wrong
    assert accuracy.candidate > accuracy.champion
    worse = decide(rollout_traffic(8, mode="shadow", accuracy=(0.80, 0.70)), SHADOW)
    assert (worse.outcome, worse.action) == ("fail", "rollback")


def test_no_rollout_records_and_mode_off():
    plain = rollout_traffic(9).drop(columns=["arm"])  # no arm column: no rollout traffic
    r = decide(plain, CANARY)
    assert (r.outcome, r.action) == ("inconclusive", "hold") and r.exposure["candidate"] == 0
    off = decide(rollout_traffic(9), params()["rollout"])
    assert (off.outcome, off.action, off.mode) == (None, "none", "off")


def test_the_last_step_completes_instead_of_judging():
    r = decide(
        rollout_traffic(10, share=1.0), params("rollout=canary", "rollout.share=1.0")["rollout"]
    )
    assert r.action == "complete" and "Promote" in r.reason


def test_records_with_another_share_are_not_this_step():
    old = rollout_traffic(11, share=0.05, accuracy=(0.8, 0.6))
    new = rollout_traffic(12, share=0.25, accuracy=(0.8, 0.9))
    r = decide(pd.concat([old, new], ignore_index=True), CANARY)
    assert r.outcome == "pass" and r.exposure["candidate"] == int((new["arm"] == "candidate").sum())


# ------------------------------------------------------------------ the reports
def test_reports_are_deterministic_and_read_as_sentences(tmp_path):
    traffic = rollout_traffic(13, accuracy=(0.80, 0.60), error=(0.01, 0.05))
    for i in range(2):
        write(decide(traffic, CANARY), tmp_path / f"r{i}.json", tmp_path / f"r{i}.md")
    assert (tmp_path / "r0.json").read_bytes() == (tmp_path / "r1.json").read_bytes()
    assert (tmp_path / "r0.md").read_bytes() == (tmp_path / "r1.md").read_bytes()
    data = json.loads((tmp_path / "r0.json").read_text())
    assert data["outcome"] == "fail" and data["action"] == "rollback"
    assert {g["metric"] for g in data["guardrails"]} == {"error_rate", "latency_p99", "accuracy"}
    md = (tmp_path / "r0.md").read_text()
    assert "FAIL: roll back" in md and "| guardrail |" in md
    assert "The candidate answers 25% of requests" in md
    assert "**Next step:** set `mode: off`" in md


def test_shadow_and_off_reports_render():
    assert "paired requests" in markdown(decide(rollout_traffic(14, mode="shadow"), SHADOW))
    assert "No rollout" in markdown(decide(rollout_traffic(14), params()["rollout"]))


# ------------------------------------------------------------------ --apply
@pytest.fixture
def conf_copy(tmp_path):
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    return tmp_path / "conf"


def test_apply_ramps_the_share_in_place_keeping_comments(conf_copy):
    r = decide(
        rollout_traffic(1, share=0.05, accuracy=(0.80, 0.90), n=120_000),
        params("rollout=canary")["rollout"],
    )
    assert r.action == "ramp" and r.next_share == 0.25
    before = (conf_copy / "rollout/canary.yaml").read_text()
    path = apply(r, "canary", conf_copy / "rollout")
    after = path.read_text()
    changed = [
        (a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b
    ]
    assert len(changed) == 1 and changed[0][1].startswith("share: 0.25 #"), changed
    again = compose(["rollout=canary"], conf_dir=conf_copy)["rollout"]
    assert again["share"] == 0.25 and again["mode"] == "canary"


def test_apply_rolls_back_with_mode_off_that_every_reader_sees_as_off(conf_copy):
    r = decide(rollout_traffic(2, accuracy=(0.80, 0.60)), CANARY)
    assert r.action == "rollback"
    path = apply(r, "canary", conf_copy / "rollout")
    assert yaml.safe_load(path.read_text())["mode"] == "off"  # a string, not YAML 1.1's false
    assert compose(["rollout=canary"], conf_dir=conf_copy)["rollout"]["mode"] == "off"


def test_apply_leaves_a_hold_alone(conf_copy):
    r = decide(rollout_traffic(3, accuracy=(0.80, 0.785)), CANARY)
    assert apply(r, "canary", conf_copy / "rollout") is None


# ------------------------------------------------------------------ the command
def test_decide_command_writes_reports_and_github_outputs(tmp_path):
    records = tmp_path / "records.parquet"
    rollout_traffic(2, accuracy=(0.80, 0.60)).to_parquet(records)
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(params("rollout=canary", "rollout.share=0.25")))
    (tmp_path / "reports").mkdir()
    out = tmp_path / "outputs"
    proc = subprocess.run(
        [sys.executable, "-m", "closedloop", "rollout", "decide", "--records", str(records),
         "--params", str(p), "--outputs-file", str(out)],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("rollout: FAIL, rollback:")
    assert out.read_text() == "outcome=fail\naction=rollback\nchanged=false\n"
    assert json.loads((tmp_path / "reports/rollout.json").read_text())["outcome"] == "fail"


def test_decide_command_refuses_a_bad_rollout_config_in_one_line(tmp_path):
    bad = params("rollout=canary")
    bad["rollout"]["share"] = 0.3
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(bad))
    proc = subprocess.run(
        [sys.executable, "-m", "closedloop", "rollout", "decide", "--params", "params.yaml"],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert_one_line_error(proc, "rollout.share", "not a step of shares")


def test_records_join_the_latest_feedback_and_count_what_they_leave_out():
    preds = pd.DataFrame(
        {
            "request_id": ["a", "b", "b", None, "c"],
            "ts": pd.to_datetime(["2024-01-01T00:00Z", "2024-01-01T01:00Z", "2024-01-01T02:00Z", "2024-01-01T03:00Z", None]),
            "prediction": ["x", "y", "y", "x", "x"],
        }
    )  # fmt: skip
    feedback = pd.DataFrame(
        {
            "request_id": ["a", "a", "b"],
            "ts": pd.to_datetime(["2024-01-02T00:00Z", "2024-01-03T00:00Z", "2024-01-02T00:00Z"]),
            "label": ["y", "x", None],
            "action": ["correct", "correct", "accept"],
        }
    )
    rec = from_frames(preds, feedback)
    assert rec.counts == {"rows_in": 5, "kept": 2, "skipped": 2, "duplicates": 1}
    by_id = rec.frame.set_index("request_id")
    assert by_id.loc["a", "label"] == "x"  # the latest answer wins
    assert by_id.loc["b", "label"] == "y"  # an accept confirms the prediction
    assert by_id.loc["a", "label_ts"] == pd.Timestamp("2024-01-03", tz="UTC")
    assert np.all(rec.frame["ts"].diff().dropna() >= pd.Timedelta(0))
