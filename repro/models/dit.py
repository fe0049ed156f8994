"""DiT (Peebles & Xie, arXiv 2212.09748) with the variants the debate names, as flags of one model.

With default flags this is the official DiT: the same modules, parameter names, shapes,
initialization and arithmetic, so the released checkpoints load with ``strict=True``.

Variants (fields of :class:`DiTConfig`, so every run records exactly what ran):

- ``norm_placement``: ``"pre"`` (DiT: ``x + gate * f(modulate(LN(x)))``, the residual stream is
  never normalized) or ``"post"`` (``x <- LN(x + gate * f(modulate(x)))``: the sum of each branch
  and the stream is normalized, so the stream itself passes through every norm).
- ``conditioning``: ``"adaln-zero"`` (DiT: one SiLU+Linear(d, 6d) per block, zero-initialised) or
  ``"adaln-single"`` (PixArt-alpha: one shared SiLU+Linear(d, 6d) on the condition plus a learned
  per-block (6, d) table added to it). Unlike PixArt, the shared projection and the gate rows of
  each table start at zero, so both conditionings start as the identity and only the sharing
  differs from DiT.
- LightningDiT options (``norm``, ``mlp``, ``pos_embed``, ``qk_norm``, ``qk_norm_eps``, ``adaln_shift``) and any
  ``patch_size`` that divides ``input_size`` (1 included). Two sets of values:

  - LightningDiT-style, as the first ablation ran them (kept, so its recorded configs still build the model that
    ran): ``norm: rmsnorm`` (RMSNorm with no weight in the blocks and the final layer), ``mlp: swiglu`` (hidden
    width 2/3 of the GELU MLP's, rounded up to a multiple of 8), ``pos_embed: rope`` (2-D axial rotary on q and
    k, no additive table), ``qk_norm: true`` (per-head RMSNorm of q and k with a weight).
  - The official LightningDiT (hustvl/LightningDiT ``models/lightningdit.py``; its state_dicts load through
    :mod:`repro.models.lightningdit` and give its outputs): ``norm: rmsnorm-affine`` (RMSNorm with a learnable
    weight, ones at init, as ``norm1``, ``norm2`` and the final layer's ``norm_final``; eps 1e-6; the qk-norm,
    when on, is the same RMSNorm), ``mlp: swiglu-lightningdit`` (SwiGLU of hidden width
    ``int(2/3 * int(hidden_size * mlp_ratio))``), ``pos_embed: sincos+rope`` (the official forward always adds
    the sin-cos table; ``use_rope`` adds 2-D RoPE on q and k in every block), ``qk_norm`` as its ``use_qknorm``
    (off in its released configs), ``qk_norm_eps`` (default 1e-6, as its RMSNorm; its LayerNorm qk-norm, used
    without ``use_rmsnorm``, has torch's default 1e-5), and ``adaln_shift: false`` for its ``wo_shift`` (each
    block's adaLN projects to 4d, the scale and gate of each branch in that order, and the branches are scaled
    but not shifted; the final layer keeps its shift; only with ``conditioning: adaln-zero``).
- ``routes``: TREAD routes (see :mod:`repro.models.routing`), active only in training mode.
- ``stochastic_depth``: per-sample block skipping in training, the reply's proposed ablation.
- ``init``: ``"adaln-zero"`` (DiT: after the xavier pass, every adaLN projection and the output
  linear are set to zero, so each block starts as the identity and the model outputs zero) or
  ``"xavier"`` (what TREAD's released ``dit.py`` trains from: its blocks zero their adaLN layers in
  their constructors, but the model's ``initialize_weights`` then applies xavier-uniform to every
  ``nn.Linear``, those included, and does not zero them again, so the adaLN and output projections
  start xavier-uniform with zero bias). Only with ``conditioning: adaln-zero``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..validation import check_bool, check_choice, check_int, check_real
from .layers import (
    Attention,
    LabelEmbedder,
    Mlp,
    PatchEmbed,
    SwiGLU,
    TimestepEmbedder,
    get_2d_sincos_pos_embed,
    make_norm,
    modulate,
    rope_2d_tables,
)
from .routing import (
    Route,
    StochasticDepth,
    as_route,
    as_stochastic_depth,
    check_keep_ids,
    gather_tokens,
    sample_keep_ids,
    scatter_tokens,
    validate_routes,
    validate_stochastic_depth,
)

_CHOICES = {
    "norm_placement": ("pre", "post"),
    "conditioning": ("adaln-zero", "adaln-single"),
    "norm": ("layernorm", "rmsnorm", "rmsnorm-affine"),
    "mlp": ("gelu", "swiglu", "swiglu-lightningdit"),
    "pos_embed": ("sincos", "rope", "sincos+rope"),
    "init": ("adaln-zero", "xavier"),
}


@dataclass
class DiTConfig:
    """Everything that defines a model. Defaults are the official ``DiT`` class defaults (XL/2)."""

    input_size: int = 32
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    class_dropout_prob: float = 0.1
    num_classes: int = 1000
    learn_sigma: bool = True
    discard_sigma: bool = False
    norm_placement: str = "pre"
    conditioning: str = "adaln-zero"
    norm: str = "layernorm"
    mlp: str = "gelu"
    pos_embed: str = "sincos"
    qk_norm: bool = False
    qk_norm_eps: float = 1e-6
    adaln_shift: bool = True
    routes: Sequence[Route] = field(default_factory=tuple)
    stochastic_depth: StochasticDepth | None = None
    fp32_after_route: bool = True
    init: str = "adaln-zero"

    def __post_init__(self):
        self.routes = tuple(as_route(r) for r in self.routes)
        self.stochastic_depth = as_stochastic_depth(self.stochastic_depth)
        self.validate()

    def validate(self) -> None:
        for name, allowed in _CHOICES.items():
            check_choice(name, getattr(self, name), allowed)
        for name in ("input_size", "patch_size", "in_channels", "hidden_size", "depth", "num_heads", "num_classes"):
            check_int(name, getattr(self, name))
        if self.input_size % self.patch_size:
            raise ValueError(f"input_size: {self.input_size} is not divisible by patch_size {self.patch_size}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size: {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.uses_sincos and self.hidden_size % 4:
            raise ValueError(f"hidden_size: {self.hidden_size} must be divisible by 4 for sincos pos_embed")
        if self.uses_rope and (self.hidden_size // self.num_heads) % 4:
            raise ValueError(
                f"num_heads: head dimension {self.hidden_size // self.num_heads} must be divisible by 4 for rope"
            )
        check_real("class_dropout_prob", self.class_dropout_prob, ge=0.0, lt=1.0)
        check_real("mlp_ratio", self.mlp_ratio, gt=0)
        check_real("qk_norm_eps", self.qk_norm_eps, gt=0)
        validate_routes(self.routes, self.depth)
        validate_stochastic_depth(self.stochastic_depth, self.depth)
        for name in ("learn_sigma", "discard_sigma", "qk_norm", "adaln_shift", "fp32_after_route"):
            check_bool(name, getattr(self, name))
        if not self.adaln_shift and self.conditioning != "adaln-zero":
            raise ValueError(
                f"adaln_shift: False (LightningDiT's wo_shift) needs conditioning 'adaln-zero', "
                f"not {self.conditioning!r}"
            )
        if self.discard_sigma and not self.learn_sigma:
            raise ValueError("discard_sigma: True needs learn_sigma=True (it drops the variance half of the output)")
        if self.routes and self.stochastic_depth is not None:
            raise ValueError("stochastic_depth: cannot be combined with routes in one model; pick one ablation")
        if self.init == "xavier" and self.conditioning != "adaln-zero":
            raise ValueError(
                f"init: 'xavier' (TREAD's release) needs conditioning 'adaln-zero', not {self.conditioning!r}"
            )

    @property
    def uses_sincos(self) -> bool:
        """Whether the fixed sin-cos table is added to the tokens (``sincos`` and ``sincos+rope``)."""
        return self.pos_embed in ("sincos", "sincos+rope")

    @property
    def uses_rope(self) -> bool:
        """Whether attention rotates q and k by 2-D RoPE (``rope`` and ``sincos+rope``)."""
        return self.pos_embed in ("rope", "sincos+rope")

    @property
    def num_tokens(self) -> int:
        return (self.input_size // self.patch_size) ** 2

    @property
    def out_channels(self) -> int:
        """Channels of the final layer: twice the input's with ``learn_sigma`` (noise and variance halves)."""
        return self.in_channels * 2 if self.learn_sigma else self.in_channels

    @property
    def output_channels(self) -> int:
        """Channels that ``forward`` returns: ``out_channels`` less the variance half when ``discard_sigma``."""
        return self.in_channels if self.discard_sigma else self.out_channels

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["routes"] = [dataclasses.asdict(r) for r in self.routes]
        return d

    def replace(self, **changes) -> DiTConfig:
        return dataclasses.replace(self, **changes)


