"""The claims ledger: spec schema, verdict rules, the committed ledger and the command."""

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from repro import evidence as C

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
CATALOGUE = ROOT.parent / "shared" / "CLAIMS.md"

# Every claim of the catalogue, by id; each has a spec specs/<id>.yaml.
CLAIM_IDS = {
    # the debate: post and reply
    "debate-dit-plateau",
    "debate-identity-helps",
    "debate-post-ln",
    "debate-adaln-overrides-attention",
    "debate-ln-gain-bias",
    "reply-tread-is-stochastic-depth",
    "reply-lightningdit",
    "reply-post-norm-harmless",
    "reply-representation-learning",
    "reply-prefer-interpolants",
    "reply-adaln-for-time",
    "reply-shared-adaln-30pct",
    "reply-sd-vae-445gflops",
    # TREAD
    "tread-speedup-14x",
    "tread-speedup-37x",
    "tread-speedup-grows",
    "tread-no-extra-params",
    "tread-routing-preserves-tokens",
    "tread-inference-dense",
    "tread-table2",
    "tread-selection-rate",
    "tread-final",
    # DiT
    "dit-size-table",
    "dit-block",
    "dit-conditioning-ablation",
    "dit-xl2-curve",
    # SiT, LightningDiT, PixArt-alpha, REPA, SD-VAE
    "sit-beats-dit",
    "lightningdit-21x",
    "pixart-adaln-single",
    "repa-17.5x",
    "sd-vae-cost",
}
# The project's own questions under the claims (not in the catalogue): each has a spec too
QUESTION_IDS = {"tread-objective-share", "tread-release-init", "representation-self-alignment"}


@pytest.fixture(scope="module")
def specs():
    return C.load_specs(SPECS)


# ------------------------------------------------------------------------------------------
# The specs in the repository
# ------------------------------------------------------------------------------------------


def test_every_claim_has_exactly_one_spec(specs):
    assert {s.id for s in specs} == CLAIM_IDS | QUESTION_IDS
    assert sorted(p.stem for p in SPECS.glob("*.yaml")) == sorted(CLAIM_IDS | QUESTION_IDS)
    assert all(s.source.startswith("A question of this project") for s in specs if s.id in QUESTION_IDS)


def catalogue_ids(text: str) -> set[str]:
    """Ids of the catalogue: first cells of the debate table, and bold ids in the paper sections."""
    ids = set(re.findall(r"^\|\s*([a-z][a-z0-9.\-]+)\s*\|", text, flags=re.M))
    for bold in re.findall(r"\*\*([a-z0-9.\- /]+)\*\*", text):
        ids.update(part.strip() for part in bold.split("/") if re.fullmatch(r"[a-z][a-z0-9.\-]+", part.strip()))
    return ids - {"id", *C.KINDS}  # the table header and the list of kinds


@pytest.mark.skipif(not CATALOGUE.exists(), reason="the shared claim catalogue is not next to this checkout")
def test_catalogue_ids_match_the_specs():
    assert catalogue_ids(CATALOGUE.read_text()) == CLAIM_IDS


def test_catalogue_id_parser():
    text = (
        "- **structure**: a test\n| id | who |\n|---|---|\n| some-claim | x |\n"
        "- **a-b / c-17.5x** (abstract)\n- **d-e**: text\n"
    )
    assert catalogue_ids(text) == {"some-claim", "a-b", "c-17.5x", "d-e"}


def test_every_kind_is_represented_and_out_of_scope_has_a_reason(specs):
    assert {s.kind for s in specs} == set(C.KINDS)
    for s in specs:
        assert (s.reason is not None) == (s.kind == "out-of-scope"), s.id


@pytest.mark.slow
def test_structure_node_ids_exist(specs):
    nodes = sorted({n for s in specs if s.kind == "structure" for n in s.check["tests"]})
    files = sorted({n.split("::")[0] for n in nodes})
    for f in files:
        assert (ROOT / f).exists(), f
    collected = C.collected_nodes(files, ROOT)
    assert collected, "pytest collected nothing"
    for node in nodes:
        assert C.node_exists(node, collected), f"{node} is not collected"


def test_audit_quantities_resolve_in_the_committed_audit(specs):
    audit = json.loads((ROOT / "goldens" / "audit.json").read_text())
    for s in specs:
        if s.kind != "audit":
            continue
        for item in s.check["expect"] + s.check.get("evidence", []):
            assert C.lookup(audit, C.keys_of(item["quantity"])) is not C.MISSING, (s.id, item["quantity"])
        assert C.evaluate_audit(s, audit, Path("audit.json")).verdict in (C.CONFIRMED, C.REFUTED), s.id


def test_experiment_queries_name_known_targets_and_units(specs):
    for s in specs:
        if s.kind != "experiment":
            continue
        keys = C.keys_of(s.check["value"])
        units = ("iterations", "images", "macs", "seconds")
        if keys[0] == "unit_results" and keys[2] == "ladder":  # a rung of the ladder: the baseline's step
            assert len(keys) == 5 and keys[3].isdigit() and keys[4] in units, s.id
        elif keys[0] == "unit_results":
            assert len(keys) == 4, f"{s.id}: a key with a dot needs the list form of the path"
            _, method, target, unit = keys
            assert target in ("final", "third", "final-mean", "common") and unit in units, s.id
        elif keys[0] == "growth":  # growth.<method>.<from>:<to>.<unit>
            assert len(keys) == 4 and ":" in keys[2] and keys[3] in units, s.id
        if s.check["scales"] != ["paper"]:
            assert "paper" not in s.check["scales"], s.id


