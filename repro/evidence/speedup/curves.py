"""Curve files and the points in them: loading and validating ``curve.json`` files, cost units and metrics."""

from __future__ import annotations

import glob
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

UNITS: dict[str, str] = {"iterations": "step", "images": "images", "macs": "macs", "seconds": "seconds"}
"""Cost unit name -> the field of a curve point that holds it (cumulative)."""

METRICS: tuple[str, ...] = ("fid", "kid", "val_loss")
"""Metrics a speedup can be measured on; all are lower-is-better."""

UNIT_LABELS = {
    "iterations": "training iterations",
    "images": "training images seen",
    "macs": "training MACs",
    "seconds": "wall-clock seconds",
}


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