@dataclass
class TrainingDraws:
    """The random choices of one training forward, drawn ahead of it (see :meth:`DiT.draw_training`).

    ``drop_ids`` (B,) long, 1 where the label is replaced by the null class (None without label dropout);
    ``keep_ids`` one (B, kept) index tensor per route; ``depth_draws`` one (B,) uniform tensor per
    stochastic-depth block (a sample keeps the block where its draw is >= the skip probability).
    """

    drop_ids: torch.Tensor | None
    keep_ids: tuple[torch.Tensor, ...]
    depth_draws: tuple[torch.Tensor, ...]


def block_norm(cfg: DiTConfig) -> nn.Module:
    """The norm of a block's branches and of the final layer: no parameters, except ``rmsnorm-affine``'s weight."""
    if cfg.norm == "rmsnorm-affine":
        return make_norm("rmsnorm", cfg.hidden_size, affine=True)
    return make_norm(cfg.norm, cfg.hidden_size)


class DiTBlock(nn.Module):
    """One transformer block conditioned by adaLN(-zero) modulation."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        d = cfg.hidden_size
        self.norm1 = block_norm(cfg)
        qk_kind = "rmsnorm" if cfg.norm == "rmsnorm-affine" else cfg.norm  # the qk-norm has a weight either way
        self.attn = Attention(
            d, cfg.num_heads, qkv_bias=True, qk_norm=cfg.qk_norm, norm=qk_kind, qk_norm_eps=cfg.qk_norm_eps
        )
        self.norm2 = block_norm(cfg)
        hidden = int(d * cfg.mlp_ratio)
        if cfg.mlp == "gelu":
            self.mlp = Mlp(d, hidden)
        else:
            self.mlp = SwiGLU(d, hidden, width="floor" if cfg.mlp == "swiglu-lightningdit" else "ceil8")
        # adaLN-zero: the block's own SiLU + Linear(d, 6d) (4d without the shifts); adaLN-single: the model holds
        # the shared projection and the block a learned (6, d) table. The other is None (no state_dict entry).
        self.adaLN_modulation = self.scale_shift_table = None
        self.shift = cfg.adaln_shift
        if cfg.conditioning == "adaln-zero":
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, (6 if self.shift else 4) * d, bias=True))
        else:
            self.scale_shift_table = nn.Parameter(torch.zeros(6, d))

    def modulation(self, c: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        """c is the condition (B, d) for adaLN-zero, or the shared projection (B, 6d) for adaLN-single.

        (shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp); the shifts are None without them."""
        if self.scale_shift_table is not None:
            return (self.scale_shift_table[None] + c.view(c.shape[0], 6, -1)).unbind(1)
        if not self.shift:  # LightningDiT's wo_shift: its 4d projection is (scale, gate) of each branch
            scale_msa, gate_msa, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(4, dim=1)
            return None, scale_msa, gate_msa, None, scale_mlp, gate_mlp
        return self.adaLN_modulation(c).chunk(6, dim=1)

    def forward(self, x: torch.Tensor, c: torch.Tensor, rope=None) -> torch.Tensor:
        """DiT's block: the residual stream is never normalized; each branch sees modulate(LN(x))."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.modulation(c)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa), rope)
        return x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class PostNormDiTBlock(DiTBlock):
    """The post-norm variant: ``x <- LN(x + gate * f(modulate(x)))``; same parameters as :class:`DiTBlock`."""

    def forward(self, x: torch.Tensor, c: torch.Tensor, rope=None) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.modulation(c)
        x = self.norm1(x + gate_msa.unsqueeze(1) * self.attn(modulate(x, shift_msa, scale_msa), rope))
        return self.norm2(x + gate_mlp.unsqueeze(1) * self.mlp(modulate(x, shift_mlp, scale_mlp)))