def test_committed_ledger_matches_the_specs(specs):
    ledger = json.loads((ROOT / "reports" / "claims.json").read_text())
    assert [c["id"] for c in ledger["claims"]] == [s.id for s in specs]
    assert (ROOT / "reports" / "claims.md").exists()
    fresh = {r.spec.id: r.text for r in C.evaluate_all(specs, ROOT / "goldens", ROOT, run_tests=False)}
    committed = {c["id"]: c["verdict"] for c in ledger["claims"]}
    assert all(committed[i] == v for i, v in fresh.items()), {i: (committed[i], v) for i, v in fresh.items()}
    assert all(c["outcome"] in C.VERDICTS for c in ledger["claims"])
    for c in ledger["claims"]:  # an experiment verdict from golden runs states its scale and training length
        if c["kind"] == "experiment" and c["outcome"] not in (C.PENDING,) and c["scale"] != "paper":
            assert re.search(r"micro, [0-9.]+ epochs", c["verdict"]), c


# ------------------------------------------------------------------------------------------
# Schema errors name the file, the field, the value and what is allowed
# ------------------------------------------------------------------------------------------

VALID = {
    "id": "x-claim",
    "source": "somewhere",
    "claim": "something holds",
    "kind": "audit",
    "check": {"expect": [{"quantity": "a.b", "relation": "~=", "value": 1.0, "rel_tol": 0.1}]},
}


def mutated(path, value):
    data = copy.deepcopy(VALID)
    *parents, last = path
    target = data
    for p in parents:
        target = target[p]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return data


@pytest.mark.parametrize(
    "path,value,field,allowed",
    [
        (["kind"], "measurement", "'kind'", "'structure', 'audit', 'experiment', 'out-of-scope'"),
        (["id"], "Bad Id", "'id'", "lowercase"),
        (["id"], "other-claim", "'id'", "the file's name"),
        (["claim"], "two\nlines", "'claim'", "a single line"),
        (["claim"], KeyError, "'claim'", "required"),
        (["colour"], "red", "'colour'", "known fields"),
        (
            ["check", "expect", 0, "relation"],
            "approx",
            "'check.expect[0].relation'",
            "'==', '~=', '<', '<=', '>', '>='",
        ),
        (["check", "expect", 0, "rel_tol"], KeyError, "'check.expect[0].relation'", "exactly one of rel_tol"),
        (["check", "expect", 0, "value"], "one", "'check.expect[0].value'", "a finite real number"),
        (["check", "expect", 0, "quantity"], "a..b", "'check.expect[0].quantity'", "a dotted path"),
        (["check", "expect", 0, "format"], "%%", "'check.expect[0].format'", "format spec"),
        (["check", "expect"], [], "'check.expect'", "a non-empty list"),
        (["check", "if_hold"], "maybe", "'check.if_hold'", "'confirmed', 'refuted'"),
        (["check"], KeyError, "'check'", "required for kind 'audit'"),
        (["reason"], "because", "'reason'", "only for kind 'out-of-scope'"),
    ],
)
def test_bad_audit_spec_names_file_field_value_and_allowed(tmp_path, path, value, field, allowed):
    f = tmp_path / "x-claim.yaml"
    f.write_text(yaml.safe_dump(mutated(path, value)))
    with pytest.raises(C.SpecError) as err:
        C.load_spec(f)
    msg = str(err.value)
    assert str(f) in msg and field in msg and allowed in msg
    if value is not KeyError and not isinstance(value, list):
        assert repr(value) in msg


@pytest.mark.parametrize(
    "check,field,allowed",
    [
        ({"tests": ["not a node id"], "if_pass": "confirmed"}, "'check.tests[0]'", "a pytest node id"),
        ({"tests": ["tests/t.py::test_a"], "if_pass": "pending"}, "'check.if_pass'", "'confirmed', 'refuted'"),
        ({"tests": ["tests/t.py::test_a"]}, "'check.if_pass'", "required"),
    ],
)
def test_bad_structure_spec(tmp_path, check, field, allowed):
    f = tmp_path / "x-claim.yaml"
    f.write_text(yaml.safe_dump({**VALID, "kind": "structure", "check": check}))
    with pytest.raises(C.SpecError, match=re.escape(field)) as err:
        C.load_spec(f)
    assert allowed in str(err.value) and str(f) in str(err.value)


EXPERIMENT = {"scales": ["micro"], "value": "unit_results.tread.final.macs", "relation": ">=", "threshold": 1.0}


@pytest.mark.parametrize(
    "change,field,allowed",
    [
        ({"scales": ["huge"]}, "'check.scales[0]'", "'smoke', 'micro', 'micro-long', 'small', 'paper'"),
        ({"relation": "~="}, "'check.relation'", "'<', '<=', '>', '>='"),
        ({"threshold_path": "late_slope.tread"}, "'check.threshold'", "exactly one of threshold or threshold_path"),
        ({"file": "../x.json"}, "'check.file'", "a JSON file name"),
        ({"min_seeds": 0}, "'check.min_seeds'", "an integer >= 1"),
        ({"also": [{"file": "x.json"}]}, "'check.also[0].value' is missing", "it is required"),
        ({"also": [{"file": "x.txt", "value": "a.b"}]}, "'check.also[0].file'", "a JSON file name"),
    ],
)
def test_bad_experiment_spec(tmp_path, change, field, allowed):
    f = tmp_path / "x-claim.yaml"
    f.write_text(yaml.safe_dump({**VALID, "kind": "experiment", "check": {**EXPERIMENT, **change}}))
    with pytest.raises(C.SpecError, match=re.escape(field)) as err:
        C.load_spec(f)
    assert allowed in str(err.value)


