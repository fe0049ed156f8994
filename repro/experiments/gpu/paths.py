"""Where the GPU campaign finds the repository's files: its root, the wheel folder, params.yaml, the goldens."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_WHEELS = REPO_ROOT / ".whl"
PARAMS = REPO_ROOT / "params.yaml"
GOLDENS = REPO_ROOT / "goldens" / "small"
MICRO_REFERENCE = REPO_ROOT / "goldens" / "micro" / "reference.json"
