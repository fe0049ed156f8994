"""Speedup to a target metric, measured the way MLPerf measures convergence.

A *curve* is the dict a training run writes to ``curve.json``: ``run_id``, ``method``, ``seed``, ``scale`` and
``points``, each point holding its cumulative cost in every unit (``step``, ``images``, ``macs``, ``seconds``) and the
evaluation metrics (``fid``, ``kid``, ``val_loss``, ...). Every metric handled here is lower-is-better.

Definitions (all of them are what the JSON report means):

* **Cost to target** (:func:`cost_to_target`): the first evaluation whose metric is at or below the target, with the
  crossing interpolated between it and the evaluation before it, metric linear in log-cost. If the first evaluation
  already meets the target, its own cost is returned (nothing earlier was measured). A curve that never gets there
  gives ``None``: "not reached" is a result.
* **Targets** (:func:`targets_from_baseline`): ``final`` is the mean over baseline seeds of each seed's metric at its
  last evaluation (TREAD's 37x target, DiT's FID at 7M iterations); ``third`` is the mean over baseline seeds of each
  seed's metric at one third of that seed's final cost in the anchor unit, interpolated like the cost (TREAD's 14x
  target, DiT's FID at 2,352K of 7M iterations).
* **Speedup** of a method over the baseline for one target and unit: ``mean(cost_baseline) / mean(cost_method)``
  over seeds, a ratio of arithmetic means, so that "speedup >= k" is the same statement as
  ``mean(cost_method) < mean(cost_baseline) / k``, the one the t-test checks. With 5 or more seeds in a group, that
  group is "olympic" trimmed first (its smallest and largest cost are dropped), as MLPerf's reference convergence
  point checker does; the bootstrap trims every resample the same way.
* **Censoring**: a method seed that does not reach the target counts as infinitely expensive; if such a seed survives
  trimming, the ratio, interval and test are null and ``ge_k`` is false. A baseline seed that does not reach the
  target (common for ``final``, which is a mean over seeds) counts at its final cost, a lower bound on what it would
  need; if no baseline seed reaches the target, everything is null. Both rules can only lower the reported speedup.
* **Interval**: percentile bootstrap (95 %), seeds resampled with replacement within each method independently,
  10,000 resamples from a fixed generator seed, so a report is reproducible bit for bit.
* **Test** of "speedup >= k": Welch's t-test of ``cost_method`` against ``cost_baseline / k`` with the alternative
  that the method's mean is smaller; ``ge_k`` is true when ``p < alpha`` (0.05). When both groups have zero spread the
  answer is exact (p = 0 or 1). Interval and test need at least 2 seeds on each side; with fewer, the ratio is a data
  point, not a verdict, and interval, p-value and ``ge_k`` are null.
* **Late slope** (:func:`late_slope`): least-squares slope of the metric against log10(cost) over the evaluations in
  the last third of the cost range; near zero means the curve has flattened. Scaling the cost leaves it unchanged.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys
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

TARGETS: tuple[str, ...] = ("final", "third")
THIRD = 1.0 / 3.0
ALPHA = 0.05
N_BOOT = 10_000
BOOT_SEED = 0
OLYMPIC_MIN_SEEDS = 5
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

    The first evaluation with ``metric <= target`` and the one before it bracket the crossing; between them the metric
    is taken as linear in log-cost, so the crossing is ``exp(log c0 + f * (log c1 - log c0))`` with
    ``f = (m0 - target) / (m0 - m1)``. If the first evaluation already meets the target, its cost is returned as is.
    """
    if not math.isfinite(float(target)):
        raise ValueError(f"target={target!r} must be finite")
    costs, values = _series(points, unit, metric)
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
    points: Sequence[Mapping[str, Any]], unit: str, metric: str = "fid", fraction: float = THIRD
) -> float | None:
    """Least-squares slope of ``metric`` against log10(cost) over the last ``fraction`` of the cost range.

    The window holds the evaluations with ``cost >= c_last - fraction * (c_last - c_first)`` (a linear range, the last
    third of training by default). The slope is in metric units per decade of cost. If the window holds fewer than two
    evaluations, the last two are used; a curve with a single evaluation gives ``None``.
    """
    if not (0.0 < fraction <= 1.0):
        raise ValueError(f"fraction={fraction!r} must be in (0, 1]")
    costs, values = _series(points, unit, metric)
    if costs.size < 2:
        return None
    mask = costs >= costs[-1] - fraction * (costs[-1] - costs[0])
    if mask.sum() < 2:
        mask[-2:] = True
    x, y = np.log10(costs[mask]), values[mask]
    x = x - x.mean()
    return float(np.dot(x, y - y.mean()) / np.dot(x, x))


