"""A model in one file: its configuration (plain data) and its weights, written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..io import atomic_torch_save, load_checkpoint
from .dit import DiT, DiTConfig


def save_model(path: str | os.PathLike, model: DiT, **extra) -> Path:
    """A checkpoint holding the model's config (plain data) and state_dict, plus ``extra`` entries."""
    return atomic_torch_save({"config": model.config.to_dict(), "model": model.state_dict(), **extra}, path)


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> DiT:
    """Rebuild a model saved by :func:`save_model` (``strict=True``; weights-only unpickling)."""
    ckpt = load_checkpoint(path, map_location, required=("config", "model"))
    model = DiT(DiTConfig(**ckpt["config"]))
    model.load_state_dict(ckpt["model"], strict=True)
    return model
