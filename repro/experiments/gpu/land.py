"""Landing a GPU campaign's outputs as the small scale's goldens (``python -m repro.experiments.gpu land OUT``).

``land`` copies ``curves/*.json`` to ``goldens/small/runs/`` (where ``repro rerun --scale small`` and
``nox -s gpu_repro`` compare re-runs with them) and the record, plan and bench beside them; the ``long`` /
``tokens`` bundles go to ``goldens/small/long/`` and ``goldens/small/tokens/`` with their ladders in
``goldens/small/speedup-long.json`` and ``speedup-tokens.json`` (read by the ledger at scale small). A dry run, or
a record that did not run on CUDA, is refused, so CPU numbers never become goldens.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .axes import LONG, LONG_FACTOR, SCALES, TARGET_BASELINE, TOKENS
from .paths import GOLDENS, MICRO_REFERENCE

LANDED = ("campaign.json", "plan.json", "bench.json")


def land(out: str | os.PathLike, goldens: str | os.PathLike = GOLDENS) -> list[Path]:
    """Copy a GPU campaign's outputs into ``goldens``: ``curves/*.json`` -> ``runs/``, the record, plan and bench
    beside it. Refuses a dry run and a record that did not run on CUDA, so CPU numbers never become goldens."""
    from ...evidence.speedup import load_curves
    from ...io import atomic_write_bytes

    out, goldens = Path(out), Path(goldens)
    record_path = out / "campaign.json"
    if not record_path.is_file():
        raise FileNotFoundError(f"land: {out} has no campaign.json; pass the folder given to `campaign --out`")
    try:
        record = json.loads(record_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"land: {record_path} is not valid JSON ({exc})") from None
    prov = (record.get("provenance") if isinstance(record, dict) else None) or {}
    if not isinstance(prov, dict):
        raise ValueError(f"land: {record_path}: provenance={prov!r} is not allowed; must be a mapping")
    if prov.get("dry_run") is not False or not prov.get("cuda") or str(prov.get("device", "cpu")).startswith("cpu"):
        raise ValueError(
            f"land: {record_path} is from device {prov.get('device')!r} with dry_run={prov.get('dry_run')!r}; "
            "only a GPU campaign (dry_run false, CUDA) lands as goldens"
        )
    curves = sorted((out / "curves").glob("*.json"))
    load_curves(curves)  # each checked before anything is written
    written = []
    for c in curves:
        written.append(atomic_write_bytes(goldens / "runs" / c.name, c.read_bytes()))
    if curves or (out / "bench.json").is_file():  # a call of only the long / tokens parts keeps these records
        for name in LANDED:
            if (out / name).is_file():
                written.append(atomic_write_bytes(goldens / name, (out / name).read_bytes()))
    written += land_axes(out, goldens)
    return written


def land_axes(out: Path, goldens: Path) -> list[Path]:
    """The long / tokens bundles into ``goldens/long/`` and ``goldens/tokens/``, with the call's record and plan
    beside each, and their ladders (:func:`land_parts`)."""
    from ...io import atomic_write_bytes

    written = land_parts(out, goldens, reference=MICRO_REFERENCE)
    for part in ("long", "tokens"):
        if (out / f"{part}.json").is_file():
            for name in ("campaign.json", "plan.json"):
                if (out / name).is_file():
                    written.append(atomic_write_bytes(goldens / part / name, (out / name).read_bytes()))
    return written


def land_parts(out: str | Path, goldens: str | Path, reference: str | Path | None = None,
               allow_cpu: bool = False) -> list[Path]:  # fmt: skip
    """Unpack each part bundle in ``out`` into ``goldens/<part>/`` (``runs/<method>-s<seed>.json``, ``targets.json``,
    ``part.json``: everything but the curves) and write its ladder to ``goldens/speedup-<part>.json``. Every curve
    is checked, and every ladder computed, before anything is written. A bundle made on the CPU or by a dry run is
    refused unless ``allow_cpu`` (a test landing a dry run in its own folder)."""
    from ...evidence.speedup import load_curves
    from ...io import atomic_write_bytes, atomic_write_json

    out, goldens = Path(out), Path(goldens)
    ready = []
    for part in (LONG, TOKENS):
        path = out / f"{part}.json"
        if not path.is_file():
            continue
        doc = json.loads(path.read_text())
        if doc.get("scale") != SCALES[part]:
            raise ValueError(f"land: {path}: scale {doc.get('scale')!r}, expected {SCALES[part]!r}")
        prov = doc.get("provenance") or {}
        if not allow_cpu and (prov.get("dry_run") is not False or str(prov.get("device", "cpu")).startswith("cpu")):
            where = f"device {prov.get('device')!r} with dry_run={prov.get('dry_run')!r}"
            raise ValueError(f"land: {path} is from {where}; only a GPU campaign's parts land as goldens")
        curves = []
        with tempfile.TemporaryDirectory() as tmp:  # each curve checked by the ladder's own loader
            for rid, r in doc.get("runs", {}).items():
                if not r.get("curve"):
                    continue
                (Path(tmp) / "curve.json").write_text(json.dumps(r["curve"]))
                try:
                    load_curves([Path(tmp) / "curve.json"], include_incomplete=True)
                except ValueError as e:
                    raise ValueError(f"land: {path}: run {rid}: {e}") from None
                if r["curve"].get("scale") != SCALES[part]:
                    raise ValueError(f"land: {path}: run {rid} is of scale {r['curve'].get('scale')!r}")
                curves.append((r["curve"], r.get("status")))
        usable = [c for c, status in curves if status == "done" and c.get("complete") is True]
        ready.append((part, doc, [c for c, _ in curves], ladder(part, usable, reference)))
    written: list[Path] = []
    for part, doc, curves, report in ready:
        folder = goldens / part
        for curve in curves:
            name = f"{curve['method']}-s{curve['seed']}.json"
            written.append(atomic_write_bytes(folder / "runs" / name, json.dumps(curve, indent=1).encode() + b"\n"))
        if doc.get("targets"):
            written.append(atomic_write_json(folder / "targets.json", doc["targets"]))
        record = {**doc, "runs": {rid: {k: v for k, v in r.items() if k != "curve"} for rid, r in doc["runs"].items()}}
        written.append(atomic_write_json(folder / "part.json", record))
        if report is not None:
            written.append(atomic_write_json(goldens / f"speedup-{part}.json", report))
    return written


def ladder(part: str, curves: Sequence[dict[str, Any]], reference: str | Path | None = None) -> dict[str, Any] | None:
    """The ladder (one rung per DiT evaluation, in MACs, iterations and GPU seconds) over a part's finished curves
    (done, not cut), DiT the baseline; the long part also reports the growth from the core budget to DiT's final
    FID. None while DiT or the other method has none."""
    from ...evidence.speedup import DEFAULT_GATE, gate_from_reference, round_floats, speedup_report

    methods = {c["method"] for c in curves}
    if TARGET_BASELINE not in methods or len(methods) < 2:
        return None
    gate = gate_from_reference(reference, DEFAULT_GATE) if reference and Path(reference).is_file() else None
    core = min(c["points"][-1]["step"] for c in curves if c["method"] == TARGET_BASELINE) / LONG_FACTOR
    dit_steps = {p["step"] for c in curves if c["method"] == TARGET_BASELINE for p in c["points"] if "fid" in p}
    growth = [(str(round(core)), "final")] if part == LONG and round(core) in dit_steps else []
    report = speedup_report(curves, baseline=TARGET_BASELINE, ks=(1.0,), gate=gate,
                            ladder_units=["macs", "iterations", "seconds"], growth_pairs=growth)  # fmt: skip
    report["inputs"] = [{"path": f"{part}/runs/{c['method']}-s{c['seed']}.json", "run_id": c["run_id"]} for c in curves]
    return round_floats(report)
