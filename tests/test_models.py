"""Property tests of the reference DiT, its variants, TREAD routing and stochastic depth."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from repro.evidence.published import PUBLISHED
from repro.models import (
    DiT,
    DiTConfig,
    Route,
    StochasticDepth,
    config_for,
    create,
    dense_inference,
    load_model,
    save_model,
    tread_routes,
)
from repro.models.layers import apply_rope, get_2d_sincos_pos_embed, rope_2d_tables
from repro.models.routing import sample_keep_ids

VARIANTS = dict(
    norm=st.sampled_from(["layernorm", "rmsnorm"]),
    mlp=st.sampled_from(["gelu", "swiglu"]),
    pos_embed=st.sampled_from(["sincos", "rope"]),
    qk_norm=st.booleans(),
    conditioning=st.sampled_from(["adaln-zero", "adaln-single"]),
)


def bypass_rates(num_tokens: int = 16):
    """Route rates at which a route bypasses between 1 and ``num_tokens - 1`` tokens: ``(k + u) / N`` with ``k``
    bypassed tokens and ``u`` away from 0 and 1, so ``floor(N * rate) = k`` for sure and ``ceil(N * rate) = k + 1``
    (a kept count rounded the wrong way shows)."""
    return st.builds(lambda k, u: (k + u) / num_tokens, st.integers(1, num_tokens - 1), st.floats(0.05, 0.95))


@st.composite
def valid_routes(draw, depth: int, n_routes: int, num_tokens: int = 16) -> list[Route]:
    """``n_routes`` ordered, non-overlapping routes over ``depth`` blocks, each bypassing tokens: every route leaves
    at least one block for each route after it, so every draw is a valid configuration."""
    routes, first = [], 0
    for i in range(n_routes):
        last = depth - 1 - (n_routes - 1 - i)  # the last block this route may use
        start = draw(st.integers(first, last))
        end = draw(st.integers(start, last))
        routes.append(Route(start, end, draw(bypass_rates(num_tokens))))
        first = end + 1
    return routes


def tiny(**kw) -> DiTConfig:
    base = dict(input_size=8, patch_size=2, in_channels=2, hidden_size=32, depth=4, num_heads=2, num_classes=10)
    base.update(kw)
    return DiTConfig(**base)


def randomize(model: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    """Give every trainable parameter random values, so no block is the identity any more."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def inputs(cfg: DiTConfig, batch: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g).float()
    y = torch.randint(0, cfg.num_classes, (batch,), generator=g)
    return x, t, y


def tokens_seen(model: DiT):
    """Register hooks recording how many tokens each block call receives."""
    seen: list[list[int]] = [[] for _ in model.blocks]
    handles = [
        b.register_forward_pre_hook(lambda mod, args, i=i: seen[i].append(args[0].shape[1]))
        for i, b in enumerate(model.blocks)
    ]
    return seen, handles


# ------------------------------------------------------------------------------------------
# The official DiT: names, shapes, sizes
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,depth,d,patch", [("DiT-XL/2", 28, 1152, 2), ("DiT-S/8", 12, 384, 8)])
def test_official_state_dict_keys(name, depth, d, patch, released_shapes):
    with torch.device("meta"):
        model = create(name)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == released_shapes(depth, d, patch)


# Published parameter counts (DiT paper, Table 4), in millions as printed: repro/evidence/published.yaml
PAPER_PARAMS_M = {f"DiT-{size}/2": m for size, m in PUBLISHED["dit_table4"]["params_m"].items()}


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS_M))
def test_parameter_counts_match_paper(name):
    with torch.device("meta"):
        model = create(name)
    # the frozen sin-cos table is stored but not counted as a parameter
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert round(n / 1e6) == PAPER_PARAMS_M[name]


