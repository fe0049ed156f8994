"""A scale's results as DVC reads them: small flat metrics files and one flat table of curve points.

``repro summary`` reads the golden curves, the speedup reports and the claims ledger and writes, into one
folder (DVC ``metrics``), one small file per quantity, all with the same few keys, so that ``dvc metrics show``
prints one narrow row per quantity (the path names it) and ``dvc metrics diff`` compares them:

* ``fid/<method>.json``, ``val_loss/<method>.json``: the final value, mean (``value``) and sample sd (``sd``)
  over the method's ``n`` seeds, each seed at its last finite evaluation;
* ``speedup-vs-<baseline>/<metric>/<method>.json`` for each speedup report: the speedup to the report's
  ``final`` target in the chosen cost unit (``--unit``, MACs in the pipeline) with its 95% interval
  (``value``, ``ci_lower``, ``ci_upper``) and the method's ``n`` seeds; a speedup that is only a bound (a seed
  did not reach the target) goes under ``at_most`` or ``at_least`` (``censored`` when both sides are), without
  an interval, so that it never reads as an estimate;
* ``verdicts/<verdict>.json``: ``n``, the number of claims with that verdict in the ledger.

and ``--plot-data`` (DVC ``plots``): ``{"provenance": ..., "points": [...]}``, one record per evaluation of
every run (``run``, ``method``, ``seed``, ``step``, ``images``, ``macs``, ``fid``, ``val_loss``), which the
``by_run`` template in ``.dvc/plots/`` draws as one line per run against training MACs.

Every unit and target, the p-values and the censoring stay in the speedup reports. Everything is recomputed
from committed files by arithmetic; nothing here trains or samples.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PLOTTED = ("step", "images", "macs", "fid", "val_loss")
BOUND_KEYS = {"upper bound": "at_most", "lower bound": "at_least", "censored on both sides": "censored"}
"""The column a speedup that is only a bound goes under (``ratio_is`` of the report), instead of ``value``."""
FINAL = ("fid", "val_loss")


def _last(points: Sequence[dict], key: str) -> float | None:
    for p in reversed(points):
        value = p.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            return float(value)
    return None


def _mean_sd(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "sd": None}
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else None}


def final_metrics(curves: Sequence[dict]) -> dict[str, dict[str, dict[str, float | None]]]:
    """``{metric: {method: {"mean", "sd"}}}`` of each run's last finite value, over its seeds."""
    methods = sorted({c["method"] for c in curves})
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for key in FINAL:
        out[key] = {}
        for method in methods:
            values = [v for c in curves if c["method"] == method if (v := _last(c["points"], key)) is not None]
            out[key][method] = _mean_sd(values)
    return out


def speedups(report: dict, target: str = "final", unit: str = "macs") -> dict[str, dict[str, Any]]:
    """``{method: {"value", "ci_lower", "ci_upper", "n"}}``: each method's speedup to ``target`` in ``unit``."""
    out: dict[str, dict[str, Any]] = {}
    for method, per_target in sorted(report.get("unit_results", {}).items()):
        per_unit = per_target.get(target)
        if per_unit is None:
            raise ValueError(f"speedup report: target {target!r} not in {sorted(per_target)} of method {method!r}")
        if unit not in per_unit:
            raise ValueError(f"speedup report: unit {unit!r} not in {sorted(per_unit)} of method {method!r}")
        cell = per_unit[unit]
        bound = BOUND_KEYS.get(cell.get("ratio_is"))
        if bound:  # a censored ratio: shown under its own column, never as a value with an interval
            out[method] = {bound: cell.get("ratio"), "n": cell.get("seeds")}
            continue
        out[method] = {"value": cell.get("ratio"), "ci_lower": cell.get("ci_low"), "ci_upper": cell.get("ci_high")}
        out[method]["n"] = cell.get("seeds")
    return out


