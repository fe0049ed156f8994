"""Atomic file writes and model checkpoints.

Every file the project produces (checkpoints, curves, goldens, reports) is written to a temporary
file in the destination's folder and then renamed over the destination, so a crash or a bad input
never leaves a half-written file or destroys the previous one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False, allow_nan=True) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_model(path: str | os.PathLike, model, **extra) -> Path:
    """A checkpoint holding the model's config (plain data) and state_dict, plus ``extra`` entries."""
    return atomic_torch_save({"config": model.config.to_dict(), "model": model.state_dict(), **extra}, path)


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu"):
    """Rebuild a model saved by :func:`save_model` (``strict=True``; weights-only unpickling)."""
    from .models import DiT, DiTConfig

    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or "config" not in ckpt or "model" not in ckpt:
        raise ValueError(f"{path}: not a repro checkpoint (needs 'config' and 'model' entries)")
    model = DiT(DiTConfig(**ckpt["config"]))
    model.load_state_dict(ckpt["model"], strict=True)
    return model
