"""The speedup report as a declared record: what :func:`repro.evidence.speedup.report.speedup_report` writes, typed.

Each dataclass serialises (:meth:`to_json`) to exactly the JSON the report has always had: the same keys in the same
order (a field whose metadata says ``omit`` is left out when it is None: the keys a record of that kind does not
carry), and parses it back (:meth:`from_json`), checking the fields a verdict reads: a record no report writer
writes raises :class:`BrokenRecord`, naming the field. The ledger (:mod:`repro.evidence.rules`) reads the goldens
through these types: :func:`record_at` types the value at a query's path by where it sits in the report.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

VERSION = 1
"""The report's layout. Version 1 is the layout every committed report has; the number lives on the record only
(:attr:`SpeedupReport.version`), not in the JSON, which stays byte-identical to what was written before the record
was declared."""

OMIT = {"omit": True}
"""Field metadata: leave the key out of the JSON when the value is None (a key that kind of record does not carry)."""
MISSING = object()


class BrokenRecord(ValueError):
    """A golden record whose field cannot be what the report writer writes: the claim's check fails on it."""

    def __init__(self, field: str, value: Any, allowed: str):
        if value is MISSING:
            super().__init__(f"{field} is missing; must be {allowed}")
        else:
            super().__init__(f"{field}={json.dumps(value)[:80]} is not allowed; must be {allowed}")


def k_key(k: float) -> str:
    """A threshold ``k``'s key in a record's per-k tables (``"1.0"``): the one formatter of it."""
    return repr(float(k))


def _json_name(f) -> str:
    return f.metadata.get("json", f.name)


