"""Weights between :class:`repro.models.DiT` and ``diffusers.DiTTransformer2DModel``.

The two compute the same function once three differences are corrected:

1. **Timestep frequencies.** DiT uses ``exp(-ln(10000) * k / half)``; diffusers' ``Timesteps`` for
   DiT is built with ``downscale_freq_shift=1``, i.e. ``k / (half - 1)``. ``to_diffusers`` sets the
   shift to 0 in every block; ``from_diffusers`` refuses a model whose shift is not 0 unless
   ``allow_frequency_mismatch=True`` (then outputs differ). diffusers hard-codes the shift, so no
   config field survives ``save_pretrained``: :func:`save_diffusers` records it in ``config.json``
   under a private key and :func:`load_diffusers` (``from_pretrained`` + the record) puts it back;
   after that round trip the outputs are bitwise those of the model that was saved.
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
    if cfg.discard_sigma:
        raise ValueError(
            "discard_sigma: True has no diffusers equivalent (DiTTransformer2DModel returns every channel); "
            "convert with discard_sigma=False and keep the first in_channels of its output"
        )
    if cfg.class_dropout_prob <= 0:
        raise ValueError(
            f"class_dropout_prob: {cfg.class_dropout_prob!r}; diffusers always holds the null-class row, "
            "so conversion needs class_dropout_prob > 0"
        )


def _one_to_one(depth: int) -> list[tuple[str, str]]:
    """(DiT key, diffusers key) of every tensor that maps unchanged; the fused qkv and the time and
    label embedders (one in DiT, a copy per block in diffusers) are handled apart."""
    pairs = [(f"{ours}.{p}", f"{theirs}.{p}") for ours, theirs in (
        ("x_embedder.proj", "pos_embed.proj"),
        ("final_layer.adaLN_modulation.1", "proj_out_1"),
        ("final_layer.linear", "proj_out_2"),
    ) for p in ("weight", "bias")]  # fmt: skip
    for i in range(depth):
        for ours, theirs in (
            ("adaLN_modulation.1", "norm1.linear"),
            ("attn.proj", "attn1.to_out.0"),
            ("mlp.fc1", "ff.net.0.proj"),
            ("mlp.fc2", "ff.net.2"),
        ):
            pairs += [(f"blocks.{i}.{ours}.{p}", f"transformer_blocks.{i}.{theirs}.{p}") for p in ("weight", "bias")]
    return pairs


# DiT's embedder keys and their names under each diffusers block's ``norm1.emb.``
_EMBEDDER = [
    ("t_embedder.mlp.0.weight", "timestep_embedder.linear_1.weight"),
    ("t_embedder.mlp.0.bias", "timestep_embedder.linear_1.bias"),
    ("t_embedder.mlp.2.weight", "timestep_embedder.linear_2.weight"),
    ("t_embedder.mlp.2.bias", "timestep_embedder.linear_2.bias"),
    ("y_embedder.embedding_table.weight", "class_embedder.embedding_table.weight"),
]


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
    out = {theirs: sd[ours] for ours, theirs in _one_to_one(cfg.depth)}
    for i in range(cfg.depth):
        dst = f"transformer_blocks.{i}."
        for ours, theirs in _EMBEDDER:
            out[dst + "norm1.emb." + theirs] = sd[ours]
        for p in ("weight", "bias"):
            for name, w in zip(("to_q", "to_k", "to_v"), sd[f"blocks.{i}.attn.qkv.{p}"].chunk(3, dim=0)):
                out[dst + f"attn1.{name}.{p}"] = w
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
            f"downscale_freq_shift: {sorted(shifts)}; DiT's timestep frequencies need 0. diffusers hard-codes 1 "
            "in DiTTransformer2DModel, so plain from_pretrained drops the fix: load a model saved by save_diffusers "
            "with load_diffusers, or pass allow_frequency_mismatch=True to convert anyway (outputs differ)"
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
        for _, theirs in _EMBEDDER:
            other = f"transformer_blocks.{i}.norm1.emb.{theirs}"
            if not torch.equal(sd[emb0 + theirs], sd[other]):
                raise ValueError(f"{other}: differs from block 0's copy; a DiT has one shared embedder")
    out = {ours: sd[theirs] for ours, theirs in _one_to_one(cfg.depth)}
    out.update({ours: sd[emb0 + theirs] for ours, theirs in _EMBEDDER})
    for i in range(cfg.depth):
        for p in ("weight", "bias"):
            qkv = [sd[f"transformer_blocks.{i}.attn1.to_{n}.{p}"] for n in "qkv"]
            out[f"blocks.{i}.attn.qkv.{p}"] = torch.cat(qkv, dim=0)
    model = DiT(cfg)
    out["pos_embed"] = model.pos_embed.detach().clone()  # a fixed table; diffusers does not store it
    model.load_state_dict({k: v.clone() for k, v in out.items()}, strict=True)
    return model.eval()


# ------------------------------------------------------------------------------------------
# Saving and loading with diffusers
# ------------------------------------------------------------------------------------------

# diffusers builds DiT's timestep embedder with ``Timesteps(..., downscale_freq_shift=1)`` hard-coded in
# ``CombinedTimestepLabelEmbeddings``: no config field can carry the fix, so a saved model records it
# under this key (diffusers ignores config keys that start with "_") and :func:`load_diffusers` applies it.
FREQ_SHIFT_KEY = "_repro_timestep_downscale_freq_shift"


def save_diffusers(model_or_dm, directory, **kwargs) -> None:
    """``save_pretrained`` of the diffusers equivalent of a :class:`DiT` (or of a converted model), with the
    timestep-frequency fix recorded in ``config.json`` for :func:`load_diffusers`."""
    import json
    from pathlib import Path

    from ..io import atomic_write_text

    dm = to_diffusers(model_or_dm) if isinstance(model_or_dm, DiT) else model_or_dm
    shifts = {float(b.norm1.emb.time_proj.downscale_freq_shift) for b in dm.transformer_blocks}
    if len(shifts) != 1:
        raise ValueError(f"downscale_freq_shift: blocks differ ({sorted(shifts)}); one value is needed to save")
    dm.save_pretrained(directory, **kwargs)
    config_path = Path(directory) / "config.json"
    config = json.loads(config_path.read_text())
    config[FREQ_SHIFT_KEY] = shifts.pop()
    atomic_write_text(config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")


def load_diffusers(directory, **kwargs):
    """``DiTTransformer2DModel.from_pretrained`` plus the recorded timestep-frequency fix (eval mode).

    A directory saved without the record (any diffusers DiT, e.g. the hub's ``facebook/DiT-XL-2-256``)
    loads with diffusers' own frequencies, which :func:`from_diffusers` then refuses unless told
    ``allow_frequency_mismatch=True``.
    """
    import json
    from pathlib import Path

    from diffusers import DiTTransformer2DModel

    dm = DiTTransformer2DModel.from_pretrained(directory, **kwargs)
    config_path = Path(directory) / kwargs.get("subfolder", "") / "config.json"
    shift = json.loads(config_path.read_text()).get(FREQ_SHIFT_KEY) if config_path.is_file() else None
    if shift is not None:
        for block in dm.transformer_blocks:
            block.norm1.emb.time_proj.downscale_freq_shift = float(shift)
    else:
        import warnings

        gap, norm = timestep_embedding_gap(dm)
        warnings.warn(
            f"{directory}: config.json has no {FREQ_SHIFT_KEY}, so the model keeps diffusers' timestep frequencies "
            f"(k / (half - 1)), not DiT's (k / half): its timestep embedding differs from DiT's by up to {gap:.3g} "
            f"(max |difference| over t in 0..999; the embedding's largest norm is {norm:.3g}, so {gap / norm:.1%} of "
            "it). from_diffusers refuses it unless allow_frequency_mismatch=True; save with save_diffusers to keep "
            "DiT's function",
            stacklevel=2,
        )
    return dm.eval()


@torch.no_grad()
def timestep_embedding_gap(dm) -> tuple[float, float]:
    """How far a diffusers DiT's timestep embedding (block 0's, with its current frequency shift) is from DiT's
    (shift 0), over t = 0..999: ``(max |difference|, max norm of DiT's embedding)``."""
    emb = dm.transformer_blocks[0].norm1.emb
    t = torch.arange(0, 1000, dtype=torch.float32)
    dtype = next(emb.timestep_embedder.parameters()).dtype
    theirs = emb.timestep_embedder(emb.time_proj(t).to(dtype))
    shift = emb.time_proj.downscale_freq_shift
    try:
        emb.time_proj.downscale_freq_shift = 0
        ours = emb.timestep_embedder(emb.time_proj(t).to(dtype))
    finally:
        emb.time_proj.downscale_freq_shift = shift
    return float((theirs - ours).abs().max()), float(ours.norm(dim=1).max())


# ------------------------------------------------------------------------------------------
# The official DiT checkpoints: the released state dicts and the train.py checkpoints
# ------------------------------------------------------------------------------------------

# Keys every DiT state dict holds (facebookresearch/DiT models.py): enough to tell the layout and read the sizes
_RELEASE_KEYS = (
    "x_embedder.proj.weight",
    "pos_embed",
    "y_embedder.embedding_table.weight",
    "final_layer.linear.weight",
)


def _strip_ddp(sd: dict) -> dict:
    """A state dict saved from a DDP wrapper (``module.`` prefixes) as the bare model's."""
    if sd and all(isinstance(k, str) and k.startswith("module.") for k in sd):
        return {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def _is_dit_state_dict(obj) -> bool:
    return isinstance(obj, dict) and all(k in obj for k in _RELEASE_KEYS)


def config_from_state_dict(sd: dict, name: str | None = None, **overrides) -> DiTConfig:
    """The :class:`DiTConfig` of an official DiT state dict, read from its shapes: patch, channels and width from
    ``x_embedder``, the input size from ``pos_embed``, the depth from the blocks, the classes from the label table
    (its last row is the null class), learned sigma from the output width. The head count is not in the weights:
    it comes from ``name`` (``DiT-XL/2``, as the train.py checkpoints record it) or from the paper's size with
    this depth and width."""
    from .dit import SIZES, config_for

    missing = [k for k in _RELEASE_KEYS if k not in sd]
    if missing:
        raise ValueError(f"state dict: lacks {missing}; not a DiT (facebookresearch/DiT models.py) state dict")
    hidden, in_channels, patch, _ = sd["x_embedder.proj.weight"].shape
    tokens = sd["pos_embed"].shape[1]
    side = round(tokens**0.5)
    if side * side != tokens:
        raise ValueError(f"pos_embed: {tokens} tokens is not a square grid")
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    out_channels = sd["final_layer.linear.weight"].shape[0] // (patch * patch)
    fields = dict(
        input_size=side * patch,
        patch_size=patch,
        in_channels=in_channels,
        hidden_size=hidden,
        depth=depth,
        num_classes=sd["y_embedder.embedding_table.weight"].shape[0] - 1,
        learn_sigma=out_channels == 2 * in_channels,
    )
    fields.update(overrides)
    if name is not None:
        return config_for(name, **fields)
    size = next((s for s, v in SIZES.items() if (v["depth"], v["hidden_size"]) == (depth, hidden)), None)
    if size is None:
        raise ValueError(
            f"state dict: depth {depth} and width {hidden} match none of DiT's sizes ({', '.join(SIZES)}); the head "
            "count is not in the weights: pass --config with the model's config"
        )
    return DiTConfig(num_heads=SIZES[size]["num_heads"], **fields)


def load_official_checkpoint(path, weights: str = "ema") -> tuple[DiTConfig, dict, dict]:
    """``(config, state dict, info)`` of an official DiT checkpoint, unpickled weights-only.

    Two layouts: a released file (``DiT-XL-2-256x256.pt``: the EMA state dict itself) and a checkpoint of DiT's
    ``train.py`` (``{"model", "ema", "opt", "args"}``, where ``args`` is an ``argparse.Namespace``, the one class
    allowed besides tensors and plain data). ``weights`` picks ``ema`` or ``model`` of the latter; a released file
    has the EMA weights only. ``info`` says the layout and, for train.py checkpoints, the recorded arguments.
    """
    import argparse
    from pathlib import Path

    path = Path(path)
    if path.is_dir():
        hint = (
            " (a diffusers folder: load it with repro.models.convert.load_diffusers and from_diffusers)"
            if (path / "config.json").is_file()
            else ""
        )
        raise ValueError(f"checkpoint: {path} is a folder{hint}; allowed: a .pt file")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(
            f"checkpoint: {path} cannot be read weights-only ({type(e).__name__}: {' '.join(str(e).split())[:160]}); "
            "allowed: tensors, plain data and DiT train.py's argparse.Namespace"
        ) from None
    if _is_dit_state_dict(_strip_ddp(ckpt) if isinstance(ckpt, dict) else ckpt):
        if weights != "ema":
            raise ValueError(f"weights: {weights!r}; a released DiT file holds the EMA weights only: use ema")
        sd = _strip_ddp(ckpt)
        return config_from_state_dict(sd), sd, {"layout": "dit-release", "file": path.name}
    if isinstance(ckpt, dict) and "args" in ckpt and ("ema" in ckpt or "model" in ckpt):
        if weights not in ckpt:
            raise ValueError(f"checkpoint: {path} has no {weights!r} weights (holds {sorted(ckpt)})")
        sd = _strip_ddp(ckpt[weights])
        args = ckpt["args"]
        recorded = dict(vars(args)) if isinstance(args, argparse.Namespace) else dict(args or {})
        name = recorded.get("model")
        if isinstance(name, str) and not name.startswith("DiT-"):
            raise ValueError(
                f"checkpoint: {path} holds a {name} model; only DiT's objective is known without a run config: "
                "pass --config with the run's config.json"
            )
        overrides = {}
        if recorded.get("num_classes") is not None:
            overrides["num_classes"] = int(recorded["num_classes"])
        cfg = config_from_state_dict(sd, name if isinstance(name, str) else None, **overrides)
        plain = {k: v for k, v in recorded.items() if isinstance(v, (str, int, float, bool)) or v is None}
        return cfg, sd, {"layout": "dit-train", "file": path.name, "args": plain}
    have = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
    raise ValueError(
        f"checkpoint: {path} is not a checkpoint of repro train, a released DiT file or a DiT train.py checkpoint "
        f"(holds {have})"
    )
