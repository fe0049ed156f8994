"""Building blocks of the DiT family: embedders, attention, MLPs, norms, positional encodings.

Module and parameter names follow the official DiT release (which builds on timm's ``Attention``,
``Mlp`` and ``PatchEmbed``), so a DiT assembled from these layers has exactly the official
``state_dict`` keys and shapes.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def modulate(x: torch.Tensor, shift: torch.Tensor | None, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation of token features ``x`` (B, N, D) by per-sample ``shift``/``scale`` (B, D).

    ``shift=None`` scales only (LightningDiT's ``wo_shift`` blocks).
    """
    if shift is None:
        return x * (1 + scale.unsqueeze(1))
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def make_norm(kind: str, dim: int, eps: float = 1e-6, affine: bool = False) -> nn.Module:
    """LayerNorm (DiT) or RMSNorm (LightningDiT); DiT's block norms carry no affine parameters.

    With ``affine`` LayerNorm has a weight (ones) and a bias (zeros), RMSNorm a weight (ones): LightningDiT's
    ``RMSNorm`` (``x * rsqrt(mean(x^2) + eps) * weight``, eps 1e-6) is ``make_norm("rmsnorm", d, affine=True)``.
    """
    if kind == "layernorm":
        return nn.LayerNorm(dim, elementwise_affine=affine, eps=eps)
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, eps=eps, elementwise_affine=affine)
    raise ValueError(f"norm: unknown value {kind!r}; allowed: 'layernorm', 'rmsnorm'")


