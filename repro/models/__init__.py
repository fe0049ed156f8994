"""Reference models: DiT (and SiT's identical backbone) with TREAD routing and the debate's variants, and what
they cost (parameters and MACs; the per-op counters are in :mod:`repro.models.cost`)."""

from .checkpoint import load_model, save_model
from .cost import dit_forward_macs, meta_dit, num_params, train_step_macs
from .dit import (
    MODEL_NAMES,
    SIZES,
    DiT,
    DiTBlock,
    DiTConfig,
    FinalLayer,
    TrainingDraws,
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
    "TrainingDraws",
    "config_for",
    "create",
    "dense_inference",
    "dit_forward_macs",
    "load_model",
    "meta_dit",
    "num_params",
    "save_model",
    "train_step_macs",
    "tread_routes",
]