def test_out_of_scope_needs_a_reason_and_no_check(tmp_path):
    f = tmp_path / "x-claim.yaml"
    f.write_text(yaml.safe_dump({**VALID, "kind": "out-of-scope", "reason": "no data"}))
    with pytest.raises(C.SpecError, match="'check'.*no check"):
        C.load_spec(f)
    data = {k: v for k, v in VALID.items() if k != "check"}
    f.write_text(yaml.safe_dump({**data, "kind": "out-of-scope"}))
    with pytest.raises(C.SpecError, match="'reason' is missing"):
        C.load_spec(f)


def _records(node):
    """Every Record of the declared schema, walking lists and the kind-dependent check."""
    from repro.evidence import schema as S

    if isinstance(node, S.Record):
        yield node
        for child, _ in node.fields.values():
            yield from _records(child)
    elif isinstance(node, S.ListOf):
        yield from _records(node.item)
    elif isinstance(node, S.ByKind):
        for case in node.cases.values():
            yield from _records(case)


def test_the_declared_schema_is_the_documented_one():
    from repro.evidence import schema as S

    names = {name for record in _records(C.SPEC) for name in record.fields}
    assert {"id", "kind", "check", "tests", "expect", "quantity", "threshold_path", "also"} <= names
    undocumented = sorted(n for n in names if f"``{n}``" not in S.__doc__)
    assert not undocumented, undocumented
    assert set(S.SPEC.fields["check"][0].cases) | {"out-of-scope"} == set(C.KINDS)


def test_parsed_specs_carry_the_schema_defaults():
    experiment = spec("experiment", dict(EXPERIMENT)).check
    assert (experiment["file"], experiment["min_seeds"], experiment["if_hold"], experiment["also"]) == (
        "speedup.json",
        3,
        C.CONFIRMED,
        [],
    )
    assert "threshold_path" not in experiment  # an optional field without a default stays absent
    audit = spec("audit", VALID["check"]).check
    assert audit["evidence"] == [] and audit["if_hold"] == C.CONFIRMED
    given = spec("experiment", {**EXPERIMENT, "min_seeds": 5, "if_hold": "refuted"}).check
    assert (given["min_seeds"], given["if_hold"]) == (5, C.REFUTED)


@pytest.mark.parametrize(
    "check,field,allowed",
    [
        ({**EXPERIMENT, "file": "speedup.json\n"}, "'check.file'", "a JSON file name"),
        ({**EXPERIMENT, "threshold": True}, "'check.threshold'", "a finite real number"),
        (
            {"expect": VALID["check"]["expect"], "evidence": [{"quantity": "a", "label": "two\nlines"}]},
            "'check.evidence[0].label'",
            "a single line",
        ),
        ({"expect": VALID["check"]["expect"], "colour": 1}, "'check.colour'", "known fields of check"),
    ],
)
def test_more_bad_checks_name_the_field(check, field, allowed):
    kind = "audit" if "expect" in check else "experiment"
    with pytest.raises(C.SpecError, match=re.escape(field)) as err:
        spec(kind, check)
    assert allowed in str(err.value) and "x-claim.yaml" in str(err.value)


def test_invalid_yaml_names_the_file(tmp_path):
    f = tmp_path / "x-claim.yaml"
    f.write_text("id: [unclosed\n")
    with pytest.raises(C.SpecError, match=re.escape(str(f))):
        C.load_spec(f)


# ------------------------------------------------------------------------------------------
# Verdict rules
# ------------------------------------------------------------------------------------------


def spec(kind, check, sid="x-claim"):
    return C.parse_spec({**VALID, "id": sid, "kind": kind, "check": check}, Path(f"{sid}.yaml"))


def test_audit_verdicts():
    check = {"expect": [{"quantity": "a.b", "relation": "~=", "value": 30, "abs_tol": 5}]}
    assert C.evaluate_audit(spec("audit", check), {"a": {"b": 33}}, Path("a.json")).verdict == C.CONFIRMED
    assert C.evaluate_audit(spec("audit", check), {"a": {"b": 36}}, Path("a.json")).verdict == C.REFUTED
    flipped = spec("audit", {**check, "if_hold": "refuted"})
    assert C.evaluate_audit(flipped, {"a": {"b": 33}}, Path("a.json")).verdict == C.REFUTED
    missing = C.evaluate_audit(spec("audit", check), {"a": {}}, Path("a.json"))
    assert missing.verdict == C.CHECK_FAILED and "a.b" in missing.evidence[0]
    assert C.evaluate_audit(spec("audit", check), None, Path("a.json")).verdict == C.CHECK_FAILED


def speedup_record(ratio, lo, hi, seeds=5, ge=None, lt=None, status="ok", **extra):
    return {
        "ratio": ratio,
        "ratio_is": "estimate",
        "ci_low": lo,
        "ci_high": hi,
        "seeds": seeds,
        "reached": f"{seeds}/{seeds}",
        "baseline_seeds": seeds,
        "baseline_reached": f"{seeds}/{seeds}",
        "p_value_ge_k": {"1.0": None if ge is None else 0.01 if ge else 0.4},
        "p_value_lt_k": {"1.0": None if lt is None else 0.01 if lt else 0.4},
        "ge_k": {"1.0": ge},
        "lt_k": {"1.0": lt},
        "mde": {"factor": 1.4, "power": 0.8, "alpha_one_sided": 0.025},
        "status": status,
        "costs": {"baseline": [1.0] * seeds, "method": [1.0] * seeds},
        **extra,
    }