def test_pos_embed_is_fixed_2d_sincos_in_official_layout():
    m = create("DiT-S/8")
    pe = m.pos_embed[0]
    assert not m.pos_embed.requires_grad
    g, d = 4, 384
    # token n sits at row n // g, column n % g; the first half of channels encodes the column
    for n in range(g * g):
        col, row = n % g, n // g
        omega = 1.0 / 10000 ** (torch.arange(d // 4, dtype=torch.float64) / (d // 4))
        want = torch.cat(
            [torch.sin(col * omega), torch.cos(col * omega), torch.sin(row * omega), torch.cos(row * omega)]
        )
        torch.testing.assert_close(pe[n].double(), want, atol=1e-6, rtol=0)
    assert get_2d_sincos_pos_embed(d, g).shape == (g * g, d)


def test_create_knows_all_twelve_sizes_and_sit_names():
    for s in ("S", "B", "L", "XL"):
        for p in (2, 4, 8):
            cfg = config_for(f"DiT-{s}/{p}")
            assert cfg.patch_size == p and cfg.learn_sigma
            sit = config_for(f"SiT-{s}/{p}")  # SiT's released layout: variance half built, then discarded
            assert sit.learn_sigma and sit.discard_sigma and sit.output_channels == sit.in_channels


def test_label_dropout_uses_null_class_and_generator():
    m = DiT(tiny(class_dropout_prob=0.5)).train()
    y = torch.arange(8) % 10
    a = m.y_embedder.token_drop(y, generator=torch.Generator().manual_seed(3))
    b = m.y_embedder.token_drop(y, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert set(a.tolist()) - set(y.tolist()) <= {10}
    assert (a == 10).any() and (a != 10).any()
    assert m.y_embedder.embedding_table.num_embeddings == 11


# ------------------------------------------------------------------------------------------
# adaLN-zero: identity at initialization
# ------------------------------------------------------------------------------------------


@given(seed=st.integers(0, 2**16), scale=st.floats(0.01, 100.0), **VARIANTS)
def test_adaln_zero_block_is_identity_at_init(seed, scale, **variant):
    cfg = tiny(**variant)
    torch.manual_seed(seed)
    model = DiT(cfg)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, cfg.num_tokens, cfg.hidden_size, generator=g) * scale
    c = torch.randn(2, cfg.hidden_size, generator=g) * scale
    block_c = model.t_block(c) if model.t_block is not None else c
    for block in model.blocks:
        assert torch.equal(block(x, block_c, model._rope(None)), x)


@given(seed=st.integers(0, 2**16), **VARIANTS)
def test_model_output_is_zero_at_init(seed, **variant):
    cfg = tiny(**variant)
    torch.manual_seed(seed)
    model = DiT(cfg)
    x, t, y = inputs(cfg, seed=seed)
    out = model(x, t, y)
    assert out.shape == (3, cfg.out_channels, cfg.input_size, cfg.input_size)
    assert torch.count_nonzero(out) == 0


def _zeroed_by_adaln_zero(name: str) -> bool:
    """The tensors that DiT's initialization zeros after its xavier pass."""
    return "adaLN_modulation" in name or name.startswith("final_layer.linear")


@given(seed=st.integers(0, 2**16))
def test_xavier_init_is_tread_release_init(seed):
    # TREAD's release (CompVis/tread dit.py): the xavier pass of initialize_weights also covers the adaLN and output
    # linears, and nothing zeros them afterwards. Everything else is drawn in the same order as DiT's init.
    torch.manual_seed(seed)
    dit = DiT(tiny())
    torch.manual_seed(seed)
    xav = DiT(tiny(init="xavier"))
    dit_params, xav_params = dict(dit.named_parameters()), dict(xav.named_parameters())
    assert dit_params.keys() == xav_params.keys()
    zeroed = [n for n in dit_params if _zeroed_by_adaln_zero(n)]
    assert len(zeroed) == 2 * (tiny().depth + 2)  # weight + bias of each block's adaLN, the final adaLN and linear
    for name, p in dit_params.items():
        q = xav_params[name]
        if not _zeroed_by_adaln_zero(name):
            assert torch.equal(p, q), name
        elif name.endswith(".bias"):
            assert torch.count_nonzero(p) == 0 and torch.count_nonzero(q) == 0, name
        else:
            fan_out, fan_in = q.shape
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            assert torch.count_nonzero(p) == 0 and q.abs().max() <= bound and q.std() > bound / 4, name
    x, t, y = inputs(tiny(), seed=seed)
    out = xav(x, t, y)
    assert torch.count_nonzero(out) == out.numel()  # the output is no longer zero at init


def test_xavier_init_is_checked():
    with pytest.raises(ValueError, match="init.*'zeros'"):
        tiny(init="zeros")
    with pytest.raises(ValueError, match="init: 'xavier'.*adaln-single"):
        tiny(init="xavier", conditioning="adaln-single")


# ------------------------------------------------------------------------------------------
# Pre-norm vs post-norm
# ------------------------------------------------------------------------------------------


def only_branch(block, branch: str):
    """Zero the gate of the other residual branch, so the block is x + (one branch's increment)."""
    gate_rows = {"attn": 5, "mlp": 2}[branch]  # chunk index of the *other* branch's gate
    d = block.norm1.normalized_shape[0]
    with torch.no_grad():
        block.adaLN_modulation[-1].weight[gate_rows * d : (gate_rows + 1) * d] = 0
        block.adaLN_modulation[-1].bias[gate_rows * d : (gate_rows + 1) * d] = 0
    return block


@given(
    seed=st.integers(0, 2**16),
    a=st.floats(0.25, 8.0),
    shift=st.floats(-5.0, 5.0),
    branch=st.sampled_from(["attn", "mlp"]),
)
def test_dit_block_is_pre_norm(seed, a, shift, branch):
    """Each residual branch sees the stream only through LN(x): affine changes of a token cancel out.

    ``x + gate * f(modulate(LN(x)))`` gives ``f``'s input the same value for ``x`` and ``a*x + b`` (a > 0, b constant
    per token), so the increment is unchanged, up to LayerNorm's eps: with ``m``, ``v`` a token's mean and variance,
    ``LN_eps(a x + b) = (x - m) / sqrt(v + eps / a^2) = LN_{eps / a^2}(x)`` exactly. Against ``LN_eps(x)`` that is a
    relative change of up to ``eps |1 / a^2 - 1| / (2 v)`` (3e-5 at a = 0.25, v = 0.25, eps = 1e-6), which the
    branch's Jacobian amplifies (2.5e-4 on the increment measured in float64), so the block at ``x`` is compared with
    the same block whose norms use ``eps / a^2``: then the two agree exactly in real arithmetic, and in float64 up to
    rounding: ``a x + b`` is off by about ``u (|b| + a |x|)`` (u = 1.1e-16), relative to LN's scale ``a sqrt(v)``
    at most 4e-14 here (|b| < 25, |x| < 5, a >= 0.25, v > 0.1), and the branch adds its own float64 rounding of the
    same order; atol 1e-9 of the increment's size leaves a factor 10^4 for the branch's gain. A post-norm block, or
    a branch that saw ``x`` itself, misses by order 1. The property holds per branch: the second branch of a block
    sees ``x + attention increment``, which is not an affine map of x.
    """
    cfg = tiny()
    block = only_branch(randomize(DiT(cfg), seed).blocks[1], branch).double()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, cfg.num_tokens, cfg.hidden_size, generator=g, dtype=torch.float64)
    c = torch.randn(2, cfg.hidden_size, generator=g, dtype=torch.float64)
    b = shift * torch.randn(2, cfg.num_tokens, 1, generator=g, dtype=torch.float64)  # one constant per token
    assert (x.var(-1, unbiased=False) > 0.1).all()
    x2 = a * x + b
    inc2 = block(x2, c) - x2
    scaled_eps = copy.deepcopy(block)
    scaled_eps.norm1.eps = scaled_eps.norm2.eps = block.norm1.eps / a**2
    inc1 = scaled_eps(x, c) - x
    assert inc1.abs().max() > 1e-2  # the branch is not trivially zero
    torch.testing.assert_close(inc2, inc1, atol=1e-9 * inc1.abs().max().item(), rtol=0)


def test_rmsnorm_block_is_scale_invariant():
    cfg = tiny(norm="rmsnorm")
    block = only_branch(randomize(DiT(cfg), 1).blocks[0], "attn")
    x = torch.randn(2, cfg.num_tokens, cfg.hidden_size)
    c = torch.randn(2, cfg.hidden_size)
    torch.testing.assert_close(block(3.0 * x, c) - 3.0 * x, block(x, c) - x, atol=2e-4, rtol=1e-4)


@given(seed=st.integers(0, 2**16))
def test_post_norm_variant_breaks_invariance(seed):
    cfg = tiny(norm_placement="post")
    block = only_branch(randomize(DiT(cfg), seed).blocks[1], "attn")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, cfg.num_tokens, cfg.hidden_size, generator=g)
    c = torch.randn(2, cfg.hidden_size, generator=g)
    x2 = 3.0 * x + 1.0
    out = block(x, c)
    assert (out - x - (block(x2, c) - x2)).abs().max() > 1e-2
    # the residual stream itself was normalized: each token has mean 0 and variance 1
    torch.testing.assert_close(out.mean(-1), torch.zeros(out.shape[:2]), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(-1, unbiased=False), torch.ones(out.shape[:2]), atol=1e-3, rtol=0)


