"""Speedup to a target metric, measured the way MLPerf measures convergence.

A *curve* is the dict a training run writes to ``curve.json``: ``run_id``, ``method``, ``seed``, ``scale`` and
``points``, each point holding its cumulative cost in every unit (``step``, ``images``, ``macs``, ``seconds``) and the
evaluation metrics (``fid``, ``kid``, ``val_loss``, ...). Every metric handled here is lower-is-better.

Definitions (all of them are what the JSON report means):

* **Cost to target** (:func:`cost_to_target`): the first evaluation whose metric is at or below the target, with the
  crossing interpolated between it and the evaluation before it, metric linear in log-cost. If the first evaluation
  already meets the target, its own cost is returned (nothing earlier was measured). A curve that never gets there
  gives ``None``: "not reached" is a result.
* **Targets** (:func:`targets_from_baseline`): ``final`` is the least demanding of the baseline seeds' metrics at their
  last evaluation (the largest: TREAD's 37x target, DiT's FID at 7M iterations, is the end of the baseline's budget),
  so that every baseline seed reaches it within its budget; ``third`` is the mean over baseline seeds of each seed's
  metric at one third of that seed's final cost in the anchor unit, interpolated like the cost (TREAD's 14x target,
  DiT's FID at 2,352K of 7M iterations); ``final-mean`` is the mean of the baseline seeds' final values, the rule of
  ``final`` until it was changed (it leaves about half the baseline seeds short of it by construction: censored, they
  block the test of a slowdown). Specs registered under the earlier rule are evaluated on it beside their amended test.
* **Ladder** (:func:`ladder_from_baseline`, ``unit_results.<method>.ladder.<rung>.<unit>``): one target per evaluation
  point of the baseline, its seeds' mean value there; the rung is named by the point's cost in the anchor unit (the
  step, ``"3000"``). TREAD's 14x and 37x are two rungs of such a ladder (DiT's 2,352K and 7M points); the ladder shows
  how a speedup changes with the baseline's training length and where curves cross. The last rung equals
  ``final-mean``. Computed for ``ladder_units`` (MACs by default) to keep the report small.
* **Common target** (``unit_results.<method>.common.<unit>``): per method, the worst final value over every seed of
  both arms, which every seed of both reaches within its own budget: at a shared budget the only target at which
  neither side is censored, so its interval and both tests are those of an uncensored comparison. Its record
  carries the ``target``. A claim at a shared budget that a slower method could not reach is decided here.
* **Final values** (``final_values``): each method's metric at the end of its budget, per seed: at equal budgets
  (``equal_cost``) the direct comparison of where the methods end, by Welch's t-tests in the ledger; on simulated
  curves it finds a 2x slowdown in 89% (3 seeds) and 99.9% (5 seeds) of experiments.
* **Speedup** of a method over the baseline for one target and unit: the ratio of geometric means of the seeds'
  costs, ``exp(mean log cost_baseline - mean log cost_method)``. Costs to a target are positive and skewed, and a
  speedup is a ratio, so the statistics work on log cost, where "speedup >= k" is ``mean log cost_method <
  mean log cost_baseline - log k``.
* **Censoring**: a seed that does not reach the target within its budget is right-censored at its final cost (its
  budget): its true cost is larger; one that meets it at its first evaluation is censored from below (its true cost is
  at most that one's, which the ladder's early rungs meet). Both sides are handled alike and it is never evidence by
  itself. A censored method seed makes its cost a lower bound, so it can only speak *against* a speedup: the test *for*
  the speedup is not run. A censored baseline seed can only speak *for* one: the test *against* it is not run. The ratio
  is then a bound (``ratio_is``: ``estimate``, ``upper bound``, ``lower bound`` or ``censored on both sides``) and no
  interval is given (``ci_low`` and ``ci_high`` null): a two-sided interval around a bound covers nothing in particular
  (on simulated curves such intervals covered the true ratio in 0-21% of experiments). The one test that can run is the
  test on the bound: a censored cost enters at its budget, which understates it, so that test can only be conservative
  (its false-verdict rate is measured with the others in ``tests/test_calibration.py``). If no baseline seed reaches the
  target, everything is null. Every record carries the per-seed costs it was computed from (``costs``).
* **Interval**: Welch t-interval on log cost (95 %), exponentiated. On curves simulated from the committed DiT runs'
  process (``tests/test_calibration.py``) it covered the true ratio in 93.9-96.4 % of 1,000 experiments at 3 to 5
  seeds, where scipy's BCa bootstrap covered 82 % at 3 seeds; hence the t-interval.
* **Tests**: Welch's one-sided t-tests on log cost of "speedup >= k" (``p_value_ge_k``, ``ge_k``) and of
  "speedup < k" (``p_value_lt_k``, ``lt_k``), each at ``alpha / 2`` (0.025), so that a test decides exactly when the
  95 % interval excludes ``k``. When both groups have zero spread the answer is exact (p = 0 or 1). Interval and tests
  need at least 2 seeds on each side; with fewer, the ratio is a data point, not a verdict.
* **Growth** (``growth.<method>.<from>:<to>.<unit>``, ``--growth FROM:TO``): how much a speedup grows between two
  targets (named or rungs of the ladder), ``speedup(to) / speedup(from)``: TREAD's 3.8x at DiT's 400K point growing
  to 14x at its 2,352K point is a growth of 3.7. Per seed, the log cost from one target to the other, ``log c(to) -
  log c(from)``; the growth is the ratio of geometric means of those cost ratios, baseline over method, with the same
  Welch interval, tests and censoring rules as a speedup (:func:`compare` on them): a seed that does not reach
  ``to`` is censored at its budget; one that does not reach ``from``, or meets it at its first evaluation (its cost
  there unmeasured), leaves the comparison.
* **Minimum detectable effect** (``mde.factor``): with the observed spread and these seed counts, a true speedup of
  ``k * factor`` (or ``k / factor``) is detected with 80 % power by the one-sided test at 0.025.
* **Late slope** (:func:`late_slope`): least-squares slope of the metric against log10(cost) over the evaluations in
  the last third of the cost range; near zero means the curve has flattened. A slope fitted through fewer than 5
  evaluations in that window is not a fit (``None``, and the report says the plateau is not checkable). Scaling the
  cost leaves it unchanged. Compared between methods at one budget it favours the slower one: a faster method is
  further along the same curve, where it is flatter.
* **Slope at matched metric** (:func:`matched_slope`, ``matched_slope.<method>``): per method, the window of metric
  values from the baseline's mean value at the start of the last third of its budget (anchor unit) down to the
  common target; each seed's slope against log10(cost) over its evaluations from its first crossing of the top of
  the window to its first crossing of the bottom. If the method's curve were the baseline's shifted in log cost (a
  constant speedup), both slopes would be equal: a difference is a difference of shape, not of progress.
* **Training length**: ``epochs`` per method, images seen at the end of the budget over the training-set size
  (``train_size`` in the curve, or ``--train-size``).
* **Sanity gate** (optional, ``--gate-reference``): a run carries a verdict only if its final FID is below the FID of
  real images degraded by a stated corruption of the reference report's ladder (``goldens/<scale>/reference.json``,
  computed on 10,000 images; a run's FID from fewer samples is biased upwards, so the gate is conservative). A run
  that fails it "does not yet generate".
"""

