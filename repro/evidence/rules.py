"""Verdict rules: how an audit expectation or an experiment query over the goldens becomes a verdict.

How an experiment query is decided (:func:`experiment_verdict`). The value at the path is one of:

- a speedup record as ``repro speedup`` writes under ``unit_results.<method>.<target>.<cost unit>`` (targets:
  ``final``, ``third``, ``final-mean``, ``common``, or a rung of the ladder, ``ladder.<rung>``; see
  ``repro/evidence/speedup/``). With a number threshold ``k`` and ``>=``/``>``: holds when the one-sided test of
  "speedup >= k" is significant at 0.025 (``p_value_ge_k``), fails only when the test of the opposite effect,
  "speedup < k", is (``p_value_lt_k``): both decide exactly when the 95% interval excludes ``k``. A seed that did
  not reach the target is censored: the ratio is then a bound, printed as one without an interval, and only the
  test on the bound can run (it is conservative). ``<``/``<=`` mirror this. The evidence prints the minimum
  detectable effect of the test at its seed count.
- a sample ``{"mean", "per_seed": [...]}`` (for example ``final_values.<method>`` or
  ``matched_slope.<method>.baseline``): compared with another sample (``threshold_path``) by Welch's one-sided
  t-tests at 0.025 in either direction, or with a number by a one-sample t-test. With a ``margin`` (relative,
  non-inferiority), the other sample is first scaled by ``1 + margin`` for ``<``/``<=`` (by ``1 - margin`` for
  ``>``/``>=``): "post-norm ends at most 2% above DiT". A record carrying ``not_checkable`` (a slope fitted through
  fewer than 5 evaluations) makes the verdict ``not checkable at this scale``.
- a plain number: compared exactly (a single value is a data point: inconclusive unless ``min_seeds`` is 1).

A record whose fields are broken (a p-value that is not a number in [0, 1], a ratio that is not a positive finite
number, a missing p-value table, an outcome flag ``ge_k``/``lt_k`` that is not a boolean agreeing with its p-value),
a diverged-run record that does not name its stage and scale (or names another stage than its file), and an audit
quantity that is not finite make the verdict ``check failed``, naming the file and the field: never a verdict.

Family-wise control (:func:`apply_holm`, run by the ledger over every experiment claim): the claims of one scale
whose tests ran form a family; each claim's two one-sided p-values become one two-sided ``p = 2 min(p_for,
p_against)``, Holm's step-down adjustment runs over the distinct tests (a comparison read by two claims, for example
in two proportional cost units, counts once, with the larger p), and the verdict is decided on the adjusted p at
0.05: the raw and adjusted p are both printed.

Pre-registration (:mod:`.preregistration`): a spec whose deciding fields changed after the data of every method it
names was committed lists the changes under ``amended``; its verdict says "amended after the data", and the test it
first registered (``registered``) is evaluated on the same goldens and printed beside it, not deciding.

Neither test significant: ``not supported`` (the tests ran; the printed detectable effect says what they could
have seen); no test possible (fewer than ``min_seeds`` seeds, no ratio): ``inconclusive``. A report with a sanity
gate (``repro speedup --gate-reference``) in which a run of a method the query names fails the gate gives
``does not yet generate``: such runs carry no verdict. A run of a named method that diverged (its record in
``goldens/diverged/``, written by ``repro campaign``) has no curve, so the test never saw that seed: the evidence
names it, and a decided verdict becomes ``inconclusive``. Every experiment verdict states its scope, the scale and the
baseline's training length, in the verdict itself: ``not supported at micro, 0.26 epochs``.

A verdict is ``pending`` while the golden file (or the path in it) does not exist yet, ``not checkable at
this scale`` when the spec lists only the ``paper`` scale and no paper-scale goldens exist. ``check failed``
means the evidence itself is broken (a test fails, an audit quantity is missing): ``repro claims`` exits 1, as it
does when a verdict differs from the committed
ledger ``reports/claims.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .goldens import (
    DIVERGED,
    MISSING,
    RECHECK,
    broken_diverged_records,
    diverged_runs,
    first_scale,
    keys_of,
    lookup,
    methods_of,
    scope_of,
    show,
)
from .schema import Spec
from .speedup.record import BrokenRecord, Comparison, Sample, record_at
from .speedup.stats import detectable_shift, welch_tests
from .verdicts import (
    CHECK_FAILED,
    CONFIRMED,
    DOES_NOT_GENERATE,
    INCONCLUSIVE,
    NOT_CHECKABLE,
    NOT_SUPPORTED,
    PENDING,
    REFUTED,
    Result,
)

ALPHA = 0.05
DECIDED = (CONFIRMED, REFUTED, NOT_SUPPORTED)
"""Verdicts a test decided: a diverged run of a method the query names turns them into ``inconclusive``."""


def fmt_value(value: Any, fmt: str = ".4g") -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, (int, float)):
        return format(value, fmt)
    return json.dumps(value)


def _holds(value: Any, relation: str, expected: Any, rel_tol: float | None, abs_tol: float | None) -> bool:
    if relation == "==":
        return value == expected
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{value!r} is not a number")
    if relation == "~=":
        if rel_tol is not None:
            return abs(value - expected) <= rel_tol * abs(expected)
        return abs(value - expected) <= abs_tol
    return {"<": value < expected, "<=": value <= expected, ">": value > expected, ">=": value >= expected}[relation]


def _unit(e: Mapping[str, Any]) -> str:
    unit = e.get("unit", "")
    return unit if unit in ("", "x", "%") else f" {unit}"


def _expectation_text(e: Mapping[str, Any], value: Any, ok: bool) -> str:
    fmt = e.get("format", ".4g")
    unit = _unit(e)
    label = e.get("label", show(keys_of(e["quantity"])))
    tol = ""
    if "rel_tol" in e:
        tol = f" within {100 * e['rel_tol']:g}% of it"
    elif "abs_tol" in e:
        tol = f" within +/- {fmt_value(e['abs_tol'], fmt)}{unit}"
    expected = fmt_value(e["value"], fmt)
    outcome = "holds" if ok else "fails"
    return f"{label}: {fmt_value(value, fmt)}{unit} (claim {e['relation']} {expected}{unit}{tol}: {outcome})"


def evaluate_audit(spec: Spec, audit: Mapping[str, Any] | None, audit_path: Path) -> Result:
    recheck = RECHECK["audit"].format(id=spec.id)
    if audit is None:
        return Result(spec, CHECK_FAILED, [f"{audit_path} does not exist; run `repro audit`"], recheck, "audit")
    evidence, all_hold, broken = [], True, []

    def quantity(e):  # the audit's value of an expectation's quantity, or MISSING (noted in broken)
        keys = keys_of(e["quantity"])
        value = lookup(audit, keys)
        if value is MISSING:
            broken.append(f"{audit_path} has no quantity {show(keys)}")
        elif isinstance(value, float) and not math.isfinite(value):
            broken.append(f"{audit_path}: {show(keys)}={value} is not allowed; must be a finite number")
            value = MISSING
        return keys, value

    for e in spec.check["expect"]:
        keys, value = quantity(e)
        if value is MISSING:
            continue
        try:
            ok = _holds(value, e["relation"], e["value"], e.get("rel_tol"), e.get("abs_tol"))
        except TypeError as err:
            broken.append(f"{show(keys)}: {err}")
            continue
        all_hold &= ok
        evidence.append(_expectation_text(e, value, ok))
    for e in spec.check["evidence"]:
        keys, value = quantity(e)
        if value is MISSING:
            continue
        unit = _unit(e)
        evidence.append(f"{e.get('label', show(keys))}: {fmt_value(value, e.get('format', '.4g'))}{unit}")
    prov = audit.get("provenance", {}) if isinstance(audit, Mapping) else {}
    if prov:
        evidence.append(
            f"counted by `{prov.get('command')}` at commit {str(prov.get('git_commit'))[:12]}, "
            f"torch {prov.get('torch')}, device {str(prov.get('device', '')).split(';')[0]}"
        )
    if broken:
        return Result(spec, CHECK_FAILED, broken + evidence, recheck, "audit")
    if_hold = spec.check["if_hold"]
    verdict = if_hold if all_hold else (REFUTED if if_hold == CONFIRMED else CONFIRMED)
    return Result(spec, verdict, evidence, recheck, "audit")


@dataclass(frozen=True)
class Test:
    """A claim's test as it ran: its one-sided p-values for and against the claim (None: that test did not run)."""

    p_for: float | None
    p_against: float | None
    text: str
    exact: bool = False
    """A plain number compared exactly (a single value): no sampling error, so no family-wise adjustment."""

    @property
    def ran(self) -> bool:
        return self.p_for is not None or self.p_against is not None

    @property
    def holds(self) -> bool | None:
        """True / False / None (undecided) at ALPHA / 2 each side, before any family-wise adjustment."""
        if self.p_for is not None and self.p_for < ALPHA / 2:
            return True
        if self.p_against is not None and self.p_against < ALPHA / 2:
            return False
        return None

    @property
    def p_two_sided(self) -> float | None:
        """``2 min(p_for, p_against)``, capped at 1 (a test that did not run counts as p = 1); None if none ran."""
        if not self.ran:
            return None
        ps = [p for p in (self.p_for, self.p_against) if p is not None]
        return min(1.0, 2.0 * min(ps))

    @property
    def direction(self) -> bool | None:
        """Which way the smaller p points: True for the claim, False against it."""
        if not self.ran:
            return None
        pf = 1.0 if self.p_for is None else self.p_for
        pa = 1.0 if self.p_against is None else self.p_against
        return pf <= pa


