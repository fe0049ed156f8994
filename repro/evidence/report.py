"""The ledger: every spec evaluated, the verdict table, ``reports/claims.md`` and ``.json`` (``repro claims``)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..io import atomic_write_text
from .goldens import DEFAULT_GOLDENS, read_audit
from .rules import apply_holm, evaluate_audit, evaluate_experiment
from .schema import Spec
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
