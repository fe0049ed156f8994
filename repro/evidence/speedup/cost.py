"""Cost to a target, the targets and ladder from the baseline, late slopes and slopes at matched metric."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .curves import _points, _series

TARGETS: tuple[str, ...] = ("final", "third", "final-mean")
"""The named targets every run's cost is computed for; each method also gets ``common`` and the ``ladder``."""
THIRD = 1.0 / 3.0
MIN_LATE_POINTS = 5
"""Evaluations a late-slope fit needs inside its window."""


def cost_to_target(points: Sequence[Mapping[str, Any]], target: float, unit: str, metric: str = "fid") -> float | None:
    """Cost (in ``unit``) at which ``metric`` first reaches ``target`` or better; ``None`` if it never does.

    The curve's points are validated (see ``_series``); the crossing is :func:`first_crossing`'s.
    """
    if not math.isfinite(float(target)):
        raise ValueError(f"target={target!r} must be finite")
    costs, values = _series(points, unit, metric)
    return first_crossing(costs, values, target)


def first_crossing(costs: Sequence[float], values: Sequence[float], target: float) -> float | None:
    """Cost at which lower-is-better ``values`` (at increasing ``costs``) first reach ``target``; ``None`` if never.

    The first evaluation with ``value <= target`` and the one before it bracket the crossing; between them the value
    is taken as linear in log-cost, so the crossing is ``exp(log c0 + f * (log c1 - log c0))`` with
    ``f = (m0 - target) / (m0 - m1)``. If the first evaluation already meets the target, its cost is returned as is.
    The audit applies it to published curves (TREAD's Figure 1) exactly as to the golden runs.
    """
    costs, values = np.asarray(costs, dtype=float), np.asarray(values, dtype=float)
    hit = np.flatnonzero(values <= target)
    if hit.size == 0:
        return None
    i = int(hit[0])
    if i == 0:
        return float(costs[0])
    c0, c1, m0, m1 = costs[i - 1], costs[i], values[i - 1], values[i]
    frac = (m0 - target) / (m0 - m1)
    if frac >= 1.0:
        return float(c1)
    return float(math.exp(math.log(c0) + frac * (math.log(c1) - math.log(c0))))


def metric_at_cost(points: Sequence[Mapping[str, Any]], cost: float, unit: str, metric: str = "fid") -> float:
    """The metric at ``cost``, linear in log-cost between the evaluations around it (no extrapolation)."""
    costs, values = _series(points, unit, metric)
    if not (costs[0] <= cost <= costs[-1]):
        raise ValueError(
            f"{unit}={cost!r} lies outside the evaluated range [{costs[0]!r}, {costs[-1]!r}]; no extrapolation"
        )
    return float(np.interp(math.log(cost), np.log(costs), values))


def late_slope(
    points: Sequence[Mapping[str, Any]],
    unit: str,
    metric: str = "fid",
    fraction: float = THIRD,
    min_points: int = MIN_LATE_POINTS,
) -> float | None:
    """Least-squares slope of ``metric`` against log10(cost) over the last ``fraction`` of the cost range.

    The window holds the evaluations with ``cost >= c_last - fraction * (c_last - c_first)`` (a linear range, the last
    third of training by default). The slope is in metric units per decade of cost. A window with fewer than
    ``min_points`` evaluations (5 by default) gives ``None``: a line through two or three noisy points is not a fit.
    """
    if not (0.0 < fraction <= 1.0):
        raise ValueError(f"fraction={fraction!r} must be in (0, 1]")
    if not isinstance(min_points, int) or min_points < 2:
        raise ValueError(f"min_points={min_points!r} must be an integer >= 2")
    costs, values = _series(points, unit, metric)
    mask = costs >= costs[-1] - fraction * (costs[-1] - costs[0])
    if mask.sum() < min_points:
        return None
    x, y = np.log10(costs[mask]), values[mask]
    x = x - x.mean()
    return float(np.dot(x, y - y.mean()) / np.dot(x, x))


def late_window_points(points: Sequence[Mapping[str, Any]], unit: str, metric: str = "fid", fraction: float = THIRD):
    """How many evaluations lie in :func:`late_slope`'s window."""
    costs, _ = _series(points, unit, metric)
    return int((costs >= costs[-1] - fraction * (costs[-1] - costs[0])).sum())


def targets_from_baseline(
    baseline_curves: Sequence[Mapping[str, Any]], metric: str = "fid", unit: str = "iterations", fraction: float = THIRD
) -> dict[str, float]:
    """The named targets (:data:`TARGETS`), from the baseline's seeds.

    ``final``: the largest of the seeds' metrics at their last evaluation, which every seed reaches within its budget.
    ``third``: mean over seeds of each seed's metric at ``fraction`` (one third) of that seed's final cost in ``unit``,
    by :func:`metric_at_cost`. ``final-mean``: the mean of the seeds' final values.
    """
    if not baseline_curves:
        raise ValueError("targets need at least one baseline curve")
    finals, thirds = [], []
    for curve in baseline_curves:
        costs, values = _series(_points(curve), unit, metric)
        finals.append(values[-1])
        anchor = fraction * costs[-1]
        if anchor < costs[0]:
            raise ValueError(
                f"curve {curve['run_id']!r}: first evaluation at {unit}={costs[0]!r} comes after "
                f"{fraction:.3g} of the budget ({anchor!r}); the 'third' target needs an earlier one"
            )
        thirds.append(metric_at_cost(_points(curve), anchor, unit, metric))
    return {"final": float(np.max(finals)), "third": float(np.mean(thirds)), "final-mean": float(np.mean(finals))}


