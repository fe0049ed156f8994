"""Pre-registration, checked by the history: a spec's deciding fields were committed before its data, or every
later change is declared as an amendment (and printed so by the ledger), with the test first registered."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from repro import evidence as C
from repro.evidence.preregistration import History, check_spec, history_available

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    not history_available(ROOT), reason="needs the repository's whole git history (not a shallow clone)"
)
def test_every_spec_declares_each_change_made_after_its_data():
    history = History(ROOT)
    problems = [p for s in C.load_specs(ROOT / "specs") for p in check_spec(history, s, ROOT / "goldens")]
    assert problems == []


def test_the_ledger_prints_amended_claims_with_their_registered_test():
    ledger = json.loads((ROOT / "reports" / "claims.json").read_text())
    by_id = {c["id"]: c for c in ledger["claims"]}
    for spec in C.load_specs(ROOT / "specs"):
        claim = by_id[spec.id]
        if not spec.amended:
            assert "amended after the data" not in claim["verdict"], spec.id
            continue
        assert claim["verdict"].endswith("(amended after the data)"), spec.id
        lines = claim["evidence"]
        assert any(line.startswith("amended after the data:") for line in lines), spec.id
        if spec.registered is not None:
            assert any(line.startswith(f"as first registered ({spec.registered['commit']}") for line in lines), spec.id


# ------------------------------------------------------------------------------------------------------------------
# The check itself, on a scratch repository: a spec, a run, a change


def git(root, *args):
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


SPEC = {
    "id": "x-claim",
    "source": "somewhere",
    "claim": "something holds",
    "kind": "experiment",
    "check": {
        "scales": ["micro"],
        "file": "speedup.json",
        "value": "unit_results.tread.final.macs",
        "relation": ">=",
        "threshold": 1.0,
    },
}


def commit_spec(root, spec, message, date):
    path = root / "specs" / "x-claim.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    git(root, "add", "-A")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", message, "--date", date)


def commit_run(root, method, date):
    run = root / "goldens" / "micro" / "runs" / f"{method}-s0.json"
    run.parent.mkdir(parents=True, exist_ok=True)
    run.write_text("{}")
    report = root / "goldens" / "micro" / "speedup.json"
    report.write_text(json.dumps({"baseline": "dit"}))
    git(root, "add", "-A")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", f"run {method}", "--date", date)


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
    git(tmp_path, "init", "-q")
    commit_spec(tmp_path, SPEC, "spec", "2026-01-01T00:00:00Z")
    return tmp_path


def problems(root, spec_data, today="2026-01-09"):
    spec = C.parse_spec(spec_data, Path("specs/x-claim.yaml"))
    return check_spec(History(root), spec, root / "goldens", today=today)


def test_a_change_before_the_data_of_every_method_needs_no_amendment(repo, monkeypatch):
    commit_run(repo, "dit", "2026-01-02T00:00:00Z")  # the baseline's data alone: the comparison is not seen yet
    changed = json.loads(json.dumps(SPEC))
    changed["check"]["threshold"] = 0.8
    commit_spec(repo, changed, "margin", "2026-01-03T00:00:00Z")
    commit_run(repo, "tread", "2026-01-04T00:00:00Z")
    assert problems(repo, changed) == []


def test_an_undeclared_change_after_the_data_fails_and_a_declared_one_passes(repo, monkeypatch):
    commit_run(repo, "dit", "2026-01-02T00:00:00Z")
    commit_run(repo, "tread", "2026-01-03T00:00:00Z")
    changed = json.loads(json.dumps(SPEC))
    changed["check"]["file"] = "speedup-val-loss.json"
    commit_spec(repo, changed, "metric", "2026-01-04T00:00:00Z")
    found = problems(repo, changed)
    assert any("0 amendment(s) declared, the history shows 1" in p for p in found), found
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    first = subprocess.run(
        ["git", "rev-list", "--max-parents=0", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
    declared = {
        **changed,
        "amended": [{"date": "2026-01-04", "commit": head[:7], "why": "metric moved"}],
        "registered": {
            "commit": first[:7],
            **{k: SPEC["check"][k] for k in ("file", "value", "relation", "threshold")},
        },
    }
    assert problems(repo, declared) == []
    wrong_registration = {**declared, "registered": {**declared["registered"], "threshold": 0.8}}
    assert any("registered" in p for p in problems(repo, wrong_registration))
    wrong_commit = {**declared, "amended": [{"date": "2026-01-04", "commit": "abcdef0", "why": "x"}]}
    assert any("does not match" in p for p in problems(repo, wrong_commit))


def test_an_uncommitted_change_after_the_data_is_an_amendment_dated_today(repo):
    commit_run(repo, "dit", "2026-01-02T00:00:00Z")
    commit_run(repo, "tread", "2026-01-03T00:00:00Z")
    changed = json.loads(json.dumps(SPEC))
    changed["check"]["value"] = "unit_results.tread.common.macs"
    (repo / "specs" / "x-claim.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
    assert any("the history shows 1" in p for p in problems(repo, changed))
    first = subprocess.run(
        ["git", "rev-list", "--max-parents=0", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
    declared = {
        **changed,
        "amended": [{"date": "2026-01-09", "why": "common target"}],
        "registered": {
            "commit": first[:7],
            **{k: SPEC["check"][k] for k in ("file", "value", "relation", "threshold")},
        },
    }
    assert problems(repo, declared) == []
    assert any("does not match" in p for p in problems(repo, declared, today="2026-01-10"))


def test_amendments_the_history_does_not_show_are_refused(repo):
    commit_run(repo, "dit", "2026-01-02T00:00:00Z")
    commit_run(repo, "tread", "2026-01-03T00:00:00Z")
    invented = {**SPEC, "amended": [{"date": "2026-01-04", "why": "nothing changed"}]}
    assert any("1 amendment(s) declared, the history shows 0" in p for p in problems(repo, invented))


def test_the_schema_refuses_a_registered_test_without_amendments(tmp_path):
    fields = {k: SPEC["check"][k] for k in ("file", "value", "relation", "threshold")}
    with pytest.raises(C.SpecError, match="field 'amended' is missing"):
        C.parse_spec({**SPEC, "registered": {"commit": "abcdef0", **fields}}, Path("x-claim.yaml"))
    with pytest.raises(C.SpecError, match="field 'registered.threshold'.*exactly one of threshold or threshold_path"):
        no_threshold = {k: v for k, v in fields.items() if k != "threshold"}
        C.parse_spec(
            {
                **SPEC,
                "amended": [{"date": "2026-01-01", "why": "x"}],
                "registered": {"commit": "abcdef0", **no_threshold},
            },
            Path("x-claim.yaml"),
        )
    with pytest.raises(C.SpecError, match="field 'amended\\[0\\].date'"):
        C.parse_spec({**SPEC, "amended": [{"date": "2026-13-01", "why": "x"}]}, Path("x-claim.yaml"))
