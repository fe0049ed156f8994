"""``repro speedup``: speedups to a target metric from training curves, with intervals and tests
(:func:`repro.evidence.speedup.speedup_report`)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..cli import add_command


def register(subparsers: Any) -> None:
    from ..evidence import speedup
    from ..evidence.speedup import DEFAULT_GATE, METRICS, UNITS

    p = add_command(subparsers, "speedup", run, (speedup.__doc__ or "").splitlines()[0])
    p.add_argument(
        "--curves",
        nargs="+",
        required=True,
        help="curve.json files, run directories or quoted globs (e.g. 'runs/micro/*/curve.json')",
    )
    p.add_argument("--baseline", default="dit", help="method the others are compared with (default: dit)")
    p.add_argument("--out", required=True, help="report JSON path")
    p.add_argument("--plot", default=None, help="PNG path for metric vs cost (optional)")
    p.add_argument(
        "--ladder-plot", default=None, help="PNG path for the speedup at each rung of the ladder against the "
        "baseline's training length, with TREAD's published ladder (optional)"
    )  # fmt: skip
    p.add_argument("--plot-unit", default="macs", choices=list(UNITS), help="x axis of the plot (default: macs)")
    p.add_argument("--metric", default="fid", choices=list(METRICS))
    p.add_argument("--units", nargs="+", default=list(UNITS), choices=list(UNITS))
    p.add_argument("--k", nargs="+", type=float, default=[1.0], help="test 'speedup >= k' for each k (default: 1)")
    p.add_argument(
        "--growth",
        nargs="*",
        default=[],
        metavar="FROM:TO",
        help="report how the speedup grows from one target to another (named or a ladder rung), e.g. 3000:final",
    )
    p.add_argument(
        "--decompose",
        nargs="*",
        default=[],
        metavar="METHOD=VIA",
        help="split METHOD's speedup at each rung into VIA's over the baseline and METHOD's over VIA, e.g. "
        "tread-edm=dit-edm (the objective's and the routing's factors); each rung in the ladder units is also split "
        "into iterations x per-step cost",
    )
    p.add_argument(
        "--ladder-units",
        nargs="*",
        default=["macs"],
        choices=list(UNITS),
        help="units of the ladder of targets, one rung per baseline evaluation (default: macs; none: no ladder)",
    )
    p.add_argument(
        "--anchor-unit",
        default="iterations",
        choices=list(UNITS),
        help="unit placing the 'third' target and the late slopes (default: iterations)",
    )
    p.add_argument(
        "--train-size",
        type=int,
        default=None,
        help="training-set size, for the training length in epochs of curves that do not record it",
    )
    p.add_argument(
        "--gate-reference",
        default=None,
        help="reference report (e.g. goldens/micro/reference.json) whose corruption ladder sets the sanity gate",
    )
    p.add_argument(
        "--gate",
        default=DEFAULT_GATE,
        help=f"corruption of the ladder a run's final FID must beat, kind:strength (default: {DEFAULT_GATE})",
    )
    p.add_argument(
        "--allow-no-runs",
        action="store_true",
        help="a comparison of a campaign in progress: when the baseline or every other method has no curve yet, "
        "write a report without results (its claims stay pending) instead of failing",
    )
    p.add_argument(
        "--include-incomplete",
        action="store_true",
        help="also use curves of runs that stopped before their last step (complete: false)",
    )


def _pair(flag: str, text: str, sep: str, shape: str, example: str) -> tuple[str, str]:
    """``A<sep>B`` of ``flag``'s value as ``(A, B)``, both non-empty."""
    first, found, second = text.partition(sep)
    if not found or not first or not second:
        raise ValueError(f"{flag} {text!r} is not allowed; must be {shape}, e.g. {example}")
    return first, second


