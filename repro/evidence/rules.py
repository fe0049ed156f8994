"""Verdict rules: how an audit expectation or an experiment query over the goldens becomes a verdict.

How an experiment query is decided (:func:`experiment_verdict`). The value at the path is one of:

- a speedup record as ``repro speedup`` writes under ``unit_results.<method>.<target>.<cost unit>`` (see
  ``repro/speedup.py``). With a number threshold ``k`` and ``>=``/``>``: holds when the one-sided test of
  "speedup >= k" is significant at 0.025 (``ge_k``), fails only when the test of the opposite effect,
  "speedup < k", is (``lt_k``): both decide exactly when the 95% interval excludes ``k``. A seed that did not
  reach the target is censored: it leaves the test it cannot inform unrun and never decides by itself.
  ``<``/``<=`` mirror this. The evidence prints the minimum detectable effect of the test at its seed count.
- a sample ``{"mean", "per_seed": [...]}`` (for example ``late_slope.<method>``): compared with another sample
  (``threshold_path``) by Welch's one-sided t-tests at 0.025 in either direction, or with a number by a one-sample
  t-test. A record carrying ``not_checkable`` (a late slope fitted through fewer than 5 evaluations) makes the
  verdict ``not checkable at this scale``.
- a plain number: compared exactly (a single value is a data point: inconclusive unless ``min_seeds`` is 1).

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
from pathlib import Path
from typing import Any

from .goldens import DIVERGED, MISSING, RECHECK, diverged_runs, first_scale, keys_of, lookup, methods_of, scope_of, show
from .schema import Spec
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


def _k_key(k: float) -> str:
    return repr(float(k))


def _welch_mde(a: Sequence[float], b: Sequence[float] | float) -> float | None:
    """Shift (in the samples' units) the one-sided test at ALPHA / 2 detects with 80 % power at these seed counts."""
    import numpy as np

    from ..speedup import detectable_shift

    a = np.asarray(a, dtype=float)
    if isinstance(b, (int, float)):
        se, df = float(a.std(ddof=1) / math.sqrt(a.size)), float(a.size - 1)
    else:
        b = np.asarray(b, dtype=float)
        va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
        se = float(math.sqrt(va + vb))
        df = (
            (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
            if va + vb > 0
            else float(a.size + b.size - 2)
        )
    return detectable_shift(se, df, ALPHA) if se > 0 else None


def _compare_samples(a: Sequence[float], b: Sequence[float] | float, relation: str) -> tuple[bool | None, str]:
    """One-sided t-tests (Welch for two samples) at ALPHA / 2 in both directions; (holds, text), None if undecided."""
    from scipy import stats

    greater = relation in (">", ">=")
    if isinstance(b, (int, float)):
        p_hold = stats.ttest_1samp(a, b, alternative="greater" if greater else "less").pvalue
        p_fail = stats.ttest_1samp(a, b, alternative="less" if greater else "greater").pvalue
    else:
        p_hold = stats.ttest_ind(a, b, equal_var=False, alternative="greater" if greater else "less").pvalue
        p_fail = stats.ttest_ind(a, b, equal_var=False, alternative="less" if greater else "greater").pvalue
    mde = _welch_mde(a, b)
    text = f"one-sided Welch t-tests at {ALPHA / 2:g}: p = {p_hold:.3g} for the claim, {p_fail:.3g} against it; " + (
        f"minimum detectable difference (80% power): {mde:.3g}" if mde is not None else "no spread"
    )
    if p_hold < ALPHA / 2:
        return True, text
    if p_fail < ALPHA / 2:
        return False, text
    return None, text


def _interval(record: Any) -> tuple[float, float] | None:
    if isinstance(record, Mapping) and record.get("ci_low") is not None and record.get("ci_high") is not None:
        return float(record["ci_low"]), float(record["ci_high"])
    return None


def _decide_speedup(record: Mapping[str, Any], relation: str, k: float) -> tuple[bool | None, str]:
    """Holds / fails / undecided for "speedup >= k" (or ``<``), from the record's tests at ALPHA / 2 each side.

    The claim holds when the test for it is significant and fails only when the test of the opposite effect is;
    a seed that did not reach the target blocks one of the tests (``repro speedup`` leaves it null) and never decides
    by itself. Without the tests' p-values (older records) the 95% interval decides.
    """
    ratio, ci = record.get("ratio"), _interval(record)
    bound = record.get("ratio_is")
    head = f"ratio {fmt_value(ratio, '.3g')}" + (f" ({bound})" if bound and bound != "estimate" else "")
    parts = [head + (f" [{ci[0]:.3g}, {ci[1]:.3g}] (95% Welch t on log cost)" if ci else "")]
    if record.get("status"):
        parts.append(str(record["status"]))
    key = _k_key(k)
    p_ge = (record.get("p_value_ge_k") or {}).get(key)
    p_lt = (record.get("p_value_lt_k") or {}).get(key)
    ge = (record.get("ge_k") or {}).get(key)
    lt = (record.get("lt_k") or {}).get(key)
    tests = []
    if p_ge is not None:
        tests.append(f"p(speedup >= {k:g}) = {p_ge:.3g}")
    if p_lt is not None:
        tests.append(f"p(speedup < {k:g}) = {p_lt:.3g}")
    if tests:
        parts.append(", ".join(tests) + f" (one-sided Welch t at {ALPHA / 2:g})")
    mde = record.get("mde")
    if isinstance(mde, Mapping) and mde.get("factor"):
        f = float(mde["factor"])
        parts.append(
            f"minimum detectable effect at {record.get('seeds')} vs {record.get('baseline_seeds')} seeds "
            f"(80% power): speedup >= {k * f:.3g} or <= {k / f:.3g}"
        )
    if "p_value_lt_k" not in record and ratio is not None and ge is None and lt is None and ci:
        ge, lt = ci[0] > k, ci[1] < k  # a record without tests: the interval decides
    if ratio is None:
        return None, "; ".join(parts)
    if relation in (">", ">="):
        holds = True if ge else False if lt else None
    else:
        holds = True if lt else False if ge else None
    return holds, "; ".join(parts)


def _seeds(record: Any) -> int:
    if isinstance(record, Mapping):
        if "per_seed" in record and isinstance(record["per_seed"], list):
            return sum(v is not None for v in record["per_seed"])
        if isinstance(record.get("seeds"), int):
            return record["seeds"]
    return 1


def _samples(record: Any) -> list[float] | None:
    if isinstance(record, Mapping) and isinstance(record.get("per_seed"), list):
        return [float(v) for v in record["per_seed"] if v is not None]
    return None


def _decide(value: Any, relation: str, threshold: Any) -> tuple[bool | None, str]:
    if isinstance(value, Mapping) and "ratio" in value:
        if not isinstance(threshold, (int, float)):
            return None, "a speedup record is compared with a number threshold only"
        return _decide_speedup(value, relation, float(threshold))
    a = _samples(value)
    if a is not None:
        b = _samples(threshold) if isinstance(threshold, Mapping) else threshold
        if b is None or len(a) < 2 or (not isinstance(b, (int, float)) and len(b) < 2):
            return None, "fewer than two seeds on a side"
        mean_b = b if isinstance(b, (int, float)) else sum(b) / len(b)
        holds, text = _compare_samples(a, b, relation)
        return holds, f"mean {sum(a) / len(a):.4g} vs {mean_b:.4g}; {text}"
    if isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(threshold, (int, float)):
        ok = _holds(value, relation, threshold, None, None)
        return ok, f"value {fmt_value(value)}"
    return None, f"cannot compare {json.dumps(value)[:80]} with {json.dumps(threshold)[:80]}"


def experiment_verdict(
    value: Any, relation: str, threshold: Any, min_seeds: int = 3, if_hold: str = CONFIRMED
) -> tuple[str, str]:
    """The verdict an experiment query gets from its record (before the scope and the sanity gate), and why.

    ``if_hold`` when the claim's test holds, the other one of confirmed/refuted only when the test of the opposite
    effect holds, ``not supported`` when the tests ran and neither did, ``inconclusive`` when the evidence cannot be
    tested (fewer than ``min_seeds`` seeds, no ratio). ``tests/test_calibration.py`` runs this same function.
    """
    holds, text = _decide(value, relation, threshold)
    if _seeds(value) < min_seeds:
        return INCONCLUSIVE, text
    if holds is None:
        ran = True
        if isinstance(value, Mapping) and "ratio" in value:  # a speedup record: did any test run?
            tests = [*(value.get("p_value_ge_k") or {}).values(), *(value.get("p_value_lt_k") or {}).values()]
            ran = value.get("ratio") is not None and (any(p is not None for p in tests) or "p_value_lt_k" not in value)
        return (NOT_SUPPORTED if ran else INCONCLUSIVE), text
    return (if_hold if holds else (REFUTED if if_hold == CONFIRMED else CONFIRMED)), text


def _not_checkable(*records: Any) -> list[str]:
    """The ``not_checkable`` reasons the records carry (a late slope fitted through too few evaluations)."""
    return [str(r["not_checkable"]) for r in records if isinstance(r, Mapping) and r.get("not_checkable")]


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
        value = lookup(report, keys)
        if value is MISSING:
            lines.append(f"also {path}: no {show(keys)} yet")
            continue
        threshold = spec.check.get("threshold")
        if "threshold" in extra:
            threshold = extra["threshold"]
        elif "threshold_path" in spec.check:
            threshold = lookup(report, keys_of(spec.check["threshold_path"]))
        relation = extra.get("relation", spec.check["relation"])
        blocked = _not_checkable(value, threshold)
        if blocked:  # as for the deciding query: the record's own reason, not the empty seed list it leaves
            verdict, text = NOT_CHECKABLE, "; ".join(blocked)
        else:
            verdict, text = experiment_verdict(value, relation, threshold, spec.check["min_seeds"])
        metric = report.get("metric", "?")
        if isinstance(threshold, (int, float)):
            against = fmt_value(threshold)
        else:
            against = show(keys_of(spec.check["threshold_path"]))
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
        record = MISSING if report is None else lookup(report, keys_of(item["value"]))
        ratio = record.get("ratio") if isinstance(record, Mapping) else None
        if ratio is None or not ratio > 0:
            missing.append(f"{item['label']} ({path}: {show(keys_of(item['value']))})")
        else:
            bound = record.get("ratio_is")
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


def evaluate_experiment(spec: Spec, goldens: Path) -> Result:
    c = spec.check
    name = c["file"]
    scales = list(c["scales"])
    found = first_scale(goldens, scales, name)
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
    value = lookup(report, keys)
    if value is MISSING:
        status = f" ({report['status']})" if isinstance(report, Mapping) and report.get("status") else ""
        return Result(spec, PENDING, [f"{path} has no {show(keys)} yet{status}"], recheck, scale)
    methods = methods_of(keys, report)
    if "threshold_path" in c:
        tkeys = keys_of(c["threshold_path"])
        threshold = lookup(report, tkeys)
        if threshold is MISSING:
            return Result(spec, PENDING, [f"{path} has no {show(tkeys)} yet"], recheck, scale)
        against = show(tkeys)
        methods |= methods_of(tkeys, report)
    else:
        threshold = c["threshold"]
        against = fmt_value(threshold)
    scope = scope_of(scale, report)
    seeds = _seeds(value)
    verdict, text = experiment_verdict(value, c["relation"], threshold, c["min_seeds"], c["if_hold"])
    runs = report.get("run_ids") or []
    metric = f" ({report['metric']})" if report.get("metric") else ""
    evidence = [
        f"{scale} scale, {path}{metric}: {show(keys)} {c['relation']} {against}? {text}",
        f"{seeds} seed(s); runs: {', '.join(map(str, runs[:8]))}{' ...' if len(runs) > 8 else ''}"
        if runs
        else f"{seeds} seed(s)",
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
    blocked = _not_checkable(value, threshold)
    if blocked:
        first = f"{scale} scale, {path}{metric}: {show(keys)} {c['relation']} {against}? not checkable: {blocked[0]}"
        return Result(spec, NOT_CHECKABLE, [first, *blocked[1:], *evidence[1:]], recheck, scale, scope)
    reports = {path: report}  # each report read once for the spec's also and shares entries
    evidence += _also(spec, goldens, scale, reports)
    evidence += _shares(spec, goldens, scale, reports) + proof
    if seeds < c["min_seeds"]:
        evidence.append(f"fewer than {c['min_seeds']} seeds: a data point, not a verdict")
    diverged = diverged_runs(goldens, scale, methods)
    if diverged:
        line = f"diverged (loss NaN/Inf, no curve; {goldens / DIVERGED}): {', '.join(diverged)}"
        if verdict in DECIDED:
            line += "; a seed the test could not include, so no decided verdict"
            verdict = INCONCLUSIVE
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
            return Result(spec, DOES_NOT_GENERATE, evidence, recheck, scale, scope)
    return Result(spec, verdict, evidence, recheck, scale, scope)