from __future__ import annotations

import glob
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from .io import atomic_path, atomic_write_text

UNITS: dict[str, str] = {"iterations": "step", "images": "images", "macs": "macs", "seconds": "seconds"}
"""Cost unit name -> the field of a curve point that holds it (cumulative)."""

METRICS: tuple[str, ...] = ("fid", "kid", "val_loss")
"""Metrics a speedup can be measured on; all are lower-is-better."""

TARGETS: tuple[str, ...] = ("final", "third", "final-mean")
"""The named targets every run's cost is computed for; each method also gets ``common`` and the ``ladder``."""
THIRD = 1.0 / 3.0
ALPHA = 0.05
"""Two-sided level: the interval is ``1 - ALPHA``, each one-sided test runs at ``ALPHA / 2``."""
LEVEL = 1.0 - ALPHA
POWER = 0.8
MIN_LATE_POINTS = 5
"""Evaluations a late-slope fit needs inside its window."""
DEFAULT_GATE = "blur:1.0"
ONE_SEED_NOTE = "one seed: a data point, not a verdict"
UNIT_LABELS = {
    "iterations": "training iterations",
    "images": "training images seen",
    "macs": "training MACs",
    "seconds": "wall-clock seconds",
}


# ---------------------------------------------------------------------------------------------------------------------
# Validation and curve access


def _check_unit(unit: str) -> str:
    if unit not in UNITS:
        raise ValueError(f"unit={unit!r} is not a cost unit; allowed: {', '.join(UNITS)}")
    return UNITS[unit]


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r} is not supported; allowed: {', '.join(METRICS)} (all lower-is-better)")