def targets_from_baseline(
    baseline_curves: Sequence[Mapping[str, Any]], metric: str = "fid", unit: str = "iterations", fraction: float = THIRD
) -> dict[str, float]:
    """The two targets, from the baseline's seeds.

    ``final``: mean over seeds of each seed's metric at its last evaluation. ``third``: mean over seeds of each seed's
    metric at ``fraction`` (one third) of that seed's final cost in ``unit``, by :func:`metric_at_cost`.
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
    return {"final": float(np.mean(finals)), "third": float(np.mean(thirds))}


# ---------------------------------------------------------------------------------------------------------------------
# Statistics over seeds


def olympic(costs: Sequence[float]) -> np.ndarray:
    """Sorted costs, with the smallest and the largest dropped when there are 5 or more."""
    arr = np.sort(np.asarray(costs, dtype=float))
    return arr[1:-1] if arr.size >= OLYMPIC_MIN_SEEDS else arr


def _trimmed_means(samples: np.ndarray) -> np.ndarray:
    """Row means of ``samples`` (resamples x seeds), olympic-trimmed per row."""
    s = np.sort(samples, axis=1)
    if s.shape[1] >= OLYMPIC_MIN_SEEDS:
        s = s[:, 1:-1]
    with np.errstate(invalid="ignore"):
        return s.mean(axis=1)


def bootstrap_ratio_ci(
    cost_baseline: Sequence[float],
    cost_method: Sequence[float],
    n_boot: int = N_BOOT,
    seed: int = BOOT_SEED,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(baseline) / mean(method)`` (olympic means), groups resampled apart."""
    b, m = np.asarray(cost_baseline, dtype=float), np.asarray(cost_method, dtype=float)
    if b.size < 2 or m.size < 2:
        raise ValueError("a bootstrap interval needs at least 2 seeds per group")
    rng = np.random.default_rng(seed)
    mb = _trimmed_means(b[rng.integers(0, b.size, size=(n_boot, b.size))])
    mm = _trimmed_means(m[rng.integers(0, m.size, size=(n_boot, m.size))])
    with np.errstate(divide="ignore"):
        ratios = mb / mm
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(ratios, [tail, 100.0 - tail])
    return float(lo), float(hi)


def p_value_speedup_ge(cost_baseline: Sequence[float], cost_method: Sequence[float], k: float) -> float:
    """One-sided p-value for "speedup >= k" (H0: the method's mean cost is at least ``mean(baseline) / k``).

    Welch's t-test of the method's costs against the baseline's costs divided by ``k``, alternative "less". Inputs are
    used as given (trim them first with :func:`olympic`). Two constant groups give an exact 0 or 1.
    """
    if k <= 0:
        raise ValueError(f"k={k!r} must be > 0")
    b, m = np.asarray(cost_baseline, dtype=float) / k, np.asarray(cost_method, dtype=float)
    if b.size < 2 or m.size < 2:
        raise ValueError("the t-test needs at least 2 seeds per group")
    if np.ptp(b) == 0 and np.ptp(m) == 0:
        return 0.0 if m.mean() < b.mean() else 1.0
    return float(stats.ttest_ind(m, b, equal_var=False, alternative="less").pvalue)


