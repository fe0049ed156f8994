"""The speedup report as a declared record (repro/evidence/speedup/record.py) and the one Welch implementation.

The committed reports parse into the dataclasses and serialise back to the same bytes; the ledger reads them by
type; Welch's t-test is computed in one place (repro/evidence/speedup/stats.py), checked against a hand computation and
against scipy's independent implementation.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from repro.evidence import CONFIRMED, REFUTED, experiment_test
from repro.evidence.speedup import files
from repro.evidence.speedup.record import (
    VERSION,
    BrokenRecord,
    Comparison,
    MatchedSlope,
    NoGrowth,
    Sample,
    SpeedupReport,
    k_key,
    record_at,
)
from repro.evidence.speedup.stats import compare, one_sample, welch, welch_tests

ROOT = Path(__file__).resolve().parents[1]
GOLDENS = sorted((ROOT / "goldens").glob("*/speedup*.json"))


def test_there_are_committed_reports_to_check():
    assert {p.name for p in GOLDENS} >= {"speedup.json", "speedup-val-loss.json", "speedup-vs-tread.json"}


@pytest.mark.parametrize("path", GOLDENS, ids=[str(p.relative_to(ROOT)) for p in GOLDENS])
def test_a_committed_report_parses_and_serialises_back_to_the_same_bytes(path, tmp_path):
    raw = path.read_bytes()
    report = SpeedupReport.from_json(json.loads(raw))
    assert report.version == VERSION
    assert (json.dumps(report.to_json(), indent=2) + "\n").encode() == raw
    written = files.write_json(report.to_json(), tmp_path / "again.json")  # the writer's own rounding: a no-op
    assert written.read_bytes() == raw


def test_a_landed_paper_report_round_trips_with_what_the_landing_adds():
    from repro.evidence import paper

    report = json.loads((ROOT / "goldens/micro/speedup.json").read_bytes())
    report["fid_records"] = {"paper-dit-s0": [{"fid": 19.47, "step": 400000}]}
    head = {"format": paper.FORMAT, "landed_by": paper.LANDED_BY, "scale": "paper"}
    landed = paper.seal({**report, **head, "provenance": {"command": "repro land", "git_commit": "e" * 40}})
    again = SpeedupReport.from_json(json.loads(json.dumps(landed))).to_json()
    assert json.dumps(again) == json.dumps(landed)
    assert paper.digest(again) == landed["digest"]


@pytest.mark.parametrize("path", GOLDENS, ids=[str(p.relative_to(ROOT)) for p in GOLDENS])
def test_every_record_of_a_committed_report_is_typed(path):
    data = json.loads(path.read_bytes())
    report = SpeedupReport.from_json(data)
    if (report.status or "").startswith("no runs yet"):  # a campaign in progress (--allow-no-runs): empty
        assert data["unit_results"] == {} and data["runs"] == [] and not report.growth
        return
    assert set(report.unit_results) == set(data["unit_results"]) and report.unit_results
    for targets in report.unit_results.values():
        for target, per in targets.items():
            units = [u for rung in per.values() for u in rung.values()] if target == "ladder" else per.values()
            for record in units:
                assert isinstance(record, Comparison)
                assert record.seeds == len(record.costs.method)
                assert record.baseline_seeds == len(record.costs.baseline)
                assert (record.target is not None) == (target == "common")
    assert all(isinstance(s, Sample) for s in [*report.late_slope.values(), *report.final_values.values()])
    assert all(isinstance(m, MatchedSlope) for m in report.matched_slope.values())
    for pairs in (report.growth or {}).values():
        for units in pairs.values():
            assert all(isinstance(r, (Comparison, NoGrowth)) for r in units.values())


def test_the_ledger_types_a_value_by_where_it_sits_in_the_report():
    data = json.loads((ROOT / "goldens/micro/speedup.json").read_bytes())
    method = next(iter(data["unit_results"]))
    keys = ["unit_results", method, "final", "macs"]
    record = record_at(keys, data["unit_results"][method]["final"]["macs"])
    assert isinstance(record, Comparison)
    assert record.p("ge", 1) == data["unit_results"][method]["final"]["macs"]["p_value_ge_k"]["1.0"]
    assert isinstance(record_at(["late_slope", method], data["late_slope"][method]), Sample)
    arm = data["matched_slope"][method]["baseline"]
    assert isinstance(record_at(["matched_slope", method, "baseline"], arm), Sample)
    assert record_at(["targets", "final"], 12.5) == 12.5  # not a record: as it is
    assert record_at(["unit_results", method, "final"], {"macs": {}}) == {"macs": {}}  # a section, not a record


def _record(**change):
    base = compare([100.0, 110.0, 120.0], [400.0] * 3, [50.0, 52.0, 49.0], ks=(1.0, 2.0), method_final=[400.0] * 3)
    return {**base, **change}


def test_a_record_that_no_writer_writes_is_refused_naming_its_field():
    good = _record()
    assert Comparison.from_json(good).to_json() == good
    flipped = {**good["ge_k"], "1.0": not good["ge_k"]["1.0"]}  # a flag that contradicts its p-value
    with pytest.raises(BrokenRecord, match=r"ge_k\.1\.0="):
        Comparison.from_json(_record(ge_k=flipped))
    with pytest.raises(BrokenRecord, match="ge_k is missing"):  # no "older records" without outcome tables
        Comparison.from_json({k: v for k, v in good.items() if k != "ge_k"})
    with pytest.raises(BrokenRecord, match=r"^ratio="):
        Comparison.from_json(_record(ratio=0.0))
    with pytest.raises(BrokenRecord, match=r"per_seed\[1\]="):
        Sample.from_json({"mean": 1.0, "std": None, "per_seed": [1.0, "2"]}).values()


def test_one_key_formatter_for_k():
    record = Comparison.from_json(_record())
    assert list(record.p_value_ge_k) == ["1.0", "2.0"] == [k_key(1), k_key(2.0)]
    sources = {p.relative_to(ROOT).as_posix(): p.read_text() for p in (ROOT / "repro").rglob("*.py")}
    formatters = [rel for rel, text in sources.items() if "repr(float(k))" in text]
    assert formatters == ["repro/evidence/speedup/record.py"]


def test_welch_matches_a_hand_computation():
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 4.0, 6.0])
    # variances 5/3 and 4; squared standard errors 5/12 and 4/3; Welch-Satterthwaite df by hand
    va, vb = 5.0 / 12.0, 4.0 / 3.0
    diff, se, df = welch(a, b)
    assert diff == pytest.approx(2.5 - 4.0)
    assert se == pytest.approx(math.sqrt(va + vb))
    assert df == pytest.approx((va + vb) ** 2 / (va**2 / 3 + vb**2 / 2))
    assert one_sample(a, 2.0) == pytest.approx((0.5, math.sqrt(5.0 / 3.0 / 4.0), 3.0))


@pytest.mark.parametrize("seed", range(5))
def test_welch_tests_agree_with_scipy(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0.3, 1.0, 4), rng.normal(0.0, 2.0, 6)
    above, below, _, _ = welch_tests(a, b)
    assert above == pytest.approx(scipy_stats.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue)
    assert below == pytest.approx(scipy_stats.ttest_ind(a, b, equal_var=False, alternative="less").pvalue)
    above, below, _, _ = welch_tests(a, 0.1)
    assert above == pytest.approx(scipy_stats.ttest_1samp(a, 0.1, alternative="greater").pvalue)
    assert below == pytest.approx(scipy_stats.ttest_1samp(a, 0.1, alternative="less").pvalue)


def test_the_ledger_compares_samples_with_the_one_welch():
    a = Sample(None, None, [1.0, 1.2, 0.9, 1.1])
    b = Sample(None, None, [2.0, 2.3, 1.8])
    verdict, test = experiment_test(a, "<", b, 3)
    assert verdict == CONFIRMED
    assert test.p_for == pytest.approx(scipy_stats.ttest_ind(a.per_seed, b.per_seed, equal_var=False,
                                                             alternative="less").pvalue)  # fmt: skip
    assert experiment_test(b, "<", a, 3)[0] == REFUTED


def test_welch_is_implemented_once():
    """No module but repro/evidence/speedup/stats.py computes a Welch test: no scipy t-test, no second df derivation."""
    found = []
    for path in sorted((ROOT / "repro").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        text = path.read_text()
        for pattern in (r"ttest_ind", r"ttest_1samp", r"equal_var", r"\bdef welch\b", r"var\(ddof=1\) / "):
            if re.search(pattern, text) and rel != "repro/evidence/speedup/stats.py":
                found.append(f"{rel}: {pattern}")
    assert not found, found
