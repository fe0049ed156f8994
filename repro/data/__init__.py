"""Data: Fashion-MNIST in memory (CPU and one-GPU scales) and SD-VAE latent shards (paper scale).

Names are imported from :mod:`repro.data.fashion_mnist` on first use (so ``python -m
repro.data.fashion_mnist`` runs cleanly); :mod:`repro.data.latents` (diffusers, PIL) is imported only
when asked for.
"""

from __future__ import annotations

import importlib

_EXPORTS = (
    "CLASSES",
    "SPLITS",
    "DataCorruptError",
    "DataNotFoundError",
    "FashionMNIST",
    "cache_dir",
    "clear_cache",
    "find_data_dir",
    "iterate_batches",
    "load",
    "to_float",
    "to_uint8",
)

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(".fashion_mnist", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