def _compare_samples(a: Sequence[float], b: Sequence[float] | float, relation: str) -> Test:
    """One-sided t-tests (Welch's for two samples, :func:`repro.evidence.speedup.stats.welch_tests`) of ``a relation
    b``, both directions, with the shift they detect with 80 % power at these seed counts."""
    p_above, p_below, se, df = welch_tests(a, b)
    greater = relation in (">", ">=")
    p_hold, p_fail = (p_above, p_below) if greater else (p_below, p_above)
    mde = detectable_shift(se, df, ALPHA) if se > 0 else None
    text = f"one-sided Welch t-tests at {ALPHA / 2:g}: p = {p_hold:.3g} for the claim, {p_fail:.3g} against it; " + (
        f"minimum detectable difference (80% power): {mde:.3g}" if mde is not None else "no spread"
    )
    return Test(float(p_hold), float(p_fail), text)


BOUNDS = {"upper bound": "at most", "lower bound": "at least"}


def _decide_speedup(record: Comparison, relation: str, k: float) -> Test:
    """The tests of "speedup >= k" (or ``<``) in the record, at ALPHA / 2 each side.

    The claim holds when the test for it is significant and fails only when the test of the opposite effect is; a
    seed that did not reach the target blocks one of the tests (``repro speedup`` leaves it null), makes the ratio a
    bound (printed as one, with no interval) and never decides by itself.
    """
    ratio, bound = record.ratio, record.ratio_is
    ci = (record.ci_low, record.ci_high) if record.ci_low is not None and record.ci_high is not None else None
    if ratio is None:
        head = "no ratio"
    elif bound in BOUNDS:
        head = f"ratio {BOUNDS[bound]} {ratio:.3g}x ({bound}: no interval)"
    elif bound == "censored on both sides":
        head = f"ratio {ratio:.3g}x (censored on both sides: no interval)"
    else:
        head = f"ratio {ratio:.3g}" + (f" [{ci[0]:.3g}, {ci[1]:.3g}] (95% Welch t on log cost)" if ci else "")
    if isinstance(record.target, (int, float)):
        head += f"; target {record.target:.4g}"
    parts = [head]
    if record.status:
        parts.append(str(record.status))
    p_ge, p_lt = record.p("ge", k), record.p("lt", k)
    tests = []
    if p_ge is not None:
        tests.append(f"p(speedup >= {k:g}) = {p_ge:.3g}")
    if p_lt is not None:
        tests.append(f"p(speedup < {k:g}) = {p_lt:.3g}")
    if tests:
        on = " on the bound" if bound in BOUNDS else ""
        parts.append(", ".join(tests) + f" (one-sided Welch t{on} at {ALPHA / 2:g})")
    if record.mde is not None and record.mde.factor:
        f = float(record.mde.factor)
        parts.append(
            f"minimum detectable effect at {record.seeds} vs {record.baseline_seeds} seeds "
            f"(80% power): speedup >= {k * f:.3g} or <= {k / f:.3g}"
        )
    text = "; ".join(parts)
    if ratio is None:
        return Test(None, None, text)
    if relation in (">", ">="):
        return Test(p_ge, p_lt, text)
    return Test(p_lt, p_ge, text)


