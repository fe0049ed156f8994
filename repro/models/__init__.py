"""Reference models: DiT (and SiT's identical backbone) with TREAD routing and the debate's variants."""

from .dit import (
    MODEL_NAMES,
    SIZES,
    DiT,
    DiTBlock,
    DiTConfig,
    FinalLayer,
    config_for,
    create,
    dense_inference,
    tread_routes,
)
from .routing import Route, StochasticDepth

__all__ = [
    "MODEL_NAMES",
    "SIZES",
    "DiT",
    "DiTBlock",
    "DiTConfig",
    "FinalLayer",
    "Route",
    "StochasticDepth",
    "config_for",
    "create",
    "dense_inference",
    "tread_routes",
]