def run(args: argparse.Namespace) -> int:
    from ..evidence import speedup

    speedup.check_output("--out", args.out)
    speedup.check_output("--plot", args.plot)
    speedup.check_output("--ladder-plot", args.ladder_plot)
    warn = lambda msg: print(f"note: {msg}", file=sys.stderr)  # noqa: E731
    files = speedup.find_curve_files(args.curves, warn=warn, allow_none=args.allow_no_runs)
    curves = speedup.load_curves(files, include_incomplete=args.include_incomplete)
    methods = {c["method"] for c in curves}
    why = None
    if args.baseline not in methods:
        why = f"the baseline {args.baseline!r} has no curve in --curves {' '.join(args.curves)}"
    elif methods == {args.baseline}:
        why = f"no method but the baseline {args.baseline!r} has a curve in --curves {' '.join(args.curves)}"
        if not args.allow_no_runs:
            raise ValueError(f"--curves: {why}: nothing to compare (--allow-no-runs writes a report without results)")
    if args.allow_no_runs and why is not None:
        speedup.check_replaceable("--out", args.out, ("baseline", "unit_results"), "a speedup report")
        empty = speedup.no_runs_report(args.baseline, args.metric, args.units, args.k, why)
        speedup.write_json(empty, args.out)
        if args.baseline not in methods:
            warn(f"{why}; wrote {args.out} without results" + (f" and no {args.plot}" if args.plot else ""))
            return 0
        # the baseline's curves alone: its plots still draw them (and the ladder plot the published ladder), so a
        # pipeline stage that declares the plots is complete
        if args.plot:
            speedup.plot_curves(curves, args.plot_unit, args.plot, metric=args.metric)
        if args.ladder_plot:
            speedup.plot_ladder(empty, args.ladder_plot)
        drawn = " and ".join(p for p in (args.plot, args.ladder_plot) if p)
        warn(f"{why}; wrote {args.out} without results" + (f", {drawn} with the baseline alone" if drawn else ""))
        return 0
    record = speedup.build_report(
        curves,
        baseline=args.baseline,
        units=args.units,
        metric=args.metric,
        ks=args.k,
        anchor_unit=args.anchor_unit,
        train_size=args.train_size,
        gate=speedup.gate_from_reference(args.gate_reference, args.gate) if args.gate_reference else None,
        ladder_units=[u for u in args.ladder_units if u in args.units],
        growth_pairs=[_pair("--growth", g, ":", "FROM:TO", "3000:final") for g in args.growth],
        decompose=[_pair("--decompose", d, "=", "METHOD=VIA", "tread-edm=dit-edm") for d in args.decompose],
    )
    record.inputs = [{"path": os.path.relpath(f), "run_id": c["run_id"]} for f, c in zip(files, curves)]
    report = record.to_json()
    speedup.check_replaceable("--out", args.out, ("baseline", "unit_results"), "a speedup report")
    speedup.write_json(report, args.out)
    if args.ladder_plot:
        speedup.plot_ladder(
            report, args.ladder_plot, unit=report["ladder_units"][0] if report["ladder_units"] else "macs"
        )
    if args.plot:
        named = {t: report["targets"][t] for t in ("final", "third")}
        speedup.plot_curves(curves, args.plot_unit, args.plot, metric=args.metric, targets=named)
    for method, per_target in report["unit_results"].items():
        for target, per_unit in per_target.items():
            if target == "ladder":  # a line per rung would drown the rest; the report holds them
                continue
            for unit, r in per_unit.items():
                ratio = "null" if r["ratio"] is None else f"{r['ratio']:.3g}x"
                ci = "" if r["ci_low"] is None else f" [{r['ci_low']:.3g}, {r['ci_high']:.3g}]"
                if r["mde"]:
                    ci += f", detectable at 80% power: x{r['mde']['factor']:.3g} either way"
                print(
                    f"{method} vs {args.baseline}, {target} target, {unit}: {ratio}{ci} "
                    f"(reached {r['reached']}; {r['status']})"
                )
    print(f"wrote {args.out}" + (f" and {args.plot}" if args.plot else ""))
    return 0