def _seeds(record: Any) -> int:
    if isinstance(record, Sample):
        return sum(v is not None for v in record.per_seed)
    if isinstance(record, Comparison) and isinstance(record.seeds, int):
        return record.seeds
    return 1


def _margined(b: Sequence[float] | float, relation: str, margin: float) -> Sequence[float] | float:
    """The comparison sample (or number) moved by a non-inferiority ``margin`` towards the claim's side."""
    if not margin:
        return b
    factor = 1.0 + margin if relation in ("<", "<=") else 1.0 - margin
    return factor * b if isinstance(b, (int, float)) else [factor * x for x in b]


def _decide(value: Any, relation: str, threshold: Any, margin: float = 0.0) -> Test:
    if isinstance(value, Comparison):
        if not isinstance(threshold, (int, float)):
            return Test(None, None, "a speedup record is compared with a number threshold only")
        return _decide_speedup(value, relation, float(threshold))
    if isinstance(value, Sample):
        a = value.values()
        b = threshold.values("threshold.per_seed") if isinstance(threshold, Sample) else threshold
        if isinstance(b, bool) or not isinstance(b, (int, float, list)):
            b = None  # nothing to compare the sample with
        if b is None or len(a) < 2 or (not isinstance(b, (int, float)) and len(b) < 2):
            return Test(None, None, "fewer than two seeds on a side")
        mean_b = b if isinstance(b, (int, float)) else sum(b) / len(b)
        test = _compare_samples(a, _margined(b, relation, margin), relation)
        against = f"{mean_b:.4g}"
        if margin:
            against += f" x {_margined(1.0, relation, margin):g} (non-inferiority margin {margin:g})"
        return Test(test.p_for, test.p_against, f"mean {sum(a) / len(a):.4g} vs {against}; {test.text}")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(threshold, (int, float)):
        ok = _holds(value, relation, threshold, None, None)
        return Test(0.0 if ok else None, None if ok else 0.0, f"value {fmt_value(value)}", exact=True)
    value, threshold = _plain(value), _plain(threshold)
    return Test(None, None, f"cannot compare {json.dumps(value)[:80]} with {json.dumps(threshold)[:80]}")


