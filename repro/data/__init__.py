"""Data: Fashion-MNIST in memory (CPU and one-GPU scales) and SD-VAE latent shards (paper scale).

:mod:`repro.data.latents` (diffusers, PIL) is imported on demand, not from here.
"""

from .fashion_mnist import (
    CLASSES,
    SPLITS,
    DataCorruptError,
    DataNotFoundError,
    FashionMNIST,
    cache_dir,
    clear_cache,
    find_data_dir,
    iterate_batches,
    load,
    to_float,
    to_uint8,
)

__all__ = [
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
]
