"""The published numbers (``repro/evidence/published.yaml``, package data): what the papers print, with their sources.

``PUBLISHED`` maps a section (``dit_table4``, ``tread_figure1``, ...) to its values and its ``source``. The audit
compares its counts with these and the tests read the same file, so a figure is written down once.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..io import read_yaml

PATH = Path(__file__).with_name("published.yaml")


def load(path: str | Path = PATH) -> dict[str, Any]:
    """Every section of the published numbers; each one names its ``source``."""
    data = read_yaml(path)
    for name, section in data.items():
        if not isinstance(section, dict) or not isinstance(section.get("source"), str):
            raise ValueError(f"{path}: section {name!r} needs a 'source' (paper, table or figure)")
    return data


PUBLISHED: MappingProxyType[str, Any] = MappingProxyType(load())