def _typed(report: Any, keys: Sequence[str]) -> Any:
    """The value at ``keys`` of a speedup report, typed by where it sits
    (:func:`repro.evidence.speedup.record.record_at`): :data:`MISSING` where there is none; raises :class:`BrokenRecord`
    on a record no report writer writes."""
    value = lookup(report, keys)
    return value if value is MISSING else record_at(keys, value)


def _plain(value: Any) -> Any:
    """A typed record as the JSON it was read from (for a message)."""
    return value.to_json() if hasattr(value, "to_json") else value


def _verdict(test: Test, seeds: int, min_seeds: int, if_hold: str, value: Any) -> str:
    if seeds < min_seeds:
        return INCONCLUSIVE
    holds = test.holds
    if holds is None:
        return NOT_SUPPORTED if test.ran else INCONCLUSIVE
    return if_hold if holds else (REFUTED if if_hold == CONFIRMED else CONFIRMED)


def experiment_test(
    value: Any, relation: str, threshold: Any, min_seeds: int = 3, if_hold: str = CONFIRMED, margin: float = 0.0
) -> tuple[str, Test]:
    """The verdict an experiment query gets from its record before the scope, the sanity gate and the family-wise
    adjustment, with its :class:`Test`. Raises :class:`BrokenRecord` on a record no report writer writes."""
    test = _decide(value, relation, threshold, margin)
    return _verdict(test, _seeds(value), min_seeds, if_hold, value), test