def write_golden(root, scale, record, **extra):
    path = root / scale / "speedup.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "scale": scale,
        "baseline": "dit",
        "run_ids": ["dit-s0", "tread-s0"],
        "unit_results": {"tread": {"final": {"macs": record}}},
        **extra,
    }
    path.write_text(json.dumps(report))
    return path


@pytest.mark.parametrize(
    "record,verdict",
    [
        (speedup_record(2.0, 1.5, 2.6, ge=True, lt=False), C.CONFIRMED),
        (speedup_record(0.6, 0.5, 0.8, ge=False, lt=True), C.REFUTED),
        (speedup_record(1.1, 0.8, 1.5, ge=False, lt=False), C.NOT_SUPPORTED),
        (speedup_record(2.0, None, None, seeds=1, status="one seed"), C.INCONCLUSIVE),
        (speedup_record(2.0, 1.5, 2.6, seeds=2, ge=True, lt=False), C.INCONCLUSIVE),  # fewer than min_seeds
        # a method seed that did not reach the target: no test for the claim, and by itself nothing against it
        (
            speedup_record(0.9, 0.6, 1.4, lt=False, ratio_is="upper bound", status="not reached by 1 of 5"),
            C.NOT_SUPPORTED,
        ),
        (speedup_record(0.9, 0.6, 1.4, ratio_is="censored on both sides"), C.INCONCLUSIVE),
        (speedup_record(None, None, None, status="baseline reached the target in 0 of 5 seeds"), C.INCONCLUSIVE),
    ],
)
def test_experiment_speedup_verdicts(tmp_path, record, verdict):
    write_golden(tmp_path, "micro", record)
    result = C.evaluate_experiment(spec("experiment", EXPERIMENT), tmp_path)
    assert result.verdict == verdict, result.evidence
    assert result.scale == "micro" and "dvc repro" in result.recheck
    assert "tread-s0" in " ".join(result.evidence)


def _diverged(root, stage, scale="micro"):
    path = root / "diverged" / f"{stage}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    method, seed = stage.split("@")[1].rsplit("-", 1)
    command = f"repro train --scale {scale} --method {method} --seed {seed}"
    path.write_text(json.dumps({"stage": stage, "command": command}))
    return path


def test_a_diverged_run_of_a_named_method_leaves_no_decided_verdict(tmp_path):
    write_golden(tmp_path, "micro", speedup_record(2.0, 1.5, 2.6, ge=True, lt=False))
    s = spec("experiment", EXPERIMENT)
    assert C.evaluate_experiment(s, tmp_path).verdict == C.CONFIRMED
    _diverged(tmp_path, "train@post-norm-2")  # a method the query does not name
    _diverged(tmp_path, "train@tread-1", scale="small")  # another scale's run
    result = C.evaluate_experiment(s, tmp_path)
    assert result.verdict == C.CONFIRMED and not any(e.startswith("diverged") for e in result.evidence), result.evidence
    for stage, named in (("train@tread-3", "tread-s3"), ("train@dit-4", "dit-s4")):  # the method, then the baseline
        record = _diverged(tmp_path, stage)
        result = C.evaluate_experiment(s, tmp_path)
        assert result.verdict == C.INCONCLUSIVE, result.evidence
        line = [e for e in result.evidence if e.startswith("diverged")]
        assert len(line) == 1 and named in line[0] and "post-norm" not in line[0], line
        record.unlink()
    write_golden(tmp_path, "micro", speedup_record(2.0, None, None, seeds=1, status="one seed"))
    _diverged(tmp_path, "train@tread-3")
    result = C.evaluate_experiment(s, tmp_path)  # undecided anyway: the line names the run, nothing more
    assert result.verdict == C.INCONCLUSIVE and any(e.startswith("diverged") for e in result.evidence)
    (tmp_path / "diverged" / "train@tread-3.json").write_text("{not json")
    result = C.evaluate_experiment(s, tmp_path)  # a broken record never hides the failure
    assert any("train@tread-3.json (unreadable record)" in e for e in result.evidence), result.evidence


def test_experiment_pending_until_goldens_exist(tmp_path):
    s = spec("experiment", EXPERIMENT)
    assert C.evaluate_experiment(s, tmp_path).verdict == C.PENDING
    path = tmp_path / "micro" / "speedup.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"unit_results": {}}))
    result = C.evaluate_experiment(s, tmp_path)
    assert result.verdict == C.PENDING and "unit_results.tread.final.macs" in result.evidence[0]
    path.write_text(json.dumps({"unit_results": {}, "status": "no runs yet: the baseline 'dit' has no curve"}))
    result = C.evaluate_experiment(s, tmp_path)  # a comparison of a campaign in progress says why it is empty
    assert result.verdict == C.PENDING and result.evidence[0].endswith("(no runs yet: the baseline 'dit' has no curve)")