def _series(points: Sequence[Mapping[str, Any]], unit: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Costs and metric values of the points that carry the metric, validated.

    A point whose metric is missing or null is skipped (a run may evaluate the validation loss more often than FID).
    A point with zero cost (an evaluation before the first update) is skipped too: log-cost cannot place it.
    Costs must be finite, non-negative and strictly increasing; metric values must be finite.
    """
    field = _check_unit(unit)
    _check_metric(metric)
    if isinstance(points, (str, bytes)) or not isinstance(points, Sequence):
        raise ValueError(f"points must be a list of dicts, got {type(points).__name__}")
    costs: list[float] = []
    values: list[float] = []
    for i, p in enumerate(points):
        if not isinstance(p, Mapping):
            raise ValueError(f"points[{i}] must be a dict, got {type(p).__name__}")
        if p.get(metric) is None:
            continue
        if field not in p or p[field] is None:
            raise ValueError(f"points[{i}] has no field {field!r} (needed for unit={unit!r})")
        try:
            c, m = float(p[field]), float(p[metric])
        except (TypeError, ValueError):
            raise ValueError(f"points[{i}]: {field}={p[field]!r} and {metric}={p[metric]!r} must be numbers") from None
        if not math.isfinite(c) or c < 0:
            raise ValueError(f"points[{i}]: {field}={c!r} must be finite and >= 0")
        if not math.isfinite(m):
            raise ValueError(f"points[{i}]: {metric}={m!r} must be finite")
        if costs and c <= costs[-1]:
            raise ValueError(
                f"points[{i}]: {field}={c!r} does not increase (previous {costs[-1]!r}); "
                "costs must be strictly increasing"
            )
        costs.append(c)
        values.append(m)
    c_arr, m_arr = np.asarray(costs, dtype=float), np.asarray(values, dtype=float)
    keep = c_arr > 0
    if not keep.any():
        raise ValueError(f"no point has both a positive {field!r} and a value for {metric!r}")
    return c_arr[keep], m_arr[keep]


def _points(curve: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    if not isinstance(curve, Mapping):
        raise ValueError(f"a curve must be a dict, got {type(curve).__name__}")
    for key in ("run_id", "method", "seed", "points"):
        if key not in curve:
            raise ValueError(f"curve {curve.get('run_id', '?')!r} has no field {key!r}")
    pts = curve["points"]
    if not isinstance(pts, list) or not pts:
        raise ValueError(f"curve {curve['run_id']!r}: field 'points' must be a non-empty list")
    return pts


# ---------------------------------------------------------------------------------------------------------------------
# Cost to target, metric at cost, late slope


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


# ---------------------------------------------------------------------------------------------------------------------
# Statistics over seeds


def welch(lb: np.ndarray, lm: np.ndarray) -> tuple[float, float, float]:
    """Difference of means ``mean(lb) - mean(lm)``, its standard error and Welch's degrees of freedom."""
    vb, vm = lb.var(ddof=1) / lb.size, lm.var(ddof=1) / lm.size
    se2 = vb + vm
    diff = float(lb.mean() - lm.mean())
    if se2 == 0.0:
        return diff, 0.0, float(lb.size + lm.size - 2)
    df = se2**2 / (vb**2 / (lb.size - 1) + vm**2 / (lm.size - 1))
    return diff, float(math.sqrt(se2)), float(df)


def log_ratio_interval(
    cost_baseline: Sequence[float], cost_method: Sequence[float], level: float = LEVEL
) -> tuple[float, float]:
    """Welch t-interval of ``exp(mean log cost_baseline - mean log cost_method)``, the ratio of geometric means.

    Exact when log costs are normal with any variances (up to Welch's df approximation); its coverage on simulated
    curves is measured in ``tests/test_calibration.py``. Needs at least 2 costs per group.
    """
    lb, lm = np.log(np.asarray(cost_baseline, dtype=float)), np.log(np.asarray(cost_method, dtype=float))
    if lb.size < 2 or lm.size < 2:
        raise ValueError("an interval needs at least 2 seeds per group")
    diff, se, df = welch(lb, lm)
    half = float(stats.t.ppf(0.5 + level / 2.0, df)) * se
    return float(math.exp(diff - half)), float(math.exp(diff + half))


def p_value_speedup(cost_baseline: Sequence[float], cost_method: Sequence[float], k: float, side: str = "ge") -> float:
    """One-sided p-value of Welch's t-test on log cost.

    ``side="ge"``: evidence that the speedup is above ``k`` (H0: ``mean log cost_method >= mean log cost_baseline -
    log k``); ``side="lt"``: evidence that it is below ``k``. Two constant groups give an exact 0 or 1.
    """
    if k <= 0:
        raise ValueError(f"k={k!r} must be > 0")
    if side not in ("ge", "lt"):
        raise ValueError(f"side={side!r} is not allowed; allowed: ge, lt")
    lb = np.log(np.asarray(cost_baseline, dtype=float)) - math.log(k)
    lm = np.log(np.asarray(cost_method, dtype=float))
    if lb.size < 2 or lm.size < 2:
        raise ValueError("the t-test needs at least 2 seeds per group")
    diff, se, df = welch(lb, lm)  # diff > 0: the method is cheaper than baseline / k
    if se == 0.0:
        holds = diff > 0 if side == "ge" else diff < 0
        return 0.0 if holds else 1.0
    t = diff / se
    return float(stats.t.sf(t, df) if side == "ge" else stats.t.cdf(t, df))


def detectable_shift(se: float, df: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest true shift (in the test's units) that a one-sided test at ``alpha / 2`` detects with ``power``.

    ``(t_{1 - alpha/2, df} + t_{power, df}) * se``, the usual normal-theory approximation with the observed standard
    error ``se``: the minimum detectable effect at the seed count that produced ``se``.
    """
    return float((stats.t.ppf(1.0 - alpha / 2.0, df) + stats.t.ppf(power, df)) * se)


def _k_key(k: float) -> str:
    return repr(float(k))


def compare(
    cost_baseline: Sequence[float | None],
    baseline_final: Sequence[float],
    cost_method: Sequence[float | None],
    ks: Iterable[float] = (1.0,),
    alpha: float = ALPHA,
    method_final: Sequence[float] | None = None,
    baseline_first: Sequence[float] | None = None,
    method_first: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Speedup of one method over the baseline for one target and unit, from per-seed costs (``None``: not reached).

    ``baseline_final`` and ``method_final`` hold each seed's final cost (its budget): a seed that did not reach the
    target is censored there, its true cost is larger. ``baseline_first`` and ``method_first``, where given, hold
    each seed's first evaluation's cost: a seed whose cost is that one met the target before anything was measured,
    so its true cost is at most that (censored from below: a method seed can then only speak for the speedup, a
    baseline seed only against it). See the module docstring for the rules.
    """
    if len(cost_baseline) != len(baseline_final):
        raise ValueError("cost_baseline and baseline_final must have one entry per baseline seed")
    if method_final is not None and len(method_final) != len(cost_method):
        raise ValueError("cost_method and method_final must have one entry per method seed")
    ks = [float(k) for k in ks]
    n_m, n_b = len(cost_method), len(cost_baseline)
    if n_m == 0 or n_b == 0:
        raise ValueError("a comparison needs at least one seed per group")
    reached_m = sum(c is not None for c in cost_method)
    reached_b = sum(c is not None for c in cost_baseline)
    out: dict[str, Any] = {
        "ratio": None,
        "ratio_is": None,
        "ci_low": None,
        "ci_high": None,
        "seeds": n_m,
        "reached": f"{reached_m}/{n_m}",
        "baseline_seeds": n_b,
        "baseline_reached": f"{reached_b}/{n_b}",
        "p_value_ge_k": {_k_key(k): None for k in ks},
        "p_value_lt_k": {_k_key(k): None for k in ks},
        "ge_k": {_k_key(k): None for k in ks},
        "lt_k": {_k_key(k): None for k in ks},
        "mde": None,
        "status": "ok",
    }
    out["costs"] = {"baseline": list(cost_baseline), "method": list(cost_method)}
    if reached_b == 0:
        out["status"] = f"baseline reached the target in 0 of {n_b} seeds"
        return out
    m_budget = method_final if method_final is not None else [math.inf] * n_m
    b = np.asarray([c if c is not None else f for c, f in zip(cost_baseline, baseline_final)], dtype=float)
    m = np.asarray([c if c is not None else f for c, f in zip(cost_method, m_budget)], dtype=float)
    cens_b, cens_m = n_b - reached_b, n_m - reached_m
    early_b = sum(c is not None and c == f for c, f in zip(cost_baseline, baseline_first or [None] * n_b))
    early_m = sum(c is not None and c == f for c, f in zip(cost_method, method_first or [None] * n_m))
    notes = []
    if early_m:
        notes.append(f"met at the first evaluation by {early_m} of {n_m} seeds (cost at most that: no test against)")
    if early_b:
        notes.append(f"baseline met it at its first evaluation in {early_b} of {n_b} seeds (no test for the speedup)")
    if cens_m:
        notes.append(f"not reached by {cens_m} of {n_m} seeds (censored at their budget: no test for the speedup)")
    if cens_b:
        notes.append(
            f"baseline did not reach it in {cens_b} of {n_b} seeds (censored at their budget: no test against it)"
        )
    if not np.isfinite(m).all():
        out["status"] = "; ".join(notes)
        return out
    out["ratio"] = float(math.exp(np.log(b).mean() - np.log(m).mean()))
    upper, lower = bool(cens_m or early_b), bool(cens_b or early_m)  # what each kind of censoring makes the ratio
    out["ratio_is"] = {
        (False, False): "estimate",
        (True, False): "upper bound",
        (False, True): "lower bound",
        (True, True): "censored on both sides",
    }[(upper, lower)]
    if n_m < 2 or n_b < 2:
        out["status"] = "; ".join([ONE_SEED_NOTE, *notes])
        return out
    if not (upper or lower):  # a bound gets no interval: only the test on the bound (below)
        out["ci_low"], out["ci_high"] = log_ratio_interval(b, m, level=1.0 - alpha)
    _, se, df = welch(np.log(b), np.log(m))
    shift = detectable_shift(se, df, alpha)
    out["mde"] = {"factor": float(math.exp(shift)), "power": POWER, "alpha_one_sided": alpha / 2.0}
    for k in ks:
        key = _k_key(k)
        if not upper:  # a censored method seed's true cost is higher: it can only speak against the speedup
            p = p_value_speedup(b, m, k, "ge")
            out["p_value_ge_k"][key], out["ge_k"][key] = p, bool(p < alpha / 2.0)
        if not lower:  # a censored baseline seed's true cost is higher: it can only speak for the speedup
            p = p_value_speedup(b, m, k, "lt")
            out["p_value_lt_k"][key], out["lt_k"][key] = p, bool(p < alpha / 2.0)
    if notes:
        out["status"] = "; ".join(notes)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Sanity gate


def gate_from_reference(path: str | os.PathLike, corruption: str = DEFAULT_GATE) -> dict[str, Any]:
    """The gate's threshold: the FID of real images degraded by ``corruption`` (``kind:strength``, e.g. ``blur:1.0``)
    in the reference report at ``path`` (written by ``python -m repro.metrics.fid --reference-report``)."""
    kind, sep, strength = str(corruption).partition(":")
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"--gate-reference {str(path)!r} cannot be read: {e}") from None
    ladder = {k: v for k, v in report.items() if k in ("noise", "blur") and isinstance(v, Mapping)}
    allowed = ", ".join(f"{k}:{s}" for k, v in ladder.items() for s in v) or "none (the report has no ladder)"
    if not sep or kind not in ladder or strength not in ladder[kind]:
        raise ValueError(f"gate corruption={corruption!r} is not in {str(path)!r}; allowed: {allowed}")
    return {
        "reference": os.path.relpath(path),
        "corruption": f"{kind} {strength}",
        "fid": float(ladder[kind][strength]),
        "reference_images": report.get("curve_size"),
    }


def run_gate(curve: Mapping[str, Any], gate: Mapping[str, Any]) -> dict[str, Any]:
    """Whether a run's final FID beats the degraded real images of ``gate``."""
    fids = [p.get("fid") for p in _points(curve) if p.get("fid") is not None]
    if not fids:
        return {"final_fid": None, "passes": False, "why": "the run has no FID"}
    final = float(fids[-1])
    return {"final_fid": final, "passes": bool(final < gate["fid"])}


def gate_summary(runs: Sequence[Mapping[str, Any]], gate: Mapping[str, Any]) -> dict[str, Any]:
    failed = [r for r in runs if not r["gate"]["passes"]]
    return {
        **gate,
        "rule": f"final FID < FID of real images with {gate['corruption']} ({gate['fid']:.4g})",
        "passed": len(runs) - len(failed),
        "failed_runs": [r["run_id"] for r in failed],
        "failed_methods": sorted({str(r["method"]) for r in failed}),
        "failed_by_method": {
            m: [r["run_id"] for r in failed if r["method"] == m] for m in sorted({r["method"] for r in failed})
        },
    }


# ---------------------------------------------------------------------------------------------------------------------
# The report


def _group(curves: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    by_method: dict[str, list[Mapping[str, Any]]] = {}
    seen: set[tuple[str, Any]] = set()
    for curve in curves:
        _points(curve)
        if isinstance(curve["seed"], bool) or not isinstance(curve["seed"], int):
            raise ValueError(
                f"curve {curve['run_id']!r}: seed={curve['seed']!r} must be an integer (load_curves normalizes files)"
            )
        key = (curve["method"], curve["seed"])
        if key in seen:
            raise ValueError(
                f"method={curve['method']!r} seed={curve['seed']!r} appears twice "
                f"(run_id={curve['run_id']!r}); each seed must be given once"
            )
        seen.add(key)
        by_method.setdefault(str(curve["method"]), []).append(curve)
    for group in by_method.values():
        group.sort(key=lambda c: (str(type(c["seed"])), c["seed"]))
    return by_method


def _versus(base_points, base_runs, m_points, m_runs, target: float, unit: str, metric: str, ks, alpha: float):
    """:func:`compare` of two arms' curves (``*_points``; ``*_runs`` hold their budgets) at one ``target``, with
    each seed's first evaluation (a target met there is censored from below: the ladder's early rungs)."""

    return compare(
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
) -> dict[str, Any]:
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
        return {
            "ratio": None,
            "status": f"the start target is reached by {len(rb)} baseline and {len(rm)} method seeds",
        }
    record = compare(rb, bb, rm, ks, alpha, bm)
    if db or dm:
        record["status"] += (
            f"; left out, not reaching the start target or meeting it at their first evaluation: {db} baseline and "
            f"{dm} method seed(s)"
        )
    return {"start": start, "end": end, **record}


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
) -> dict[str, Any]:
    """Targets, per-run costs, late slopes and per-method speedups over ``baseline``, as a JSON-ready dict.

    ``anchor_unit`` places the ``third`` target and the ladder's rungs and measures the slopes. ``train_size``
    (images in the training set) gives the training length in epochs for curves that do not record their own
    ``train_size``. ``gate``, from :func:`gate_from_reference`, adds each run's sanity gate. ``ladder_units``: the
    units of the ladder (a subset of ``units``; empty for none; by default MACs, or the first unit without them).
    ``growth_pairs``: ``(from, to)`` targets, each a named target or a rung of the ladder, whose speedup growth is
    reported per unit. See the module docstring.
    """
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
    by_method = _group(curves)
    if baseline not in by_method:
        raise ValueError(f"baseline={baseline!r} has no curve; methods given: {', '.join(sorted(by_method)) or 'none'}")
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

    runs, costs = [], {}
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
            costs[curve["run_id"]] = entry
            runs.append(entry)

    slopes: dict[str, Any] = {}
    for method in sorted(by_method):
        per_seed = [late_slope(_points(c), anchor_unit, metric) for c in by_method[method]]
        window = [late_window_points(_points(c), anchor_unit, metric) for c in by_method[method]]
        vals = np.asarray([s for s in per_seed if s is not None], dtype=float)
        slopes[method] = {
            "mean": float(vals.mean()) if vals.size else None,
            "std": float(vals.std(ddof=1)) if vals.size >= 2 else None,
            "per_seed": per_seed,
            "window_points": window,
        }
        if min(window) < MIN_LATE_POINTS:
            slopes[method]["not_checkable"] = (
                f"{min(window)} evaluation(s) in the last third of {method}'s budget; a late-slope fit needs "
                f"{MIN_LATE_POINTS}"
            )

    final_values: dict[str, Any] = {}
    for method in sorted(by_method):
        per_seed = [costs[c["run_id"]]["final_metric"] for c in by_method[method]]
        final_values[method] = {
            "mean": float(np.mean(per_seed)),
            "std": float(np.std(per_seed, ddof=1)) if len(per_seed) >= 2 else None,
            "per_seed": per_seed,
        }

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

    base_runs = [costs[c["run_id"]] for c in by_method[baseline]]
    base_points = [_points(c) for c in by_method[baseline]]
    unit_results: dict[str, Any] = {}
    common: dict[str, float] = {}
    matched: dict[str, Any] = {}
    growths: dict[str, Any] = {}
    for method in sorted(m for m in by_method if m != baseline):
        m_runs = [costs[c["run_id"]] for c in by_method[method]]
        m_points = [_points(c) for c in by_method[method]]
        unit_results[method] = {
            t: {
                unit: compare(
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
        common[method] = max(r["final_metric"] for r in base_runs + m_runs)
        unit_results[method]["common"] = {
            unit: {
                "target": common[method],
                **_versus(base_points, base_runs, m_points, m_runs, common[method], unit, metric, ks, alpha),
            }
            for unit in units
        }
        unit_results[method]["ladder"] = {
            rung: {
                unit: _versus(base_points, base_runs, m_points, m_runs, target, unit, metric, ks, alpha)
                for unit in ladder_units
            }
            for rung, target in ladder.items()
        }
        matched[method] = matched_slope(by_method[baseline], by_method[method], anchor_unit, metric)
        if growth_pairs:
            unit_growth = {}
            for a, b in growth_pairs:
                unit_growth[f"{a}:{b}"] = {
                    unit: growth(base_points, base_runs, m_points, m_runs, named[a], named[b], unit, metric, ks, alpha)
                    for unit in units
                }
            growths[method] = unit_growth

    return {
        "scale": None if scales == ["None"] else scales[0],
        "baseline": baseline,
        "metric": metric,
        "anchor_unit": anchor_unit,
        "units": units,
        "ks": [float(k) for k in ks],
        "alpha": alpha,
        "interval": {
            "method": "Welch t on log cost",
            "level": 1.0 - alpha,
            "one_sided_alpha": alpha / 2.0,
            "power": POWER,
        },
        "training": training,
        "gate": None if gate is None else gate_summary(runs, gate),
        "targets": {**targets, "common": common, "ladder": ladder},
        "ladder_units": ladder_units,
        "run_ids": [r["run_id"] for r in runs],
        "runs": runs,
        "late_slope": slopes,
        "matched_slope": matched,
        "final_values": final_values,
        "unit_results": unit_results,
        **({"growth": growths} if growth_pairs else {}),
    }


# ---------------------------------------------------------------------------------------------------------------------
# Plot and files


# One colour per method, the same in every plot whichever methods share it: an index into matplotlib's tab20 (a
# method and its run on EDM share a hue, dark and light). A method not listed here takes a free index, in name
# order within its plot; give each new method its entry (a test checks that every method of params.yaml has one).
METHOD_COLORS: dict[str, int] = {
    "dit": 0,
    "dit-edm": 1,
    "tread": 2,
    "tread-edm": 3,
    "sit": 4,
    "sit-tread": 5,
    "stochastic-depth": 6,
    "post-norm": 8,
    "lightningdit": 10,
    "tread-rate-25": 16,
    "tread-rate-75": 17,
    "tread-xavier": 18,
    "dit-dispersive": 12,
    "dit-sra": 14,
}


def method_colors(methods: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """The colour of each method: :data:`METHOD_COLORS`' (tab20), or a free tab20 colour for a method it lacks."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    free = [i for i in range(cmap.N) if i not in set(METHOD_COLORS.values())]
    unknown = sorted({m for m in methods if m not in METHOD_COLORS})
    if len(unknown) > len(free):
        raise ValueError(
            f"{len(unknown)} methods without an entry in METHOD_COLORS in one plot; at most {len(free)} free colours"
        )
    index = {**METHOD_COLORS, **dict(zip(unknown, free))}
    return {m: cmap(index[m]) for m in methods}


def plot_curves(
    curves: Sequence[Mapping[str, Any]],
    unit: str,
    path: str | os.PathLike,
    metric: str = "fid",
    targets: Mapping[str, float] | None = None,
) -> Path:
    """PNG of ``metric`` against cost (log x axis; log y for the validation loss), every run drawn, one color per
    method; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    _check_unit(unit)
    _check_metric(metric)
    by_method = _group(curves)
    colors = method_colors(sorted(by_method))
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    try:
        for method in sorted(by_method):
            for j, curve in enumerate(by_method[method]):
                c, m = _series(_points(curve), unit, metric)
                ax.plot(
                    c,
                    m,
                    marker="o",
                    markersize=3,
                    linewidth=1.2,
                    alpha=0.85,
                    color=colors[method],
                    label=method if j == 0 else None,
                )
        for name, value in (targets or {}).items():
            ax.axhline(value, color="0.5", linestyle="--", linewidth=0.8)
            ax.annotate(
                f"target {name}",
                xy=(0.005, value),
                xycoords=("axes fraction", "data"),
                fontsize=7,
                color="0.35",
                va="bottom",
            )
        ax.set_xscale("log")
        lo, hi = ax.get_xlim()
        if hi / lo > 10:  # labels on minor ticks collide once the axis spans more than a decade
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"{UNIT_LABELS[unit]} (log scale)")
        if metric == "val_loss":  # it falls 20x from the first evaluation: on a linear axis the late curves merge
            ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_ylabel(metric.upper() if metric != "val_loss" else "validation loss (log scale)")
        scales = sorted({str(c.get("scale")) for c in curves})
        ax.set_title(f"{metric} vs {unit}" + (f" ({', '.join(scales)})" if scales != ["None"] else ""))
        ax.grid(True, which="both", alpha=0.3)
        many = len(by_method) > 6  # the campaign with its ablations: two columns, smaller type
        ax.legend(title="method", ncol=2 if many else 1, fontsize=7 if many else None)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return Path(path)


def published_tread_ladder() -> list[tuple[float, float]]:
    """TREAD's Figure 1 as a ladder: ``(DiT's training length / its 400K point, hours ratio)`` at each of DiT-XL/2's
    published points (about 3.8x at 1x, 13.5x at 5.9x, 36.6x at 17.5x), each crossing found as the golden runs' are."""
    from .published import PUBLISHED

    fig = PUBLISHED["tread_figure1"]
    hours, fids = zip(*sorted((h, f) for h, f in fig["tread_xl2"]))
    first_kiters = fig["dit_xl2"][0][0]
    out = []
    for kiters, dit_hours, fid in fig["dit_xl2"]:
        tread_hours = first_crossing(hours, fids, fid)
        if tread_hours is not None:
            out.append((kiters / first_kiters, dit_hours / tread_hours))
    return out


def plot_ladder(
    report: Mapping[str, Any], path: str | os.PathLike, unit: str = "macs", start: str | None = None
) -> Path:
    """PNG of each method's speedup at every rung of the ladder against the baseline's training length (the rung's
    step over ``start``'s, the first growth pair's start by default), log-log, with its 95% interval where one is
    printed (a bound: a hollow marker), and TREAD's published ladder for reference; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ladder = report["targets"].get("ladder") or {}
    if start is None:
        pairs = [k.split(":")[0] for g in (report.get("growth") or {}).values() for k in g]
        start = pairs[0] if pairs else next(iter(ladder), None)
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    try:
        methods = sorted(report["unit_results"])
        colors = method_colors(methods)
        base = float(start) if start is not None and start.replace(".", "", 1).isdigit() else 1.0
        for method in methods:
            xs, ys, lo, hi, bound = [], [], [], [], []
            for rung in ladder:
                r = report["unit_results"][method]["ladder"][rung].get(unit)
                if not r or r.get("ratio") is None:
                    continue
                xs.append(float(rung) / base)
                ys.append(r["ratio"])
                lo.append(r["ci_low"] if r.get("ci_low") is not None else r["ratio"])
                hi.append(r["ci_high"] if r.get("ci_high") is not None else r["ratio"])
                bound.append(r.get("ratio_is") != "estimate")
            if not xs:
                continue
            ys_a, lo_a, hi_a = np.asarray(ys), np.asarray(lo), np.asarray(hi)
            ax.errorbar(xs, ys, yerr=[ys_a - lo_a, hi_a - ys_a], color=colors[method], linewidth=1.2, capsize=2,
                        label=method)  # fmt: skip
            ax.scatter([x for x, b in zip(xs, bound) if b], [y for y, b in zip(ys, bound) if b], facecolors="white",
                       edgecolors=[colors[method]], zorder=3, s=18)  # fmt: skip
        pub = published_tread_ladder()
        ax.plot(*zip(*pub), "k--", marker="x", label="TREAD's Figure 1 (A100-hours, ImageNet-256)")
        ax.axhline(1.0, color="0.5", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"baseline's training length (its step / {start})" if start else "baseline's step")
        ax.set_ylabel(f"speedup to the baseline's value there ({UNIT_LABELS[unit]})")
        scale = report.get("scale") or ""
        ax.set_title(f"speedup ladder over {report['baseline']} ({report['metric']}{', ' + scale if scale else ''})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return Path(path)


def round_floats(obj: Any, digits: int = 6) -> Any:
    """``obj`` with every float rounded to ``digits`` significant digits (JSON-ready: non-finite floats rejected)."""
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError(f"non-finite value {obj!r} cannot go into JSON")
        return float(f"{obj:.{digits}g}")
    if isinstance(obj, Mapping):
        return {k: round_floats(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [round_floats(v, digits) for v in obj]
    if isinstance(obj, np.generic):
        return round_floats(obj.item(), digits)
    return obj


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` (floats rounded) as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(round_floats(obj), indent=2, allow_nan=False) + "\n")


def find_curve_files(specs: Iterable[str], warn=None, allow_none: bool = False) -> list[Path]:
    """Curve files from globs, files or run directories (``<dir>/curve.json``), sorted, without duplicates.

    A glob that matches no file is an error when no other one matches either (unless ``allow_none``: a comparison
    whose runs are not made yet). Next to globs that do match it is reported through ``warn`` (a campaign in
    progress: a method whose runs are not made yet) and skipped.
    """
    found: dict[Path, None] = {}
    matched = [(spec, sorted(glob.glob(spec)) if glob.has_magic(spec) else [spec]) for spec in specs]
    empty = [spec for spec, matches in matched if not matches]
    if empty and len(empty) == len(matched) and not allow_none:
        raise ValueError(f"--curves {empty[0]!r} matches no file")
    for spec, matches in matched:
        if not matches:
            if warn is not None:
                warn(f"--curves {spec!r} matches no file yet; the report leaves its runs out")
            continue
        for match in matches:
            p = Path(match)
            if p.is_dir():
                p = p / "curve.json"
            if not p.is_file():
                raise ValueError(f"--curves {spec!r}: {str(p)!r} is not a file")
            found.setdefault(p, None)
    return sorted(found)


def normalize_seed(seed: Any, where: str) -> int:
    """A curve's seed as an int: ``0`` and ``"0"`` are one seed; anything else that is not a non-negative integer
    is an error naming ``where``."""
    if isinstance(seed, str) and seed.strip().isdigit():
        return int(seed)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"{where}: seed={seed!r} is not allowed; must be a non-negative integer")
    return seed


NON_NEGATIVE = frozenset({"fid", "val_loss", *UNITS.values()})
"""Point fields that cannot be negative: a distance, a mean squared error, costs (KID's unbiased estimate can be)."""


def load_curves(
    paths: Iterable[str | os.PathLike], include_incomplete: bool = False, finite_values: bool = True
) -> list[dict[str, Any]]:
    """Curve files, checked: valid JSON, the fields a curve needs, a non-negative integer seed, finite metric values
    (unless not ``finite_values``: ``repro compare`` reports those as failures) and (unless ``include_incomplete``)
    ``complete: true``. Errors name the file and the field."""
    curves = []
    for p in paths:
        try:
            curve = json.loads(Path(p).read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{str(p)!r} is not valid JSON: {e}") from None
        except UnicodeDecodeError:
            raise ValueError(f"{str(p)!r} is not a text (JSON) file") from None
        try:
            _points(curve)
        except ValueError as e:
            raise ValueError(f"{p}: {e}") from None
        complete = curve.get("complete", True)
        if not isinstance(complete, bool):
            raise ValueError(f"{p}: complete={complete!r} is not allowed; must be true or false")
        if not complete and not include_incomplete:
            raise ValueError(
                f"{p}: complete=false (the run stopped before its last step); finish it, or pass --include-incomplete"
            )
        curve["seed"] = normalize_seed(curve["seed"], str(p))
        for i, point in enumerate(curve["points"] if finite_values else ()):
            if not isinstance(point, Mapping):
                raise ValueError(f"{p}: points[{i}] must be a dict, got {type(point).__name__}")
            for key in (*METRICS, *UNITS.values()):
                v = point.get(key)
                if v is None:
                    continue
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise ValueError(f"{p}: points[{i}].{key}={v!r} is not allowed; must be a finite number")
                if v < 0 and key in NON_NEGATIVE:
                    raise ValueError(f"{p}: points[{i}].{key}={v!r} is not allowed; must be a finite number >= 0")
        curves.append(curve)
    return curves


def check_replaceable(option: str, path: str | os.PathLike, keys: Sequence[str], what: str) -> None:
    """``path`` may be replaced only when it does not exist or holds what this command writes (a JSON object with
    ``keys``): a curve or a report of another kind given by mistake is never overwritten."""
    path = Path(path)
    if not path.exists():
        return
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        data = None
    if not (isinstance(data, dict) and all(k in data for k in keys)):
        raise ValueError(
            f"{option}: {str(path)!r} exists and is not {what} (a JSON object with {', '.join(keys)}); allowed: a new "
            "file or one this command wrote"
        )


def check_output(option: str, path: str | os.PathLike | None) -> None:
    """Fail before anything is computed or written when ``path`` cannot be written as a file."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option}: {str(path)!r} is a directory; give a file path")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{option}: {str(path)!r} cannot be written: {str(parent)!r} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{option}: {str(path)!r} cannot be written: {str(parent)!r} is not writable")


# ---------------------------------------------------------------------------------------------------------------------
# Command line


def no_runs_report(baseline: str, metric: str, units: Sequence[str], ks: Sequence[float], why: str) -> dict[str, Any]:
    """The report of a comparison whose baseline has no run yet (a campaign in progress): the fields a reader
    looks up, all empty, and ``status`` saying why. The ledger reads its claims as pending."""
    _check_metric(metric)
    return {
        "scale": None,
        "baseline": baseline,
        "metric": metric,
        "units": list(units),
        "ks": [float(k) for k in ks],
        "status": f"no runs yet: {why}",
        "training": {},
        "gate": None,
        "targets": {},
        "ladder_units": [],
        "run_ids": [],
        "runs": [],
        "late_slope": {},
        "matched_slope": {},
        "final_values": {},
        "unit_results": {},
    }


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