def rung_name(cost: float) -> str:
    """A ladder rung's key: its cost in the anchor unit, as an integer where it is one (a step: ``"3000"``)."""
    return str(int(cost)) if float(cost).is_integer() else repr(float(cost))


def ladder_from_baseline(
    baseline_curves: Sequence[Mapping[str, Any]], metric: str = "fid", unit: str = "iterations"
) -> dict[str, float]:
    """``{rung: target}``: the baseline seeds' mean ``metric`` at each evaluation point they all have (in ``unit``),
    in increasing cost; the rung is named by :func:`rung_name`. The last rung is ``final-mean``'s target."""
    if not baseline_curves:
        raise ValueError("a ladder needs at least one baseline curve")
    series = [_series(_points(c), unit, metric) for c in baseline_curves]
    shared = set(series[0][0].tolist())
    for costs, _ in series[1:]:
        shared &= set(costs.tolist())
    ladder = {}
    for cost in sorted(shared):
        ladder[rung_name(cost)] = float(np.mean([values[costs == cost][0] for costs, values in series]))
    return ladder


def _crossing_window(costs: np.ndarray, values: np.ndarray, top: float, bottom: float) -> np.ndarray:
    """Indices of the evaluations from the first at or below ``top`` to the first at or below ``bottom``."""
    below_top, below_bottom = np.flatnonzero(values <= top), np.flatnonzero(values <= bottom)
    if below_top.size == 0 or below_bottom.size == 0:
        return np.arange(0)
    return np.arange(int(below_top[0]), int(below_bottom[0]) + 1)


def _slope(costs: np.ndarray, values: np.ndarray) -> float:
    x = np.log10(costs) - np.log10(costs).mean()
    return float(np.dot(x, values - values.mean()) / np.dot(x, x))


def matched_slope(
    baseline_curves: Sequence[Mapping[str, Any]],
    method_curves: Sequence[Mapping[str, Any]],
    unit: str = "iterations",
    metric: str = "fid",
    fraction: float = THIRD,
    min_points: int = MIN_LATE_POINTS,
) -> dict[str, Any]:
    """Slopes of ``metric`` against log10(cost) of both arms over one window of metric values (see the module's
    docstring): ``{"window": [bottom, top], "baseline": sample, "method": sample}``, each sample with ``mean``,
    ``std``, ``per_seed`` and ``window_points``; ``not_checkable`` on a sample whose seeds have fewer than
    ``min_points`` evaluations in the window (or where the window is empty)."""
    base = [_series(_points(c), unit, metric) for c in baseline_curves]
    meth = [_series(_points(c), unit, metric) for c in method_curves]
    # the top: the baseline's mean value where late_slope's window starts (the last third of the cost range)
    top = float(np.mean([np.interp(math.log(c[-1] - fraction * (c[-1] - c[0])), np.log(c), v) for c, v in base]))
    bottom = float(max(v[-1] for _, v in base + meth))
    out: dict[str, Any] = {"window": [bottom, top]}
    for arm, series in (("baseline", base), ("method", meth)):
        windows = [_crossing_window(c, v, top, bottom) if bottom < top else np.arange(0) for c, v in series]
        counts = [int(w.size) for w in windows]
        per_seed = [_slope(c[w], v[w]) if w.size >= min_points else None for (c, v), w in zip(series, windows)]
        vals = np.asarray([x for x in per_seed if x is not None], dtype=float)
        sample: dict[str, Any] = {
            "mean": float(vals.mean()) if vals.size else None,
            "std": float(vals.std(ddof=1)) if vals.size >= 2 else None,
            "per_seed": per_seed,
            "window_points": counts,
        }
        if bottom >= top:
            sample["not_checkable"] = (
                f"no window: the worst final value of both arms ({bottom:.4g}) is not below the baseline's mean value "
                f"at the start of its last third ({top:.4g})"
            )
        elif min(counts) < min_points:
            sample["not_checkable"] = (
                f"{min(counts)} evaluation(s) of a seed inside the matched window [{bottom:.4g}, {top:.4g}]; a slope "
                f"fit needs {min_points}"
            )
        out[arm] = sample
    return out


def train_targets(curves: Sequence[Mapping[str, Any]], objective: str) -> dict[str, Any]:
    """The targets other methods train to (``train.to_target``): the baseline's ``final`` target on FID and on the
    validation loss (the least good seed's final value, which every baseline seed reached), with the objective
    the loss was measured on. ``curves`` are the baseline's finished runs, one method."""
    methods = sorted({str(c["method"]) for c in curves})
    if len(methods) != 1:
        raise ValueError(f"targets come from one baseline method's runs; the curves hold {methods or 'none'}")
    out: dict[str, Any] = {"baseline": methods[0], "objective": objective, "runs": [c["run_id"] for c in curves]}
    for metric in ("fid", "val_loss"):
        out[metric] = targets_from_baseline(curves, metric, "iterations")["final"]
    out["rule"] = (
        "the least good baseline seed's final value on each metric; a run trained to target stops once it reaches "
        "every target that applies (the validation loss only on the same objective) at train.target_patience "
        "sample-quality evaluations in a row"
    )
    return out