def experiment_verdict(
    value: Any, relation: str, threshold: Any, min_seeds: int = 3, if_hold: str = CONFIRMED, margin: float = 0.0
) -> tuple[str, str]:
    """The verdict an experiment query gets from its record (before the scope, the sanity gate and the family-wise
    adjustment), and why.

    ``if_hold`` when the claim's test holds, the other one of confirmed/refuted only when the test of the opposite
    effect holds, ``not supported`` when the tests ran and neither did, ``inconclusive`` when the evidence cannot be
    tested (fewer than ``min_seeds`` seeds, no ratio). ``tests/test_calibration.py`` runs this same function.
    """
    verdict, test = experiment_test(value, relation, threshold, min_seeds, if_hold, margin)
    return verdict, test.text


def _not_checkable(*records: Any) -> list[str]:
    """The ``not_checkable`` reasons the samples carry (a late slope fitted through too few evaluations)."""
    return [str(r.not_checkable) for r in records if isinstance(r, Sample) and r.not_checkable]


def _read_report(path: Path, read: dict[Path, Any]) -> Any:
    """The JSON at ``path`` (None if it is missing or unreadable), read once per ``read`` memo: the ``also`` and
    ``shares`` entries of a spec name the same few reports many times."""
    if path not in read:
        try:
            read[path] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            read[path] = None
    return read[path]


def _also(spec: Spec, goldens: Path, scale: str, reports: dict[Path, Any]) -> list[str]:
    """Evidence lines for the spec's ``also`` queries (secondary metrics: shown, never deciding)."""
    lines = []
    for extra in spec.check["also"]:
        path = goldens / scale / extra["file"]
        keys = keys_of(extra["value"])
        report = _read_report(path, reports)
        if report is None:
            lines.append(f"also {path}: not there yet")
            continue
        try:
            value = _typed(report, keys)
        except BrokenRecord as e:
            lines.append(f"also {path} (not deciding): {CHECK_FAILED}: {show(keys)}: {e}")
            continue
        if value is MISSING:
            lines.append(f"also {path}: no {show(keys)} yet")
            continue
        threshold = spec.check.get("threshold")
        threshold_path = extra.get("threshold_path", spec.check.get("threshold_path"))
        if "threshold" in extra:
            threshold = extra["threshold"]
        elif threshold_path is not None:
            try:
                threshold = _typed(report, keys_of(threshold_path))
            except BrokenRecord as e:
                lines.append(f"also {path} (not deciding): {CHECK_FAILED}: {threshold_path}: {e}")
                continue
            if threshold is MISSING:
                lines.append(f"also {path}: no {threshold_path} yet")
                continue
        relation = extra.get("relation", spec.check["relation"])
        blocked = _not_checkable(value, threshold)
        if blocked:  # as for the deciding query: the record's own reason, not the empty seed list it leaves
            verdict, text = NOT_CHECKABLE, "; ".join(blocked)
        else:
            try:
                verdict, text = experiment_verdict(value, relation, threshold, spec.check["min_seeds"])
            except BrokenRecord as e:
                verdict, text = CHECK_FAILED, f"{path}: {show(keys)}: {e}"
        metric = report.get("metric", "?")
        if isinstance(threshold, (int, float)):
            against = fmt_value(threshold)
        else:
            against = show(keys_of(threshold_path))
        lines.append(
            f"also, on {metric} ({path}, not deciding): {show(keys)} {relation} {against}? would be {verdict}: {text}"
        )
    return lines


