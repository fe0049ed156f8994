"""The record of one GPU campaign call: its clock and the deadline its budget sets, the status and seconds of every
part (written after each), its provenance, and the tee that copies what it prints into ``log.txt``."""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...provenance import provenance
from .paths import PARAMS, REPO_ROOT


class Tee:
    """A stream that writes to each of ``streams`` (the terminal's, then ``log.txt``)."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for s in self.streams:
            s.write(text)
        return len(text)

    def flush(self):
        for s in self.streams:
            s.flush()

    def isatty(self):
        return False

    def __getattr__(self, name):  # fileno, encoding, ...: those of the terminal stream
        return getattr(self.streams[0], name)


def _nvidia_smi() -> dict[str, str] | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout.strip().splitlines()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    if not out or out[0].count(",") != 2:
        return None
    name, driver, memory = (x.strip() for x in out[0].split(","))
    return {"name": name, "driver": driver, "memory": memory}


def source_sha256() -> str:
    """One hash over the package's sources and params.yaml: names the code that ran where git is absent."""
    h = hashlib.sha256()
    files = sorted((REPO_ROOT / "repro").rglob("*.py")) + [PARAMS]
    for f in files:
        if f.is_file():
            h.update(str(f.relative_to(REPO_ROOT)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def campaign_provenance(device, precision: str, seed: int, command: str, dry_run: bool) -> dict[str, Any]:
    import torch

    prov = provenance(
        command,
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()})",
        precision=precision,
        seed=seed,
        source_sha256=source_sha256(),
        dry_run=dry_run,
        cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        tf32=device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32,
        host_cpus=os.cpu_count(),
    )
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        prov.update({"gpu_memory_gib": props.total_memory / 2**30, "multiprocessors": props.multi_processor_count,
                     "compute_capability": f"{props.major}.{props.minor}", "nvidia_smi": _nvidia_smi()})  # fmt: skip
    return prov


class Campaign:
    """State of one campaign call: the output folder, the clock, and the record written after every part.

    The budget is a deadline, ``budget_s`` after the start on ``clock`` (:func:`time.monotonic`), that the campaign
    polls between its parts (:meth:`fits`): a part that would not fit in what is left, or comes after the deadline,
    is not started but recorded as skipped with its reason, and the call ends with what finished written. Nothing
    interrupts a part; a training run stops itself at its time cap (``train.max_seconds``, checked between steps),
    which the campaign sets from the same clock."""

    def __init__(self, out: Path, budget_s: float, command: str, clock: Callable[[], float] = time.monotonic):
        self.out, self.budget_s, self.command, self.clock = out, budget_s, command, clock
        self.t0 = clock()
        self.deadline = self.t0 + budget_s
        self.ran_out_s: float | None = None  # when a part was first skipped for want of budget
        self.record: dict[str, Any] = {"command": command, "budget_s": budget_s, "parts": [], "status": "running"}

    def elapsed(self) -> float:
        return self.clock() - self.t0

    def left(self) -> float:
        return self.deadline - self.clock()

    def save(self) -> None:
        from ...io import atomic_write_json

        self.record["elapsed_s"] = round(self.elapsed(), 3)
        atomic_write_json(self.out / "campaign.json", self.record)

    def fits(self, name: str, need_s: float = 0.0) -> bool:
        """Whether part ``name``, about ``need_s`` seconds, fits before the deadline; if not, it is recorded as
        skipped for want of budget (and the campaign as cut)."""
        left = self.left()
        if left > 0 and left >= need_s:
            return True
        if left <= 0:
            reason = f"the campaign's budget of {self.budget_s:g} s ran out after {self.elapsed():.1f} s"
        else:
            reason = f"{left:.0f} s of the budget left, about {need_s:.0f} s needed"
        self.skip(name, reason, budget=True)
        return False

    @contextlib.contextmanager
    def part(self, name: str):
        """Run one part; its status (done, failed, cut) and seconds are recorded and saved whatever happens."""
        entry = {"part": name, "status": "running", "started_s": round(self.elapsed(), 3)}
        self.record["parts"].append(entry)
        self.save()
        t = self.clock()
        try:
            yield entry
            entry["status"] = "done" if entry["status"] == "running" else entry["status"]
        except Exception as exc:  # one part's failure must not lose the others' evidence
            entry["status"] = "failed"
            entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["traceback"] = traceback.format_exc(limit=8)
            print(f"part {name!r} failed: {entry['error']}", file=sys.stderr)
        finally:
            entry["seconds"] = round(self.clock() - t, 3)
            self.save()

    def skip(self, name: str, reason: str, budget: bool = False) -> None:
        """Record part ``name`` as not started, with ``reason``; ``budget``: for want of the campaign's budget."""
        if budget and self.ran_out_s is None:
            self.ran_out_s = round(self.elapsed(), 3)
            self.record["ran_out_s"] = self.ran_out_s
        self.record["parts"].append({"part": name, "status": "skipped", "reason": reason})
        print(f"skip {name}: {reason}")
        self.save()