def test_post_norm_is_not_identity_at_init():
    cfg = tiny(norm_placement="post")
    model = DiT(cfg)
    x = 5 * torch.randn(2, cfg.num_tokens, cfg.hidden_size) + 2
    assert not torch.allclose(model.blocks[0](x, torch.randn(2, cfg.hidden_size)), x)


# ------------------------------------------------------------------------------------------
# TREAD routing
# ------------------------------------------------------------------------------------------


def manual_routed_blocks(model: DiT, x, c, routes, keep_ids):
    """Routing written out step by step, independently of ``DiT.forward_blocks``."""
    starts = {r.start: (r, ids) for r, ids in zip(routes, keep_ids)}
    current = None
    for i, block in enumerate(model.blocks):
        if i in starts:
            r, ids = starts[i]
            saved = x.clone()
            x = torch.stack([x[b, ids[b]] for b in range(x.shape[0])])
            current = (r, ids, saved)
        x = block(x, c)
        if current is not None and i == current[0].end:
            r, ids, saved = current
            for b in range(x.shape[0]):
                saved[b, ids[b]] = x[b]
            x, current = saved, None
    return x


@given(seed=st.integers(0, 2**16), rate=bypass_rates(), start=st.integers(0, 3), length=st.integers(0, 3))
def test_routing_identity_blocks_equal_dense(seed, rate, start, length):
    cfg = tiny(routes=[(start, min(start + length, 3), rate)])
    torch.manual_seed(seed)
    model = DiT(cfg)
    x, t, y = inputs(cfg, seed=seed)
    # blocks are the identity at init (zero gates); a random final layer makes the output non-zero,
    # so the routed forward must match the dense one bitwise
    with torch.no_grad():
        for p in model.final_layer.parameters():
            p.normal_()
    dense = model.eval()(x, t, y)
    routed = model.eval()(x, t, y, force_routing=True, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(routed, dense)


@given(seed=st.integers(0, 2**16), rate=bypass_rates())
def test_bypassed_tokens_unchanged(seed, rate):
    cfg = tiny(routes=[(0, 3, rate)])
    model = randomize(DiT(cfg), seed).train()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, cfg.num_tokens, cfg.hidden_size, generator=g)
    c = torch.randn(3, cfg.hidden_size, generator=g)
    ids = sample_keep_ids(3, cfg.num_tokens, rate, torch.Generator().manual_seed(seed + 1))
    out = model.forward_blocks(x, c, keep_ids=[ids])
    bypass = torch.ones(3, cfg.num_tokens, dtype=torch.bool)
    bypass[torch.arange(3)[:, None], ids] = False
    assert bypass.sum(1).tolist() == [math.floor(cfg.num_tokens * rate)] * 3
    assert torch.equal(out[bypass], x[bypass])
    assert not torch.equal(out[~bypass], x[~bypass])


