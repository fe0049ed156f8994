"""The ledger: every spec evaluated, the verdict table, ``reports/claims.md`` and ``.json``, and ``repro claims``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..io import atomic_write_text
from .goldens import DEFAULT_GOLDENS, read_audit, read_json
from .rules import apply_holm, evaluate_audit, evaluate_experiment
from .schema import DEFAULT_SPECS, Spec, SpecError, load_specs
from .structure import evaluate_structure
from .verdicts import CHECK_FAILED, OUT_OF_SCOPE, VERDICTS, Result

DEFAULT_REPORTS = Path("reports")


def evaluate_all(
    specs: Sequence[Spec],
    goldens: Path = DEFAULT_GOLDENS,
    root: Path = Path("."),
    run_tests: bool = True,
    only: set[str] | None = None,
) -> list[Result]:
    """A result per spec of ``specs`` (of ``only``, where given), in their order; structure checks run only with
    ``run_tests``. The experiment verdicts are decided together, on Holm-adjusted p-values per scale
    (:func:`~.rules.apply_holm`) over every experiment spec of ``specs``, so that a verdict does not depend on which
    claims were asked for."""
    audit_path, audit = read_audit(goldens)
    by_id: dict[str, Result] = {}
    structure = [s for s in specs if s.kind == "structure" and (only is None or s.id in only)]
    if run_tests:
        by_id.update({r.spec.id: r for r in evaluate_structure(structure, root)})
    for spec in specs:
        if spec.kind != "experiment" and only is not None and spec.id not in only:
            continue
        if spec.kind == "out-of-scope":
            by_id[spec.id] = Result(spec, OUT_OF_SCOPE, [spec.reason], "", None)
        elif spec.kind == "audit":
            by_id[spec.id] = evaluate_audit(spec, audit, audit_path)
        elif spec.kind == "experiment":
            by_id[spec.id] = evaluate_experiment(spec, goldens)
    apply_holm(list(by_id.values()))
    return [by_id[s.id] for s in specs if s.id in by_id and (only is None or s.id in only)]


def ledger(results: Sequence[Result]) -> dict[str, Any]:
    counts = {v: 0 for v in (*VERDICTS, CHECK_FAILED)}
    for r in results:
        counts[r.verdict] += 1
    return {
        "verdicts": list(VERDICTS),
        "counts": {k: v for k, v in counts.items() if v},
        "claims": [r.to_json() for r in results],
    }


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(results: Sequence[Result]) -> str:
    led = ledger(results)
    lines = [
        "# Claims ledger",
        "",
        "Written by `repro claims` from `specs/`, `goldens/audit.json` and the golden runs under `goldens/`. "
        "Counts: " + ", ".join(f"{n} {v}" for v, n in led["counts"].items()) + ".",
        "",
        "| claim | kind | verdict | evidence (first line) |",
        "|---|---|---|---|",
    ]
    for r in results:
        first = r.evidence[0] if r.evidence else ""
        lines.append(f"| `{r.spec.id}` | {r.spec.kind} | **{r.text}** | {_cell(first)} |")
    lines += [""]
    for r in results:
        s = r.spec
        lines += [
            f"## {s.id}: {r.text}",
            "",
            f"- claim: {s.claim}",
            f"- source: {s.source}",
            f"- kind: {s.kind}" + (f"; scale: {r.scale}" if r.scale else ""),
        ]
        lines += ["- evidence:"] + [f"  - {_cell(e)}" for e in r.evidence]
        if s.note:
            lines.append(f"- note: {_cell(s.note)}")
        if r.recheck:
            lines.append(f"- re-check: `{r.recheck}`")
        lines.append("")
    return "\n".join(lines)


def render_table(results: Sequence[Result]) -> str:
    width = max(len(r.spec.id) for r in results)
    vwidth = max(len(r.text) for r in results)
    rows = [f"{'claim':<{width}}  {'kind':<12}  {'verdict':<{vwidth}}  evidence"]
    for r in results:
        first = r.evidence[0] if r.evidence else ""
        rows.append(f"{r.spec.id:<{width}}  {r.spec.kind:<12}  {r.text:<{vwidth}}  {first}")
    return "\n".join(rows)


def drift(results: Sequence[Result], committed: Mapping[str, Any] | None, only: set[str] | None = None) -> list[str]:
    """Claims whose verdict differs from the committed ledger (or that it lacks / has in excess)."""
    if committed is None:
        return ["no committed ledger; run `repro claims --update` to write it"]
    old = {c["id"]: c["verdict"] for c in committed.get("claims", [])}
    new = {r.spec.id: r.text for r in results}
    out = []
    for cid in sorted(set(old) | set(new)):
        if only is not None and cid not in only:
            continue
        if cid not in new:
            if only is None:
                out.append(f"{cid}: in the committed ledger, but no result now")
        elif old.get(cid) != new[cid]:
            out.append(f"{cid}: committed {old.get(cid, '(absent)')!r}, now {new[cid]!r}")
    return out


def write_reports(results: Sequence[Result], reports: Path) -> None:
    atomic_write_text(reports / "claims.json", json.dumps(ledger(results), indent=2) + "\n")
    atomic_write_text(reports / "claims.md", render_markdown(results))


def _run_cli(args: argparse.Namespace) -> int:
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


def register_cli(subparsers: Any) -> argparse.ArgumentParser:
    from ..cli import add_command

    p = add_command(
        subparsers,
        "claims",
        _run_cli,
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
    return p
