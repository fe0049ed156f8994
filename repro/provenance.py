"""How a result was made: the record every golden, curve and report carries, and the hashes that pin inputs.

:func:`provenance` returns the fields every record shares (command, git commit, torch, python, device,
and the seed and precision where they apply); each caller adds its own. :func:`sha256_file` is the one
file hash (weights, data shards, wheels, caches). Importing this module does not import torch, so the
packing step of :mod:`repro.experiments.gpu` can use it on a machine without it.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """The hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def git_commit(paths: Sequence[str] = ("repro",)) -> str | None:
    """HEAD of the repository holding this package, with ``+dirty`` when tracked files under ``paths``
    have uncommitted changes. Outside a git checkout (a copy of the tree on another machine) it is
    ``$REPRO_GIT_COMMIT`` when set, else None."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        head = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", *paths)
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("REPRO_GIT_COMMIT") or None
    return head + ("+dirty" if dirty else "")


def command_line() -> str:
    """This process's command: the program's name and its arguments."""
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])


def provenance(
    command: str | None,
    *,
    device: str,
    seed: int | None = None,
    precision: str | None = None,
    commit_paths: Sequence[str] = ("repro",),
    **fields: Any,
) -> dict[str, Any]:
    """The shared record: ``command`` (this process's command line when empty), ``git_commit`` (see
    :func:`git_commit`, over ``commit_paths``), ``torch``, ``python``, ``device`` (the caller's description),
    then ``precision`` and ``seed`` when given, then the caller's ``fields`` in their order."""
    import torch

    record: dict[str, Any] = {
        "command": command or command_line(),
        "git_commit": git_commit(commit_paths),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device,
    }
    if precision is not None:
        record["precision"] = precision
    if seed is not None:
        record["seed"] = seed
    record.update(fields)
    return record


def run_provenance(cfg: Any, device: Any, world: int, command: str | None = None) -> dict[str, Any]:
    """A training run's record: the shared fields for a :class:`repro.config.RunConfig` on ``device`` (named
    by :func:`repro.runtime.device_name`), with the precision and TF32 that apply there and the world size."""
    from .runtime import device_name

    cuda = device.type == "cuda"
    return provenance(
        command,
        device=device_name(device),
        precision=cfg.train.precision if cuda else "fp32",
        seed=cfg.seed,
        world_size=world,
        tf32=bool(cfg.train.tf32 and cuda),
    )
