"""The sanity gate: a run carries a verdict only if its final FID beats real images degraded by a corruption."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .curves import _points

DEFAULT_GATE = "blur:1.0"


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
