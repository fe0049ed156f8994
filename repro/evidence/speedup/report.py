"""The report: targets, per-run costs, slopes and every method's speedup records, and the report of no runs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .cost import (
    MIN_LATE_POINTS,
    TARGETS,
    cost_to_target,
    ladder_from_baseline,
    late_slope,
    late_window_points,
    matched_slope,
    targets_from_baseline,
)
from .curves import _check_metric, _check_unit, _group, _points, _series
from .gate import gate_summary, run_gate
from .record import Comparison, MatchedSlope, NoGrowth, Sample, SpeedupReport
from .stats import ALPHA, POWER, comparison


def _versus(
    base_points, base_runs, m_points, m_runs, target: float, unit: str, metric: str, ks, alpha: float
) -> Comparison:
    """:func:`compare` of two arms' curves (``*_points``; ``*_runs`` hold their budgets) at one ``target``, with
    each seed's first evaluation (a target met there is censored from below: the ladder's early rungs)."""

    return comparison(
        [cost_to_target(p, target, unit, metric) for p in base_points],
        [r["budget"][unit] for r in base_runs],
        [cost_to_target(p, target, unit, metric) for p in m_points],
        ks,
        alpha,
        [r["budget"][unit] for r in m_runs],
        [r["first"][unit] for r in base_runs],
        [r["first"][unit] for r in m_runs],
    )


def growth(
    base_points: Sequence[Sequence[Mapping[str, Any]]],
    base_runs: Sequence[Mapping[str, Any]],
    m_points: Sequence[Sequence[Mapping[str, Any]]],
    m_runs: Sequence[Mapping[str, Any]],
    start: float,
    end: float,
    unit: str,
    metric: str,
    ks: Sequence[float],
    alpha: float,
) -> Comparison | NoGrowth:
    """The growth of the speedup from target ``start`` to target ``end`` (see the module's docstring)."""

    def arm(points, runs):
        ratios, budgets, dropped = [], [], 0
        for pts, run in zip(points, runs):
            c0, c1 = cost_to_target(pts, start, unit, metric), cost_to_target(pts, end, unit, metric)
            if c0 is None or c0 == run["first"][unit]:  # not reached, or met before anything was measured
                dropped += 1
                continue
            ratios.append(None if c1 is None else c1 / c0)
            budgets.append(run["budget"][unit] / c0)
        return ratios, budgets, dropped

    rb, bb, db = arm(base_points, base_runs)
    rm, bm, dm = arm(m_points, m_runs)
    if not rb or not rm:
        return NoGrowth(None, f"the start target is reached by {len(rb)} baseline and {len(rm)} method seeds")
    record = comparison(rb, bb, rm, ks, alpha, bm)
    if db or dm:
        record.status += (
            f"; left out, not reaching the start target or meeting it at their first evaluation: {db} baseline and "
            f"{dm} method seed(s)"
        )
    record.start, record.end = start, end
    return record


def speedup_report(
    curves: Sequence[Mapping[str, Any]],
    baseline: str = "dit",
    units: Sequence[str] = ("iterations", "images", "macs", "seconds"),
    metric: str = "fid",
    ks: Sequence[float] = (1.0,),
    anchor_unit: str = "iterations",
    alpha: float = ALPHA,
    train_size: int | None = None,
    gate: Mapping[str, Any] | None = None,
    ladder_units: Sequence[str] | None = None,
    growth_pairs: Sequence[tuple[str, str]] = (),
    decompose: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """Targets, per-run costs, late slopes and per-method speedups over ``baseline``, as a JSON-ready dict.

    ``anchor_unit`` places the ``third`` target and the ladder's rungs and measures the slopes. ``train_size``
    (images in the training set) gives the training length in epochs for curves that do not record their own
    ``train_size``. ``gate``, from :func:`gate_from_reference`, adds each run's sanity gate. ``ladder_units``: the
    units of the ladder (a subset of ``units``; empty for none; by default MACs, or the first unit without them).
    ``growth_pairs``: ``(from, to)`` targets, each a named target or a rung of the ladder, whose speedup growth is
    reported per unit. ``decompose``: ``(method, via)`` pairs whose speedup at each rung is split into ``via``'s over
    the baseline and the method's over ``via`` (:func:`decomposition`). See the module docstring. The report as JSON:
    :func:`build_report`'s record, serialised.
    """
    return build_report(
        curves, baseline, units, metric, ks, anchor_unit, alpha, train_size, gate, ladder_units, growth_pairs,
        decompose,
    ).to_json()  # fmt: skip


def build_report(
    curves: Sequence[Mapping[str, Any]],
    baseline: str = "dit",
    units: Sequence[str] = ("iterations", "images", "macs", "seconds"),
    metric: str = "fid",
    ks: Sequence[float] = (1.0,),
    anchor_unit: str = "iterations",
    alpha: float = ALPHA,
    train_size: int | None = None,
    gate: Mapping[str, Any] | None = None,
    ladder_units: Sequence[str] | None = None,
    growth_pairs: Sequence[tuple[str, str]] = (),
    decompose: Sequence[tuple[str, str]] = (),
) -> SpeedupReport:
    """:func:`speedup_report`'s record (the same arguments)."""
    units, ladder_units = _checked(metric, units, anchor_unit, ladder_units, ks, alpha, train_size)
    by_method = _group(curves)
    if baseline not in by_method:
        raise ValueError(f"baseline={baseline!r} has no curve; methods given: {', '.join(sorted(by_method)) or 'none'}")
    _check_decompose(decompose, baseline, ladder_units)
    scales = sorted({str(c.get("scale")) for c in curves})
    if len(scales) > 1:
        raise ValueError(f"curves come from different scales: {', '.join(scales)}")
    targets = targets_from_baseline(by_method[baseline], metric, anchor_unit)
    ladder = ladder_from_baseline(by_method[baseline], metric, anchor_unit) if ladder_units or growth_pairs else {}
    named = {**ladder, **targets}
    for pair in growth_pairs:
        for t in pair:
            if t not in named:
                raise ValueError(
                    f"growth target {t!r} is neither a named target nor a rung; allowed: {', '.join(named)}"
                )
    runs = _run_entries(by_method, units, targets, anchor_unit, metric, gate)
    costs = {r["run_id"]: r for r in runs}
    base = (by_method[baseline], [costs[c["run_id"]] for c in by_method[baseline]])
    unit_results: dict[str, Any] = {}
    common: dict[str, float] = {}
    matched: dict[str, MatchedSlope] = {}
    growths: dict[str, Any] = {}
    for method in sorted(m for m in by_method if m != baseline):
        arm = (by_method[method], [costs[c["run_id"]] for c in by_method[method]])
        unit_results[method], common[method] = _method_results(
            base, arm, units, ladder_units, ladder, metric, ks, alpha
        )
        matched[method] = MatchedSlope.from_json(
            matched_slope(by_method[baseline], by_method[method], anchor_unit, metric)
        )
        if growth_pairs:
            growths[method] = {
                f"{a}:{b}": {unit: _growth(base, arm, named[a], named[b], unit, metric, ks, alpha) for unit in units}
                for a, b in growth_pairs
            }
    parts = None
    if decompose:
        parts = decomposition(by_method, costs, unit_results, ladder, ladder_units, decompose, metric, ks, alpha)
    if "seconds" in units:
        _flag_mixed_devices(by_method, baseline, unit_results, growths, parts)
    return SpeedupReport(
        scale=None if scales == ["None"] else scales[0],
        baseline=baseline,
        metric=metric,
        anchor_unit=anchor_unit,
        units=units,
        ks=[float(k) for k in ks],
        alpha=alpha,
        interval={
            "method": "Welch t on log cost",
            "level": 1.0 - alpha,
            "one_sided_alpha": alpha / 2.0,
            "power": POWER,
        },
        training=_training(by_method, train_size),
        gate=None if gate is None else gate_summary(runs, gate),
        targets={**targets, "common": common, "ladder": ladder},
        ladder_units=ladder_units,
        run_ids=[r["run_id"] for r in runs],
        runs=runs,
        late_slope=_late_slopes(by_method, anchor_unit, metric),
        matched_slope=matched,
        final_values=_final_values(by_method, costs),
        unit_results=unit_results,
        growth=growths if growth_pairs else None,
        decomposition=parts,
    )


def _check_decompose(pairs: Sequence[tuple[str, str]], baseline: str, ladder_units: Sequence[str]) -> None:
    for method, via in pairs:
        if method == via or baseline in (method, via):
            raise ValueError(
                f"decompose={method}={via} is not allowed; must name two different methods, neither the baseline "
                f"{baseline!r}"
            )
    if pairs and not ladder_units:
        raise ValueError("decompose needs the ladder: ladder_units is empty")


def _log_share(part: float | None, whole: float | None) -> float | None:
    """``log part / log whole``: the share of a speedup's log taken by one factor (None where it has no meaning)."""
    if part is None or whole is None or whole == 1.0:
        return None
    return math.log(part) / math.log(whole)


def _per_step(record: Comparison, iterations: Comparison) -> dict[str, Any]:
    """A speedup in one unit as iterations x per-step cost: ``per_step`` is the ratio of the two speedups, the
    geometric mean over seeds of the baseline's cost per iteration over the method's, each at the point its cost
    was read (exact when the per-step cost is constant: MACs). A seed reaches a target or not whatever the unit, so
    both records are censored alike and the product holds for a bound too: the split of a bound (``speedup_is``)."""
    given = record.ratio is not None and iterations.ratio is not None
    return {
        "speedup": record.ratio,
        "speedup_is": record.ratio_is,
        "iterations": iterations.ratio,
        "per_step": record.ratio / iterations.ratio if given else None,  # type: ignore[operator]
        "iterations_share": _log_share(iterations.ratio, record.ratio) if given else None,
    }


def decomposition(
    by_method, costs, unit_results, ladder, ladder_units, pairs, metric: str, ks, alpha: float
) -> dict[str, Any]:
    """Each rung's speedups split two ways (``decomposition`` in the report).

    ``per_step.<method>.<rung>.<unit>``: the speedup in ``unit`` (MACs, seconds) as the speedup in iterations times
    the per-step cost ratio (needs iterations among the ladder units). ``via.<method>``: for each ``(method, via)``
    pair, at each rung, the method's speedup over the baseline (``whole``) as ``via``'s over the baseline
    (``to_via``, the ladder's record) times the method's over ``via`` at the same target (``from_via``, a full
    record with interval and tests). With ``tread-edm`` via ``dit-edm`` over ``dit``, ``to_via`` is the objective's
    factor and ``from_via`` the routing's. The point estimates multiply exactly (ratios of geometric means of the
    same per-seed costs, a censored seed's entering at its budget in all three); ``via_share`` is ``log to_via / log
    whole``. Where a record is a bound (``*_is``, ``from_via.ratio_is``) its factors split the bound."""
    per_step: dict[str, Any] = {}
    if "iterations" in ladder_units:
        for method, results in unit_results.items():
            per_step[method] = {
                rung: {
                    unit: _per_step(results["ladder"][rung][unit], results["ladder"][rung]["iterations"])
                    for unit in ladder_units
                    if unit != "iterations"
                }
                for rung in ladder
            }
    via: dict[str, Any] = {}
    for method, mid in pairs:
        missing = [m for m in (method, mid) if m not in by_method]
        if missing:  # a campaign in progress: the pair waits for its runs
            via[method] = {"via": mid, "status": f"waiting for the curves of {', '.join(missing)}"}
            continue
        mid_curves, arm_curves = by_method[mid], by_method[method]
        mid_points, arm_points = [_points(c) for c in mid_curves], [_points(c) for c in arm_curves]
        mid_runs, arm_runs = [costs[c["run_id"]] for c in mid_curves], [costs[c["run_id"]] for c in arm_curves]
        rungs: dict[str, Any] = {}
        for rung, target in ladder.items():
            rungs[rung] = {}
            for unit in ladder_units:
                whole = unit_results[method]["ladder"][rung][unit]
                first = unit_results[mid]["ladder"][rung][unit]
                then = _versus(mid_points, mid_runs, arm_points, arm_runs, target, unit, metric, ks, alpha)
                given = all(r.ratio is not None for r in (whole, first, then))
                rungs[rung][unit] = {
                    "whole": whole.ratio,
                    "whole_is": whole.ratio_is,
                    "to_via": first.ratio,
                    "to_via_is": first.ratio_is,
                    "from_via": then,
                    "via_share": _log_share(first.ratio, whole.ratio) if given else None,
                }
        via[method] = {"via": mid, "ladder": rungs}
    return {"per_step": per_step, "via": via}


def devices(curves: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every device the curves' seconds were measured on: each point's ``device``, or its run's provenance device
    where a point names none (a run resumed on another machine names two)."""
    found: set[str] = set()
    for c in curves:
        fallback = (c.get("provenance") or {}).get("device")
        for p in _points(c):
            d = p.get("device", fallback)
            if d is not None:
                found.add(str(d))
    return sorted(found)


def _mixed_devices_note(curves) -> str | None:
    """What a seconds record over ``curves`` adds to its ``status`` when they were measured on more than one device."""
    found = devices(curves)
    if len(found) < 2:
        return None
    return f"; not comparable in seconds: measured on {len(found)} devices ({'; '.join(found)})"


def _flag_mixed_devices(by_method, baseline: str, unit_results, growths, parts=None) -> None:
    """A seconds record whose two arms' seconds come from more than one device says so in its ``status``: wall-clock
    time is a property of the machine, so its ratio is not the methods' alone (read MACs or iterations)."""
    for method, results in unit_results.items():
        note = _mixed_devices_note([*by_method[baseline], *by_method[method]])
        if note is None:
            continue
        records = [results[t]["seconds"] for t in TARGETS if "seconds" in results[t]]
        records += [results["common"]["seconds"]] if "seconds" in results["common"] else []
        records += [rung["seconds"] for rung in results["ladder"].values() if "seconds" in rung]
        records += [pair["seconds"] for pair in growths.get(method, {}).values() if "seconds" in pair]
        for record in records:
            record.status += note
    for method, entry in ((parts or {}).get("via") or {}).items():
        note = _mixed_devices_note([*by_method[entry["via"]], *by_method[method]]) if "ladder" in entry else None
        if note is None:
            continue
        for rung in entry["ladder"].values():
            if "seconds" in rung:
                rung["seconds"]["from_via"].status += note


def _checked(metric, units, anchor_unit, ladder_units, ks, alpha, train_size) -> tuple[list[str], list[str]]:
    """The report's arguments checked: its units and ladder units as lists (MACs the ladder's by default)."""
    if train_size is not None and (not isinstance(train_size, int) or train_size < 1):
        raise ValueError(f"train_size={train_size!r} must be a positive integer")
    _check_metric(metric)
    units = list(units)
    for unit in [*units, anchor_unit]:
        _check_unit(unit)
    if not units:
        raise ValueError("units must name at least one cost unit")
    if ladder_units is None:
        ladder_units = ["macs"] if "macs" in units else units[:1]
    ladder_units = list(ladder_units)
    for unit in ladder_units:
        if unit not in units:
            raise ValueError(f"ladder unit={unit!r} is not one of the report's units ({', '.join(units)})")
    if not ks or any(not math.isfinite(float(k)) or float(k) <= 0 for k in ks):
        raise ValueError(f"ks={list(ks)!r} must be a non-empty list of positive finite numbers")
    if not (0 < alpha < 1):
        raise ValueError(f"alpha={alpha!r} is not allowed; must be in (0, 1)")
    return units, ladder_units


def _run_entries(by_method, units, targets, anchor_unit: str, metric: str, gate) -> list[dict[str, Any]]:
    """Each run's record (``runs``): its final metric, its cost to each named target, budget and first evaluation
    per unit, and its sanity gate where there is one."""
    runs = []
    for method in sorted(by_method):
        for curve in by_method[method]:
            pts = _points(curve)
            entry: dict[str, Any] = {
                "run_id": curve["run_id"],
                "method": method,
                "seed": curve["seed"],
                "final_metric": float(_series(pts, anchor_unit, metric)[1][-1]),
                "cost": {},
                "budget": {},
                "first": {},
            }
            if gate is not None:
                entry["gate"] = run_gate(curve, gate)
            for unit in units:
                costs_u = _series(pts, unit, metric)[0]
                entry["budget"][unit] = float(costs_u[-1])
                entry["first"][unit] = float(costs_u[0])
                entry["cost"][unit] = {t: cost_to_target(pts, targets[t], unit, metric) for t in TARGETS}
            runs.append(entry)
    return runs


def _late_slopes(by_method, anchor_unit: str, metric: str) -> dict[str, Sample]:
    slopes: dict[str, Sample] = {}
    for method in sorted(by_method):
        per_seed = [late_slope(_points(c), anchor_unit, metric) for c in by_method[method]]
        window = [late_window_points(_points(c), anchor_unit, metric) for c in by_method[method]]
        vals = np.asarray([s for s in per_seed if s is not None], dtype=float)
        slopes[method] = Sample(
            mean=float(vals.mean()) if vals.size else None,
            std=float(vals.std(ddof=1)) if vals.size >= 2 else None,
            per_seed=per_seed,
            window_points=window,
        )
        if min(window) < MIN_LATE_POINTS:
            slopes[method].not_checkable = (
                f"{min(window)} evaluation(s) in the last third of {method}'s budget; a late-slope fit needs "
                f"{MIN_LATE_POINTS}"
            )
    return slopes


def _final_values(by_method, costs) -> dict[str, Sample]:
    final_values: dict[str, Sample] = {}
    for method in sorted(by_method):
        per_seed = [costs[c["run_id"]]["final_metric"] for c in by_method[method]]
        final_values[method] = Sample(
            mean=float(np.mean(per_seed)),
            std=float(np.std(per_seed, ddof=1)) if len(per_seed) >= 2 else None,
            per_seed=per_seed,
        )
    return final_values


def _training(by_method, train_size: int | None) -> dict[str, Any]:
    """Per method, the mean images seen at the end of the budget and the epochs they make."""
    training: dict[str, Any] = {}
    for method in sorted(by_method):
        images, epochs = [], []
        for c in by_method[method]:
            last = _points(c)[-1]
            n = c.get("train_size", train_size)
            images.append(float(last["images"]) if last.get("images") is not None else math.nan)
            epochs.append(images[-1] / float(n) if n else math.nan)
        training[method] = {
            "images": float(np.mean(images)) if np.isfinite(images).all() else None,
            "epochs": float(np.mean(epochs)) if np.isfinite(epochs).all() else None,
        }
    return training


def _method_results(base, arm, units, ladder_units, ladder, metric, ks, alpha) -> tuple[dict[str, Any], float]:
    """One method's ``unit_results`` entry (the named targets, ``common`` and the ``ladder``) and its common target.
    ``base`` and ``arm``: each arm's curves and run records."""
    (base_curves, base_runs), (m_curves, m_runs) = base, arm
    base_points, m_points = [_points(c) for c in base_curves], [_points(c) for c in m_curves]
    results: dict[str, Any] = {
        t: {
            unit: comparison(
                [r["cost"][unit][t] for r in base_runs],
                [r["budget"][unit] for r in base_runs],
                [r["cost"][unit][t] for r in m_runs],
                ks,
                alpha,
                [r["budget"][unit] for r in m_runs],
                [r["first"][unit] for r in base_runs],
                [r["first"][unit] for r in m_runs],
            )
            for unit in units
        }
        for t in TARGETS
    }
    # every seed of both arms reaches the worst final value of both: the uncensored target at a shared budget
    common = max(r["final_metric"] for r in base_runs + m_runs)
    results["common"] = {
        unit: _versus(base_points, base_runs, m_points, m_runs, common, unit, metric, ks, alpha) for unit in units
    }
    for record in results["common"].values():
        record.target = common
    results["ladder"] = {
        rung: {
            unit: _versus(base_points, base_runs, m_points, m_runs, target, unit, metric, ks, alpha)
            for unit in ladder_units
        }
        for rung, target in ladder.items()
    }
    return results, common


def _growth(base, arm, start: float, end: float, unit: str, metric: str, ks, alpha: float):
    (base_curves, base_runs), (m_curves, m_runs) = base, arm
    base_points, m_points = [_points(c) for c in base_curves], [_points(c) for c in m_curves]
    return growth(base_points, base_runs, m_points, m_runs, start, end, unit, metric, ks, alpha)


def no_runs_report(baseline: str, metric: str, units: Sequence[str], ks: Sequence[float], why: str) -> dict[str, Any]:
    """The report of a comparison whose baseline has no run yet (a campaign in progress): the fields a reader
    looks up, all empty, and ``status`` saying why. The ledger reads its claims as pending."""
    _check_metric(metric)
    return SpeedupReport(
        scale=None,
        baseline=baseline,
        metric=metric,
        units=list(units),
        ks=[float(k) for k in ks],
        status=f"no runs yet: {why}",
        training={},
        gate=None,
        targets={},
        ladder_units=[],
        run_ids=[],
        runs=[],
        late_slope={},
        matched_slope={},
        final_values={},
        unit_results={},
    ).to_json()