def _shares(spec: Spec, goldens: Path, scale: str, reports: dict[Path, Any]) -> list[str]:
    """The evidence line of the spec's ``shares``: each part's log speedup as a share of the whole's."""
    shares = spec.check.get("shares")
    if not shares:
        return []
    ratios, missing = [], []
    for item in [shares["whole"], *shares["parts"]]:
        path = goldens / scale / item["file"]
        report = _read_report(path, reports)
        try:
            record = MISSING if report is None else _typed(report, keys_of(item["value"]))
        except BrokenRecord:
            record = MISSING
        ratio = record.ratio if isinstance(record, Comparison) else None
        if ratio is None:
            missing.append(f"{item['label']} ({path}: {show(keys_of(item['value']))})")
        else:
            bound = record.ratio_is
            ratios.append((item["label"], float(ratio), f", {bound}" if bound and bound != "estimate" else ""))
    if missing:
        return [f"shares: waiting for {'; '.join(missing)}"]
    (label, whole, wbound), parts = ratios[0], ratios[1:]
    if abs(math.log(whole)) < 1e-9:
        return [f"shares of {label} ({whole:.3g}x{wbound}): no speedup to share"]
    text = ", ".join(f"{p} {r:.3g}x{b} ({100 * math.log(r) / math.log(whole):.0f}%)" for p, r, b in parts)
    return [
        f"shares of {label}'s log speedup ({whole:.3g}x{wbound}): {text} (point estimates of the ratios; each part "
        "has its own target, so the shares need not add up to 100%; not deciding)"
    ]


def _decisive_scale(goldens: Path, scales: Sequence[str], name: str, keys: Sequence[str]) -> tuple[str, Path] | None:
    """The first of ``scales`` whose report holds the claim's value (a scale whose runs are still being made, its
    report not yet holding the compared method, leaves the decision to the next scale that does); else the first
    whose report exists (the claim then reads as pending there)."""
    for scale in scales:
        path = goldens / scale / name
        try:
            if path.exists() and lookup(json.loads(path.read_text()), keys) is not MISSING:
                return scale, path
        except (OSError, ValueError):
            return scale, path  # unreadable: the caller reports it
    return first_scale(goldens, scales, name)


