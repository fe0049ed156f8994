"""Metrics: a Fashion-MNIST feature network and FID / KID / precision-recall through torch-fidelity.

Names are imported from their submodules on first use, so ``python -m repro.metrics.featurenet`` and
``import repro.metrics`` stay light.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "FeatureNet": "featurenet",
    "WeightsMismatchError": "featurenet",
    "load_feature_net": "featurenet",
    "register": "featurenet",
    "train_feature_net": "featurenet",
    "METRICS": "fid",
    "as_uint8_images": "fid",
    "compute_metrics": "fid",
    "extract_features": "fid",
    "frechet_distance": "fid",
    "load_samples": "fid",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
