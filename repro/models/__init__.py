"""Reference models: DiT (and SiT's identical backbone) with TREAD routing and the debate's variants, and what
they cost (parameters and MACs, :mod:`repro.models.cost`)."""

from .cost import (
    ElementCounter,
    attention_macs,
    dit_forward_macs,
    dit_train_step_macs,
    macs_by_op,
    meta_dit,
    num_params,
    train_step_macs,
)
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
    "ElementCounter",
    "FinalLayer",
    "Route",
    "StochasticDepth",
    "attention_macs",
    "config_for",
    "create",
    "dense_inference",
    "dit_forward_macs",
    "dit_train_step_macs",
    "macs_by_op",
    "meta_dit",
    "num_params",
    "train_step_macs",
    "tread_routes",
]
