"""The claims ledger: one YAML spec per claim under ``specs/``, a verdict for each, and the report.

A spec (read with the safe YAML loader, which refuses duplicate keys; validated on load) has these fields:

``id``
    The claim's id; the file is ``specs/<id>.yaml``.
``source``
    Who made the claim and where (paper section, table, figure, post).
``claim``
    The claim in one line.
``kind``
    ``structure`` (a property of the reference implementation, checked by tests), ``audit`` (arithmetic on
    counted parameters/MACs or published numbers, read from ``goldens/audit.json``), ``experiment`` (needs
    golden training runs) or ``out-of-scope``.
``reason``
    Required for ``out-of-scope``: why it cannot be checked honestly here.
``note``
    Optional: caveats a reader needs next to the verdict.
``check``
    How the claim is checked; its fields depend on the kind:

    structure
        ``tests``: pytest node ids (``tests/test_x.py::test_name``). ``if_pass``: the verdict when they all
        pass (``confirmed``, or ``refuted`` when the tests establish the opposite of the claim).
    audit
        ``expect``: a list of expectations, each ``quantity`` (a dotted path into ``goldens/audit.json``),
        ``relation`` (one of ``== ~= < <= > >=``), ``value`` (a number, or true/false for ``==``),
        ``rel_tol`` or ``abs_tol`` (only with ``~=``, exactly one), and optional ``label``, ``unit`` and
        ``format`` (a Python format spec, default ``.4g``). ``evidence``: optional quantities to show
        (``quantity``, ``label``, ``unit``, ``format``). ``if_hold``: the verdict when every expectation
        holds (default ``confirmed``); if any fails the verdict is the other one of confirmed/refuted.
    experiment
        A query into the golden runs' JSON: ``scales`` (preferred first, from ``smoke micro small paper``),
        ``file`` (under ``goldens/<scale>/``, default ``speedup.json``), ``value`` (a dotted path, or a list of
        keys when a key holds a dot), ``relation`` (``> >= < <=``), and either ``threshold`` (a number) or
        ``threshold_path`` (a second path in the same file). ``min_seeds`` (default 3) and ``if_hold``
        (default ``confirmed``) are optional. The first listed scale whose file exists is used. ``also``: optional
        ``{file, value}`` queries into the same scale's goldens (a second metric, e.g. FID next to the validation
        loss), evaluated the same way and shown in the evidence, never deciding.

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
``does not yet generate``: such runs carry no verdict. Every experiment verdict states its scope, the scale and the
baseline's training length, in the verdict itself: ``not supported at micro, 0.26 epochs``.

A verdict is ``pending`` while the golden file (or the path in it) does not exist yet, ``not checkable at
this scale`` when the spec lists only the ``paper`` scale and no paper-scale goldens exist. ``check failed``
means the evidence itself is broken (a test fails, an audit quantity is missing): ``repro claims`` exits 1, as it
does when a verdict differs from the committed
ledger ``reports/claims.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .io import atomic_write_text, read_yaml

KINDS = ("structure", "audit", "experiment", "out-of-scope")
CONFIRMED, REFUTED, INCONCLUSIVE = "confirmed", "refuted", "inconclusive"
NOT_SUPPORTED, DOES_NOT_GENERATE = "not supported", "does not yet generate"
NOT_CHECKABLE, OUT_OF_SCOPE, PENDING = "not checkable at this scale", "out of scope", "pending"
CHECK_FAILED = "check failed"
VERDICTS = (
    CONFIRMED,
    REFUTED,
    NOT_SUPPORTED,
    INCONCLUSIVE,
    DOES_NOT_GENERATE,
    NOT_CHECKABLE,
    OUT_OF_SCOPE,
    PENDING,
)
SCALES = ("smoke", "micro", "small", "paper")
AUDIT_RELATIONS = ("==", "~=", "<", "<=", ">", ">=")
EXPERIMENT_RELATIONS = ("<", "<=", ">", ">=")
ALPHA = 0.05
DEFAULT_SPECS, DEFAULT_GOLDENS, DEFAULT_REPORTS = Path("specs"), Path("goldens"), Path("reports")
RECHECK = {
    "audit": "repro audit && repro claims --only {id}",
    "micro": "dvc repro && repro claims --only {id}",
    "small": "nox -s gpu_repro && repro claims --only {id}",
    "smoke": "dvc repro && repro claims --only {id}",
    "paper": "paper-scale golden runs (torchrun, ImageNet-256 latents), then repro claims --only {id}",
}

_ID = re.compile(r"^[a-z0-9][a-z0-9.\-]*$")
_NODE = re.compile(r"^[\w./\-]+\.py(::[\w\-\[\].]+)+$")


class SpecError(ValueError):
    """A spec that does not follow the schema; the message names the file, the field, the value and what is allowed."""


@dataclass(frozen=True)
class Spec:
    id: str
    source: str
    claim: str
    kind: str
    check: Mapping[str, Any] | None
    reason: str | None
    note: str | None
    path: Path


@dataclass
class Result:
    spec: Spec
    verdict: str
    evidence: list[str] = field(default_factory=list)
    recheck: str = ""
    scale: str | None = None
    scope: str | None = None
    """Scale and training length of an experiment verdict (``micro, 0.26 epochs``): part of the verdict's text."""

    @property
    def text(self) -> str:
        """The verdict as the ledger states it: with its scope for experiments (``not supported at micro, ...``)."""
        if not self.scope:
            return self.verdict
        if self.verdict == NOT_CHECKABLE:
            return f"{self.verdict} ({self.scope})"
        return f"{self.verdict} at {self.scope}"

    def to_json(self) -> dict[str, Any]:
        s = self.spec
        out = {
            "id": s.id,
            "kind": s.kind,
            "source": s.source,
            "claim": s.claim,
            "verdict": self.text,
            "outcome": self.verdict,
            "scale": self.scale,
            "evidence": self.evidence,
            "recheck": self.recheck,
        }
        if s.note:
            out["note"] = s.note
        if s.reason:
            out["reason"] = s.reason
        return out


