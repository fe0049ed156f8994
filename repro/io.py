"""Atomic file writes and model checkpoints.

Every file the project produces (checkpoints, curves, goldens, reports) is written to a temporary
file in the destination's folder and then renamed over the destination, so a crash or a bad input
never leaves a half-written file or destroys the previous one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from .provenance import git_commit  # noqa: F401 - its home is repro.provenance; kept importable from here


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file beside ``path`` to write to; renamed over ``path`` when the block succeeds,
    removed when it raises. The file gets the permissions a plain ``open`` would give it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(option: str, path: str | os.PathLike | None) -> None:
    """A one-line ``ValueError`` (naming ``option`` and ``path``) when ``path`` cannot be written as a file: a
    folder, under a file, or in a folder this process may not write. Call it before the work whose result goes
    there, so that a run does not train for hours to fail at its last line."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option}: {str(path)!r} is a folder; a file path is needed")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{option}: {str(path)!r} cannot be written: {str(parent)!r} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ValueError(f"{option}: {str(path)!r} cannot be written: no write permission")


@contextlib.contextmanager
def _naming(path: str | os.PathLike) -> Iterator[None]:
    """An ``OSError`` of a write (disk full, quota, I/O error) names the file it was writing; torch's writer reports
    a full disk as a ``RuntimeError`` ("enforce fail ... unexpected pos"), turned into the ``OSError`` it is."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            raise OSError(e.errno, f"{e.strerror or e}; nothing was changed", str(path)) from e
        raise
    except RuntimeError as e:
        if "unexpected pos" not in str(e) and "file write failed" not in str(e):
            raise
        raise OSError(errno.ENOSPC, "could not be written (disk full?); nothing was changed", str(path)) from e


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with _naming(path), atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False, allow_nan=True) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    # Through a file object: given a file name, torch.save names the archive's top folder after it (here the
    # random temporary name), so the same object would give different bytes (and sha256) on every save.
    with _naming(path), atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
    return Path(path)


class _StrictLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a key given twice in one mapping (the plain loader keeps the last)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                    seen.setdefault(key, line)
                except TypeError:  # an unhashable key; the base class reports it
                    continue
                if first is not None:
                    raise DuplicateKeyError(
                        f"{key_node.start_mark.name}: line {line}: key {key!r} is given twice "
                        f"(first at line {first}); each key may appear once in a mapping"
                    )
        return super().construct_mapping(node, deep=deep)


class DuplicateKeyError(ValueError):
    pass


def read_yaml(path: str | os.PathLike) -> Any:
    """A YAML file's data, read with the safe loader; a duplicate key, bad syntax or bad encoding raises a
    one-line ``ValueError`` naming the file."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.load(f, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text: {e}") from None


class CheckpointError(ValueError):
    """A checkpoint that cannot be trusted: missing, empty, truncated, not weights-only, or lacking entries."""


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", required: Sequence[str] = ()
) -> dict[str, Any]:
    """A checkpoint dict, unpickled weights-only; one-line :class:`CheckpointError` naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the checkpoint is empty (0 bytes)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError, ... on damaged files
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({type(e).__name__}): truncated, corrupt, or holding more than "
            "tensors and plain data"
        ) from e
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: holds a {type(ckpt).__name__}, not a checkpoint dict")
    missing = [k for k in required if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: the checkpoint lacks {missing}; needed: {list(required)}")
    return ckpt


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that :func:`atomic_path` leaves in ``folder`` when a process is killed mid-write.

    Only call this while no other process writes to ``folder`` (a run directory under its lock)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if _TEMPORARY.match(p.name) and p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # ".<name>.<mkstemp's 8 characters>.tmp"