def _to_json(value: Any) -> Any:
    if hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, Mapping):
        return {k: _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    return value


class _Record:
    """Serialisation shared by the records: fields in declaration order, ``json`` metadata for a key that is no
    Python name, ``omit`` metadata for a key left out when None, ``skip`` for a field that is not written."""

    def to_json(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.metadata.get("skip") or (f.metadata.get("omit") and value is None):
                continue
            out[_json_name(f)] = _to_json(value)
        return out


def _mapping(data: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise BrokenRecord(where, data, "a JSON object")
    return data


def _positive(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
        raise BrokenRecord(name, value, "a positive finite number or null")
    return value


def _p_table(data: Mapping[str, Any], name: str) -> dict[str, Any]:
    table = data.get(name, MISSING)
    if not isinstance(table, Mapping):
        raise BrokenRecord(name, table, "a mapping of k to a p-value or null")
    for key, p in table.items():
        if p is not None and (isinstance(p, bool) or not isinstance(p, (int, float)) or not (0.0 <= p <= 1.0)):
            raise BrokenRecord(f"{name}.{key}", p, "a number in [0, 1] or null")
    return dict(table)


def _flag_table(data: Mapping[str, Any], name: str, ps: Mapping[str, Any], level: float) -> dict[str, Any]:
    """A test's outcome as written beside its p-value (``ge_k``, ``lt_k``): a boolean that agrees with the p-value at
    the record's one-sided level, or null. A string (``"false"``), a flag beside a test that did not run, or a flag
    that contradicts its p-value is a record no report writer writes."""
    table = data.get(name, MISSING)
    if not isinstance(table, Mapping):
        raise BrokenRecord(name, table, "a mapping of k to true, false or null")
    for key, flag in table.items():
        if flag is None:
            continue  # not written: the p-value alone decides
        p = ps.get(key)
        allowed = "null (the test did not run)" if p is None else f"{str(p < level).lower()} (p = {p:.3g} at {level:g})"
        if not isinstance(flag, bool) or p is None or flag != (p < level):
            raise BrokenRecord(f"{name}.{key}", flag, allowed)
    return dict(table)


@dataclass
class Mde(_Record):
    """The minimum detectable effect: a true speedup of ``k * factor`` (or ``k / factor``) is detected with ``power``
    by the one-sided test at ``alpha_one_sided``."""

    factor: float
    power: float
    alpha_one_sided: float

    @classmethod
    def from_json(cls, data: Any) -> Mde:
        data = _mapping(data, "mde")
        level = data.get("alpha_one_sided")
        if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
            raise BrokenRecord("mde.alpha_one_sided", level if level is not None else MISSING, "a number in (0, 1)")
        return cls(data.get("factor"), data.get("power"), level)


@dataclass
class Costs(_Record):
    """Each seed's cost to the target (None: not reached), per arm: what the comparison was computed from."""

    baseline: list[float | None]
    method: list[float | None]

    @classmethod
    def from_json(cls, data: Any) -> Costs:
        data = _mapping(data, "costs")
        return cls(list(data["baseline"]), list(data["method"]))


@dataclass
class Comparison(_Record):
    """A method's speedup over the baseline at one target in one cost unit (``unit_results.<method>.<target>.<unit>``,
    ``...ladder.<rung>.<unit>``, ``growth.<method>.<from>:<to>.<unit>``): see the package docstring for each field.

    ``target`` is written on the ``common`` target's records, ``start`` and ``end`` on a growth's, both first."""

    ratio: float | None
    ratio_is: str | None
    ci_low: float | None
    ci_high: float | None
    seeds: int
    reached: str
    baseline_seeds: int
    baseline_reached: str
    p_value_ge_k: dict[str, float | None]
    p_value_lt_k: dict[str, float | None]
    ge_k: dict[str, bool | None]
    lt_k: dict[str, bool | None]
    mde: Mde | None
    status: str
    costs: Costs
    target: float | None = field(default=None, metadata=OMIT)
    start: float | None = field(default=None, metadata=OMIT)
    end: float | None = field(default=None, metadata=OMIT)

    LEADING: ClassVar[tuple[str, ...]] = ("start", "end", "target")

    def to_json(self) -> dict[str, Any]:
        body = super().to_json()
        lead = {k: body.pop(k) for k in self.LEADING if k in body}
        return {**lead, **body}

    @property
    def level(self) -> float:
        """The one-sided level its tests were decided at (``mde.alpha_one_sided``; 0.025 where there is no mde)."""
        return self.mde.alpha_one_sided if self.mde is not None else 0.025

    def p(self, side: str, k: float) -> float | None:
        """The one-sided p-value of "speedup >= k" (``side="ge"``) or "< k" (``"lt"``); None: the test did not run."""
        table = self.p_value_ge_k if side == "ge" else self.p_value_lt_k
        p = table.get(k_key(k))
        return None if p is None else float(p)

    @classmethod
    def from_json(cls, data: Any) -> Comparison:
        data = _mapping(data, "record")
        ratio = _positive(data.get("ratio"), "ratio")
        ci_low, ci_high = _positive(data.get("ci_low"), "ci_low"), _positive(data.get("ci_high"), "ci_high")
        ge, lt = _p_table(data, "p_value_ge_k"), _p_table(data, "p_value_lt_k")
        mde = None if data.get("mde") is None else Mde.from_json(data["mde"])
        level = mde.alpha_one_sided if mde is not None else 0.025
        for name in ("seeds", "reached", "baseline_seeds", "baseline_reached", "status", "costs", "ratio_is"):
            if name not in data:
                raise BrokenRecord(name, MISSING, "what `repro speedup` writes")
        return cls(
            ratio=ratio,
            ratio_is=data["ratio_is"],
            ci_low=ci_low,
            ci_high=ci_high,
            seeds=data["seeds"],
            reached=data["reached"],
            baseline_seeds=data["baseline_seeds"],
            baseline_reached=data["baseline_reached"],
            p_value_ge_k=ge,
            p_value_lt_k=lt,
            ge_k=_flag_table(data, "ge_k", ge, level),
            lt_k=_flag_table(data, "lt_k", lt, level),
            mde=mde,
            status=data["status"],
            costs=Costs.from_json(data["costs"]),
            target=data.get("target"),
            start=data.get("start"),
            end=data.get("end"),
        )


@dataclass
class NoGrowth(_Record):
    """A growth whose start target too few seeds of an arm reached to compare (``growth.<m>.<from>:<to>.<unit>``)."""

    ratio: None
    status: str

    @classmethod
    def from_json(cls, data: Any) -> NoGrowth:
        data = _mapping(data, "record")
        return cls(None, data["status"])


def parse_growth(data: Any) -> Comparison | NoGrowth:
    """A growth record: a :class:`Comparison` (with ``start`` and ``end``), or a :class:`NoGrowth`, which carries
    neither (the writer writes those two keys exactly when it compared)."""
    data = _mapping(data, "record")
    return Comparison.from_json(data) if "start" in data else NoGrowth.from_json(data)


@dataclass
class Sample(_Record):
    """Per-seed values of one method (``late_slope.<m>``, ``final_values.<m>``, ``matched_slope.<m>.<arm>``): the
    ledger compares two by Welch's t-tests. ``not_checkable``: why no test can be made (too few evaluations)."""

    mean: float | None
    std: float | None
    per_seed: list[float | None]
    window_points: list[int] | None = field(default=None, metadata=OMIT)
    not_checkable: str | None = field(default=None, metadata=OMIT)

    def values(self, name: str = "per_seed") -> list[float]:
        """The seeds' values that are there (a late slope not fitted is null), checked to be finite numbers."""
        out = []
        for i, v in enumerate(self.per_seed):
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise BrokenRecord(f"{name}[{i}]", v, "a finite number or null")
            out.append(float(v))
        return out

    @classmethod
    def from_json(cls, data: Any) -> Sample:
        data = _mapping(data, "sample")
        per_seed = data.get("per_seed", MISSING)
        if not isinstance(per_seed, list):
            raise BrokenRecord("per_seed", per_seed, "a list of numbers or nulls")
        return cls(data.get("mean"), data.get("std"), per_seed, data.get("window_points"), data.get("not_checkable"))


@dataclass
class MatchedSlope(_Record):
    """Both arms' slopes over one window ``[bottom, top]`` of metric values (``matched_slope.<method>``)."""

    window: list[float]
    baseline: Sample
    method: Sample

    @classmethod
    def from_json(cls, data: Any) -> MatchedSlope:
        data = _mapping(data, "matched_slope")
        return cls(list(data["window"]), Sample.from_json(data["baseline"]), Sample.from_json(data["method"]))


def _units(data: Mapping[str, Any], parse) -> dict[str, Any]:
    return {unit: parse(record) for unit, record in data.items()}


def parse_unit_results(data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{method: {target: {unit: Comparison}, "ladder": {rung: {unit: Comparison}}}}``."""
    out: dict[str, dict[str, Any]] = {}
    for method, targets in data.items():
        out[method] = {
            t: (
                {rung: _units(units, Comparison.from_json) for rung, units in per.items()}
                if t == "ladder"
                else _units(per, Comparison.from_json)
            )
            for t, per in targets.items()
        }
    return out


@dataclass
class SpeedupReport(_Record):
    """A ``repro speedup`` report. A report of a comparison whose runs are not made yet (``no_runs_report``) carries
    ``status`` and neither ``anchor_unit``, ``alpha`` nor ``interval``; ``growth`` is there when growth pairs were
    asked for; ``inputs`` where ``repro speedup`` wrote it. ``runs``, ``training``, ``gate`` and ``targets`` stay
    JSON objects (read by key by their readers)."""

    scale: str | None
    baseline: str
    metric: str
    units: list[str]
    ks: list[float]
    training: dict[str, Any]
    gate: dict[str, Any] | None
    targets: dict[str, Any]
    ladder_units: list[str]
    run_ids: list[str]
    runs: list[dict[str, Any]]
    late_slope: dict[str, Sample]
    matched_slope: dict[str, MatchedSlope]
    final_values: dict[str, Sample]
    unit_results: dict[str, dict[str, Any]]
    anchor_unit: str | None = field(default=None, metadata=OMIT)
    alpha: float | None = field(default=None, metadata=OMIT)
    interval: dict[str, Any] | None = field(default=None, metadata=OMIT)
    status: str | None = field(default=None, metadata=OMIT)
    growth: dict[str, dict[str, dict[str, Comparison | NoGrowth]]] | None = field(default=None, metadata=OMIT)
    decomposition: dict[str, Any] | None = field(default=None, metadata=OMIT)
    """Each rung's speedups as iterations x per-step cost and through an intermediate method (``--decompose``)."""
    inputs: list[dict[str, Any]] | None = field(default=None, metadata=OMIT)
    """The curve files the command read (``path``, ``run_id``), in order: written by ``repro speedup``."""
    fid_records: dict[str, Any] | None = field(default=None, metadata=OMIT)
    """Each landed paper-scale run's unguided FID records (``repro land``)."""
    format: str | None = field(default=None, metadata=OMIT)
    landed_by: str | None = field(default=None, metadata=OMIT)
    provenance: dict[str, Any] | None = field(default=None, metadata=OMIT)
    digest: str | None = field(default=None, metadata=OMIT)
    """``format``, ``landed_by``, ``provenance`` and ``digest``: what ``repro land`` adds to a paper-scale report."""
    version: int = field(default=VERSION, metadata={"skip": True})

    ORDER: ClassVar[tuple[str, ...]] = (
        "scale", "baseline", "metric", "anchor_unit", "units", "ks", "alpha", "interval", "status", "training", "gate",
        "targets", "ladder_units", "run_ids", "runs", "late_slope", "matched_slope", "final_values", "unit_results",
        "growth", "decomposition", "inputs", "fid_records", "format", "landed_by", "provenance", "digest",
    )  # fmt: skip
    """The keys in the order the report has them."""

    def to_json(self) -> dict[str, Any]:
        body = super().to_json()
        return {k: body[k] for k in self.ORDER if k in body}

    @classmethod
    def from_json(cls, data: Any) -> SpeedupReport:
        data = _mapping(data, "report")
        growth = data.get("growth")
        return cls(
            scale=data["scale"],
            baseline=data["baseline"],
            metric=data["metric"],
            units=list(data["units"]),
            ks=list(data["ks"]),
            training=data["training"],
            gate=data["gate"],
            targets=data["targets"],
            ladder_units=list(data["ladder_units"]),
            run_ids=list(data["run_ids"]),
            runs=list(data["runs"]),
            late_slope={m: Sample.from_json(s) for m, s in data["late_slope"].items()},
            matched_slope={m: MatchedSlope.from_json(s) for m, s in data["matched_slope"].items()},
            final_values={m: Sample.from_json(s) for m, s in data["final_values"].items()},
            unit_results=parse_unit_results(data["unit_results"]),
            anchor_unit=data.get("anchor_unit"),
            alpha=data.get("alpha"),
            interval=data.get("interval"),
            status=data.get("status"),
            growth=None
            if growth is None
            else {
                m: {pair: _units(units, parse_growth) for pair, units in pairs.items()} for m, pairs in growth.items()
            },
            decomposition=_parse_decomposition(data.get("decomposition")),
            inputs=data.get("inputs"),
            fid_records=data.get("fid_records"),
            format=data.get("format"),
            landed_by=data.get("landed_by"),
            provenance=data.get("provenance"),
            digest=data.get("digest"),
        )


def _parse_decomposition(data: Any) -> dict[str, Any] | None:
    """The ``decomposition`` section with each ``from_via`` record typed (:class:`Comparison`)."""
    if data is None:
        return None
    data = _mapping(data, "decomposition")
    via = {}
    for method, entry in _mapping(data.get("via", {}), "decomposition.via").items():
        entry = dict(_mapping(entry, f"decomposition.via.{method}"))
        if "ladder" in entry:
            entry["ladder"] = {
                rung: {unit: {**r, "from_via": Comparison.from_json(r["from_via"])} for unit, r in units.items()}
                for rung, units in entry["ladder"].items()
            }
        via[method] = entry
    return {"per_step": dict(data.get("per_step", {})), "via": via}


def record_at(keys: Sequence[str], value: Any) -> Any:
    """The JSON ``value`` found at the path ``keys`` of a speedup report, typed by where it sits: a
    :class:`Comparison` under ``unit_results.<m>.<target>.<unit>`` (or ``...ladder.<rung>.<unit>``), a growth record
    under ``growth.<m>.<pair>.<unit>``, a :class:`Sample` at ``late_slope.<m>``, ``final_values.<m>`` or
    ``matched_slope.<m>.<arm>``; anything else (a number, a section) as it is. Raises :class:`BrokenRecord` on a record
    no report writer writes."""
    keys = list(keys)
    head, depth = (keys[0] if keys else None), len(keys)
    if head == "unit_results" and (depth == 4 and keys[2] != "ladder" or depth == 5 and keys[2] == "ladder"):
        return Comparison.from_json(value)
    if head == "growth" and depth == 4:
        return parse_growth(value)
    if head == "decomposition" and depth == 7 and keys[1] == "via" and keys[6] == "from_via":
        return Comparison.from_json(value)
    if head in ("late_slope", "final_values") and depth == 2 or head == "matched_slope" and depth == 3:
        return Sample.from_json(value)
    return value