# --------------------------------------------------------------------------------------------
# Embedders
# --------------------------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    """Image (B, C, H, W) -> tokens (B, N, D) with a strided convolution (the ``proj`` of timm)."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.img_size = img_size
        self.patch_size = patch_size
        self.grid_size = img_size // patch_size
        self.num_patches = self.grid_size**2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(
                f"input: spatial size {tuple(x.shape[-2:])} does not match the model's input_size {self.img_size}"
            )
        return self.proj(x).flatten(2).transpose(1, 2)


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of a scalar time (256 frequencies) followed by a two-layer SiLU MLP."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size, bias=True),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size, bias=True),
        )
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
        """cos/sin features with frequencies exp(-ln(max_period) * k / half), k < half = dim // 2.

        DiT divides by ``half``; diffusers' default divides by ``half - 1`` (its
        ``downscale_freq_shift=1``), which is one of the differences ``convert`` corrects.
        """
        half = dim // 2
        freqs = torch.exp(
            -math.log(max_period) * torch.arange(start=0, end=half, dtype=torch.float32, device=t.device) / half
        )
        args = t[:, None].float() * freqs[None]
        embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
        return embedding

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t_freq = self.timestep_embedding(t, self.frequency_embedding_size)
        return self.mlp(t_freq.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class labels -> vectors; index ``num_classes`` is the null class used for guidance.

    During training labels are replaced by the null class with probability ``dropout_prob``.
    The draw uses ``generator`` when given, so label dropout is reproducible.
    """

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float):
        super().__init__()
        use_cfg_embedding = dropout_prob > 0
        self.embedding_table = nn.Embedding(num_classes + int(use_cfg_embedding), hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def token_drop(
        self,
        labels: torch.Tensor,
        force_drop_ids: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        if force_drop_ids is None:
            drop_ids = torch.rand(labels.shape[0], device=labels.device, generator=generator) < self.dropout_prob
        else:
            drop_ids = force_drop_ids == 1
        return torch.where(drop_ids, self.num_classes, labels)

    def forward(
        self,
        labels: torch.Tensor,
        train: bool,
        force_drop_ids: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        use_dropout = self.dropout_prob > 0
        if (train and use_dropout) or (force_drop_ids is not None):
            labels = self.token_drop(labels, force_drop_ids, generator)
        return self.embedding_table(labels)


# --------------------------------------------------------------------------------------------
# Positional encodings
# --------------------------------------------------------------------------------------------


def get_1d_sincos_pos_embed_from_grid(embed_dim: int, pos: np.ndarray) -> np.ndarray:
    """(M,) positions -> (M, embed_dim): sin of the first half of frequencies, then cos (float64)."""
    if embed_dim % 2:
        raise ValueError(f"hidden_size: sin-cos position embedding needs an even width, got {embed_dim}")
    omega = np.arange(embed_dim // 2, dtype=np.float64)
    omega /= embed_dim / 2.0
    omega = 1.0 / 10000**omega
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def get_2d_sincos_pos_embed(embed_dim: int, grid_size: int) -> np.ndarray:
    """Fixed 2-D sin-cos table (grid_size**2, embed_dim) in DiT's (MAE's) layout.

    Half the channels encode one grid axis, half the other. The grid is built with
    ``meshgrid(w, h)``, so the first half encodes the column index, as in the official code.
    """
    if embed_dim % 4:
        raise ValueError(f"hidden_size: 2-D sin-cos embedding needs a width divisible by 4, got {embed_dim}")
    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0).reshape([2, 1, grid_size, grid_size])
    emb_h = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[0])
    emb_w = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[1])
    return np.concatenate([emb_h, emb_w], axis=1)


def rope_2d_tables(head_dim: int, grid_size: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables (N, head_dim) of 2-D axial rotary embeddings, N = grid_size**2.

    The first half of each head's channels rotates with the token's row, the second half with its
    column; within each half, channel pairs (2i, 2i+1) rotate by position * theta^(-2i/half).
    Token n sits at row n // grid_size, column n % grid_size (the order of ``PatchEmbed``).
    """
    if head_dim % 4:
        raise ValueError(f"pos_embed: rope needs a head dimension divisible by 4, got {head_dim}")
    half = head_dim // 2
    freqs = theta ** (-torch.arange(0, half, 2, dtype=torch.float64) / half)  # (half/2,)
    idx = torch.arange(grid_size * grid_size)
    rows, cols = (idx // grid_size).double(), (idx % grid_size).double()
    ang = torch.cat([rows[:, None] * freqs[None], cols[:, None] * freqs[None]], dim=1)  # (N, half)
    ang = ang.repeat_interleave(2, dim=1)  # (N, head_dim): each pair shares an angle
    return ang.cos().float(), ang.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs of ``x`` (B, H, N, Dh) by the angles whose cos/sin are (B or 1, N, Dh)."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    rotated = torch.stack([-x2, x1], dim=-1).flatten(-2)
    return x * cos.unsqueeze(1).to(x.dtype) + rotated * sin.unsqueeze(1).to(x.dtype)


# --------------------------------------------------------------------------------------------
# Attention and MLPs
# --------------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection (timm's layout) and optional
    per-head q/k normalization and rotary embeddings."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        norm: str = "layernorm",
        qk_norm_eps: float = 1e-6,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads: hidden_size {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = make_norm(norm, self.head_dim, qk_norm_eps, affine=True) if qk_norm else nn.Identity()
        self.k_norm = make_norm(norm, self.head_dim, qk_norm_eps, affine=True) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    """fc1 -> tanh-approximated GELU -> fc2, as DiT (timm ``Mlp`` with ``approx_gelu``)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


SWIGLU_WIDTHS = ("ceil8", "floor")


def swiglu_width(hidden: int, rule: str = "ceil8") -> int:
    """The SwiGLU hidden width that replaces a GELU MLP of width ``hidden``: about 2/3 of it, so the parameter
    count stays close to DiT's. ``"ceil8"`` rounds 2/3 of it up to a multiple of 8; ``"floor"`` is LightningDiT's
    ``int(2/3 * hidden)``. They agree where 2/3 of the width is a multiple of 8 (DiT-S/B/XL, 1536, width 96) and
    differ elsewhere (L's 1024: 2736 against 2730; 1792: 4784 against 4778)."""
    if rule == "ceil8":
        return 8 * math.ceil(2 * hidden / 3 / 8)
    if rule == "floor":
        return int(2 / 3 * hidden)
    raise ValueError(f"width: unknown SwiGLU width rule {rule!r}; allowed: {', '.join(map(repr, SWIGLU_WIDTHS))}")


class SwiGLU(nn.Module):
    """fc2(silu(a) * b) with [a, b] = fc1(x), LightningDiT's feed-forward (its ``SwiGLUFFN``: ``w12`` is
    ``fc1``, ``w3`` is ``fc2``). ``hidden`` is the GELU MLP's width; see :func:`swiglu_width` for ``width``."""

    def __init__(self, dim: int, hidden: int, width: str = "ceil8"):
        super().__init__()
        hidden = swiglu_width(hidden, width)
        self.fc1 = nn.Linear(dim, 2 * hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(F.silu(a) * b)