def _k_key(k: float) -> str:
    return repr(float(k))


def compare(
    cost_baseline: Sequence[float | None],
    baseline_final: Sequence[float],
    cost_method: Sequence[float | None],
    ks: Iterable[float] = (1.0,),
    alpha: float = ALPHA,
    n_boot: int = N_BOOT,
    boot_seed: int = BOOT_SEED,
) -> dict[str, Any]:
    """Speedup of one method over the baseline for one target and unit, from per-seed costs (``None``: not reached).

    ``baseline_final`` holds each baseline seed's final cost, used for its seeds that did not reach the target.
    """
    if len(cost_baseline) != len(baseline_final):
        raise ValueError("cost_baseline and baseline_final must have one entry per baseline seed")
    ks = [float(k) for k in ks]
    n_m, n_b = len(cost_method), len(cost_baseline)
    reached_m = sum(c is not None for c in cost_method)
    reached_b = sum(c is not None for c in cost_baseline)
    out: dict[str, Any] = {
        "ratio": None,
        "ci_low": None,
        "ci_high": None,
        "seeds": n_m,
        "reached": f"{reached_m}/{n_m}",
        "baseline_seeds": n_b,
        "baseline_reached": f"{reached_b}/{n_b}",
        "p_value_ge_k": {_k_key(k): None for k in ks},
        "ge_k": {_k_key(k): None for k in ks},
        "status": "ok",
    }
    if n_m == 0 or n_b == 0:
        raise ValueError("a comparison needs at least one seed per group")
    if reached_b == 0:
        out["status"] = f"baseline reached the target in 0 of {n_b} seeds"
        return out
    b = olympic([c if c is not None else f for c, f in zip(cost_baseline, baseline_final)])
    m = olympic([c if c is not None else math.inf for c in cost_method])
    if not np.isfinite(m).all():
        out["status"] = f"not reached by {n_m - reached_m} of {n_m} seeds"
        out["ge_k"] = {_k_key(k): False for k in ks}
        return out
    out["ratio"] = float(b.mean() / m.mean())
    if n_m < 2 or n_b < 2:
        out["status"] = ONE_SEED_NOTE
        return out
    b_all = np.asarray([c if c is not None else f for c, f in zip(cost_baseline, baseline_final)], dtype=float)
    m_all = np.asarray([c if c is not None else math.inf for c in cost_method], dtype=float)
    out["ci_low"], out["ci_high"] = bootstrap_ratio_ci(b_all, m_all, n_boot=n_boot, seed=boot_seed)
    for k in ks:
        p = p_value_speedup_ge(b, m, k)
        out["p_value_ge_k"][_k_key(k)] = p
        out["ge_k"][_k_key(k)] = bool(p < alpha)
    if reached_m < n_m:
        out["status"] = f"ok after olympic trimming; not reached by {n_m - reached_m} of {n_m} seeds"
    return out


# ---------------------------------------------------------------------------------------------------------------------
# The report


