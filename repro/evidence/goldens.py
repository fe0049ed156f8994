"""Looking things up in the goldens: dotted paths into their JSON, a query's scale and file, its scope."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

DEFAULT_GOLDENS = Path("goldens")
RECHECK = {
    "audit": "repro audit && repro claims --only {id}",
    "micro": "dvc repro && repro claims --only {id}",
    "micro-long": "repro campaign --scale micro-long (in pieces) && repro claims --only {id}",
    "small": "nox -s gpu_repro && repro claims --only {id}",
    "smoke": "dvc repro && repro claims --only {id}",
    "paper": "paper-scale golden runs (torchrun, ImageNet-256 latents), then repro claims --only {id}",
}


def first_scale(goldens: Path, scales: Sequence[str], name: str) -> tuple[str, Path] | None:
    """The first of ``scales`` (preferred first) whose ``goldens/<scale>/<name>`` exists, with that path."""
    return next(((s, goldens / s / name) for s in scales if (goldens / s / name).exists()), None)


def read_audit(goldens: Path) -> tuple[Path, Any]:
    """``goldens/audit.json``'s path and content (``None`` while it does not exist)."""
    path = goldens / "audit.json"
    return path, (read_json(path) if path.exists() else None)


def read_json(path: Path) -> Any:
    """A JSON file's data; a file that is not valid JSON (truncated, empty, not UTF-8) is a one-line ``ValueError``
    naming it."""
    try:
        return json.loads(Path(path).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


MISSING = object()
"""What :func:`lookup` returns for a path that is not there."""


def lookup(data: Any, keys: Sequence[str]) -> Any:
    """Follow ``keys`` into nested mappings (and lists, by integer key); :data:`MISSING` if a key is absent."""
    for key in keys:
        if isinstance(data, Mapping) and key in data:
            data = data[key]
        elif isinstance(data, list) and key.isdigit() and int(key) < len(data):
            data = data[int(key)]
        else:
            return MISSING
    return data


def keys_of(value: str | Sequence[str]) -> list[str]:
    return value.split(".") if isinstance(value, str) else list(value)


def show(keys: Sequence[str]) -> str:
    return ".".join(keys)


def methods_of(keys: Sequence[str], report: Mapping[str, Any]) -> set[str]:
    """Methods a query path speaks about: ``unit_results.<m>...``, ``late_slope.<m>``, ``final_values.<m>``,
    ``matched_slope.<m>...`` or ``growth.<m>...``, plus the baseline."""
    sections = ("unit_results", "late_slope", "final_values", "matched_slope", "growth")
    out = {str(keys[1])} if len(keys) > 1 and keys[0] in sections else set()
    if out and report.get("baseline"):
        out.add(str(report["baseline"]))
    return out


def scope_of(scale: str, report: Mapping[str, Any]) -> str:
    training = report.get("training") or {}
    base = training.get(report.get("baseline")) if isinstance(training, Mapping) else None
    if isinstance(base, Mapping) and base.get("epochs") is not None:
        return f"{scale}, {float(base['epochs']):.2g} epochs"
    if isinstance(base, Mapping) and base.get("images") is not None:
        return f"{scale}, {float(base['images']):,.0f} images"
    return scale


DIVERGED = "diverged"
"""``goldens/diverged/<stage>.json``: the campaign's record of a run whose loss turned NaN/Inf (no curve)."""
_STAGE = re.compile(r"@(?P<method>[a-z0-9][a-z0-9.-]*)-(?P<seed>\d+)$")
SCALE_ARG = re.compile(r"--scale[= ](?P<scale>\S+)")
"""The scale a stage's command trains (``--scale NAME``); the campaign reads stages with it too."""


def _diverged_record(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """A diverged-run record and None, or None and why it is broken (naming the file and the field): its ``stage``
    must be a stage name ``<base>@<method>-<seed>`` equal to the file's name, its ``command`` must name a scale."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return None, f"{path}: not a readable JSON record ({' '.join(str(e).split())})"
    if not isinstance(record, Mapping):
        return None, f"{path}: holds a {type(record).__name__}; must be a JSON object with stage and command"
    stage, command = record.get("stage", MISSING), record.get("command", MISSING)
    for field, value in (("stage", stage), ("command", command)):
        if value is MISSING:
            return None, f"{path}: {field} is missing; must be a string"
        if not isinstance(value, str):
            return None, f"{path}: {field}={json.dumps(value)[:80]} is not allowed; must be a string"
    if _STAGE.search(stage) is None:
        return (
            None,
            f"{path}: stage={json.dumps(stage)[:80]} is not allowed; must be a stage name <base>@<method>-<seed>",
        )
    if stage != path.stem:
        return None, f"{path}: stage={json.dumps(stage)[:80]} is not allowed; must be the file's name, {path.stem!r}"
    if SCALE_ARG.search(command) is None:
        return None, f"{path}: command={json.dumps(command)[:80]} is not allowed; must name the scale (--scale NAME)"
    return record, None


def broken_diverged_records(goldens: Path) -> list[str]:
    """Why each broken record of ``goldens/diverged/`` is broken, one line each naming its file and field."""
    return [why for path in sorted((goldens / DIVERGED).glob("*.json")) if (why := _diverged_record(path)[1])]


def diverged_runs(goldens: Path, scale: str, methods: set[str]) -> list[str]:
    """The runs ``<method>-s<seed>`` of ``scale`` that diverged (``goldens/diverged/``), of ``methods`` only (all if
    empty). A record that cannot be read counts as diverged, named by its file: it never hides a failure (and
    :func:`broken_diverged_records` says why it is broken)."""
    out = []
    for path in sorted((goldens / DIVERGED).glob("*.json")):
        record, broken = _diverged_record(path)
        if record is None:
            out.append(f"{path.name} (unreadable record)")
            continue
        name, at = _STAGE.search(record["stage"]), SCALE_ARG.search(record["command"])
        if at["scale"] != scale:
            continue
        if not methods or name["method"] in methods:
            out.append(f"{name['method']}-s{name['seed']}")
    return out