@given(seed=st.integers(0, 2**16), r1=bypass_rates(), r2=bypass_rates())
def test_two_routes_compose_and_keep_token_order(seed, r1, r2):
    routes = [Route(0, 1, r1), Route(2, 3, r2)]
    cfg = tiny(routes=routes)
    model = randomize(DiT(cfg), seed).train()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, cfg.num_tokens, cfg.hidden_size, generator=g)
    c = torch.randn(2, cfg.hidden_size, generator=g)
    ids = [sample_keep_ids(2, cfg.num_tokens, r.rate, g) for r in routes]
    got = model.forward_blocks(x, c, keep_ids=ids)
    want = manual_routed_blocks(model, x, c, routes, ids)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@given(seed=st.integers(0, 2**16), rate=bypass_rates())
def test_routed_blocks_see_kept_tokens(seed, rate):
    cfg = tiny(routes=[(1, 2, rate)])
    model = DiT(cfg).train()
    n, kept = cfg.num_tokens, cfg.num_tokens - math.floor(cfg.num_tokens * rate)
    seen, handles = tokens_seen(model)
    x, t, y = inputs(cfg, seed=seed)
    model(x, t, y, generator=torch.Generator().manual_seed(seed))
    for h in handles:
        h.remove()
    assert seen == [[n], [kept], [kept], [n]]
    ids = sample_keep_ids(4, n, rate, torch.Generator().manual_seed(seed))
    assert all(len(set(row.tolist())) == kept for row in ids)
    assert (ids.diff(dim=1) > 0).all()  # sorted, so kept tokens keep their order