def summarize(
    curves: Sequence[dict],
    reports: Sequence[dict],
    claims: dict | None = None,
    *,
    target: str = "final",
    unit: str = "macs",
) -> dict[str, dict[str, Any]]:
    """``{relative path without .json: flat metrics}``: one entry per quantity (see the module's docstring)."""
    finals = final_metrics(curves)
    rows: dict[str, dict[str, Any]] = {}
    for key in FINAL:
        for method in sorted({c["method"] for c in curves}):
            n = sum(1 for c in curves if c["method"] == method)
            rows[f"{key}/{method}"] = {"value": finals[key][method]["mean"], "sd": finals[key][method]["sd"], "n": n}
    methods = {c["method"] for c in curves}
    for report in reports:
        baseline, metric = report["baseline"], report.get("metric", "fid")
        folder = f"speedup-vs-{baseline}/{metric}"
        if any(name.startswith(folder + "/") for name in rows):
            raise ValueError(f"speedup reports: two reports with baseline {baseline!r} and metric {metric!r}")
        for method, row in speedups(report, target, unit).items():
            if method not in methods:
                raise ValueError(f"speedup report (baseline {baseline!r}): method {method!r} has no curve")
            rows[f"{folder}/{method}"] = row
    if claims is not None:
        for verdict, count in claims["counts"].items():
            rows[f"verdicts/{verdict.replace(' ', '_')}"] = {"n": count}
    return rows


def plot_points(curves: Sequence[dict]) -> list[dict[str, Any]]:
    """One record per evaluation of every run, in run order: what ``dvc plots`` draws."""
    rows = []
    for c in sorted(curves, key=lambda c: (c["method"], int(c["seed"]))):
        for p in c["points"]:
            rows.append(
                {"run": f"{c['method']}-s{c['seed']}", "method": c["method"], "seed": int(c["seed"])}
                | {k: p.get(k) for k in PLOTTED}
            )
    return rows


def _provenance(command: str) -> dict[str, Any]:
    from ..io import git_commit

    return {"command": command, "git_commit": git_commit(), "inputs": "golden curves (arithmetic only)"}


def _read_json(path: str, what: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{what} {path!r}: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path!r}: holds a {type(data).__name__}; must be a JSON object")
    return data


def _check_report(path: str, report: dict, target: str = "final", unit: str = "macs") -> None:
    """The fields of a speedup report that :func:`summarize` reads, each checked: a one-line error naming the file
    and the field, not a ``KeyError``."""
    baseline = report.get("baseline")
    if not isinstance(baseline, str) or not baseline:
        raise ValueError(f"speedup report {path!r}: baseline={baseline!r} is not allowed; must be a method name")
    metric = report.get("metric", "fid")
    if not isinstance(metric, str) or not metric:
        raise ValueError(f"speedup report {path!r}: metric={metric!r} is not allowed; must be a metric name")
    results = report.get("unit_results", {})
    if not isinstance(results, dict):
        raise ValueError(
            f"speedup report {path!r}: unit_results is not allowed as {type(results).__name__}; "
            "must be a mapping of method to target to unit"
        )
    for method, per_target in results.items():
        if not isinstance(per_target, dict):
            raise ValueError(f"speedup report {path!r}: unit_results.{method} must be a mapping of target to unit")
        for name, per_unit in per_target.items():
            if not isinstance(per_unit, dict) or not all(isinstance(c, dict) for c in per_unit.values()):
                raise ValueError(
                    f"speedup report {path!r}: unit_results.{method}.{name} must be a mapping of unit to record"
                )
        if target not in per_target or unit not in per_target[target]:
            where = f"{target}.{unit}" if target in per_target else target
            raise ValueError(
                f"speedup report {path!r}: unit_results.{method} has no {where}; allowed --target: "
                f"{', '.join(sorted(per_target))}, --unit: {', '.join(sorted(per_target.get(target, {})))}"
            )


def _check_claims(path: str, claims: dict) -> None:
    counts = claims.get("counts")
    if not isinstance(counts, dict) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts.values()
    ):
        shown = "missing" if counts is None else json.dumps(counts)[:80]
        raise ValueError(
            f"claims ledger {path!r}: counts={shown} is not allowed; must be a mapping of verdict to a count >= 0"
        )


