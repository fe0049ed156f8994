"""Weights between :class:`repro.models.DiT` and ``diffusers.DiTTransformer2DModel``.

The two compute the same function once three differences are corrected:

1. **Timestep frequencies.** DiT uses ``exp(-ln(10000) * k / half)``; diffusers' ``Timesteps`` for
   DiT is built with ``downscale_freq_shift=1``, i.e. ``k / (half - 1)``. ``to_diffusers`` sets the
   shift to 0 in every block; ``from_diffusers`` refuses a model whose shift is not 0 unless
   ``allow_frequency_mismatch=True`` (then outputs differ).
2. **Norm epsilon.** DiT's block norms use ``eps=1e-6``. diffusers' ``AdaLayerNormZero`` (the first
   norm) already does, but its second norm takes the config's ``norm_eps`` (default 1e-5), so the
   converted model is built with ``norm_eps=1e-6``.
3. **Layout.** DiT's fused ``attn.qkv`` is diffusers' ``to_q``/``to_k``/``to_v`` stacked in that order;
   DiT's single time and label embedders are copied into every diffusers block (each block owns a
   copy, which is why diffusers counts about 750M parameters for XL/2 instead of 675M). Going back,
   the copies must be equal, else there is no single DiT they could come from.

Only the official variant converts (pre-norm, adaLN-zero, LayerNorm, GELU MLP, sin-cos positions,
no q/k norm, ``class_dropout_prob > 0``). Outputs agree to float rounding, not bitwise: diffusers
multiplies q, k and v separately where DiT runs one fused matmul.
"""

from __future__ import annotations

import torch

from .dit import DiT, DiTConfig

_OFFICIAL = dict(
    norm_placement="pre", conditioning="adaln-zero", norm="layernorm", mlp="gelu", pos_embed="sincos", qk_norm=False
)


def _check_convertible(cfg: DiTConfig) -> None:
    for field, want in _OFFICIAL.items():
        got = getattr(cfg, field)
        if got != want:
            raise ValueError(f"{field}: {got!r} has no diffusers DiTTransformer2DModel equivalent; allowed: {want!r}")
    if cfg.class_dropout_prob <= 0:
        raise ValueError(
            f"class_dropout_prob: {cfg.class_dropout_prob!r}; diffusers always holds the null-class row, "
            "so conversion needs class_dropout_prob > 0"
        )


def to_diffusers(model: DiT):
    """A ``DiTTransformer2DModel`` computing the same function as ``model`` (eval mode)."""
    from diffusers import DiTTransformer2DModel

    cfg = model.config
    _check_convertible(cfg)
    d = cfg.hidden_size
    dm = DiTTransformer2DModel(
        num_attention_heads=cfg.num_heads,
        attention_head_dim=d // cfg.num_heads,
        in_channels=cfg.in_channels,
        out_channels=cfg.out_channels,
        num_layers=cfg.depth,
        sample_size=cfg.input_size,
        patch_size=cfg.patch_size,
        num_embeds_ada_norm=cfg.num_classes,
        norm_eps=1e-6,
    )
    if int(d * cfg.mlp_ratio) != 4 * d:
        raise ValueError(f"mlp_ratio: {cfg.mlp_ratio!r}; diffusers' DiT feed-forward is fixed at 4")
    sd = model.state_dict()
    out = {
        "pos_embed.proj.weight": sd["x_embedder.proj.weight"],
        "pos_embed.proj.bias": sd["x_embedder.proj.bias"],
        "proj_out_1.weight": sd["final_layer.adaLN_modulation.1.weight"],
        "proj_out_1.bias": sd["final_layer.adaLN_modulation.1.bias"],
        "proj_out_2.weight": sd["final_layer.linear.weight"],
        "proj_out_2.bias": sd["final_layer.linear.bias"],
    }
    for i in range(cfg.depth):
        src, dst = f"blocks.{i}.", f"transformer_blocks.{i}."
        emb = dst + "norm1.emb."
        out[emb + "timestep_embedder.linear_1.weight"] = sd["t_embedder.mlp.0.weight"]
        out[emb + "timestep_embedder.linear_1.bias"] = sd["t_embedder.mlp.0.bias"]
        out[emb + "timestep_embedder.linear_2.weight"] = sd["t_embedder.mlp.2.weight"]
        out[emb + "timestep_embedder.linear_2.bias"] = sd["t_embedder.mlp.2.bias"]
        out[emb + "class_embedder.embedding_table.weight"] = sd["y_embedder.embedding_table.weight"]
        out[dst + "norm1.linear.weight"] = sd[src + "adaLN_modulation.1.weight"]
        out[dst + "norm1.linear.bias"] = sd[src + "adaLN_modulation.1.bias"]
        for name, w in zip(("to_q", "to_k", "to_v"), sd[src + "attn.qkv.weight"].chunk(3, dim=0)):
            out[dst + f"attn1.{name}.weight"] = w
        for name, b in zip(("to_q", "to_k", "to_v"), sd[src + "attn.qkv.bias"].chunk(3, dim=0)):
            out[dst + f"attn1.{name}.bias"] = b
        out[dst + "attn1.to_out.0.weight"] = sd[src + "attn.proj.weight"]
        out[dst + "attn1.to_out.0.bias"] = sd[src + "attn.proj.bias"]
        out[dst + "ff.net.0.proj.weight"] = sd[src + "mlp.fc1.weight"]
        out[dst + "ff.net.0.proj.bias"] = sd[src + "mlp.fc1.bias"]
        out[dst + "ff.net.2.weight"] = sd[src + "mlp.fc2.weight"]
        out[dst + "ff.net.2.bias"] = sd[src + "mlp.fc2.bias"]
    dm.load_state_dict({k: v.clone() for k, v in out.items()}, strict=True)
    for block in dm.transformer_blocks:
        block.norm1.emb.time_proj.downscale_freq_shift = 0
    return dm.eval()