def test_shares_give_each_parts_log_speedup_as_a_share_of_the_wholes(tmp_path):
    write_golden(tmp_path, "micro", speedup_record(2.0, 1.5, 2.6, ge=True, lt=False))
    shares = {
        "whole": {"file": "speedup.json", "value": "unit_results.tread.final.macs", "label": "both"},
        "parts": [
            {"file": "part.json", "value": "unit_results.a.final.macs", "label": "routing"},
            {"file": "speedup.json", "value": "unit_results.tread.final.macs", "label": "itself"},
        ],
    }
    s = spec("experiment", {**EXPERIMENT, "shares": shares})
    line = [e for e in C.evaluate_experiment(s, tmp_path).evidence if e.startswith("shares")]
    assert line == [f"shares: waiting for routing ({tmp_path / 'micro' / 'part.json'}: unit_results.a.final.macs)"]
    part = {"unit_results": {"a": {"final": {"macs": speedup_record(2**0.5, 1.1, 1.8, ge=True, lt=False)}}}}
    (tmp_path / "micro" / "part.json").write_text(json.dumps(part))
    result = C.evaluate_experiment(s, tmp_path)
    line = [e for e in result.evidence if e.startswith("shares")]
    assert len(line) == 1 and "routing 1.41x (50%), itself 2x (100%)" in line[0], line
    assert result.verdict == C.CONFIRMED  # shown, never deciding
    with pytest.raises(C.SpecError, match="shares.parts"):
        spec("experiment", {**EXPERIMENT, "shares": {**shares, "parts": []}})


def test_experiment_prefers_the_first_listed_scale(tmp_path):
    write_golden(tmp_path, "micro", speedup_record(0.6, 0.5, 0.8, ge=False, lt=True))
    write_golden(tmp_path, "small", speedup_record(2.0, 1.5, 2.6, ge=True, lt=False))
    s = spec("experiment", {**EXPERIMENT, "scales": ["small", "micro"]})
    result = C.evaluate_experiment(s, tmp_path)
    assert (result.verdict, result.scale) == (C.CONFIRMED, "small")
    # a preferred scale whose report does not hold the compared method yet (its runs are still being made) leaves
    # the decision to the next scale that does; with none holding it the claim is pending at the first
    path = tmp_path / "small" / "speedup.json"
    path.write_text(json.dumps({"scale": "small", "baseline": "dit", "unit_results": {}}))
    result = C.evaluate_experiment(s, tmp_path)
    assert (result.verdict, result.scale) == (C.REFUTED, "micro")
    (tmp_path / "micro" / "speedup.json").write_text(json.dumps({"scale": "micro", "unit_results": {}}))
    assert (C.evaluate_experiment(s, tmp_path).verdict, C.evaluate_experiment(s, tmp_path).scale) == (
        C.PENDING,
        "small",
    )


def test_paper_scale_only_is_not_checkable(tmp_path):
    s = spec("experiment", {**EXPERIMENT, "scales": ["paper"]})
    assert C.evaluate_experiment(s, tmp_path).verdict == C.NOT_CHECKABLE
    write_golden(tmp_path, "paper", speedup_record(2.0, 1.5, 2.6, ge=True, lt=False))
    # a paper golden that `repro land` did not write (no provenance, no FID records) decides nothing
    hand_typed = C.evaluate_experiment(s, tmp_path)
    assert hand_typed.verdict == C.CHECK_FAILED, hand_typed.evidence


def test_experiment_compares_seed_samples(tmp_path):
    slopes = {
        "dit": {"mean": -1.0, "per_seed": [-1.1, -0.9, -1.0, -1.05]},
        "tread": {"mean": -4.0, "per_seed": [-4.2, -3.8, -4.1, -3.9]},
    }
    write_golden(tmp_path, "micro", speedup_record(2.0, 1.5, 2.6), late_slope=slopes)
    check = {"scales": ["micro"], "value": "late_slope.dit", "relation": ">", "threshold_path": "late_slope.tread"}
    assert C.evaluate_experiment(spec("experiment", check), tmp_path).verdict == C.CONFIRMED
    check["relation"] = "<"
    assert C.evaluate_experiment(spec("experiment", check), tmp_path).verdict == C.REFUTED


def test_experiment_verdict_states_scale_training_length_and_detectable_effect(tmp_path):
    training = {"dit": {"images": 15360.0, "epochs": 0.256}, "tread": {"images": 19072.0, "epochs": 0.318}}
    write_golden(tmp_path, "micro", speedup_record(1.1, 0.8, 1.5, ge=False, lt=False), training=training)
    r = C.evaluate_experiment(spec("experiment", EXPERIMENT), tmp_path)
    assert r.verdict == C.NOT_SUPPORTED and r.text == "not supported at micro, 0.26 epochs"
    assert r.to_json()["verdict"] == r.text and r.to_json()["outcome"] == C.NOT_SUPPORTED
    assert "minimum detectable effect at 5 vs 5 seeds (80% power): speedup >= 1.4 or <= 0.714" in r.evidence[0]
    assert "training length: dit 0.256 epochs, tread 0.318 epochs" in r.evidence


def test_sanity_gate_withholds_the_verdict_of_the_methods_it_names(tmp_path):
    gate = {"rule": "final FID < 22.58", "reference": "ref.json", "failed_by_method": {"sit": ["micro-sit-s0"]}}
    write_golden(tmp_path, "micro", speedup_record(2.0, 1.5, 2.6, ge=True, lt=False), gate=gate)
    r = C.evaluate_experiment(spec("experiment", EXPERIMENT), tmp_path)
    assert r.verdict == C.CONFIRMED and "every run passes" in r.evidence[-1]  # sit is not part of tread vs dit
    gate["failed_by_method"] = {"dit": ["micro-dit-s1"], "sit": ["micro-sit-s0"]}
    write_golden(tmp_path, "micro", speedup_record(2.0, 1.5, 2.6, ge=True, lt=False), gate=gate)
    r = C.evaluate_experiment(spec("experiment", EXPERIMENT), tmp_path)
    assert r.verdict == C.DOES_NOT_GENERATE and "failed by 1 run(s): micro-dit-s1" in r.evidence[-1]
    assert "p(speedup >= 1) = 0.01" in r.evidence[0]  # the test is still shown