@given(seed=st.integers(0, 2**16), **VARIANTS)
def test_eval_mode_is_dense(seed, **variant):
    cfg = tiny(routes=tread_routes(4 + 4, 0.5), depth=8, **variant)
    routed = randomize(DiT(cfg), seed)
    plain = DiT(cfg.replace(routes=()))
    plain.load_state_dict(routed.state_dict(), strict=True)
    x, t, y = inputs(cfg, seed=seed)
    seen, handles = tokens_seen(routed)
    with dense_inference(routed), dense_inference(plain):
        assert torch.equal(routed(x, t, y), plain(x, t, y))
    assert all(s == [cfg.num_tokens] for s in seen)
    for h in handles:
        h.remove()
    assert routed.training  # dense_inference restores the mode


def test_routed_training_step_reaches_every_parameter():
    cfg = tiny(routes=[(1, 2, 0.5)], pos_embed="rope")
    model = randomize(DiT(cfg), 0).train()
    x, t, y = inputs(cfg)
    model(x, t, y, generator=torch.Generator().manual_seed(0)).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert missing == []


@pytest.mark.parametrize("n_routes", [1, 2, 3])
@given(data=st.data())
def test_tread_adds_no_parameters(n_routes, data):
    routes = data.draw(valid_routes(12, n_routes))
    cfg = DiTConfig(input_size=8, hidden_size=32, num_heads=2, depth=12, num_classes=10, routes=routes)
    assert cfg.routes == tuple(routes) and cfg.num_tokens == 16
    a = {k: v.shape for k, v in DiT(cfg).state_dict().items()}
    b = {k: v.shape for k, v in DiT(cfg.replace(routes=())).state_dict().items()}
    assert a == b  # the same names and shapes: routing is not a module, and holds no parameter or buffer


def test_tread_official_routes():
    assert tread_routes(12) == (Route(2, 8, 0.5),)
    assert tread_routes(28) == (Route(2, 24, 0.5),)


def test_block_after_route_runs_in_fp32_under_autocast():
    cfg = tiny(routes=[(0, 1, 0.5)])
    model = randomize(DiT(cfg), 0).train()
    dtypes = {}

    def record(i):
        def hook(mod, args, out):
            dtypes.setdefault(i, out.dtype)

        return hook

    for i, b in enumerate(model.blocks):
        b.attn.qkv.register_forward_hook(record(i))
    x, t, y = inputs(cfg)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(x, t, y, generator=torch.Generator().manual_seed(0))
    assert dtypes == {0: torch.bfloat16, 1: torch.bfloat16, 2: torch.float32, 3: torch.bfloat16}