def _group(curves: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    by_method: dict[str, list[Mapping[str, Any]]] = {}
    seen: set[tuple[str, Any]] = set()
    for curve in curves:
        _points(curve)
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


def speedup_report(
    curves: Sequence[Mapping[str, Any]],
    baseline: str = "dit",
    units: Sequence[str] = ("iterations", "images", "macs", "seconds"),
    metric: str = "fid",
    ks: Sequence[float] = (1.0,),
    anchor_unit: str = "iterations",
    alpha: float = ALPHA,
    n_boot: int = N_BOOT,
    boot_seed: int = BOOT_SEED,
) -> dict[str, Any]:
    """Targets, per-run costs, late slopes and per-method speedups over ``baseline``, as a JSON-ready dict.

    ``anchor_unit`` places the ``third`` target and measures the late slopes. See the module docstring for the rules.
    """
    _check_metric(metric)
    units = list(units)
    for unit in [*units, anchor_unit]:
        _check_unit(unit)
    if not units:
        raise ValueError("units must name at least one cost unit")
    if not ks or any(float(k) <= 0 for k in ks):
        raise ValueError(f"ks={list(ks)!r} must be a non-empty list of positive numbers")
    by_method = _group(curves)
    if baseline not in by_method:
        raise ValueError(f"baseline={baseline!r} has no curve; methods given: {', '.join(sorted(by_method)) or 'none'}")
    scales = sorted({str(c.get("scale")) for c in curves})
    if len(scales) > 1:
        raise ValueError(f"curves come from different scales: {', '.join(scales)}")
    targets = targets_from_baseline(by_method[baseline], metric, anchor_unit)

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
            }
            for unit in units:
                entry["budget"][unit] = float(_series(pts, unit, metric)[0][-1])
                entry["cost"][unit] = {t: cost_to_target(pts, targets[t], unit, metric) for t in TARGETS}
            costs[curve["run_id"]] = entry
            runs.append(entry)

    slopes: dict[str, Any] = {}
    for method in sorted(by_method):
        per_seed = [late_slope(_points(c), anchor_unit, metric) for c in by_method[method]]
        vals = np.asarray([s for s in per_seed if s is not None], dtype=float)
        slopes[method] = {
            "mean": float(vals.mean()) if vals.size else None,
            "std": float(vals.std(ddof=1)) if vals.size >= 2 else None,
            "per_seed": per_seed,
        }

    base_runs = [costs[c["run_id"]] for c in by_method[baseline]]
    unit_results: dict[str, Any] = {}
    for method in sorted(m for m in by_method if m != baseline):
        m_runs = [costs[c["run_id"]] for c in by_method[method]]
        unit_results[method] = {
            t: {
                unit: compare(
                    [r["cost"][unit][t] for r in base_runs],
                    [r["budget"][unit] for r in base_runs],
                    [r["cost"][unit][t] for r in m_runs],
                    ks,
                    alpha,
                    n_boot,
                    boot_seed,
                )
                for unit in units
            }
            for t in TARGETS
        }

    return {
        "scale": None if scales == ["None"] else scales[0],
        "baseline": baseline,
        "metric": metric,
        "anchor_unit": anchor_unit,
        "units": units,
        "ks": [float(k) for k in ks],
        "alpha": alpha,
        "bootstrap": {"resamples": n_boot, "seed": boot_seed, "level": 0.95, "olympic_min_seeds": OLYMPIC_MIN_SEEDS},
        "targets": targets,
        "run_ids": [r["run_id"] for r in runs],
        "runs": runs,
        "late_slope": slopes,
        "unit_results": unit_results,
    }


# ---------------------------------------------------------------------------------------------------------------------
# Plot and files