# ------------------------------------------------------------------------------------------------------------
# Schema
# ------------------------------------------------------------------------------------------------------------

_TOP_FIELDS = {"id": True, "source": True, "claim": True, "kind": True, "check": False, "reason": False, "note": False}
_CHECK_FIELDS = {
    "structure": {"tests": True, "if_pass": True},
    "audit": {"expect": True, "evidence": False, "if_hold": False},
    "experiment": {
        "scales": True,
        "file": False,
        "value": True,
        "relation": True,
        "threshold": False,
        "threshold_path": False,
        "min_seeds": False,
        "if_hold": False,
        "also": False,
    },
}
_EXPECT_FIELDS = {
    "quantity": True,
    "relation": True,
    "value": True,
    "rel_tol": False,
    "abs_tol": False,
    "label": False,
    "unit": False,
    "format": False,
}
_EVIDENCE_FIELDS = {"quantity": True, "label": False, "unit": False, "format": False}


def _fail(path: Path, fld: str, value: Any, allowed: str) -> SpecError:
    return SpecError(f"{path}: field '{fld}': value {value!r} is not allowed; allowed: {allowed}")


def _fields(path: Path, where: str, obj: Any, spec: Mapping[str, bool]) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise _fail(path, where or "(top level)", obj, "a mapping")
    prefix = f"{where}." if where else ""
    for key in obj:
        if key not in spec:
            raise _fail(path, f"{prefix}{key}", obj[key], f"known fields of {where or 'a spec'}: {', '.join(spec)}")
    for key, required in spec.items():
        if required and key not in obj:
            raise SpecError(f"{path}: field '{prefix}{key}' is missing; it is required")
    return obj


def _text(path: Path, fld: str, value: Any, one_line: bool = False) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, fld, value, "a non-empty string")
    if one_line and "\n" in value.strip():
        raise _fail(path, fld, value, "a single line")
    return value.strip()


def _number(path: Path, fld: str, value: Any, allow_bool: bool = False) -> Any:
    if isinstance(value, bool):
        if allow_bool:
            return value
        raise _fail(path, fld, value, "a number")
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(path, fld, value, "a finite number" + (" or true/false" if allow_bool else ""))
    return value