def test_routing_is_reproducible_from_generator():
    cfg = tiny(routes=[(1, 2, 0.5)])
    model = randomize(DiT(cfg), 0).train()
    x, t, y = inputs(cfg)
    a = model(x, t, y, generator=torch.Generator().manual_seed(5))
    b = model(x, t, y, generator=torch.Generator().manual_seed(5))
    c = model(x, t, y, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


# ------------------------------------------------------------------------------------------
# Stochastic depth
# ------------------------------------------------------------------------------------------


def test_stochastic_depth_skips_whole_samples_and_rescales():
    prob = 0.5
    cfg = tiny(depth=1, stochastic_depth=StochasticDepth(0, 0, prob))
    model = randomize(DiT(cfg), 0).train()
    block = model.blocks[0]
    x = torch.randn(16, cfg.num_tokens, cfg.hidden_size)
    c = torch.randn(16, cfg.hidden_size)
    g = torch.Generator().manual_seed(1)
    out = model.forward_blocks(x, c, generator=g)
    keep = torch.rand(16, generator=torch.Generator().manual_seed(1)) >= prob
    assert 0 < keep.sum() < 16
    assert torch.equal(out[~keep], x[~keep])
    want = x[keep] + (block(x[keep], c[keep]) - x[keep]) / (1 - prob)
    torch.testing.assert_close(out[keep], want, atol=1e-5, rtol=1e-5)
    with dense_inference(model):
        torch.testing.assert_close(model.forward_blocks(x, c), block(x, c))


# ------------------------------------------------------------------------------------------
# Rotary embeddings, guidance
# ------------------------------------------------------------------------------------------


@given(r=st.integers(0, 7), c=st.integers(0, 7), dr=st.integers(-4, 4), dc=st.integers(-4, 4), seed=st.integers(0, 99))
def test_rope_scores_depend_only_on_relative_position(r, c, dr, dc, seed):
    """q.k after 2-D axial rotation depends on the row and column offsets, not on where the pair sits."""
    g, hd = 32, 16
    cos, sin = rope_2d_tables(hd, g)
    gen = torch.Generator().manual_seed(seed)
    q, k = torch.randn(1, 1, 1, hd, generator=gen), torch.randn(1, 1, 1, hd, generator=gen)

    def score(row, col, row2, col2):
        a, b = row * g + col, row2 * g + col2
        return (
            apply_rope(q, cos[a][None, None], sin[a][None, None])
            * apply_rope(k, cos[b][None, None], sin[b][None, None])
        ).sum()

    r0, c0 = r + 7, c + 6  # every position below stays inside the 32 x 32 grid
    torch.testing.assert_close(
        score(r0, c0, r0 + dr, c0 + dc), score(r0 - 3, c0 - 2, r0 - 3 + dr, c0 - 2 + dc), atol=1e-5, rtol=1e-5
    )
    if dr or dc:  # and the score does depend on the offset
        assert not torch.allclose(score(r0, c0, r0 + dr, c0 + dc), score(r0, c0, r0, c0), atol=1e-6)


def test_forward_with_cfg_scale_one_is_conditional():
    cfg = tiny(in_channels=4)
    model = randomize(DiT(cfg), 0).eval()
    x, t, _ = inputs(cfg, batch=2)
    y = torch.tensor([3, cfg.num_classes])
    xx, tt = torch.cat([x[:1], x[:1]]), torch.cat([t[:1], t[:1]])
    out = model.forward_with_cfg(xx, tt, y, 1.0)
    cond = model(xx, tt, y)
    torch.testing.assert_close(out[0], cond[0], atol=1e-6, rtol=1e-5)
    # three of four latent channels are guided, as the official code does; variance channels never
    out4 = model.forward_with_cfg(xx, tt, y, 4.0)
    assert torch.equal(out4[:, 3:], cond[:, 3:])
    assert not torch.allclose(out4[0, :3], cond[0, :3])


# ------------------------------------------------------------------------------------------
# Round trips: checkpoints and diffusers
# ------------------------------------------------------------------------------------------


@given(seed=st.integers(0, 2**16), **VARIANTS)
def test_checkpoint_round_trip_is_exact(tmp_path_factory, seed, **variant):
    cfg = tiny(routes=[(1, 2, 0.25)], **variant)
    model = randomize(DiT(cfg), seed).eval()
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_model(path, model, step=7)
    loaded = load_model(path).eval()
    assert loaded.config == model.config
    x, t, y = inputs(cfg, seed=seed)
    assert torch.equal(loaded(x, t, y), model(x, t, y))


def test_diffusers_round_trip():
    from repro.models.convert import from_diffusers, to_diffusers

    cfg = tiny(in_channels=4, depth=3)
    model = randomize(DiT(cfg), 0).eval()
    dm = to_diffusers(model)
    x, t, y = inputs(cfg)
    ours = model(x, t, y)
    theirs = dm(x, timestep=t, class_labels=y).sample
    assert ours.abs().max() > 0.1
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)
    back = from_diffusers(dm)
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), model.state_dict().values()))
    assert back.state_dict().keys() == model.state_dict().keys()


