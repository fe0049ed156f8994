"""A scale's results as DVC reads them: small flat metrics files and one flat table of curve points.

``repro summary`` reads the golden curves, the speedup reports and the claims ledger and writes, into one
folder (DVC ``metrics``; ``dvc metrics show`` prints one row per file, ``dvc metrics diff`` compares them):

* ``<method>.json`` per method: the final FID and validation loss (mean and sample sd over seeds, each seed
  at its last evaluation), the number of seeds, and for each speedup report that measures the method,
  ``vs_<baseline>`` (FID reports) or ``vs_<baseline>_<metric>``: the speedup to the report's ``final``
  target in each kept cost unit with its 95% interval (``macs``, ``macs_lo``, ``macs_hi``; null where the
  report has none, e.g. a target not reached);
* ``verdicts.json``: the number of claims with each verdict in the ledger.

and ``--plot-data`` (DVC ``plots``): ``{"provenance": ..., "points": [...]}``, one record per evaluation of
every run (``run``, ``method``, ``seed``, ``step``, ``images``, ``macs``, ``fid``, ``val_loss``), which the
``by_run`` template in ``.dvc/plots/`` draws as one line per run against training MACs.

Everything is recomputed from committed files by arithmetic; nothing here trains or samples.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PLOTTED = ("step", "images", "macs", "fid", "val_loss")
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


def speedups(report: dict, target: str = "final", units: Sequence[str] | None = None) -> dict[str, dict]:
    """``{method: {unit: {"x", "lo", "hi"}}}``: each method's speedup to ``target`` from a speedup report."""
    out: dict[str, dict] = {}
    for method, per_target in sorted(report.get("unit_results", {}).items()):
        per_unit = per_target.get(target)
        if per_unit is None:
            raise ValueError(f"speedup report: target {target!r} not in {sorted(per_target)} of method {method!r}")
        chosen = [u for u in per_unit if units is None or u in units]
        out[method] = {
            u: {"x": per_unit[u].get("ratio"), "lo": per_unit[u].get("ci_low"), "hi": per_unit[u].get("ci_high")}
            for u in chosen
        }
    return out


def summarize(
    curves: Sequence[dict],
    reports: Sequence[dict],
    claims: dict | None = None,
    *,
    target: str = "final",
    units: Sequence[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """``{file stem: flat metrics}``: one entry per method, and ``verdicts`` when ``claims`` is given."""
    finals = final_metrics(curves)
    rows: dict[str, dict[str, Any]] = {}
    for method in sorted({c["method"] for c in curves}):
        row: dict[str, Any] = {}
        for key in FINAL:
            row[key], row[f"{key}_sd"] = finals[key][method]["mean"], finals[key][method]["sd"]
        row["seeds"] = sum(1 for c in curves if c["method"] == method)
        rows[method] = row
    keys: set[str] = set()
    for report in reports:
        baseline, metric = report["baseline"], report.get("metric", "fid")
        key = f"vs_{baseline}" if metric == "fid" else f"vs_{baseline}_{metric}"
        if key in keys:
            raise ValueError(f"speedup reports: two reports with baseline {baseline!r} and metric {metric!r}")
        keys.add(key)
        for method, per_unit in speedups(report, target, units).items():
            if method not in rows:
                raise ValueError(f"speedup report (baseline {baseline!r}): method {method!r} has no curve")
            flat: dict[str, Any] = {}
            for unit, r in per_unit.items():
                flat |= {unit: r["x"], f"{unit}_lo": r["lo"], f"{unit}_hi": r["hi"]}
            rows[method][key] = flat
    if claims is not None:
        if "verdicts" in rows:
            raise ValueError("a method named 'verdicts' clashes with the verdict counts")
        rows["verdicts"] = {k.replace(" ", "_"): v for k, v in claims["counts"].items()}
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
    from .io import git_commit

    return {"command": command, "git_commit": git_commit(), "inputs": "golden curves (arithmetic only)"}


def register_cli(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "summary",
        help="flat metrics and plot files of a scale's goldens, for DVC",
        description="Writes a scale's small flat metrics file (final FID and val loss per method, speedups with "
        "intervals, verdict counts) and a flat table of every curve point for `dvc plots`.",
    )
    p.add_argument("--curves", nargs="+", required=True, help="curve JSON files, run folders or quoted globs")
    p.add_argument("--speedup", nargs="*", default=[], metavar="REPORT", help="speedup reports (repro speedup --out)")
    p.add_argument("--claims", default=None, help="claims ledger JSON whose verdicts are counted (optional)")
    p.add_argument("--target", default="final", help="speedup target of the reports to summarize")
    p.add_argument("--units", nargs="+", default=None, help="cost units to keep (default: every unit of a report)")
    p.add_argument("--out", required=True, help="folder for the metrics files (one per method, and verdicts.json)")
    p.add_argument("--plot-data", default=None, help="also write every curve point here, flat, for dvc plots")
    p.set_defaults(func=_run_cli)
    return p


def _read_json(path: str, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{what} {path!r}: {e}") from None


def _run_cli(args: argparse.Namespace) -> int:
    from .io import atomic_write_json
    from .speedup import find_curve_files, load_curves

    try:
        curves = load_curves(find_curve_files(args.curves))
        reports = [_read_json(r, "speedup report") for r in args.speedup]
        claims = _read_json(args.claims, "claims ledger") if args.claims else None
        summary = summarize(curves, reports, claims, target=args.target, units=args.units)
    except ValueError as e:
        print(f"repro summary: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"repro summary: error: --out {args.out!r} is a file; a folder is needed", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    for stale in set(out.glob("*.json")) - {out / f"{name}.json" for name in summary}:
        stale.unlink()  # a method no longer in the curves
    for name, row in summary.items():
        atomic_write_json(out / f"{name}.json", row)
    if args.plot_data:
        command = "repro summary " + " ".join(sys.argv[2:])
        atomic_write_json(args.plot_data, {"provenance": _provenance(command), "points": plot_points(curves)})
    print(f"wrote {len(summary)} files to {out}" + (f" and {args.plot_data}" if args.plot_data else ""))
    return 0
