"""LightningDiT (Yao et al., arXiv 2501.01423) as options of the one DiT class, and its state_dicts converted.

The official model (hustvl/LightningDiT ``models/lightningdit.py``, class ``LightningDiT``) is DiT's backbone
with five switches. :func:`lightningdit_config` maps its constructor's arguments onto :class:`DiTConfig`:

=================  ============================================================================================
official           :class:`DiTConfig`
=================  ============================================================================================
``use_rmsnorm``    ``norm: rmsnorm-affine`` (block and final norms are RMSNorm with a weight; so is the qk-norm);
                   without it ``norm: layernorm`` and a LayerNorm qk-norm with ``qk_norm_eps: 1e-5``
``use_swiglu``     ``mlp: swiglu-lightningdit`` (hidden width ``int(2/3 * 4d)``)
``use_rope``       ``pos_embed: sincos+rope`` (the sin-cos table is always added); without it ``sincos``
``use_qknorm``     ``qk_norm``
``wo_shift``       ``adaln_shift: false``
``learn_sigma``    ``learn_sigma`` and ``discard_sigma`` (its forward returns the first half; default off)
=================  ============================================================================================

:func:`convert_lightningdit_state_dict` turns an official state_dict (a ``train.py`` checkpoint's ``"ema"`` or
``"model"`` entry) into this model's names: SwiGLU's ``w12`` / ``w3`` are ``fc1`` / ``fc2``, and the RoPE tables
the official model stores (``feat_rope.freqs_cos`` / ``freqs_sin``, persistent buffers) are checked against the
ones this model computes from its config and dropped. Everything else has the official name and shape, so the
result loads with ``strict=True``; :func:`load_lightningdit` does both steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .dit import DiT, DiTConfig
from .layers import rope_2d_tables

# depth, hidden_size, num_heads of the official registry (``LightningDiT_models``); each with patch 1 and/or 2
LIGHTNINGDIT_SIZES = {
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
    "1p0B": (24, 1536, 24),
    "1p6B": (28, 1792, 28),
}
LIGHTNINGDIT_MODELS = (
    "LightningDiT-B/1",
    "LightningDiT-B/2",
    "LightningDiT-L/2",
    "LightningDiT-XL/1",
    "LightningDiT-XL/2",
    "LightningDiT-1p0B/1",
    "LightningDiT-1p0B/2",
    "LightningDiT-1p6B/1",
    "LightningDiT-1p6B/2",
)

# The ``LightningDiT`` constructor's defaults (``use_checkpoint`` only trades memory for compute)
OFFICIAL_DEFAULTS: dict[str, Any] = dict(
    input_size=32,
    patch_size=2,
    in_channels=32,
    hidden_size=1152,
    depth=28,
    num_heads=16,
    mlp_ratio=4.0,
    class_dropout_prob=0.1,
    num_classes=1000,
    learn_sigma=False,
    use_qknorm=False,
    use_swiglu=False,
    use_rope=False,
    use_rmsnorm=False,
    wo_shift=False,
    use_checkpoint=False,
)

# The model section of every released config (configs/*.yaml): LightningDiT-XL/1 on 16x16x32 VA-VAE latents
RELEASED_OPTIONS: dict[str, Any] = dict(
    use_qknorm=False, use_swiglu=True, use_rope=True, use_rmsnorm=True, wo_shift=False
)
RELEASED_MODEL = dict(name="LightningDiT-XL/1", input_size=16, in_channels=32, **RELEASED_OPTIONS)

_ROPE_KEYS = ("feat_rope.freqs_cos", "feat_rope.freqs_sin")
_ROPE_ATOL = 1e-5  # the official tables are computed in float32, ours in float64 and rounded: <= 3e-6 apart


def lightningdit_options(
    use_qknorm: bool = False,
    use_swiglu: bool = False,
    use_rope: bool = False,
    use_rmsnorm: bool = False,
    wo_shift: bool = False,
) -> dict[str, Any]:
    """The :class:`DiTConfig` fields of the official switches (see the module docstring's table)."""
    return dict(
        norm="rmsnorm-affine" if use_rmsnorm else "layernorm",
        mlp="swiglu-lightningdit" if use_swiglu else "gelu",
        pos_embed="sincos+rope" if use_rope else "sincos",
        qk_norm=bool(use_qknorm),
        # the official qk-norm is its RMSNorm (eps 1e-6) with use_rmsnorm, else nn.LayerNorm(head_dim) (eps 1e-5)
        qk_norm_eps=1e-6 if use_rmsnorm else 1e-5,
        adaln_shift=not wo_shift,
    )


def lightningdit_config(name: str | None = None, **kwargs) -> DiTConfig:
    """The :class:`DiTConfig` of ``LightningDiT(**kwargs)`` or of the registry's ``name(**kwargs)``.

    ``lightningdit_config("LightningDiT-XL/1", input_size=16, **RELEASED_OPTIONS)`` is the released model.
    """
    unknown = sorted(set(kwargs) - set(OFFICIAL_DEFAULTS))
    if unknown:
        raise ValueError(f"lightningdit: unknown argument(s) {unknown}; allowed: {sorted(OFFICIAL_DEFAULTS)}")
    args = dict(OFFICIAL_DEFAULTS)
    if name is not None:
        if name not in LIGHTNINGDIT_MODELS:
            raise ValueError(f"model: unknown name {name!r}; allowed: {', '.join(LIGHTNINGDIT_MODELS)}")
        size, patch = name.removeprefix("LightningDiT-").split("/")
        depth, hidden, heads = LIGHTNINGDIT_SIZES[size]
        fixed = dict(depth=depth, hidden_size=hidden, num_heads=heads, patch_size=int(patch))
        clash = sorted(k for k in fixed if k in kwargs)
        if clash:
            raise ValueError(f"lightningdit: {clash} are set by the name {name!r}; leave them out")
        args.update(fixed)
    args.update(kwargs)
    options = {k: args.pop(k) for k in ("use_qknorm", "use_swiglu", "use_rope", "use_rmsnorm", "wo_shift")}
    args.pop("use_checkpoint")  # activation checkpointing: the same outputs
    args["discard_sigma"] = bool(args["learn_sigma"])  # the official forward drops the variance half
    return DiTConfig(**args, **lightningdit_options(**options))


def convert_lightningdit_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: DiTConfig
) -> dict[str, torch.Tensor]:
    """An official ``LightningDiT`` state_dict in this model's names, for ``DiT(config)`` with ``strict=True``.

    The RoPE tables must match the ones ``config`` gives (same grid and head dimension, within 1e-5) and are
    then dropped: this model computes them. A table on the ``meta`` device is checked by shape only.
    """
    swiglu = config.mlp in ("swiglu", "swiglu-lightningdit")
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key in _ROPE_KEYS:
            continue
        if swiglu and ".mlp.w12." in key:
            key = key.replace(".mlp.w12.", ".mlp.fc1.")
        elif swiglu and ".mlp.w3." in key:
            key = key.replace(".mlp.w3.", ".mlp.fc2.")
        out[key] = value
    has_rope = [k for k in _ROPE_KEYS if k in state_dict]
    if config.uses_rope:
        if len(has_rope) != 2:
            missing = " / ".join(_ROPE_KEYS)
            raise ValueError(f"state_dict: has no {missing}, but config.pos_embed is {config.pos_embed!r}")
        grid = config.input_size // config.patch_size
        cos, sin = rope_2d_tables(config.hidden_size // config.num_heads, grid)
        for key, ours in zip(_ROPE_KEYS, (cos, sin), strict=True):
            theirs = state_dict[key]
            if tuple(theirs.shape) != tuple(ours.shape):
                raise ValueError(
                    f"state_dict: {key} has shape {tuple(theirs.shape)}, the config's RoPE table {tuple(ours.shape)} "
                    f"({grid}x{grid} tokens, head dimension {config.hidden_size // config.num_heads})"
                )
            if not theirs.is_meta and not torch.allclose(theirs.float().cpu(), ours, rtol=0, atol=_ROPE_ATOL):
                err = (theirs.float().cpu() - ours).abs().max().item()
                raise ValueError(f"state_dict: {key} differs from the config's RoPE table by up to {err:.3g}")
    elif has_rope:
        raise ValueError(f"state_dict: holds RoPE tables {has_rope}, but config.pos_embed is {config.pos_embed!r}")
    return out


def load_lightningdit(state_dict: Mapping[str, torch.Tensor], name: str | None = None, **kwargs) -> DiT:
    """``DiT`` with an official state_dict loaded strictly; ``name`` and ``kwargs`` as :func:`lightningdit_config`."""
    config = lightningdit_config(name, **kwargs)
    model = DiT(config)
    model.load_state_dict(convert_lightningdit_state_dict(state_dict, config), strict=True)
    return model