def plot_curves(
    curves: Sequence[Mapping[str, Any]],
    unit: str,
    path: str | os.PathLike,
    metric: str = "fid",
    targets: Mapping[str, float] | None = None,
) -> Path:
    """PNG of ``metric`` against cost (log x axis), every run drawn, one color per method; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    _check_unit(unit)
    _check_metric(metric)
    by_method = _group(curves)
    colors = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    try:
        for i, method in enumerate(sorted(by_method)):
            for j, curve in enumerate(by_method[method]):
                c, m = _series(_points(curve), unit, metric)
                ax.plot(
                    c,
                    m,
                    marker="o",
                    markersize=3,
                    linewidth=1.2,
                    alpha=0.85,
                    color=colors(i % 10),
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
        ax.set_ylabel(metric.upper() if metric != "val_loss" else "validation loss")
        scales = sorted({str(c.get("scale")) for c in curves})
        ax.set_title(f"{metric} vs {unit}" + (f" ({', '.join(scales)})" if scales != ["None"] else ""))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(title="method")
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


def find_curve_files(specs: Iterable[str]) -> list[Path]:
    """Curve files from globs, files or run directories (``<dir>/curve.json``), sorted, without duplicates."""
    found: dict[Path, None] = {}
    for spec in specs:
        matches = sorted(glob.glob(spec)) if glob.has_magic(spec) else [spec]
        if not matches:
            raise ValueError(f"--curves {spec!r} matches no file")
        for match in matches:
            p = Path(match)
            if p.is_dir():
                p = p / "curve.json"
            if not p.is_file():
                raise ValueError(f"--curves {spec!r}: {str(p)!r} is not a file")
            found.setdefault(p, None)
    return sorted(found)


def load_curves(paths: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    curves = []
    for p in paths:
        try:
            curve = json.loads(Path(p).read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{str(p)!r} is not valid JSON: {e}") from None
        _points(curve)
        curves.append(curve)
    return curves


# ---------------------------------------------------------------------------------------------------------------------
# Command line


def _run_cli(args: argparse.Namespace) -> int:
    try:
        files = find_curve_files(args.curves)
        curves = load_curves(files)
        report = speedup_report(
            curves,
            baseline=args.baseline,
            units=args.units,
            metric=args.metric,
            ks=args.k,
            anchor_unit=args.anchor_unit,
            n_boot=args.resamples,
            boot_seed=args.boot_seed,
        )
        report["inputs"] = [{"path": os.path.relpath(f), "run_id": c["run_id"]} for f, c in zip(files, curves)]
        write_json(report, args.out)
        if args.plot:
            plot_curves(curves, args.plot_unit, args.plot, metric=args.metric, targets=report["targets"])
    except ValueError as e:
        print(f"repro speedup: error: {e}", file=sys.stderr)
        return 2
    for method, per_target in report["unit_results"].items():
        for target, per_unit in per_target.items():
            for unit, r in per_unit.items():
                ratio = "null" if r["ratio"] is None else f"{r['ratio']:.3g}x"
                ci = "" if r["ci_low"] is None else f" [{r['ci_low']:.3g}, {r['ci_high']:.3g}]"
                print(
                    f"{method} vs {args.baseline}, {target} target, {unit}: {ratio}{ci} "
                    f"(reached {r['reached']}; {r['status']})"
                )
    print(f"wrote {args.out}" + (f" and {args.plot}" if args.plot else ""))
    return 0


def register_cli(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "speedup",
        help="speedup to a target FID from training curves, with intervals and tests",
        description=__doc__.splitlines()[0],
    )
    p.add_argument(
        "--curves",
        nargs="+",
        required=True,
        help="curve.json files, run directories or quoted globs (e.g. 'runs/micro/*/curve.json')",
    )
    p.add_argument("--baseline", default="dit", help="method the others are compared with (default: dit)")
    p.add_argument("--out", required=True, help="report JSON path")
    p.add_argument("--plot", default=None, help="PNG path for metric vs cost (optional)")
    p.add_argument("--plot-unit", default="macs", choices=list(UNITS), help="x axis of the plot (default: macs)")
    p.add_argument("--metric", default="fid", choices=list(METRICS))
    p.add_argument("--units", nargs="+", default=list(UNITS), choices=list(UNITS))
    p.add_argument("--k", nargs="+", type=float, default=[1.0], help="test 'speedup >= k' for each k (default: 1)")
    p.add_argument(
        "--anchor-unit",
        default="iterations",
        choices=list(UNITS),
        help="unit placing the 'third' target and the late slopes (default: iterations)",
    )
    p.add_argument("--resamples", type=int, default=N_BOOT, help=f"bootstrap resamples (default: {N_BOOT})")
    p.add_argument("--boot-seed", type=int, default=BOOT_SEED, help=f"bootstrap generator seed (default: {BOOT_SEED})")
    p.set_defaults(func=_run_cli)
    return p