def evaluate_experiment(spec: Spec, goldens: Path) -> Result:
    c = spec.check
    name = c["file"]
    scales = list(c["scales"])
    found = _decisive_scale(goldens, scales, name, keys_of(c["value"]))
    if found is None:
        if scales == ["paper"]:
            return Result(
                spec,
                NOT_CHECKABLE,
                [f"needs paper-scale golden runs ({goldens}/paper/{name})"],
                RECHECK["paper"].format(id=spec.id),
                "paper",
            )
        wanted = ", ".join(str(goldens / s / name) for s in scales if s != "paper")
        return Result(
            spec,
            PENDING,
            [f"no golden runs yet: waiting for {wanted}"],
            RECHECK[scales[0]].format(id=spec.id),
            scales[0],
        )
    scale, path = found
    recheck = RECHECK[scale].format(id=spec.id)
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        return Result(spec, CHECK_FAILED, [f"{path}: cannot read: {e}"], recheck, scale)
    proof: list[str] = []
    if scale == "paper":  # provenance and the claim's own metric, or no verdict (repro/evidence/paper.py)
        from .paper import admit

        refused, proof = admit(spec, path, report)
        if refused:
            return Result(spec, CHECK_FAILED, refused, recheck, scale)
    keys = keys_of(c["value"])
    try:
        value = _typed(report, keys)
    except BrokenRecord as e:
        return Result(spec, CHECK_FAILED, [f"{path}: {show(keys)}: {e}"], recheck, scale, scope_of(scale, report))
    if value is MISSING:
        status = f" ({report['status']})" if isinstance(report, Mapping) and report.get("status") else ""
        return Result(spec, PENDING, [f"{path} has no {show(keys)} yet{status}"], recheck, scale)
    methods = methods_of(keys, report)
    if "threshold_path" in c:
        tkeys = keys_of(c["threshold_path"])
        try:
            threshold = _typed(report, tkeys)
        except BrokenRecord as e:
            return Result(spec, CHECK_FAILED, [f"{path}: {show(tkeys)}: {e}"], recheck, scale, scope_of(scale, report))
        if threshold is MISSING:
            return Result(spec, PENDING, [f"{path} has no {show(tkeys)} yet"], recheck, scale)
        against = show(tkeys)
        methods |= methods_of(tkeys, report)
    else:
        threshold = c["threshold"]
        against = fmt_value(threshold)
    scope = scope_of(scale, report)
    seeds = _seeds(value)
    try:
        verdict, test = experiment_test(value, c["relation"], threshold, c["min_seeds"], c["if_hold"], c["margin"])
    except BrokenRecord as e:
        return Result(spec, CHECK_FAILED, [f"{path}: {show(keys)}: {e}"], recheck, scale, scope)
    runs = _runs_of(report, methods)
    metric = f" ({report['metric']})" if report.get("metric") else ""
    evidence = [
        f"{scale} scale, {path}{metric}: {show(keys)} {c['relation']} {against}? {test.text}",
        f"{seeds} seed(s); runs: {', '.join(map(str, runs))}" if runs else f"{seeds} seed(s)",
    ]
    training = report.get("training")
    if isinstance(training, Mapping) and training:
        evidence.append(
            "training length: "
            + ", ".join(
                f"{m} {t['epochs']:.3g} epochs" if t.get("epochs") is not None else f"{m} {t.get('images')} images"
                for m, t in training.items()
                if isinstance(t, Mapping) and (not methods or m in methods)
            )
        )
    amended = bool(spec.amended)
    blocked = _not_checkable(value, threshold)
    if blocked:
        first = f"{scale} scale, {path}{metric}: {show(keys)} {c['relation']} {against}? not checkable: {blocked[0]}"
        evidence = [first, *blocked[1:], *evidence[1:], *_amendments(spec, goldens, scale, {path: report})]
        return Result(spec, NOT_CHECKABLE, evidence, recheck, scale, scope, amended=amended)
    reports = {path: report}  # each report read once for the spec's also, shares and registered entries
    evidence += _also(spec, goldens, scale, reports)
    evidence += _shares(spec, goldens, scale, reports) + proof
    if seeds < c["min_seeds"]:
        evidence.append(f"fewer than {c['min_seeds']} seeds: a data point, not a verdict")
    evidence += _amendments(spec, goldens, scale, reports)
    family = None
    if verdict in DECIDED and test.ran and not test.exact:
        family = {"key": _test_key(scale, c), "test": test, "if_hold": c["if_hold"]}
    diverged = diverged_runs(goldens, scale, methods)
    broken = broken_diverged_records(goldens)
    if broken:  # a record of unknown run or scale may be this claim's: never a verdict beside it
        verdict, family = CHECK_FAILED, None
        evidence = [*broken, *evidence]
    if diverged:
        line = f"diverged (loss NaN/Inf, no curve; {goldens / DIVERGED}): {', '.join(diverged)}"
        if verdict in DECIDED:
            line += "; a seed the test could not include, so no decided verdict"
            verdict, family = INCONCLUSIVE, None
        evidence.append(line)
    gate = report.get("gate")
    if isinstance(gate, Mapping):
        by_method = gate.get("failed_by_method") or {}
        failed = sorted(m for m in by_method if not methods or m in methods)
        runs_failed = [r for m in failed for r in by_method[m]]
        evidence.append(
            f"sanity gate ({gate.get('rule')}, {gate.get('reference')}): "
            + (f"failed by {len(runs_failed)} run(s): {', '.join(runs_failed)}" if failed else "every run passes")
        )
        if failed:
            return Result(spec, DOES_NOT_GENERATE, evidence, recheck, scale, scope, amended=amended)
    return Result(spec, verdict, evidence, recheck, scale, scope, amended=amended, family=family)


def _runs_of(report: Mapping[str, Any], methods: set[str]) -> list[str]:
    """The report's run ids of ``methods`` (all of them when the report does not say which run is which method)."""
    run_ids = [str(r) for r in report.get("run_ids") or []]
    method_of = {str(r.get("run_id")): r.get("method") for r in report.get("runs") or [] if isinstance(r, Mapping)}
    if not methods or not method_of:
        return run_ids
    return [r for r in run_ids if method_of.get(r) in methods]


UNIT_KEYS = ("iterations", "images", "macs", "seconds")


def _test_key(scale: str, check: Mapping[str, Any]) -> str:
    """What makes two claims' tests one test for the family-wise adjustment: the same report, comparison, target,
    relation and threshold. The cost unit is left out: on one pair of runs, costs in two units proportional to each
    other (iterations and MACs of one backbone) give the same test."""
    keys = keys_of(check["value"])
    if keys and keys[0] == "unit_results" and keys[-1] in UNIT_KEYS:
        keys = keys[:-1]
    threshold = check.get("threshold_path", check.get("threshold"))
    return json.dumps([scale, check["file"], keys, check["relation"], threshold, check.get("margin", 0.0)])


