"""What a piece of a long campaign leaves in git about a run it paused, and the check that a re-made run repeats it.

A run longer than a piece resumes from its checkpoint (``runs/<scale>/<run>/checkpoints/last.pt``, about 33 MB at
micro), which the next piece finds in runs/ or restores from a kept resume state (:mod:`repro.experiments.resume`,
whose check is that a record here names its checkpoint). Where neither exists the run starts over; being seeded,
it repeats the same curve. So that this is checked rather than assumed, and so that a lost piece leaves its numbers
behind, the campaign writes a small record of every paused run into git beside the run's
curve (``goldens/<scale>/pieces/<method>-s<seed>-at-<step>.json``: the curve's points so far, the step and training
seconds, the checkpoint's sha256, the CPU model and boot of the machine). When a run pauses again or finishes, its
points are compared with every earlier record of it at their common steps (validation loss and FID; bitwise on the
same CPU model and thread count, as the core campaign's re-checks are) and the campaign log says what agreed.
tests/test_golden.py holds every committed record against its run's committed curve.
"""

from __future__ import annotations

import json
import math
import shlex
import time
from pathlib import Path
from typing import Any

from ..io import atomic_write_json

PIECES = "pieces"
"""The folder beside a scale's ``runs/`` curves that holds the records of paused runs."""
METRICS = ("val_loss", "fid")
"""The values of a point compared between a record and a later curve of the same run."""


def _option(cmd: str, name: str) -> str | None:
    words = shlex.split(cmd)
    for i, word in enumerate(words[:-1]):
        if word == name:
            return words[i + 1]
    return None


def run_files(cmd: str) -> tuple[Path, Path] | None:
    """A run command's run directory and committed curve (``--out``, ``--curve``), or None when it names neither
    (a command that is not ``repro train``)."""
    out, curve = _option(cmd, "--out"), _option(cmd, "--curve")
    if out is None or curve is None:
        return None
    return Path(out), Path(curve)


def records_dir(curve: Path) -> Path:
    """``goldens/<scale>/runs/<run>.json`` -> ``goldens/<scale>/pieces``."""
    return curve.parent.parent / PIECES


def records_of(root: Path, cmd: str) -> list[tuple[Path, dict[str, Any]]]:
    """The committed records of the run that ``cmd`` trains, in step order."""
    files = run_files(cmd)
    if files is None:
        return []
    folder = root / records_dir(files[1])
    found = []
    for path in sorted(folder.glob(f"{files[1].stem}-at-*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and isinstance(record.get("points"), list):
            found.append((path, record))
    return sorted(found, key=lambda item: (item[1].get("step", 0), len(item[0].name), item[0].name))  # -at-7, -at-7-2


def boot_id() -> str | None:
    """This boot of the machine (Linux's random boot id; None elsewhere), written into pause records and resume
    manifests: two pieces with the same id ran on one machine without a restart between them."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def checkpoint_state(path: Path) -> dict[str, Any]:
    """The step, training seconds and curve points a checkpoint of ``repro train`` holds (its weights are not read
    into a model: only the bookkeeping), and its sha256."""
    import torch

    from ..provenance import sha256_file

    ck = torch.load(path, map_location="cpu", weights_only=True)
    return {
        "step": int(ck["step"]),
        "seconds": float(ck["seconds"]),
        "points": json.loads(ck["points"]),
        "checkpoint_sha256": sha256_file(path),
    }


def write_record(root: Path, stage_name: str, cmd: str) -> Path | None:
    """After ``cmd``'s run paused (exit 75): its record in git, from the checkpoint it wrote; None when the command
    names no run directory and curve, or the checkpoint is missing."""
    from ..provenance import git_commit
    from ..runtime import cpu_model

    files = run_files(cmd)
    if files is None:
        return None
    ckpt = root / files[0] / "checkpoints" / "last.pt"
    if not ckpt.exists():
        return None
    state = checkpoint_state(ckpt)
    import torch

    record = {
        "stage": stage_name,
        "command": cmd,
        "event": "paused",
        "step": state["step"],
        "seconds": state["seconds"],
        "checkpoint_sha256": state["checkpoint_sha256"],
        "written_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpu_model": cpu_model(), "boot_id": boot_id(), "torch": torch.__version__},
        "git_commit": git_commit(),
        "points": state["points"],
    }
    folder, name = root / records_dir(files[1]), f"{files[1].stem}-at-{state['step']}"
    path, n = folder / f"{name}.json", 2
    while path.exists() and _sha_of(path) != record["checkpoint_sha256"]:  # another pause at this step: kept
        path, n = folder / f"{name}-{n}.json", n + 1
    atomic_write_json(path, record)
    return path


def _sha_of(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("checkpoint_sha256")
    except (OSError, ValueError, AttributeError):
        return None


def compare_points(earlier: list[dict[str, Any]], later: list[dict[str, Any]]) -> dict[str, Any]:
    """The points of two curves of one run at their common steps: per metric, how many were compared, whether all
    are bitwise equal, and the largest relative difference."""
    by_step = {p["step"]: p for p in later if isinstance(p, dict) and "step" in p}
    common = [(p, by_step[p["step"]]) for p in earlier if isinstance(p, dict) and p.get("step") in by_step]
    result: dict[str, Any] = {"common_steps": len(common), "up_to": max((a["step"] for a, _ in common), default=None)}
    for key in METRICS:
        pairs = [(a[key], b[key]) for a, b in common if key in a and key in b]
        diffs = [
            0.0 if x == y else (abs(x - y) / max(abs(x), abs(y)) if math.isfinite(x) and math.isfinite(y) else math.inf)
            for x, y in pairs
        ]
        result[key] = {
            "compared": len(pairs),
            "bitwise": all(x == y for x, y in pairs),
            "max_rel_diff": max(diffs, default=0.0),
        }
    return result


def describe(path: Path, comparison: dict[str, Any]) -> str:
    """One line on what a later curve of a run repeats of a record."""
    if not comparison["common_steps"]:
        return f"{path.name}: no common step yet"
    parts = []
    for key in METRICS:
        c = comparison[key]
        if c["compared"]:
            same = "bitwise" if c["bitwise"] else f"max relative difference {c['max_rel_diff']:.2g}"
            parts.append(f"{key} {same} at {c['compared']}")
    return f"{path.name}: {comparison['common_steps']} common steps up to {comparison['up_to']}: " + ", ".join(parts)


def check_repeats(root: Path, cmd: str, points: list[dict[str, Any]], skip: Path | None = None) -> list[str]:
    """Lines comparing ``points`` (the run's curve now) with every earlier record of the run but ``skip``."""
    return [
        describe(path, compare_points(rec["points"], points)) for path, rec in records_of(root, cmd) if path != skip
    ]
