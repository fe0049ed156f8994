"""Writing reports: float rounding, the JSON file, and the checks an output path passes before anything is computed."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...io import atomic_write_text


def round_floats(obj: Any, digits: int = 6) -> Any:
    """``obj`` with every float rounded to ``digits`` significant digits (JSON-ready: non-finite floats rejected)."""
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError(f"non-finite value {obj!r} cannot go into JSON")
        return float(f"{obj:.{digits}g}")
    if isinstance(obj, Mapping):
        return {k: round_floats(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [round_floats(v, digits) for v in obj]
    if isinstance(obj, np.generic):
        return round_floats(obj.item(), digits)
    return obj


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` (floats rounded) as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(round_floats(obj), indent=2, allow_nan=False) + "\n")


def check_replaceable(option: str, path: str | os.PathLike, keys: Sequence[str], what: str) -> None:
    """``path`` may be replaced only when it does not exist or holds what this command writes (a JSON object with
    ``keys``): a curve or a report of another kind given by mistake is never overwritten."""
    path = Path(path)
    if not path.exists():
        return
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        data = None
    if not (isinstance(data, dict) and all(k in data for k in keys)):
        raise ValueError(
            f"{option}: {str(path)!r} exists and is not {what} (a JSON object with {', '.join(keys)}); allowed: a new "
            "file or one this command wrote"
        )


def check_output(option: str, path: str | os.PathLike | None) -> None:
    """Fail before anything is computed or written when ``path`` cannot be written as a file."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option}: {str(path)!r} is a directory; give a file path")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{option}: {str(path)!r} cannot be written: {str(parent)!r} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{option}: {str(path)!r} cannot be written: {str(parent)!r} is not writable")