SUMMARY_KEYS = frozenset({"value", "sd", "n", "ci_lower", "ci_upper", *BOUND_KEYS.values()})
"""Every key a summary file may hold: a file with another key was not written by ``repro summary``."""
_SUMMARY_PATH = re.compile(r"^(fid|val_loss|verdicts)/[^/]+\.json$|^speedup-vs-[^/]+/[^/]+/[^/]+\.json$")


def _written_by_summary(path: Path, rel: str) -> bool:
    """Whether ``path`` (``rel`` under the output folder) is a file that ``repro summary`` writes: one of its
    paths, holding a flat JSON object of its keys only."""
    if not _SUMMARY_PATH.match(rel):
        return False
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    flat = isinstance(data, dict) and not any(isinstance(v, dict | list) for v in data.values())
    return flat and set(data) <= SUMMARY_KEYS


def _check_out_folder(out: Path) -> list[Path]:
    """The summary files of an earlier ``repro summary`` in ``out`` (which it may replace or remove); a
    one-line ``ValueError`` when ``out`` holds anything else, before anything is written: a summary never
    deletes or overwrites a file it did not write."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file; a folder is needed")
    if not out.exists():
        return []
    from ..io import _TEMPORARY

    ours, foreign = [], []
    for path in sorted(out.rglob("*")):
        if path.is_dir() and not path.is_symlink():
            continue
        rel = path.relative_to(out).as_posix()
        if _TEMPORARY.match(path.name):
            continue  # an atomic write killed midway; left alone
        (ours if path.is_file() and not path.is_symlink() and _written_by_summary(path, rel) else foreign).append(path)
    if foreign:
        raise ValueError(
            f"--out {str(out)!r} holds {len(foreign)} file(s) that repro summary did not write "
            f"(e.g. {str(foreign[0])!r}); "
            "allowed: a new or empty folder, or one that only an earlier repro summary wrote"
        )
    return ours


def _check_plot_data(path: Path) -> None:
    """``--plot-data`` may replace only an earlier plot table (``provenance`` and ``points``)."""
    if path.is_dir():
        raise ValueError(f"--plot-data {str(path)!r} is a folder; a file is needed")
    if not path.exists():
        return
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        data = None
    if not (isinstance(data, dict) and set(data) == {"provenance", "points"}):
        raise ValueError(
            f"--plot-data {str(path)!r} exists and is not a plot table of repro summary (keys provenance, points); "
            "allowed: a new file or one that repro summary wrote"
        )


def write_summary(
    curves: Sequence[str],
    out: str | Path,
    *,
    speedup: Sequence[str] = (),
    claims: str | None = None,
    target: str = "final",
    unit: str = "macs",
    plot_data: str | None = None,
    command: str = "repro summary",
) -> int:
    """Write the flat metrics files of the curves found by ``curves`` (files, run folders or globs), the speedup
    reports ``speedup`` and the claims ledger ``claims`` into the folder ``out`` (removing the files an earlier
    summary wrote there that no input makes now), and with ``plot_data`` every curve point, flat, recorded as
    made by ``command``. Every input is checked before anything is written; returns the number of files in
    ``out``."""
    from ..io import atomic_write_json
    from .speedup import find_curve_files, load_curves

    out = Path(out)
    earlier = _check_out_folder(out)
    if plot_data:
        _check_plot_data(Path(plot_data))
    loaded = load_curves(find_curve_files(curves))
    reports = [_read_json(r, "speedup report") for r in speedup]
    for path, report in zip(speedup, reports):
        _check_report(path, report, target, unit)
    ledger = _read_json(claims, "claims ledger") if claims else None
    if ledger is not None:
        _check_claims(claims, ledger)
    summary = summarize(loaded, reports, ledger, target=target, unit=unit)
    out.mkdir(parents=True, exist_ok=True)
    for name, row in summary.items():
        atomic_write_json(out / f"{name}.json", row)
    for stale in set(earlier) - {out / f"{name}.json" for name in summary}:
        stale.unlink()  # written by an earlier summary: a method, report or verdict no longer in the inputs
    for folder in sorted((d for d in out.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)):
        if not any(folder.iterdir()):
            folder.rmdir()
    if plot_data:
        atomic_write_json(plot_data, {"provenance": _provenance(command), "points": plot_points(loaded)})
    return len(summary)