class FinalLayer(nn.Module):
    """adaLN (shift, scale) on the normalized tokens, then a linear map to patch pixels."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        d = cfg.hidden_size
        self.norm_final = block_norm(cfg)
        self.linear = nn.Linear(d, cfg.patch_size * cfg.patch_size * cfg.out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d, bias=True))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiT(nn.Module):
    """Diffusion transformer; ``DiT()`` with no arguments is the official DiT-XL/2 at 256x256."""

    def __init__(self, config: DiTConfig | None = None, **kwargs):
        super().__init__()
        if config is None:
            config = DiTConfig(**kwargs)
        elif kwargs:
            config = config.replace(**kwargs)
        cfg = self.config = config
        self.learn_sigma = cfg.learn_sigma
        self.in_channels = cfg.in_channels
        self.out_channels = cfg.out_channels
        self.patch_size = cfg.patch_size
        self.num_heads = cfg.num_heads

        self.x_embedder = PatchEmbed(cfg.input_size, cfg.patch_size, cfg.in_channels, cfg.hidden_size)
        self.t_embedder = TimestepEmbedder(cfg.hidden_size)
        self.y_embedder = LabelEmbedder(cfg.num_classes, cfg.hidden_size, cfg.class_dropout_prob)
        num_patches = self.x_embedder.num_patches
        # The variants are chosen here, once; what a variant does not use is None (no state_dict entry).
        self.pos_embed = self.t_block = None
        self.register_buffer("rope_cos", None, persistent=False)
        self.register_buffer("rope_sin", None, persistent=False)
        if cfg.uses_sincos:
            # fixed sin-cos table, stored as a frozen parameter as in the official checkpoints
            self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, cfg.hidden_size), requires_grad=False)
        if cfg.uses_rope:
            cos, sin = rope_2d_tables(cfg.hidden_size // cfg.num_heads, self.x_embedder.grid_size)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        if cfg.conditioning == "adaln-single":
            self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(cfg.hidden_size, 6 * cfg.hidden_size, bias=True))
        block = PostNormDiTBlock if cfg.norm_placement == "post" else DiTBlock
        self.blocks = nn.ModuleList([block(cfg) for _ in range(cfg.depth)])
        self.final_layer = FinalLayer(cfg)
        self.initialize_weights()

    # ---------------------------------------------------------------------------------------
    def initialize_weights(self) -> None:
        """DiT's initialization: xavier-uniform linears, N(0, 0.02) embedders, zero adaLN and output.

        With ``init: xavier`` the zeroing is skipped (TREAD's released initialisation; see the module docstring).
        """

        def _basic_init(module):
            if isinstance(module, nn.Linear):
                torch.nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.constant_(module.bias, 0)

        self.apply(_basic_init)
        if self.pos_embed is not None:
            pe = get_2d_sincos_pos_embed(self.pos_embed.shape[-1], self.x_embedder.grid_size)
            self.pos_embed.data.copy_(torch.from_numpy(pe).float().unsqueeze(0))
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view([w.shape[0], -1]))
        nn.init.constant_(self.x_embedder.proj.bias, 0)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        if self.config.init == "xavier":
            return  # TREAD's release: the adaLN and output projections keep the xavier pass above
        d = self.config.hidden_size
        for block in self.blocks:
            if block.adaLN_modulation is not None:
                nn.init.constant_(block.adaLN_modulation[-1].weight, 0)
                nn.init.constant_(block.adaLN_modulation[-1].bias, 0)
            else:
                with torch.no_grad():
                    block.scale_shift_table.copy_(torch.randn(6, d) / d**0.5)
                    block.scale_shift_table[2].zero_()  # gate_msa
                    block.scale_shift_table[5].zero_()  # gate_mlp
        if self.t_block is not None:
            nn.init.constant_(self.t_block[-1].weight, 0)
            nn.init.constant_(self.t_block[-1].bias, 0)
        nn.init.constant_(self.final_layer.adaLN_modulation[-1].weight, 0)
        nn.init.constant_(self.final_layer.adaLN_modulation[-1].bias, 0)
        nn.init.constant_(self.final_layer.linear.weight, 0)
        nn.init.constant_(self.final_layer.linear.bias, 0)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, p*p*C) -> (B, C, H, W)."""
        c, p = self.out_channels, self.x_embedder.patch_size
        h = w = self.x_embedder.grid_size
        x = x.reshape(x.shape[0], h, w, p, p, c)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(x.shape[0], c, h * p, w * p)

    # ---------------------------------------------------------------------------------------
    def routing_active(self, force_routing: bool = False) -> bool:
        return bool(self.config.routes) and (self.training or force_routing)

    def _rope(self, ids: torch.Tensor | None):
        if self.rope_cos is None:
            return None
        if ids is None:
            return self.rope_cos[None], self.rope_sin[None]
        return self.rope_cos[ids], self.rope_sin[ids]

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        keep_ids: Sequence[torch.Tensor] | None = None,
        force_routing: bool = False,
        force_drop_ids: torch.Tensor | None = None,
        draws: TrainingDraws | None = None,
        capture: Sequence[int] = (),
    ) -> torch.Tensor | tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """x (B, C, H, W), t (B,) diffusion time, y (B,) labels -> (B, out_channels, H, W).

        ``generator`` drives label dropout, route selection and stochastic depth (in that order);
        ``keep_ids`` gives each route's kept-token indices (B, N - floor(N*rate)) explicitly.
        ``draws`` (from :meth:`draw_training`) gives all of these at once, already drawn: the forward then
        draws nothing, checks nothing on the host and can be compiled as one graph.
        Routes and stochastic depth act only in training mode, or when ``force_routing``.
        ``capture`` (block indices, 0-based) also returns the tokens after each of those blocks, ``(out, {i: (B, N,
        hidden_size)})``, with their graph (a representation regularizer's input); empty, the forward is unchanged.
        """
        if draws is not None:
            force_drop_ids, keep_ids = draws.drop_ids, draws.keep_ids
        x, c = self.embed(x, t, y, generator=generator, force_drop_ids=force_drop_ids)
        hidden = {} if capture else None
        x = self.forward_blocks(
            x,
            c,
            generator=generator,
            keep_ids=keep_ids,
            force_routing=force_routing,
            draws=draws,
            hidden=hidden,
            capture=capture,
        )
        x = self.final_layer(x, c)
        x = self.unpatchify(x)
        if self.config.discard_sigma:  # SiT's official layout: the variance half is built, never used
            x = x[:, : self.in_channels]
        return x if hidden is None else (x, hidden)

    def embed(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, *, generator=None, force_drop_ids=None):
        """How every forward starts: the patch tokens with their positions (B, N, hidden_size) and the conditioning
        c = t embedding + y embedding (B, hidden_size), the timestep embedded first, then the labels (with label
        dropout in training mode, drawn from ``generator``, or where ``force_drop_ids`` says)."""
        x = self.x_embedder(x)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        t = self.t_embedder(t)
        y = self.y_embedder(y, self.training, force_drop_ids=force_drop_ids, generator=generator)
        return x, t + y

    def features(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, block: int, force_drop_ids=None):
        """The tokens (B, N, hidden_size) after block ``block`` (0-based) of a dense forward, the blocks after it
        and the final layer not run: a representation target (SRA's EMA teacher) at the cost of the blocks it needs.
        Label dropout only where ``force_drop_ids`` says (eval mode, as the teacher runs)."""
        check_int("block", block, low=0, high=self.config.depth - 1)
        x, c = self.embed(x, t, y, force_drop_ids=force_drop_ids)
        block_c = self.t_block(c) if self.t_block is not None else c
        rope = self._rope(None)
        for i in range(block + 1):
            x = self.blocks[i](x, block_c, rope)
        return x

    def draw_training(self, batch: int, generator: torch.Generator | None, device=None) -> TrainingDraws:
        """Draw what a training-mode forward of ``batch`` samples would draw from ``generator``, in the same
        order (label dropout, then each route's tokens and each stochastic-depth block's draw, by block),
        so ``forward(..., draws=model.draw_training(B, g))`` equals ``forward(..., generator=g)`` bit for bit."""
        cfg, gen_device = self.config, generator.device if generator is not None else device
        drop_ids = None
        if self.y_embedder.dropout_prob > 0:
            u = torch.rand(batch, device=gen_device, generator=generator)
            drop_ids = (u < self.y_embedder.dropout_prob).long().to(device)
        keep_ids, depth_draws = [], []
        sd = cfg.stochastic_depth
        starts = {r.start: r for r in cfg.routes}
        for i in range(cfg.depth):
            if i in starts:
                keep_ids.append(sample_keep_ids(batch, self.x_embedder.num_patches, starts[i].rate, generator, device))
            if sd is not None and sd.start <= i <= sd.end and sd.prob > 0:
                depth_draws.append(torch.rand(batch, generator=generator, device=gen_device))
        return TrainingDraws(drop_ids, tuple(keep_ids), tuple(depth_draws))

    def forward_blocks(
        self, x, c, *, generator=None, keep_ids=None, force_routing=False, draws=None, hidden=None, capture=()
    ):
        cfg = self.config
        block_c = self.t_block(c) if self.t_block is not None else c
        B, N, _ = x.shape
        routing = self.routing_active(force_routing)
        starts = {r.start: i for i, r in enumerate(cfg.routes)} if routing else {}
        if keep_ids is not None and len(keep_ids) != len(cfg.routes):
            raise ValueError(f"keep_ids: got {len(keep_ids)} index tensors for {len(cfg.routes)} routes")
        fp32_blocks = {r.end + 1 for r in cfg.routes} if routing and cfg.fp32_after_route else set()
        sd = cfg.stochastic_depth if (self.training or force_routing) else None
        route, saved, ids = None, None, None
        rope = self._rope(None)
        depth_draws = iter(draws.depth_draws) if draws is not None else None
        for i, block in enumerate(self.blocks):
            if i in starts:
                k = starts[i]
                route = cfg.routes[k]
                if draws is not None:
                    ids = keep_ids[k]
                elif keep_ids is not None:
                    ids = check_keep_ids(keep_ids[k].to(x.device), B, N, route, k)
                else:
                    ids = sample_keep_ids(B, N, route.rate, generator, device=x.device)
                saved, x = x, gather_tokens(x, ids)
                rope = self._rope(ids)
            if sd is not None and sd.start <= i <= sd.end and sd.prob > 0:
                draw = next(depth_draws) if depth_draws is not None else None
                x = self._stochastic_block(block, x, block_c, rope, sd.prob, generator, draw)
            elif i in fp32_blocks and x.device.type != "meta" and torch.is_autocast_enabled(x.device.type):
                with torch.autocast(device_type=x.device.type, enabled=False):
                    x = block(x.float(), block_c.float(), rope)
            else:
                x = block(x, block_c, rope)
            if route is not None and i == route.end:
                x = scatter_tokens(saved, ids, x)
                route, saved, ids = None, None, None
                rope = self._rope(None)
            if hidden is not None and i in capture:
                hidden[i] = x  # after a route's last block: every token again (inside a route: the kept ones)
        return x

    @staticmethod
    def _stochastic_block(block, x, c, rope, prob, generator, keep=None):
        """Run ``block`` only on the samples that keep it; rescale their increment by 1/(1-prob)."""
        if keep is None:
            keep = torch.rand(x.shape[0], generator=generator, device=generator.device if generator else x.device)
        idx = (keep >= prob).nonzero().squeeze(1).to(x.device)
        if idx.numel() == 0:
            return x
        xs = x.index_select(0, idx)
        cs = c.index_select(0, idx)
        inc = (block(xs, cs, rope) - xs) / (1.0 - prob)
        return x.index_add(0, idx, inc.to(x.dtype))

    def forward_with_cfg(self, x, t, y, cfg_scale, guided_channels: int = 3):
        """Classifier-free guidance as in the official code: the batch's second half holds null labels.

        DiT guides only the first three channels of its 4-channel latents ("for exact
        reproducibility"); ``guided_channels=None`` guides all ``in_channels``. The count is capped at
        ``in_channels``, so learned-variance channels are never guided.
        """
        half = x[: len(x) // 2]
        combined = torch.cat([half, half], dim=0)
        model_out = self.forward(combined, t, y)
        k = self.in_channels if guided_channels is None else min(guided_channels, self.in_channels)
        eps, rest = model_out[:, :k], model_out[:, k:]
        cond_eps, uncond_eps = torch.split(eps, len(eps) // 2, dim=0)
        half_eps = uncond_eps + cfg_scale * (cond_eps - uncond_eps)
        eps = torch.cat([half_eps, half_eps], dim=0)
        return torch.cat([eps, rest], dim=1)


@contextlib.contextmanager
def dense_inference(model: nn.Module):
    """Eval mode for the duration (routes and stochastic depth off, no label dropout), restored after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


# ------------------------------------------------------------------------------------------
# The twelve named sizes of the paper (Table 1) and SiT's names for the same backbones
# ------------------------------------------------------------------------------------------

SIZES = {
    "S": dict(depth=12, hidden_size=384, num_heads=6),
    "B": dict(depth=12, hidden_size=768, num_heads=12),
    "L": dict(depth=24, hidden_size=1024, num_heads=16),
    "XL": dict(depth=28, hidden_size=1152, num_heads=16),
}
PATCHES = (2, 4, 8)
MODEL_NAMES = tuple(f"{family}-{s}/{p}" for family in ("DiT", "SiT") for s in SIZES for p in PATCHES)


def config_for(name: str, **overrides) -> DiTConfig:
    """``DiTConfig`` of a named model (``DiT-XL/2`` ... ``SiT-S/8``), with keyword overrides.

    SiT uses DiT's backbone unchanged, in its official layout: ``learn_sigma=True`` builds the final layer
    with the variance half (so SiT's released state_dicts load with ``strict=True``) and ``discard_sigma``
    drops that half from the output, as SiT's ``forward`` does. ``learn_sigma=False`` as an override gives
    the smaller final layer instead.
    """
    try:
        family, rest = name.split("-", 1)
        size, patch = rest.split("/")
        base = dict(SIZES[size], patch_size=int(patch))
        if family not in ("DiT", "SiT") or int(patch) not in PATCHES:
            raise KeyError(name)
    except (ValueError, KeyError):
        raise ValueError(f"model: unknown name {name!r}; allowed: {', '.join(MODEL_NAMES)}") from None
    if family == "SiT":
        base["learn_sigma"] = True
        base["discard_sigma"] = bool(overrides.get("learn_sigma", True))
    known = {f.name for f in dataclasses.fields(DiTConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"model overrides: unknown field(s) {unknown}; allowed: {sorted(known)}")
    base.update(overrides)
    return DiTConfig(**base)


def create(name: str, **overrides) -> DiT:
    """Build a named model: ``create("DiT-XL/2")``, ``create("DiT-B/2", routes=[(2, 8, 0.5)])``."""
    return DiT(config_for(name, **overrides))


def tread_routes(depth: int, rate: float = 0.5) -> tuple[Route, ...]:
    """TREAD's official single route: block 2 to block depth-4 (2->8 for 12 blocks, 2->24 for 28)."""
    return (Route(2, depth - 4, rate),)