def _choice(path: Path, fld: str, value: Any, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise _fail(path, fld, value, ", ".join(map(str, allowed)))
    return value


def _query_path(path: Path, fld: str, value: Any) -> list[str]:
    if isinstance(value, str) and value and all(value.split(".")):
        return value.split(".")
    if isinstance(value, list) and value and all(isinstance(k, str) and k for k in value):
        return list(value)
    raise _fail(path, fld, value, "a dotted path such as 'a.b.c' or a list of keys")


def _format(path: Path, fld: str, value: Any) -> str:
    fmt = _text(path, fld, value)
    for sample in (1.5, 1):
        try:
            format(sample, fmt)
            return fmt
        except ValueError:
            pass
    raise _fail(path, fld, value, "a Python format spec for numbers, such as '.4g', '.2%' or ',d'")


def _validate_structure(path: Path, check: Mapping[str, Any]) -> None:
    tests = check["tests"]
    if not isinstance(tests, list) or not tests:
        raise _fail(path, "check.tests", tests, "a non-empty list of pytest node ids")
    for i, node in enumerate(tests):
        if not isinstance(node, str) or not _NODE.match(node):
            raise _fail(path, f"check.tests[{i}]", node, "a pytest node id such as 'tests/test_x.py::test_name'")
    _choice(path, "check.if_pass", check["if_pass"], (CONFIRMED, REFUTED))


def _validate_audit(path: Path, check: Mapping[str, Any]) -> None:
    expect = check["expect"]
    if not isinstance(expect, list) or not expect:
        raise _fail(path, "check.expect", expect, "a non-empty list of expectations")
    for i, e in enumerate(expect):
        where = f"check.expect[{i}]"
        _fields(path, where, e, _EXPECT_FIELDS)
        _query_path(path, f"{where}.quantity", e["quantity"])
        rel = _choice(path, f"{where}.relation", e["relation"], AUDIT_RELATIONS)
        _number(path, f"{where}.value", e["value"], allow_bool=rel == "==")
        tols = [k for k in ("rel_tol", "abs_tol") if k in e]
        if rel == "~=" and len(tols) != 1:
            raise _fail(path, f"{where}.relation", rel, "'~=' with exactly one of rel_tol or abs_tol")
        if rel != "~=" and tols:
            raise _fail(path, f"{where}.{tols[0]}", e[tols[0]], "a tolerance only with relation '~='")
        for k in tols:
            if _number(path, f"{where}.{k}", e[k]) < 0:
                raise _fail(path, f"{where}.{k}", e[k], "a number >= 0")
        for k in ("label", "unit"):
            if k in e:
                _text(path, f"{where}.{k}", e[k], one_line=True)
        if "format" in e:
            _format(path, f"{where}.format", e["format"])
    evidence = check.get("evidence", [])
    if not isinstance(evidence, list):
        raise _fail(path, "check.evidence", evidence, "a list of quantities to show")
    for i, e in enumerate(evidence):
        where = f"check.evidence[{i}]"
        _fields(path, where, e, _EVIDENCE_FIELDS)
        _query_path(path, f"{where}.quantity", e["quantity"])
        if "format" in e:
            _format(path, f"{where}.format", e["format"])
    _choice(path, "check.if_hold", check.get("if_hold", CONFIRMED), (CONFIRMED, REFUTED))


def _validate_experiment(path: Path, check: Mapping[str, Any]) -> None:
    scales = check["scales"]
    if not isinstance(scales, list) or not scales:
        raise _fail(path, "check.scales", scales, f"a non-empty list from: {', '.join(SCALES)}")
    for i, s in enumerate(scales):
        _choice(path, f"check.scales[{i}]", s, SCALES)
    name = check.get("file", "speedup.json")
    if not isinstance(name, str) or not name.endswith(".json") or "/" in name or name.startswith("."):
        raise _fail(path, "check.file", name, "a JSON file name inside goldens/<scale>/, such as 'speedup.json'")
    _query_path(path, "check.value", check["value"])
    _choice(path, "check.relation", check["relation"], EXPERIMENT_RELATIONS)
    has = [k for k in ("threshold", "threshold_path") if k in check]
    if len(has) != 1:
        raise _fail(path, "check.threshold", check.get("threshold"), "exactly one of threshold or threshold_path")
    if "threshold" in check:
        _number(path, "check.threshold", check["threshold"])
    else:
        _query_path(path, "check.threshold_path", check["threshold_path"])
    seeds = check.get("min_seeds", 3)
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise _fail(path, "check.min_seeds", seeds, "a positive integer")
    _choice(path, "check.if_hold", check.get("if_hold", CONFIRMED), (CONFIRMED, REFUTED))
    also = check.get("also", [])
    if not isinstance(also, list):
        raise _fail(path, "check.also", also, "a list of {file, value} queries shown next to the verdict")
    for i, extra in enumerate(also):
        _fields(path, f"check.also[{i}]", extra, {"file": True, "value": True})
        f = extra["file"]
        if not isinstance(f, str) or not f.endswith(".json") or "/" in f or f.startswith("."):
            raise _fail(path, f"check.also[{i}].file", f, "a JSON file name inside goldens/<scale>/")
        _query_path(path, f"check.also[{i}].value", extra["value"])


def parse_spec(data: Any, path: str | os.PathLike) -> Spec:
    """Validate one spec's data (as loaded from ``path``) and return it."""
    path = Path(path)
    _fields(path, "", data, _TOP_FIELDS)
    sid = data["id"]
    if not isinstance(sid, str) or not _ID.match(sid):
        raise _fail(path, "id", sid, "lowercase letters, digits, '.' and '-', starting with a letter or digit")
    if path.suffix == ".yaml" and path.stem != sid:
        raise _fail(path, "id", sid, f"the file's name without .yaml ({path.stem!r})")
    kind = _choice(path, "kind", data["kind"], KINDS)
    source = _text(path, "source", data["source"], one_line=True)
    claim = _text(path, "claim", data["claim"], one_line=True)
    note = _text(path, "note", data["note"]) if "note" in data else None
    reason = _text(path, "reason", data["reason"]) if "reason" in data else None
    check = data.get("check")
    if kind == "out-of-scope":
        if reason is None:
            raise SpecError(f"{path}: field 'reason' is missing; it is required for kind 'out-of-scope'")
        if check is not None:
            raise _fail(path, "check", check, "no check for kind 'out-of-scope' (give the reason instead)")
    else:
        if reason is not None:
            raise _fail(path, "reason", reason, "a reason only for kind 'out-of-scope'")
        if check is None:
            raise SpecError(f"{path}: field 'check' is missing; it is required for kind '{kind}'")
        _fields(path, "check", check, _CHECK_FIELDS[kind])
        {"structure": _validate_structure, "audit": _validate_audit, "experiment": _validate_experiment}[kind](
            path, check
        )
    return Spec(id=sid, source=source, claim=claim, kind=kind, check=check, reason=reason, note=note, path=path)


def load_spec(path: str | os.PathLike) -> Spec:
    path = Path(path)
    try:
        data = read_yaml(path)
    except ValueError as e:  # bad syntax or a key given twice
        raise SpecError(str(e)) from None
    return parse_spec(data, path)


def load_specs(directory: str | os.PathLike = DEFAULT_SPECS) -> list[Spec]:
    """Every ``*.yaml`` spec of ``directory``, validated, sorted by id. A spec saved as ``.yml`` is an error,
    not skipped: a claim that is silently left out of the ledger is worse than a failing one."""
    directory = Path(directory)
    if not directory.is_dir():
        raise SpecError(f"{directory}: not a folder of specs")
    misnamed = sorted(p for p in directory.iterdir() if p.suffix.lower() in (".yml", ".yaml") and p.suffix != ".yaml")
    if misnamed:
        raise SpecError(f"{misnamed[0]}: specs are read from <id>.yaml files; rename it to {misnamed[0].stem}.yaml")
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise SpecError(f"{directory}: no *.yaml specs found")
    return sorted((load_spec(p) for p in files), key=lambda s: s.id)


# ------------------------------------------------------------------------------------------------------------
# Looking things up
# ------------------------------------------------------------------------------------------------------------

_MISSING = object()


def lookup(data: Any, keys: Sequence[str]) -> Any:
    """Follow ``keys`` into nested mappings (and lists, by integer key); ``_MISSING`` if a key is absent."""
    for key in keys:
        if isinstance(data, Mapping) and key in data:
            data = data[key]
        elif isinstance(data, list) and key.isdigit() and int(key) < len(data):
            data = data[int(key)]
        else:
            return _MISSING
    return data


def _keys(value: str | Sequence[str]) -> list[str]:
    return value.split(".") if isinstance(value, str) else list(value)


def _show(keys: Sequence[str]) -> str:
    return ".".join(keys)


def _fmt(value: Any, fmt: str = ".4g") -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, (int, float)):
        return format(value, fmt)
    return json.dumps(value)