def test_late_slope_without_enough_points_is_not_checkable(tmp_path):
    slopes = {
        "dit": {"mean": None, "per_seed": [None, None, None], "not_checkable": "2 evaluation(s) in the last third"},
        "tread": {"mean": None, "per_seed": [None, None, None], "not_checkable": "1 evaluation(s) in the last third"},
    }
    write_golden(tmp_path, "micro", speedup_record(2.0, 1.5, 2.6), late_slope=slopes, training={"dit": {"epochs": 2.1}})
    check = {"scales": ["micro"], "value": "late_slope.dit", "relation": ">", "threshold_path": "late_slope.tread"}
    r = C.evaluate_experiment(spec("experiment", check), tmp_path)
    assert r.verdict == C.NOT_CHECKABLE and r.text == "not checkable at this scale (micro, 2.1 epochs)"
    assert "2 evaluation(s) in the last third" in r.evidence[0]


def test_also_queries_are_shown_but_do_not_decide(tmp_path):
    write_golden(tmp_path, "micro", speedup_record(2.0, 1.5, 2.6, ge=True, lt=False))
    other = tmp_path / "micro" / "speedup-val-loss.json"
    rec = speedup_record(0.5, 0.4, 0.6, ge=False, lt=True)
    other.write_text(json.dumps({"metric": "val_loss", "unit_results": {"tread": {"final": {"macs": rec}}}}))
    check = {**EXPERIMENT, "also": [{"file": "speedup-val-loss.json", "value": "unit_results.tread.final.macs"}]}
    r = C.evaluate_experiment(spec("experiment", check), tmp_path)
    assert r.verdict == C.CONFIRMED
    assert any(e.startswith("also, on val_loss") and "would be refuted" in e for e in r.evidence)


def test_an_also_query_on_a_late_slope_without_enough_points_says_why(tmp_path):
    """A secondary metric evaluated too rarely for a late-slope fit says so, not "fewer than two seeds"."""
    ok = {"dit": {"per_seed": [-1.1, -0.9, -1.0]}, "tread": {"per_seed": [-4.2, -3.8, -4.1]}}
    write_golden(tmp_path, "micro", speedup_record(2.0, 1.5, 2.6), late_slope=ok)
    few = {m: {"per_seed": [None] * 3, "not_checkable": f"2 evaluation(s) in {m}'s last third"} for m in ok}
    other = tmp_path / "micro" / "speedup-fid.json"
    other.write_text(json.dumps({"metric": "fid", "late_slope": few}))
    check = {
        "scales": ["micro"], "value": "late_slope.dit", "relation": ">", "threshold_path": "late_slope.tread",
        "also": [{"file": "speedup-fid.json", "value": "late_slope.dit"}],
    }  # fmt: skip
    r = C.evaluate_experiment(spec("experiment", check), tmp_path)
    assert r.verdict == C.CONFIRMED  # the deciding query is unaffected
    (line,) = [e for e in r.evidence if e.startswith("also, on fid")]
    assert "would be not checkable at this scale: 2 evaluation(s) in dit's last third" in line, line
    assert "fewer than two seeds" not in line


@pytest.mark.slow
def test_structure_verdicts_come_from_pytest(tmp_path):
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_fake.py").write_text(
        "import pytest\n\n"
        "def test_ok():\n    assert True\n\n"
        "def test_bad():\n    assert False\n\n"
        "@pytest.mark.parametrize('x', [1, 2])\ndef test_param(x):\n    assert x\n"
    )
    specs = [
        spec(
            "structure",
            {"tests": ["tests/test_fake.py::test_ok", "tests/test_fake.py::test_param"], "if_pass": "refuted"},
            "a-claim",
        ),
        spec(
            "structure",
            {"tests": ["tests/test_fake.py::test_ok", "tests/test_fake.py::test_bad"], "if_pass": "confirmed"},
            "b-claim",
        ),
        spec("structure", {"tests": ["tests/test_fake.py::test_absent"], "if_pass": "confirmed"}, "c-claim"),
    ]
    a, b, c = C.evaluate_structure(specs, tmp_path)
    assert a.verdict == C.REFUTED and "2 passed" in a.evidence[1]
    assert b.verdict == C.CHECK_FAILED and "failed" in b.evidence[1]
    assert c.verdict == C.CHECK_FAILED
    assert a.recheck == "python -m pytest -q tests/test_fake.py::test_ok tests/test_fake.py::test_param"


# ------------------------------------------------------------------------------------------
# The command: reports, drift and exit codes
# ------------------------------------------------------------------------------------------


def run_claims(tmp_path, *extra):
    from repro.cli import main

    return main(
        [
            "claims",
            "--specs",
            str(tmp_path / "specs"),
            "--goldens",
            str(tmp_path / "goldens"),
            "--reports",
            str(tmp_path / "reports"),
            "--root",
            str(tmp_path),
            *extra,
        ]
    )


