"""A run directory: one run's files, written by one process at a time.

``config.json`` (the resolved configuration), ``metrics.jsonl`` (one line per logged step),
``checkpoints/last.pt`` (atomic) and ``curve.json`` (written when the run is complete). A directory
belongs to one configuration: another's is refused, naming the fields that differ.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..io import atomic_write_text

LOCK_FILE = ".lock"


class RunDirectoryError(ValueError):
    """A run directory that this run must not write: another run's, or one that another process is writing."""


class RunLock:
    """An exclusive ``flock`` on ``run_dir/.lock``, held while a process writes the run directory; the file
    names the holder (pid, host, since when). The kernel releases the lock when the process ends, however it ends;
    a holder killed before it could clear the file leaves its name there, kept in ``previous`` for the next holder
    to say whose run it takes over."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.fd = Path(run_dir), None
        self.previous: str | None = None

    def __enter__(self) -> RunLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            raise RunDirectoryError(
                f"{self.run_dir}: another process (pid {holder}) is writing this run directory; "
                "wait for it to end or give another --out"
            ) from None
        self.previous = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or None
        os.ftruncate(fd, 0)
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        os.pwrite(fd, f"{os.getpid()} on {socket.gethostname()} since {since}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def plain(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def config_differences(stored: Any, requested: Any, prefix: str = "") -> list[str]:
    """Dotted names of the fields where two configuration dicts differ."""
    if isinstance(stored, dict) and isinstance(requested, dict):
        out = []
        for key in list(stored) + [k for k in requested if k not in stored]:
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in stored or key not in requested:
                out.append(name)
            else:
                out.extend(config_differences(stored[key], requested[key], name))
        return out
    return [] if stored == requested else [prefix or "(config)"]


def check_run_directory(cfg: RunConfig, run_dir: Path) -> None:
    """Refuse a run directory that holds another configuration's run (naming the fields that differ)."""
    config_path, ckpt_path = run_dir / "config.json", run_dir / "checkpoints" / "last.pt"
    if not config_path.exists():
        if ckpt_path.exists():
            raise RunDirectoryError(
                f"{run_dir}: holds a checkpoint but no config.json, so it cannot be resumed safely; "
                "give another --out, or --no-resume to start over"
            )
        return
    try:
        stored = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunDirectoryError(f"{config_path}: not valid JSON ({e}); give another --out, or --no-resume") from None
    diff = config_differences(plain(stored), plain(cfg.to_dict()))
    if diff:
        shown = ", ".join(
            f"{name} ({_lookup(stored, name)!r} stored, {_lookup(cfg.to_dict(), name)!r} requested)"
            for name in diff[:4]
        )
        more = f" and {len(diff) - 4} more" if len(diff) > 4 else ""
        raise RunDirectoryError(
            f"{run_dir}: holds a run of another configuration: {shown}{more}; "
            "give another --out, or --no-resume to start over"
        )


def _lookup(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return plain(d)


def completed_curve(cfg: RunConfig, run_dir: Path) -> dict[str, Any] | None:
    """The run directory's curve when it holds this run finished, else None."""
    path = run_dir / "curve.json"
    if not path.exists():
        return None
    try:
        curve = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if isinstance(curve, dict) and curve.get("complete") is True and curve.get("run_id") == cfg.run_id:
        return curve
    return None


def trim_metrics_log(path: Path, step: int) -> None:
    """Keep the log lines up to ``step`` (a resumed run logs the later steps again); drop a torn last line."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("step"), int) and entry["step"] <= step:
            kept.append(line)
    text = "".join(line + "\n" for line in kept)
    if text != path.read_text():
        atomic_write_text(path, text)


def start_over(run_dir: Path) -> None:
    """Remove what a previous run left (its curve, checkpoints and log), so nothing of it mixes with the new run."""
    (run_dir / "curve.json").unlink(missing_ok=True)
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    ckpts = run_dir / "checkpoints"
    if ckpts.is_dir():
        for p in ckpts.glob("*.pt"):
            if p.name == "last.pt" or (p.name.startswith("step") and p.name[4:-3].isdigit()):
                p.unlink()