# ------------------------------------------------------------------------------------------------------------
# Audit claims
# ------------------------------------------------------------------------------------------------------------


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
    label = e.get("label", _show(_keys(e["quantity"])))
    tol = ""
    if "rel_tol" in e:
        tol = f" within {100 * e['rel_tol']:g}% of it"
    elif "abs_tol" in e:
        tol = f" within +/- {_fmt(e['abs_tol'], fmt)}{unit}"
    expected = _fmt(e["value"], fmt)
    outcome = "holds" if ok else "fails"
    return f"{label}: {_fmt(value, fmt)}{unit} (claim {e['relation']} {expected}{unit}{tol}: {outcome})"


def evaluate_audit(spec: Spec, audit: Mapping[str, Any] | None, audit_path: Path) -> Result:
    recheck = RECHECK["audit"].format(id=spec.id)
    if audit is None:
        return Result(spec, CHECK_FAILED, [f"{audit_path} does not exist; run `repro audit`"], recheck, "audit")
    evidence, all_hold, broken = [], True, []
    for e in spec.check["expect"]:
        keys = _keys(e["quantity"])
        value = lookup(audit, keys)
        if value is _MISSING:
            broken.append(f"{audit_path} has no quantity {_show(keys)}")
            continue
        try:
            ok = _holds(value, e["relation"], e["value"], e.get("rel_tol"), e.get("abs_tol"))
        except TypeError as err:
            broken.append(f"{_show(keys)}: {err}")
            continue
        all_hold &= ok
        evidence.append(_expectation_text(e, value, ok))
    for e in spec.check.get("evidence", []):
        keys = _keys(e["quantity"])
        value = lookup(audit, keys)
        if value is _MISSING:
            broken.append(f"{audit_path} has no quantity {_show(keys)}")
            continue
        unit = _unit(e)
        evidence.append(f"{e.get('label', _show(keys))}: {_fmt(value, e.get('format', '.4g'))}{unit}")
    prov = audit.get("provenance", {}) if isinstance(audit, Mapping) else {}
    if prov:
        evidence.append(
            f"counted by `{prov.get('command')}` at commit {str(prov.get('git_commit'))[:12]}, "
            f"torch {prov.get('torch')}, device {str(prov.get('device', '')).split(';')[0]}"
        )
    if broken:
        return Result(spec, CHECK_FAILED, broken + evidence, recheck, "audit")
    if_hold = spec.check.get("if_hold", CONFIRMED)
    verdict = if_hold if all_hold else (REFUTED if if_hold == CONFIRMED else CONFIRMED)
    return Result(spec, verdict, evidence, recheck, "audit")


