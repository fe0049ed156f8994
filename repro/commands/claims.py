"""``repro claims``: every claim spec evaluated, the verdict table printed and the ledger written
(:mod:`repro.evidence.report`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..cli import add_command


def register(subparsers: Any) -> None:
    from ..evidence.goldens import DEFAULT_GOLDENS
    from ..evidence.report import DEFAULT_REPORTS
    from ..evidence.schema import DEFAULT_SPECS

    p = add_command(
        subparsers,
        "claims",
        run,
        "Evaluates every spec under specs/ (structure checks run pytest; audit checks read "
        "goldens/audit.json; experiment checks query golden runs), prints the verdicts and writes "
        "reports/claims.md and reports/claims.json. Exits 1 when a check fails or a verdict differs "
        "from the committed reports/claims.json, 2 on an unknown --only id.",
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


def run(args: argparse.Namespace) -> int:
    from ..evidence.goldens import read_json
    from ..evidence.report import drift, evaluate_all, render_table, write_reports
    from ..evidence.schema import SpecError, load_specs
    from ..evidence.verdicts import CHECK_FAILED

    specs_dir, goldens, reports = Path(args.specs), Path(args.goldens), Path(args.reports)
    try:
        specs = load_specs(specs_dir)
    except SpecError as e:  # bad input: a one-line error, exit status 2 (1 is a failed check or a drifted verdict)
        raise ValueError(str(e)) from None
    only = set(args.only) if args.only else None
    if only:
        unknown = sorted(only - {s.id for s in specs})
        if unknown:  # bad input: one line and exit status 2, as for every command
            raise ValueError(f"--only: unknown id(s) {unknown}; allowed: {', '.join(s.id for s in specs)}")
    results = evaluate_all(specs, goldens, Path(args.root), run_tests=not args.skip_pytest, only=only)
    specs = [s for s in specs if only is None or s.id in only]
    print(render_table(results))
    if args.skip_pytest:
        skipped = [s.id for s in specs if s.kind == "structure"]
        print(f"(structure checks skipped: {', '.join(skipped) or 'none'})")
    for r in results:
        for line in r.evidence[1:]:
            print(f"  {r.spec.id}: {line}")
    failed = [r.spec.id for r in results if r.verdict == CHECK_FAILED]
    ledger_path = reports / "claims.json"
    try:
        committed = read_json(ledger_path) if ledger_path.exists() else None
    except ValueError as e:
        if not (args.update and not (only is not None or args.skip_pytest)):
            raise ValueError(f"{e}; restore it (git checkout {ledger_path}) or rewrite it with --update") from None
        print(f"claims: {e}; rewritten by --update", file=sys.stderr)
        committed = None
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