def test_diffusers_native_model_converts_after_frequency_fix():
    from diffusers import DiTTransformer2DModel

    from repro.models.convert import from_diffusers

    dm = DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=8,
        num_layers=2,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=10,
        norm_eps=1e-6,
    ).eval()
    randomize(dm, 3)
    emb0 = dm.transformer_blocks[0].norm1.emb.state_dict()
    for b in dm.transformer_blocks[1:]:
        b.norm1.emb.load_state_dict(emb0)
    with pytest.raises(ValueError, match="downscale_freq_shift"):
        from_diffusers(dm)
    for b in dm.transformer_blocks:
        b.norm1.emb.time_proj.downscale_freq_shift = 0
    ours = from_diffusers(dm)
    x, t, y = inputs(ours.config)
    torch.testing.assert_close(ours(x, t, y), dm(x, timestep=t, class_labels=y).sample, atol=1e-4, rtol=1e-4)


def test_diffusers_blocks_with_different_embedders_are_refused():
    from repro.models.convert import from_diffusers, to_diffusers

    dm = to_diffusers(randomize(DiT(tiny(in_channels=4, depth=2)), 1))
    with torch.no_grad():
        dm.transformer_blocks[1].norm1.emb.class_embedder.embedding_table.weight[0, 0] += 1.0
    with pytest.raises(ValueError, match=r"transformer_blocks\.1\.norm1\.emb\.class_embedder.*differs"):
        from_diffusers(dm)


def test_diffusers_rejects_variants():
    from repro.models.convert import to_diffusers

    with pytest.raises(ValueError, match="norm_placement"):
        to_diffusers(DiT(tiny(norm_placement="post")))


# ------------------------------------------------------------------------------------------
# Bad configuration
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make,field,value",
    [
        (lambda: create("DiT-XXL/2"), "model", "DiT-XXL/2"),
        (lambda: create("DiT-S/3"), "model", "DiT-S/3"),
        (lambda: tiny(routes=[(2, 4, 0.5)]), "routes[0]", "end=4"),
        (lambda: tiny(routes=[(3, 2, 0.5)]), "routes[0]", "start=3"),
        (lambda: tiny(routes=[(0, 1, 1.0)]), "routes[0].rate", "1.0"),
        (lambda: tiny(routes=[(0, 1, -0.1)]), "routes[0].rate", "-0.1"),
        (lambda: tiny(routes=[(0, 2, 0.5), (2, 3, 0.5)]), "routes[1]", "start=2"),
        (lambda: tiny(hidden_size=30, num_heads=4), "hidden_size", "30"),
        (lambda: tiny(input_size=10, patch_size=4), "input_size", "10"),
        (lambda: tiny(norm="batchnorm"), "norm", "batchnorm"),
        (lambda: tiny(stochastic_depth=(0, 9, 0.5)), "stochastic_depth", "end=9"),
        (lambda: create("DiT-S/2", depht=3), "model overrides", "depht"),
    ],
)
def test_bad_configuration_names_field_and_value(make, field, value):
    with pytest.raises(ValueError) as err:
        make()
    assert field in str(err.value) and value in str(err.value)


def test_bad_keep_ids_are_rejected():
    cfg = tiny(routes=[(0, 1, 0.5)])
    model = DiT(cfg).train()
    x, t, y = inputs(cfg, batch=2)
    dup = torch.zeros(2, 8, dtype=torch.long)
    with pytest.raises(ValueError, match="distinct"):
        model(x, t, y, keep_ids=[dup])
    with pytest.raises(ValueError, match=r"keep_ids\[0\]"):
        model(x, t, y, keep_ids=[torch.zeros(2, 3, dtype=torch.long)])


def test_wrong_input_size_is_named():
    model = DiT(tiny())
    with pytest.raises(ValueError, match="input_size"):
        model(torch.randn(1, 2, 16, 16), torch.zeros(1), torch.zeros(1, dtype=torch.long))