# ------------------------------------------------------------------------------------------------------------
# Experiment claims
# ------------------------------------------------------------------------------------------------------------


def _k_key(k: float) -> str:
    return repr(float(k))


def _welch_mde(a: Sequence[float], b: Sequence[float] | float) -> float | None:
    """Shift (in the samples' units) the one-sided test at ALPHA / 2 detects with 80 % power at these seed counts."""
    import numpy as np

    from .speedup import detectable_shift

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
    head = f"ratio {_fmt(ratio, '.3g')}" + (f" ({bound})" if bound and bound != "estimate" else "")
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
        return ok, f"value {_fmt(value)}"
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


def _methods(keys: Sequence[str], report: Mapping[str, Any]) -> set[str]:
    """Methods a query path speaks about: ``unit_results.<m>...`` or ``late_slope.<m>``, plus the baseline."""
    out = {str(keys[1])} if len(keys) > 1 and keys[0] in ("unit_results", "late_slope") else set()
    if out and report.get("baseline"):
        out.add(str(report["baseline"]))
    return out


def _scope(scale: str, report: Mapping[str, Any]) -> str:
    training = report.get("training") or {}
    base = training.get(report.get("baseline")) if isinstance(training, Mapping) else None
    if isinstance(base, Mapping) and base.get("epochs") is not None:
        return f"{scale}, {float(base['epochs']):.2g} epochs"
    if isinstance(base, Mapping) and base.get("images") is not None:
        return f"{scale}, {float(base['images']):,.0f} images"
    return scale


def _also(spec: Spec, goldens: Path, scale: str) -> list[str]:
    """Evidence lines for the spec's ``also`` queries (secondary metrics: shown, never deciding)."""
    lines = []
    for extra in spec.check.get("also", []):
        path = goldens / scale / extra["file"]
        keys = _keys(extra["value"])
        try:
            report = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            lines.append(f"also {path}: not there yet")
            continue
        value = lookup(report, keys)
        if value is _MISSING:
            lines.append(f"also {path}: no {_show(keys)} yet")
            continue
        threshold = spec.check.get("threshold")
        if "threshold_path" in spec.check:
            threshold = lookup(report, _keys(spec.check["threshold_path"]))
        verdict, text = experiment_verdict(value, spec.check["relation"], threshold, spec.check.get("min_seeds", 3))
        metric = report.get("metric", "?")
        lines.append(f"also, on {metric} ({path}, not deciding): {_show(keys)} would be {verdict}: {text}")
    return lines