def from_diffusers(dm, allow_frequency_mismatch: bool = False, **overrides) -> DiT:
    """A :class:`DiT` computing the same function as the diffusers model ``dm``.

    ``overrides`` set :class:`DiTConfig` fields diffusers does not store (``class_dropout_prob``,
    ``learn_sigma`` is read from the channel counts).
    """
    c = dm.config
    if c.norm_type != "ada_norm_zero":
        raise ValueError(f"norm_type: {c.norm_type!r} is not DiT's; allowed: 'ada_norm_zero'")
    if c.activation_fn != "gelu-approximate":
        raise ValueError(f"activation_fn: {c.activation_fn!r} is not DiT's; allowed: 'gelu-approximate'")
    if abs(c.norm_eps - 1e-6) > 1e-12:
        raise ValueError(f"norm_eps: {c.norm_eps!r}; DiT's norms use 1e-6 (the outputs would differ)")
    shifts = {float(b.norm1.emb.time_proj.downscale_freq_shift) for b in dm.transformer_blocks}
    if shifts != {0.0} and not allow_frequency_mismatch:
        raise ValueError(
            f"downscale_freq_shift: {sorted(shifts)}; DiT's timestep frequencies need 0 "
            "(pass allow_frequency_mismatch=True to convert anyway)"
        )
    out_channels = c.out_channels or c.in_channels
    if out_channels not in (c.in_channels, 2 * c.in_channels):
        raise ValueError(f"out_channels: {out_channels}; allowed: in_channels or 2 * in_channels")
    cfg = DiTConfig(
        input_size=c.sample_size,
        patch_size=c.patch_size,
        in_channels=c.in_channels,
        hidden_size=c.num_attention_heads * c.attention_head_dim,
        depth=c.num_layers,
        num_heads=c.num_attention_heads,
        num_classes=c.num_embeds_ada_norm,
        learn_sigma=out_channels == 2 * c.in_channels,
        **overrides,
    )
    _check_convertible(cfg)
    sd = dm.state_dict()
    emb0 = "transformer_blocks.0.norm1.emb."
    for i in range(1, cfg.depth):
        emb = f"transformer_blocks.{i}.norm1.emb."
        for k in sd:
            if k.startswith(emb0):
                other = emb + k[len(emb0) :]
                if not torch.equal(sd[k], sd[other]):
                    raise ValueError(f"{other}: differs from block 0's copy; a DiT has one shared embedder")
    out = {
        "x_embedder.proj.weight": sd["pos_embed.proj.weight"],
        "x_embedder.proj.bias": sd["pos_embed.proj.bias"],
        "t_embedder.mlp.0.weight": sd[emb0 + "timestep_embedder.linear_1.weight"],
        "t_embedder.mlp.0.bias": sd[emb0 + "timestep_embedder.linear_1.bias"],
        "t_embedder.mlp.2.weight": sd[emb0 + "timestep_embedder.linear_2.weight"],
        "t_embedder.mlp.2.bias": sd[emb0 + "timestep_embedder.linear_2.bias"],
        "y_embedder.embedding_table.weight": sd[emb0 + "class_embedder.embedding_table.weight"],
        "final_layer.adaLN_modulation.1.weight": sd["proj_out_1.weight"],
        "final_layer.adaLN_modulation.1.bias": sd["proj_out_1.bias"],
        "final_layer.linear.weight": sd["proj_out_2.weight"],
        "final_layer.linear.bias": sd["proj_out_2.bias"],
    }
    for i in range(cfg.depth):
        src, dst = f"transformer_blocks.{i}.", f"blocks.{i}."
        out[dst + "adaLN_modulation.1.weight"] = sd[src + "norm1.linear.weight"]
        out[dst + "adaLN_modulation.1.bias"] = sd[src + "norm1.linear.bias"]
        out[dst + "attn.qkv.weight"] = torch.cat([sd[src + f"attn1.to_{n}.weight"] for n in "qkv"], dim=0)
        out[dst + "attn.qkv.bias"] = torch.cat([sd[src + f"attn1.to_{n}.bias"] for n in "qkv"], dim=0)
        out[dst + "attn.proj.weight"] = sd[src + "attn1.to_out.0.weight"]
        out[dst + "attn.proj.bias"] = sd[src + "attn1.to_out.0.bias"]
        out[dst + "mlp.fc1.weight"] = sd[src + "ff.net.0.proj.weight"]
        out[dst + "mlp.fc1.bias"] = sd[src + "ff.net.0.proj.bias"]
        out[dst + "mlp.fc2.weight"] = sd[src + "ff.net.2.weight"]
        out[dst + "mlp.fc2.bias"] = sd[src + "ff.net.2.bias"]
    model = DiT(cfg)
    out["pos_embed"] = model.pos_embed.detach().clone()  # a fixed table; diffusers does not store it
    model.load_state_dict({k: v.clone() for k, v in out.items()}, strict=True)
    return model.eval()