def _amendments(spec: Spec, goldens: Path, scale: str, reports: dict[Path, Any]) -> list[str]:
    """Evidence lines of a spec amended after its data: each amendment, and the first registered test's verdict."""
    if not spec.amended:
        return []
    lines = [
        "amended after the data: " + "; ".join(f"{a.get('commit') or a['date']}: {a['why']}" for a in spec.amended)
    ]
    reg = spec.registered
    if reg is None:
        return lines
    path = goldens / scale / reg["file"]
    report = _read_report(path, reports)
    keys = keys_of(reg["value"])
    threshold_text = show(keys_of(reg["threshold_path"])) if "threshold_path" in reg else fmt_value(reg["threshold"])
    query = f"{path}: {show(keys)} {reg['relation']} {threshold_text}"
    head = f"as first registered ({reg['commit']}; not deciding): {query}?"
    try:
        value = MISSING if report is None else _typed(report, keys)
        if value is MISSING:
            return [*lines, f"{head} no such value in the goldens"]
        threshold = _typed(report, keys_of(reg["threshold_path"])) if "threshold_path" in reg else reg["threshold"]
    except BrokenRecord as e:
        return [*lines, f"{head} {CHECK_FAILED}: {e}"]
    blocked = _not_checkable(value, threshold)
    if blocked:
        return [*lines, f"{head} would be {NOT_CHECKABLE}: {'; '.join(blocked)}"]
    try:
        verdict, test = experiment_test(
            value, reg["relation"], threshold, spec.check["min_seeds"], spec.check["if_hold"], reg.get("margin", 0.0)
        )
    except BrokenRecord as e:
        return [*lines, f"{head} {CHECK_FAILED}: {e}"]
    return [*lines, f"{head} would be {verdict} (before any family-wise adjustment): {test.text}"]


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: ``max_{j <= i} min(1, (m - j) p_(j))`` over the
    sorted p-values (0-based ``j``). Rejecting where the adjusted p is below ``alpha`` keeps the family-wise error
    rate at ``alpha`` under any dependence between the tests."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def apply_holm(results: Sequence[Result], alpha: float = ALPHA) -> None:
    """Decide every experiment verdict that has a test (``Result.family``) on Holm-adjusted p-values, per scale.

    Each distinct test (:func:`_test_key`) enters once, with the largest two-sided p of the claims that read it. A
    claim is ``if_hold`` (or the opposite) where its adjusted p is below ``alpha``, in the direction of its smaller
    one-sided p, and ``not supported`` otherwise; its evidence gets the raw and adjusted p after its first line.
    """
    scales = sorted({r.scale for r in results if r.family is not None})
    for scale in scales:
        members = [r for r in results if r.family is not None and r.scale == scale]
        p_of: dict[str, float] = {}
        for r in members:
            key, p2 = r.family["key"], r.family["test"].p_two_sided
            p_of[key] = max(p_of.get(key, 0.0), p2)
        keys = sorted(p_of)
        adjusted = dict(zip(keys, holm([p_of[k] for k in keys])))
        for r in members:
            test, key, if_hold = r.family["test"], r.family["key"], r.family["if_hold"]
            adj = adjusted[key]
            if adj < alpha:
                holds = test.direction
                verdict = if_hold if holds else (REFUTED if if_hold == CONFIRMED else CONFIRMED)
            else:
                verdict = NOT_SUPPORTED
            shared = sum(1 for o in members if o.family["key"] == key) - 1
            line = (
                f"family-wise: Holm over the {len(keys)} distinct tests at {scale}"
                + (f" (this one shared with {shared} other claim(s))" if shared else "")
                + f": two-sided p = {p_of[key]:.3g}, adjusted {adj:.3g} (decides at {alpha:g})"
            )
            if verdict != r.verdict:
                line += f"; unadjusted, the test reads {r.verdict}"
            r.evidence.insert(1, line)
            r.verdict = verdict