def test_claims_command_writes_reports_and_catches_drift(tmp_path, capsys):
    (tmp_path / "specs").mkdir()
    (tmp_path / "goldens").mkdir()
    audit_spec = {**VALID, "check": {"expect": [{"quantity": "a.b", "relation": ">=", "value": 1}]}}
    (tmp_path / "specs" / "x-claim.yaml").write_text(yaml.safe_dump(audit_spec))
    oos = {"id": "y-claim", "source": "s", "claim": "c", "kind": "out-of-scope", "reason": "no data"}
    (tmp_path / "specs" / "y-claim.yaml").write_text(yaml.safe_dump(oos))
    audit = tmp_path / "goldens" / "audit.json"
    audit.write_text(json.dumps({"a": {"b": 2}}))

    assert run_claims(tmp_path) == 1  # no committed ledger yet
    assert "no committed ledger" in capsys.readouterr().err
    assert not (tmp_path / "reports").exists()
    assert run_claims(tmp_path, "--update") == 0
    assert "verdict" not in capsys.readouterr().err  # writing the first ledger (as dvc repro does) is no drift
    ledger = json.loads((tmp_path / "reports" / "claims.json").read_text())
    verdicts = [(c["id"], c["verdict"]) for c in ledger["claims"]]
    assert verdicts == [("x-claim", C.CONFIRMED), ("y-claim", C.OUT_OF_SCOPE)]
    md = (tmp_path / "reports" / "claims.md").read_text()
    assert "| `x-claim` | audit | **confirmed** |" in md
    assert "re-check: `repro audit && repro claims --only x-claim`" in md
    assert run_claims(tmp_path) == 0

    audit.write_text(json.dumps({"a": {"b": 0}}))  # the verdict flips to refuted
    capsys.readouterr()
    assert run_claims(tmp_path) == 1
    assert "x-claim: committed 'confirmed', now 'refuted'" in capsys.readouterr().err
    assert json.loads((tmp_path / "reports" / "claims.json").read_text()) == ledger  # not overwritten

    assert run_claims(tmp_path, "--update") == 0  # an accepted change is named
    assert "verdict changed: x-claim: committed 'confirmed', now 'refuted'" in capsys.readouterr().err

    audit.write_text(json.dumps({"a": {}}))  # the quantity disappears: the check itself fails
    assert run_claims(tmp_path, "--update") == 1
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["claims.json", "claims.md"]


def test_claims_only_and_unknown_ids(tmp_path, capsys):
    (tmp_path / "specs").mkdir()
    oos = {"id": "y-claim", "source": "s", "claim": "c", "kind": "out-of-scope", "reason": "no data"}
    (tmp_path / "specs" / "y-claim.yaml").write_text(yaml.safe_dump(oos))
    assert run_claims(tmp_path, "--only", "nope") == 2  # bad input, as for every command
    assert "repro claims: error: --only: unknown id(s) ['nope']; allowed: y-claim" in capsys.readouterr().err
    assert run_claims(tmp_path, "--update") == 0
    assert run_claims(tmp_path, "--only", "y-claim") == 0


def test_bad_spec_stops_the_command(tmp_path, capsys):
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "x-claim.yaml").write_text(yaml.safe_dump({**VALID, "kind": "guess"}))
    assert run_claims(tmp_path) == 2  # bad input, not a failed check
    assert "x-claim.yaml: field 'kind': unknown value 'guess'; allowed: 'structure'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# Non-inferiority margins, bounds, broken records, and the family-wise adjustment
# ------------------------------------------------------------------------------------------


def test_a_margin_makes_a_comparison_of_final_values_a_non_inferiority_test(tmp_path):
    finals = {
        "dit": {"mean": 1.0, "per_seed": [0.99, 1.0, 1.01, 1.0, 1.0]},
        "post-norm": {"mean": 1.02, "per_seed": [1.02, 1.021, 1.019]},  # 2% worse, tightly
    }
    write_golden(tmp_path, "micro", speedup_record(2.0, 1.5, 2.6), final_values=finals)
    check = {"scales": ["micro"], "value": "final_values.post-norm", "relation": "<="}
    check["threshold_path"] = "final_values.dit"
    assert C.evaluate_experiment(spec("experiment", check), tmp_path).verdict == C.REFUTED  # worse, significantly
    within = C.evaluate_experiment(spec("experiment", {**check, "margin": 0.05}), tmp_path)
    assert within.verdict == C.CONFIRMED and "x 1.05 (non-inferiority margin 0.05)" in within.evidence[0]
    beyond = C.evaluate_experiment(spec("experiment", {**check, "margin": 0.01}), tmp_path)
    assert beyond.verdict == C.REFUTED  # 2% is beyond a 1% margin


def test_a_bound_is_printed_as_one_without_an_interval(tmp_path):
    record = speedup_record(0.9, None, None, ge=None, lt=False, ratio_is="upper bound", status="not reached by 3 of 3")
    write_golden(tmp_path, "micro", record)
    r = C.evaluate_experiment(spec("experiment", EXPERIMENT), tmp_path)
    assert "ratio at most 0.9x (upper bound: no interval)" in r.evidence[0]
    assert "p(speedup < 1) = 0.4 (one-sided Welch t on the bound" in r.evidence[0]
    assert r.verdict == C.NOT_SUPPORTED


