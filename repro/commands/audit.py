"""``repro audit``: parameters and MACs counted on the meta device, and the published speedups rebuilt
(:mod:`repro.evidence.audit`); ``--check`` recounts and compares with the committed audit."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..cli import add_command


def register(subparsers: Any) -> None:
    from ..evidence.audit import DEFAULT_OUT

    p = add_command(
        subparsers,
        "audit",
        run,
        "Counts parameters and MACs of the DiT sizes, TREAD routes, adaLN and the SD-VAE on the meta "
        "device and rebuilds the published speedup factors; writes goldens/audit.json.",
    )
    p.add_argument("--out", default=str(DEFAULT_OUT), help="where to write the audit (default: %(default)s)")
    p.add_argument(
        "--check",
        action="store_true",
        help="recount and compare with --out instead of writing it; exit 1 on any difference",
    )


def run(args: argparse.Namespace) -> int:
    from ..evidence import audit as A

    audit = A.run_audit()
    if args.check:
        if not Path(args.out).exists():
            print(f"audit: {args.out} does not exist; run `repro audit` to write it", file=sys.stderr)
            return 1
        diffs = A.diff_audits(A.load_audit(args.out), json.loads(json.dumps(audit)))
        for d in diffs:
            print(f"audit drift: {d}", file=sys.stderr)
        if diffs:
            return 1
        print(f"audit: {args.out} matches a fresh count")
        return 0
    print("\n".join(A.summary_lines(audit)))
    A.write_audit(audit, args.out, command=args.invocation)
    print(f"wrote {args.out}")
    return 0