def evaluate_experiment(spec: Spec, goldens: Path) -> Result:
    c = spec.check
    name = c.get("file", "speedup.json")
    scales = list(c["scales"])
    found = next(((s, goldens / s / name) for s in scales if (goldens / s / name).exists()), None)
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
    keys = _keys(c["value"])
    value = lookup(report, keys)
    if value is _MISSING:
        return Result(spec, PENDING, [f"{path} has no {_show(keys)} yet"], recheck, scale)
    methods = _methods(keys, report)
    if "threshold_path" in c:
        tkeys = _keys(c["threshold_path"])
        threshold = lookup(report, tkeys)
        if threshold is _MISSING:
            return Result(spec, PENDING, [f"{path} has no {_show(tkeys)} yet"], recheck, scale)
        against = _show(tkeys)
        methods |= _methods(tkeys, report)
    else:
        threshold = c["threshold"]
        against = _fmt(threshold)
    scope = _scope(scale, report)
    seeds = _seeds(value)
    verdict, text = experiment_verdict(
        value, c["relation"], threshold, c.get("min_seeds", 3), c.get("if_hold", CONFIRMED)
    )
    runs = report.get("run_ids") or []
    metric = f" ({report['metric']})" if report.get("metric") else ""
    evidence = [
        f"{scale} scale, {path}{metric}: {_show(keys)} {c['relation']} {against}? {text}",
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
    blocked = [str(r["not_checkable"]) for r in (value, threshold) if isinstance(r, Mapping) and r.get("not_checkable")]
    if blocked:
        first = f"{scale} scale, {path}{metric}: {_show(keys)} {c['relation']} {against}? not checkable: {blocked[0]}"
        return Result(spec, NOT_CHECKABLE, [first, *blocked[1:], *evidence[1:]], recheck, scale, scope)
    evidence += _also(spec, goldens, scale)
    if seeds < c.get("min_seeds", 3):
        evidence.append(f"fewer than {c.get('min_seeds', 3)} seeds: a data point, not a verdict")
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


# ------------------------------------------------------------------------------------------------------------
# Structure claims
# ------------------------------------------------------------------------------------------------------------


def _node_matches(node: str, classname: str, name: str) -> bool:
    file, *rest = node.split("::")
    module = file[:-3].replace("/", ".")
    want_class = ".".join([module, *rest[:-1]])
    func = rest[-1]
    return classname == want_class and (name == func or name.startswith(func + "["))


def _pytest(args: Sequence[str], root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=root, capture_output=True, text=True
    )


def collected_nodes(files: Sequence[str], root: Path) -> set[str]:
    """Node ids pytest collects from ``files`` (parametrized cases included, with their brackets)."""
    proc = _pytest(["--collect-only", "-q", *files], root)
    return {line.strip() for line in proc.stdout.splitlines() if "::" in line}


def node_exists(node: str, collected: set[str]) -> bool:
    return node in collected or any(c.startswith(node + "[") or c.startswith(node + "::") for c in collected)


def run_pytest(nodes: Sequence[str], root: Path) -> tuple[dict[str, list[tuple[str, str]]], str]:
    """Run the node ids in one pytest process; outcomes per node id as (test name, outcome), and pytest's tail.

    A node id pytest cannot find makes it refuse the whole run; then the existing ones run without it, and the
    missing one gets no outcome.
    """
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        proc = _pytest(["-q", f"--junitxml={xml}", *nodes], root)
        if proc.returncode == 4:  # usage error, typically "not found"
            collected = collected_nodes(
                sorted({n.split("::")[0] for n in nodes if Path(root, n.split("::")[0]).exists()}), root
            )
            present = [n for n in nodes if node_exists(n, collected)]
            if present:
                proc = _pytest(["-q", f"--junitxml={xml}", *present], root)
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        cases: list[tuple[str, str, str]] = []
        if xml.exists():
            for case in ET.parse(xml).getroot().iter("testcase"):
                tags = {child.tag for child in case}
                outcome = "failed" if tags & {"failure", "error"} else "skipped" if "skipped" in tags else "passed"
                cases.append((case.get("classname", ""), case.get("name", ""), outcome))
    outcomes = {n: [(name, o) for cls, name, o in cases if _node_matches(n, cls, name)] for n in nodes}
    return outcomes, tail


def evaluate_structure(specs: Sequence[Spec], root: Path) -> list[Result]:
    nodes = sorted({n for s in specs for n in s.check["tests"]})
    outcomes, tail = run_pytest(nodes, root) if nodes else ({}, "")
    results = []
    for spec in specs:
        tests = spec.check["tests"]
        recheck = "python -m pytest -q " + " ".join(tests)
        evidence, failed, skipped = [], False, False
        for node in tests:
            got = outcomes.get(node, [])
            counts = {o: sum(1 for _, x in got if x == o) for o in ("passed", "failed", "skipped")}
            if not got:
                failed = True
                evidence.append(f"{node}: not found by pytest")
                continue
            failed |= counts["failed"] > 0
            skipped |= counts["skipped"] > 0
            cases = f" ({len(got)} cases)" if len(got) > 1 else ""
            state = ", ".join(f"{v} {k}" for k, v in counts.items() if v) if len(got) > 1 else got[0][1]
            evidence.append(f"{node}: {state}{cases if len(got) > 1 and counts['passed'] == len(got) else ''}")
        if failed:
            verdict = CHECK_FAILED
            evidence.append("pytest: " + tail.splitlines()[-1] if tail else "pytest produced no output")
        elif skipped:
            verdict = INCONCLUSIVE
        else:
            verdict = spec.check["if_pass"]
        results.append(Result(spec, verdict, evidence, recheck, "reference implementation"))
    return results


# ------------------------------------------------------------------------------------------------------------
# The ledger
# ------------------------------------------------------------------------------------------------------------


def evaluate_all(
    specs: Sequence[Spec], goldens: Path = DEFAULT_GOLDENS, root: Path = Path("."), run_tests: bool = True
) -> list[Result]:
    """A result per spec, in the order of ``specs``; structure checks run only with ``run_tests``."""
    audit_path = goldens / "audit.json"
    audit = json.loads(audit_path.read_text()) if audit_path.exists() else None
    by_id: dict[str, Result] = {}
    structure = [s for s in specs if s.kind == "structure"]
    if run_tests:
        by_id.update({r.spec.id: r for r in evaluate_structure(structure, root)})
    for spec in specs:
        if spec.kind == "out-of-scope":
            by_id[spec.id] = Result(spec, OUT_OF_SCOPE, [spec.reason], "", None)
        elif spec.kind == "audit":
            by_id[spec.id] = evaluate_audit(spec, audit, audit_path)
        elif spec.kind == "experiment":
            by_id[spec.id] = evaluate_experiment(spec, goldens)
    return [by_id[s.id] for s in specs if s.id in by_id]


def ledger(results: Sequence[Result]) -> dict[str, Any]:
    counts = {v: 0 for v in (*VERDICTS, CHECK_FAILED)}
    for r in results:
        counts[r.verdict] += 1
    return {
        "verdicts": list(VERDICTS),
        "counts": {k: v for k, v in counts.items() if v},
        "claims": [r.to_json() for r in results],
    }


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(results: Sequence[Result]) -> str:
    led = ledger(results)
    lines = [
        "# Claims ledger",
        "",
        "Written by `repro claims` from `specs/`, `goldens/audit.json` and the golden runs under `goldens/`. "
        "Counts: " + ", ".join(f"{n} {v}" for v, n in led["counts"].items()) + ".",
        "",
        "| claim | kind | verdict | evidence (first line) |",
        "|---|---|---|---|",
    ]
    for r in results:
        first = r.evidence[0] if r.evidence else ""
        lines.append(f"| `{r.spec.id}` | {r.spec.kind} | **{r.text}** | {_cell(first)} |")
    lines += [""]
    for r in results:
        s = r.spec
        lines += [
            f"## {s.id}: {r.text}",
            "",
            f"- claim: {s.claim}",
            f"- source: {s.source}",
            f"- kind: {s.kind}" + (f"; scale: {r.scale}" if r.scale else ""),
        ]
        lines += ["- evidence:"] + [f"  - {_cell(e)}" for e in r.evidence]
        if s.note:
            lines.append(f"- note: {_cell(s.note)}")
        if r.recheck:
            lines.append(f"- re-check: `{r.recheck}`")
        lines.append("")
    return "\n".join(lines)


def render_table(results: Sequence[Result]) -> str:
    width = max(len(r.spec.id) for r in results)
    vwidth = max(len(r.text) for r in results)
    rows = [f"{'claim':<{width}}  {'kind':<12}  {'verdict':<{vwidth}}  evidence"]
    for r in results:
        first = r.evidence[0] if r.evidence else ""
        rows.append(f"{r.spec.id:<{width}}  {r.spec.kind:<12}  {r.text:<{vwidth}}  {first}")
    return "\n".join(rows)


def drift(results: Sequence[Result], committed: Mapping[str, Any] | None, only: set[str] | None = None) -> list[str]:
    """Claims whose verdict differs from the committed ledger (or that it lacks / has in excess)."""
    if committed is None:
        return ["no committed ledger; run `repro claims --update` to write it"]
    old = {c["id"]: c["verdict"] for c in committed.get("claims", [])}
    new = {r.spec.id: r.text for r in results}
    out = []
    for cid in sorted(set(old) | set(new)):
        if only is not None and cid not in only:
            continue
        if cid not in new:
            if only is None:
                out.append(f"{cid}: in the committed ledger, but no result now")
        elif old.get(cid) != new[cid]:
            out.append(f"{cid}: committed {old.get(cid, '(absent)')!r}, now {new[cid]!r}")
    return out


def write_reports(results: Sequence[Result], reports: Path) -> None:
    atomic_write_text(reports / "claims.json", json.dumps(ledger(results), indent=2) + "\n")
    atomic_write_text(reports / "claims.md", render_markdown(results))


def _run_cli(args: argparse.Namespace) -> int:
    specs_dir, goldens, reports = Path(args.specs), Path(args.goldens), Path(args.reports)
    try:
        specs = load_specs(specs_dir)
    except SpecError as e:
        print(f"claims: {e}", file=sys.stderr)
        return 1
    only = set(args.only) if args.only else None
    if only:
        unknown = sorted(only - {s.id for s in specs})
        if unknown:
            print(
                f"claims: --only: unknown id(s) {unknown}; allowed: {', '.join(s.id for s in specs)}", file=sys.stderr
            )
            return 1
        specs = [s for s in specs if s.id in only]
    results = evaluate_all(specs, goldens, Path(args.root), run_tests=not args.skip_pytest)
    print(render_table(results))
    if args.skip_pytest:
        skipped = [s.id for s in specs if s.kind == "structure"]
        print(f"(structure checks skipped: {', '.join(skipped) or 'none'})")
    for r in results:
        for line in r.evidence[1:]:
            print(f"  {r.spec.id}: {line}")
    failed = [r.spec.id for r in results if r.verdict == CHECK_FAILED]
    ledger_path = reports / "claims.json"
    committed = json.loads(ledger_path.read_text()) if ledger_path.exists() else None
    partial = only is not None or args.skip_pytest
    compare_ids = {r.spec.id for r in results} if partial else None
    # `dvc repro` removes the ledger before the claims stage rewrites it: nothing to drift from then
    changes = [] if committed is None and args.update else drift(results, committed, compare_ids)
    if args.update and not partial:
        write_reports(results, reports)
        print(f"wrote {reports / 'claims.md'} and {ledger_path}")
    elif not changes and not partial:
        write_reports(results, reports)
    for c in changes:
        print(f"claims: verdict {'changed' if args.update and not partial else 'drift'}: {c}", file=sys.stderr)
    if failed:
        print(f"claims: check failed for {', '.join(failed)}", file=sys.stderr)
    if changes and not args.update:
        print(
            "claims: the ledger differs from reports/claims.json; if the change is intended, run "
            "`repro claims --update` and commit the reports",
            file=sys.stderr,
        )
    return 1 if failed or (changes and not (args.update and not partial)) else 0


def register_cli(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "claims",
        help="evaluate every claim spec and write the verdict table",
        description="Evaluates every spec under specs/ (structure checks run pytest; audit checks read "
        "goldens/audit.json; experiment checks query golden runs), prints the verdicts and writes "
        "reports/claims.md and reports/claims.json. Exits 1 when a check fails or a verdict differs "
        "from the committed reports/claims.json.",
    )
    p.add_argument("--specs", default=str(DEFAULT_SPECS), help="spec folder (default: %(default)s)")
    p.add_argument("--goldens", default=str(DEFAULT_GOLDENS), help="goldens folder (default: %(default)s)")
    p.add_argument("--reports", default=str(DEFAULT_REPORTS), help="report folder (default: %(default)s)")
    p.add_argument("--root", default=".", help="where pytest runs the structure checks (default: %(default)s)")
    p.add_argument("--only", nargs="+", metavar="ID", help="evaluate these claims only (reports are not rewritten)")
    p.add_argument(
        "--skip-pytest", action="store_true", help="skip the structure checks (fast; reports are not rewritten)"
    )
    p.add_argument("--update", action="store_true", help="accept the new verdicts: rewrite the committed ledger")
    p.set_defaults(func=_run_cli)
    return p