@pytest.mark.parametrize(
    "change,field",
    [
        ({"p_value_ge_k": {"1.0": "0.01"}}, "p_value_ge_k.1.0"),  # a string is not a p-value
        ({"p_value_lt_k": {"1.0": float("nan")}}, "p_value_lt_k.1.0"),
        ({"p_value_ge_k": {"1.0": 1.5}}, "p_value_ge_k.1.0"),
        ({"p_value_ge_k": "low"}, "p_value_ge_k"),
        ({"ratio": float("nan")}, "ratio"),
        ({"ratio": -2.0}, "ratio"),
        ({"ci_low": float("inf")}, "ci_low"),
    ],
)
def test_a_broken_record_fails_the_check_naming_the_file_and_field_never_a_verdict(tmp_path, change, field):
    record = {**speedup_record(2.0, 1.5, 2.6, ge=True, lt=False), **change}
    path = tmp_path / "micro" / "speedup.json"
    path.parent.mkdir(parents=True)
    report = {"scale": "micro", "baseline": "dit", "unit_results": {"tread": {"final": {"macs": record}}}}
    path.write_text(json.dumps(report, allow_nan=True))
    r = C.evaluate_experiment(spec("experiment", EXPERIMENT), tmp_path)
    assert r.verdict == C.CHECK_FAILED, r.evidence
    assert str(path) in r.evidence[0] and f"{field}=" in r.evidence[0]


def test_holm_adjusts_a_textbook_example():
    # sorted 0.005, 0.01, 0.03, 0.04 with m = 4: 4 x 0.005, 3 x 0.01, 2 x 0.03, then max(0.06, 1 x 0.04)
    assert C.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert C.holm([0.5]) == [0.5] and C.holm([0.6, 0.9]) == [1.0, 1.0]


def _family_result(sid, p_for, p_against, scale="micro", value="unit_results.tread.final.macs", file="speedup.json"):
    check = {**EXPERIMENT, "value": value, "file": file}
    s = spec("experiment", check, sid=sid)
    test = C.Test(p_for, p_against, "text")
    verdict = C.CONFIRMED if test.holds else C.REFUTED if test.holds is False else C.NOT_SUPPORTED  # unadjusted
    key = C.rules._test_key(scale, s.check)
    return C.Result(
        s, verdict, ["first", "second"], "", scale, family={"key": key, "test": test, "if_hold": C.CONFIRMED}
    )


def test_the_family_is_decided_on_holm_adjusted_p_with_a_shared_test_counted_once():
    strong = _family_result("a-claim", 0.001, 0.999)  # two-sided 0.002
    weak = _family_result("b-claim", 0.02, 0.98, value="unit_results.sit.final.macs")  # 0.04: raw, confirmed
    against = _family_result("c-claim", 0.999, 0.0001, value="unit_results.sd.final.macs")  # 0.0002
    # the same comparison read in another cost unit: one test, counted once (with the larger p)
    twin = _family_result("d-claim", 0.0011, 0.9989, value="unit_results.tread.final.iterations")
    other_scale = _family_result("e-claim", 0.02, 0.98, scale="small")  # its own family of one
    results = [strong, weak, against, twin, other_scale]
    C.apply_holm(results)
    # micro: three distinct tests (p = 0.0002, 0.0022, 0.04): adjusted 0.0006, 0.0044, 0.04
    assert against.verdict == C.REFUTED and "adjusted 0.0006" in against.evidence[1]
    assert strong.verdict == twin.verdict == C.CONFIRMED and "shared with 1 other claim" in strong.evidence[1]
    assert "two-sided p = 0.0022" in strong.evidence[1] and "adjusted 0.0044" in twin.evidence[1]
    assert weak.verdict == C.CONFIRMED and "adjusted 0.04" in weak.evidence[1]
    assert other_scale.verdict == C.CONFIRMED and "Holm over the 1 distinct tests at small" in other_scale.evidence[1]
    # a fourth, null test makes the weak one's adjusted p 2 x 0.04: it is no longer decided
    results = [_family_result(i, *p, value=v) for i, p, v in [
        ("a-claim", (0.001, 0.999), "unit_results.tread.final.macs"),
        ("b-claim", (0.02, 0.98), "unit_results.sit.final.macs"),
        ("c-claim", (0.999, 0.0001), "unit_results.sd.final.macs"),
        ("f-claim", (0.4, 0.6), "unit_results.other.final.macs"),
    ]]  # fmt: skip
    C.apply_holm(results)
    weak = results[1]
    assert weak.verdict == C.NOT_SUPPORTED and "adjusted 0.08" in weak.evidence[1]
    assert "unadjusted, the test reads confirmed" in weak.evidence[1]


def test_the_committed_ledger_decides_every_experiment_claim_on_one_family():
    ledger = json.loads((ROOT / "reports" / "claims.json").read_text())
    lines = [
        line
        for c in ledger["claims"]
        if c["kind"] == "experiment"
        for line in c["evidence"]
        if line.startswith("family-wise:")
    ]
    sizes = {re.search(r"Holm over the (\d+) distinct tests at ([\w-]+)", line).groups() for line in lines}
    assert len(sizes) == 1 and lines, sizes  # one family at micro, the same size in every claim's line


def test_a_one_sided_p_between_the_levels_decides_nothing(tmp_path):
    # each one-sided test runs at 0.025 (the 95% interval's two sides): p = 0.03 for the claim is not enough
    record = {**speedup_record(1.3, 0.98, 1.7), "p_value_ge_k": {"1.0": 0.03}, "p_value_lt_k": {"1.0": 0.97}}
    write_golden(tmp_path, "micro", record)
    assert C.evaluate_experiment(spec("experiment", EXPERIMENT), tmp_path).verdict == C.NOT_SUPPORTED
    record["p_value_ge_k"]["1.0"] = 0.02
    write_golden(tmp_path, "micro", record)
    assert C.evaluate_experiment(spec("experiment", EXPERIMENT), tmp_path).verdict == C.CONFIRMED
