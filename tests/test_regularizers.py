"""Representation regularizers (repro/objectives/regularizers.py): the dispersive loss and SRA.

Expected values come from the definitions (a brute-force pairwise sum, closed forms for well-spread and identical
representations, MAC counts of matrix products written out), never from the code under test."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from repro.build import built_regularizer, from_dict, resolve, run_step_macs
from repro.config import load_params
from repro.experiments.train import RunState, draw_micro_batch, make_step_fn, train, train_step
from repro.models import DiT, DiTConfig, dit_forward_macs, train_step_macs
from repro.objectives import make_objective
from repro.objectives.regularizers import (
    SRA,
    Dispersive,
    Projector,
    dispersive_loss,
    extra_macs,
    make_regularizer,
    regularized_loss,
)

TINY = dict(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=4, num_heads=2, num_classes=4)


def reference_dispersive(z: torch.Tensor, tau: float) -> float:
    """The paper's InfoNCE-L2 dispersive loss by brute force, in float64: every ordered pair (i, j), the diagonal
    included, with the squared distance averaged over the features."""
    z = z.flatten(1).double()
    b, dim = z.shape
    total = 0.0
    for i in range(b):
        for j in range(b):
            d = float(((z[i] - z[j]) ** 2).sum()) / dim
            total += math.exp(-d / tau)
    return math.log(total / b**2)


# ------------------------------------------------------------------------------------------
# The dispersive loss
# ------------------------------------------------------------------------------------------


@given(
    b=st.integers(2, 9),
    n=st.integers(1, 5),
    d=st.integers(1, 6),
    scale=st.floats(0.01, 3.0),
    tau=st.sampled_from([0.25, 0.5, 1.0, 2.0]),
    seed=st.integers(0, 2**16),
)
def test_dispersive_loss_is_the_brute_force_pairwise_sum_and_lies_in_minus_log_b_to_zero(b, n, d, scale, tau, seed):
    z = scale * torch.randn(b, n, d, generator=torch.Generator().manual_seed(seed))
    got = float(dispersive_loss(z, tau))
    want = reference_dispersive(z, tau)
    assert got == pytest.approx(want, rel=1e-4, abs=1e-5)
    assert -math.log(b) - 1e-5 <= got <= 1e-6


def test_dispersive_loss_approaches_minus_log_b_as_representations_spread():
    """B one-hot rows scaled by s: every pair is 2 s^2 / dim apart, so the loss is
    log((B + (B^2 - B) exp(-2 s^2 / (dim tau))) / B^2), which falls to -log B (the authors' note)."""
    b, dim, tau = 8, 16, 0.5
    basis = torch.eye(dim)[:b]
    values = []
    for s in (0.5, 2.0, 4.0, 8.0, 16.0):
        got = float(dispersive_loss(s * basis, tau))
        want = math.log((b + (b * b - b) * math.exp(-2 * s * s / (dim * tau))) / b**2)
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6)
        values.append(got)
    assert values == sorted(values, reverse=True)  # the more spread, the lower
    assert values[-1] == pytest.approx(-math.log(b), abs=1e-6)
    # a batch of identical representations has nothing spread: the maximum, 0
    assert float(dispersive_loss(torch.ones(b, 3, 4), tau)) == pytest.approx(0.0, abs=1e-6)


@given(b=st.integers(2, 12), seed=st.integers(0, 2**16))
def test_dispersive_loss_is_invariant_to_the_order_of_the_batch(b, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, 4, 6, generator=g)
    perm = torch.randperm(b, generator=g)
    torch.testing.assert_close(dispersive_loss(z[perm], 0.5), dispersive_loss(z, 0.5), rtol=1e-5, atol=1e-6)


@given(a=st.floats(0.1, 10.0), seed=st.integers(0, 2**16))
def test_temperature_and_scale_trade_off(a, seed):
    """D scales with the square of z, so scaling z by a and tau by a^2 leaves the loss unchanged."""
    z = torch.randn(5, 3, 4, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(dispersive_loss(a * z, 0.5 * a * a), dispersive_loss(z, 0.5), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 4, 8), (1, 8), (0, 4)])
def test_dispersive_loss_needs_a_batch_of_two(shape):
    with pytest.raises(ValueError, match=r"needs a batch of >= 2 samples"):
        dispersive_loss(torch.randn(*shape), 0.5)


def test_dispersive_needs_two_samples_a_micro_batch_in_a_run():
    d = _run_dict("dispersive", batch_size=2, grad_accum=2)
    with pytest.raises(ValueError, match=r"regularizer\.name.*needs >= 2 samples a micro-batch"):
        from_dict(d)


def test_dispersive_gradient_reaches_the_model_only_through_the_chosen_blocks_tokens():
    """Alone (no diffusion loss), the term trains the blocks up to the chosen one and the embeddings, and nothing
    after it: later blocks and the final layer get no gradient at all."""
    torch.manual_seed(0)
    model = DiT(DiTConfig(**TINY)).train()
    for block in model.blocks:  # gates away from zero, so every block's weights are on the path
        torch.nn.init.normal_(block.adaLN_modulation[-1].weight, std=0.1)
    k = 1
    x, t, y = torch.randn(6, 1, 8, 8), torch.randint(0, 1000, (6,)), torch.randint(0, 4, (6,))
    _, hidden = model(x, t, y, capture=(k,), force_drop_ids=torch.zeros(6, dtype=torch.long))
    dispersive_loss(hidden[k], 0.5).backward()
    for i, block in enumerate(model.blocks):
        grads = [p.grad for p in block.parameters()]
        if i <= k:
            assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads), i
        else:
            assert all(g is None for g in grads), i
    assert all(p.grad is None for p in model.final_layer.parameters())
    assert model.x_embedder.proj.weight.grad.abs().sum() > 0


def test_capture_leaves_the_output_unchanged_and_returns_the_blocks_tokens():
    torch.manual_seed(0)
    model = DiT(DiTConfig(**TINY, routes=[(1, 2, 0.5)])).train()
    x, t, y = torch.randn(3, 1, 8, 8), torch.randint(0, 1000, (3,)), torch.randint(0, 4, (3,))
    plain = model(x, t, y, generator=torch.Generator().manual_seed(5))
    out, hidden = model(x, t, y, generator=torch.Generator().manual_seed(5), capture=(0, 2, 3))
    assert torch.equal(out, plain)
    assert sorted(hidden) == [0, 2, 3] and all(h.shape == (3, 16, 32) for h in hidden.values())
    # the tokens after the last block are what the final layer reads
    c = model.t_embedder(t) + model.y_embedder(y, False, force_drop_ids=torch.zeros(3, dtype=torch.long))
    model.eval()
    out, hidden = model(x, t, y, capture=(3,))
    torch.testing.assert_close(model.unpatchify(model.final_layer(hidden[3], c)), out, rtol=0, atol=0)


def test_features_are_the_dense_forwards_tokens_after_the_block():
    torch.manual_seed(0)
    model = DiT(DiTConfig(**TINY)).eval()
    for block in model.blocks:
        torch.nn.init.normal_(block.adaLN_modulation[-1].weight, std=0.1)
    x, t, y = torch.randn(3, 1, 8, 8), torch.randint(0, 1000, (3,)), torch.randint(0, 4, (3,))
    drop = torch.tensor([0, 1, 0])
    _, hidden = model(x, t, y, capture=(2,), force_drop_ids=drop)
    torch.testing.assert_close(model.features(x, t, y, 2, force_drop_ids=drop), hidden[2], rtol=0, atol=0)
    with pytest.raises(ValueError, match="block"):
        model.features(x, t, y, 4)


# ------------------------------------------------------------------------------------------
# SRA
# ------------------------------------------------------------------------------------------


@given(t=st.lists(st.integers(0, 999), min_size=1, max_size=64), seed=st.integers(0, 2**16))
def test_sra_teacher_is_never_noisier_and_at_most_the_gap_cleaner(t, seed):
    reg = make_regularizer({"name": "sra", "max_gap": 0.2}, 12)
    t = torch.tensor(t)
    teacher = reg.draw(make_objective("ddpm"), t, torch.Generator().manual_seed(seed))
    assert teacher.dtype == t.dtype and teacher.shape == t.shape
    assert bool((teacher <= t).all()) and bool((teacher >= 0).all())
    assert bool((t - teacher <= 199).all())  # g in 0..199 of 1000 steps (the release's --t-max 0.2)


def test_sra_gap_covers_its_range():
    reg = make_regularizer({"name": "sra", "max_gap": 0.2}, 12)
    t = torch.full((20_000,), 999)
    gap = t - reg.draw(make_objective("ddpm"), t, torch.Generator().manual_seed(0))
    assert int(gap.min()) == 0 and int(gap.max()) == 199
    assert float(gap.float().mean()) == pytest.approx(99.5, abs=2.0)


def test_sra_blocks_default_to_the_releases_fractions_of_the_depth():
    """DiT-XL/2's release aligns the outputs of blocks 8 and 20 of 28; at 28 blocks the defaults are those
    (0-based 7 and 19), at 12 the 3rd and 9th; the dispersive loss's depth // 4: block 7 of 28, 3 of 12."""
    assert (
        make_regularizer({"name": "sra"}, 28).student_block,
        make_regularizer({"name": "sra"}, 28).teacher_block,
    ) == (7, 19)
    assert (
        make_regularizer({"name": "sra"}, 12).student_block,
        make_regularizer({"name": "sra"}, 12).teacher_block,
    ) == (2, 8)
    assert make_regularizer({"name": "dispersive"}, 28).block == 6
    assert make_regularizer({"name": "dispersive"}, 12).block == 2


def _sra_setup(seed=0):
    cfg = from_dict(_run_dict("sra"))
    state = RunState.create(cfg, torch.device("cpu"))
    for m in (state.model, state.ema):  # open the gates and let t matter: every block's weights and t count
        for block in m.blocks:
            torch.nn.init.normal_(
                block.adaLN_modulation[-1].weight, generator=torch.Generator().manual_seed(1), std=0.1
            )
        for lin in (m.t_embedder.mlp[0], m.t_embedder.mlp[2]):
            torch.nn.init.normal_(lin.weight, generator=torch.Generator().manual_seed(2), std=0.5)
    objective = make_objective(**cfg.objective)
    reg = built_regularizer(cfg)
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(6, 1, 8, 8, generator=g), torch.randint(0, 4, (6,), generator=g)
    return cfg, state, objective, reg, draw_micro_batch(objective, state.model, x, y, g, reg)


def test_sra_trains_the_model_and_projector_and_never_the_ema():
    cfg, state, objective, reg, b = _sra_setup()
    call = lambda *a, **k: state.model(*a, draws=b.draws, **k)  # noqa: E731
    base, total = regularized_loss(reg, objective, call, b, ema=state.ema, projector=state.projector)
    assert float(total.detach()) != float(base.detach())
    total.backward()
    assert all(p.grad is None for p in state.ema.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in state.projector.parameters())
    # the student's blocks after the student block get the diffusion loss's gradient only
    assert state.model.blocks[reg.student_block].adaLN_modulation[-1].weight.grad.abs().sum() > 0
    # the projector is in the optimizer: a step moves it
    before = [p.detach().clone() for p in state.projector.parameters()]
    opt_params = {id(p) for group in state.opt.param_groups for p in group["params"]}
    assert {id(p) for p in state.projector.parameters()} <= opt_params
    state.opt.step()
    assert all(not torch.equal(a, p) for a, p in zip(before, state.projector.parameters(), strict=True))


def test_sra_term_is_the_smooth_l1_to_the_emas_later_block_at_the_teachers_level():
    cfg, state, objective, reg, b = _sra_setup()
    hidden = {}

    def call(x, t, y, generator=None, capture=()):
        out, h = state.model(x, t, y, draws=b.draws, capture=capture)
        hidden.update(h)
        return out, h

    base, total = regularized_loss(reg, objective, call, b, ema=state.ema, projector=state.projector)
    # by hand: the teacher's input at its own level (same image, same noise), its tokens after the teacher block
    abar = objective.alphas_cumprod[b.extra].float().view(-1, 1, 1, 1)
    xt = abar.sqrt() * b.x + (1 - abar).sqrt() * b.noise
    with torch.no_grad():
        _, th = state.ema(xt, b.extra, b.y, capture=(reg.teacher_block,), force_drop_ids=b.draws.drop_ids)
    student = state.projector(hidden[reg.student_block]).detach()

    def smooth_l1(target):
        diff = (student - target).abs()
        return torch.where(diff < 0.05, 0.5 * diff**2 / 0.05, diff - 0.025).mean()

    term = (total - base).detach() / 0.04
    torch.testing.assert_close(term, smooth_l1(th[reg.teacher_block]), rtol=1e-4, atol=0)
    # sensitive to the teacher's level: with the teacher's input but the student's step given to the embedding,
    # the term would differ by more than the tolerance
    assert not torch.equal(b.extra, b.t)
    assert bool(b.draws.drop_ids.any())  # a label dropped in this batch: the teacher must see it dropped too
    with torch.no_grad():
        _, same_t = state.ema(xt, b.t, b.y, capture=(reg.teacher_block,), force_drop_ids=b.draws.drop_ids)
    assert abs(float(smooth_l1(same_t[reg.teacher_block]) / term) - 1) > 1e-3


def test_regularizer_draws_come_after_every_other_draw():
    """A regularizer changes none of the batch's draws: SRA's teacher levels come after them, the dispersive loss
    draws nothing (the generator is left where the plain draws leave it)."""
    model, objective = DiT(DiTConfig(**TINY)), make_objective("ddpm")
    x, y = torch.randn(5, 1, 8, 8), torch.randint(0, 4, (5,))
    runs = {}
    for name in (None, "dispersive", "sra"):
        g = torch.Generator().manual_seed(9)
        reg = make_regularizer({"name": name}, 4) if name else None
        runs[name] = (draw_micro_batch(objective, model, x, y, g, reg), torch.rand(3, generator=g))
    plain = runs[None][0]
    for name in ("dispersive", "sra"):
        b = runs[name][0]
        assert torch.equal(b.t, plain.t) and torch.equal(b.noise, plain.noise)
        assert torch.equal(b.draws.drop_ids, plain.draws.drop_ids)
    assert torch.equal(runs["dispersive"][1], runs[None][1]) and runs["dispersive"][0].extra is None
    assert not torch.equal(runs["sra"][1], runs[None][1]) and runs["sra"][0].extra.shape == (5,)


def test_sra_refuses_what_it_does_not_implement():
    d = _run_dict("sra")
    d["objective"], d["model"]["learn_sigma"] = {"name": "interpolant"}, False
    with pytest.raises(ValueError, match=r"regularizer\.name.*ddpm"):
        from_dict(d)
    d = _run_dict("sra")
    d["model"]["routes"] = [(1, 2, 0.5)]
    with pytest.raises(ValueError, match=r"regularizer\.name.*routes"):
        from_dict(d)
    d = _run_dict("sra")
    d["regularizer"]["teacher_block"] = 4
    with pytest.raises(ValueError, match=r"regularizer\.teacher_block"):
        from_dict(d)
    d = _run_dict("dispersive")
    d["regularizer"]["tau"] = 0.5
    with pytest.raises(ValueError, match=r"regularizer\.tau.*not a setting"):
        from_dict(d)


def test_a_bad_regularizer_in_params_names_its_dotted_field(tmp_path):
    params = load_params("params.yaml")
    params["methods"]["dit-sra"]["regularizer"]["max_gap"] = 1.5
    with pytest.raises(ValueError, match=r"methods\.dit-sra\.regularizer\.max_gap"):
        resolve(params, "micro", "dit-sra", 0)
    params["methods"]["dit-sra"]["regularizer"] = "sra"
    with pytest.raises(ValueError, match=r"methods\.dit-sra\.regularizer"):
        resolve(params, "micro", "dit-sra", 0)


# ------------------------------------------------------------------------------------------
# Costs
# ------------------------------------------------------------------------------------------


def test_dispersive_extra_macs_are_its_three_gram_products():
    """Forward z z^T (B x dim x B) and its backward to z through both factors: 3 B^2 dim MACs."""
    cfg = DiTConfig(**TINY)
    for batch in (2, 8):
        dim = cfg.num_tokens * cfg.hidden_size
        assert extra_macs(Dispersive(block=1), cfg, batch) == 3 * batch * batch * dim


def test_sra_extra_macs_are_the_teachers_blocks_and_the_projector():
    """The EMA teacher's forward up to its block (a forward of that many blocks less the final layer) and the
    projector's forward and backward (its two linears, and the gradient to its input and to its weights)."""
    cfg = DiTConfig(**TINY, learn_sigma=True)
    reg = SRA(student_block=0, teacher_block=2)
    b, n, d = 8, cfg.num_tokens, cfg.hidden_size
    with torch.device("meta"):
        short = DiT(cfg.replace(depth=reg.teacher_block + 1))
    final = b * d * 2 * d + b * n * d * cfg.patch_size**2 * cfg.out_channels  # its adaLN and its linear
    teacher = sum(dit_forward_macs(short, b).values()) - final
    projector = 3 * b * n * (d * 2 * d + 2 * d * d)
    assert extra_macs(reg, cfg, b) == teacher + projector > 0


def test_micro_regularizers_pay_for_their_macs_with_fewer_steps():
    params = load_params("params.yaml")
    dit = resolve(params, "micro", "dit", 0)
    budget = dit.train.steps * train_step_macs(dit.model, dit.train.batch_size)
    for method in ("dit-dispersive", "dit-sra"):
        cfg = resolve(params, "micro", method, 0)
        step = run_step_macs(cfg)
        assert step > train_step_macs(cfg.model, cfg.train.batch_size)
        assert cfg.train.steps < dit.train.steps
        assert abs(cfg.train.steps * step - budget) <= step / 2 + 1  # the same budget, to a step
        assert cfg.regularizer["name"] == method.removeprefix("dit-")
    assert "regularizer" not in dit.to_dict()  # the recorded configurations of other runs are as they were


def test_the_regularizers_run_at_micro_only_at_the_core_campaigns_budget_and_seeds():
    """Their specs decide at micro: both are runs of the micro scale (dvc.yaml's matrix), so they get DiT's model,
    data, optimiser, budget in MACs, seeds and evaluation; no other scale runs them (the CPU and GPU campaigns'
    reports stay as registered)."""
    params = load_params("params.yaml")
    for name, s in params["scales"].items():
        runs = {"dit-dispersive", "dit-sra"} & set(s.get("methods", []))
        assert runs == ({"dit-dispersive", "dit-sra"} if name == "micro" else set()), name
    micro = params["scales"]["micro"]
    assert micro["seeds"] == [0, 1, 2] and micro["train"]["equal_cost"] == "macs"
    for method in ("dit-dispersive", "dit-sra"):
        cfg, dit = resolve(params, "micro", method, 0), resolve(params, "micro", "dit", 0)
        assert cfg.model == dit.model and cfg.objective == dit.objective and cfg.eval == dit.eval
        assert cfg.train.steps < dit.train.steps  # the regularizer's own MACs are paid from the same budget


# ------------------------------------------------------------------------------------------
# Off by default, and a smoke run of each
# ------------------------------------------------------------------------------------------


def test_without_a_regularizer_the_step_is_the_objectives_alone():
    """The same state after a step: train_step with no regularizer, and the loss, backward, AdamW and EMA update
    written out here."""
    cfg = from_dict({**_run_dict("dispersive"), "regularizer": None})
    assert built_regularizer(cfg) is None and "regularizer" not in cfg.to_dict()
    step_fn = make_step_fn(cfg, RunState.create(cfg, torch.device("cpu")), None, None, "cpu", 0, 1, False)
    assert not hasattr(step_fn, "objective_meter")  # its log lines keep their keys
    a, b = (RunState.create(cfg, torch.device("cpu")) for _ in range(2))
    assert a.projector is None
    objective = make_objective(**cfg.objective)
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(6, 1, 8, 8, generator=g), torch.randint(0, 4, (6,), generator=g)
    mb = draw_micro_batch(objective, a.model, x, y, torch.Generator().manual_seed(1))
    loss = train_step(a, a.model, objective, [mb], cfg.train)
    b.opt.zero_grad(set_to_none=True)
    by_hand = objective.loss_at(lambda *p, **k: b.model(*p, draws=mb.draws, **k), x, y, mb.t, mb.noise).mean()
    by_hand.backward()
    b.opt.step()
    with torch.no_grad():
        for e, p in zip(b.ema.parameters(), b.model.parameters(), strict=True):
            e.mul_(cfg.train.ema_decay).add_(p, alpha=1 - cfg.train.ema_decay)
    assert torch.equal(loss, by_hand.detach())
    for part in ("model", "ema"):
        sa, sb = getattr(a, part).state_dict(), getattr(b, part).state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", ["dispersive", "sra"])
def test_smoke_training_is_finite_resumes_bitwise_and_records_its_macs(tmp_path, name):
    cfg = from_dict(_run_dict(name))
    curve = train(cfg, tmp_path / "full", quiet=True)
    assert curve["complete"] and curve["train_step_macs"] == run_step_macs(cfg)
    assert curve["train_step_macs"] > train_step_macs(cfg.model, cfg.train.batch_size)
    lines = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    logged = [line["loss"] for line in lines]
    assert len(logged) == 6 and all(math.isfinite(v) for v in logged)
    # the objective's loss alone is logged beside the total; their difference is the weighted term
    term = [(line["loss"] - line["objective_loss"]) / built_regularizer(cfg).weight for line in lines]
    if name == "dispersive":  # a term in [-log 6, 0] (a micro-batch of 6)
        assert all(-math.log(6) - 1e-4 <= v <= 1e-6 for v in term)
    else:  # a smooth L1 distance: positive
        assert all(v > 0 for v in term)
    assert all(math.isfinite(p["val_loss"]) for p in curve["points"])
    recorded = json.loads((tmp_path / "full" / "config.json").read_text())
    assert recorded["regularizer"]["name"] == name and from_dict(recorded).to_dict() == cfg.to_dict()
    # interrupted at the step-4 checkpoint and resumed: the same weights (the projector too) as without a break
    train(cfg, tmp_path / "split", quiet=True, stop_after=4)
    train(cfg, tmp_path / "split", quiet=True)
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "checkpoints" / "last.pt", weights_only=True)
    parts = ("model", "ema", "projector") if name == "sra" else ("model", "ema")
    assert ("projector" in a) == (name == "sra")
    for part in parts:
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part])


@pytest.mark.parametrize("method", ["dit-dispersive", "dit-sra"])
def test_smoke_scale_runs_each_method(tmp_path, method, fashion_mnist_data):
    cfg = resolve(load_params("params.yaml"), "smoke", method, 0)
    cfg = cfg.with_train(steps=3).with_eval(metrics=())
    curve = train(cfg, tmp_path / method, quiet=True)
    assert curve["complete"] and all(math.isfinite(p["val_loss"]) for p in curve["points"])


def _run_dict(name: str, **train) -> dict:
    return copy.deepcopy(
        {
            "run_id": f"test-{name}-s0",
            "scale": "smoke",
            "method": f"dit-{name}",
            "seed": 0,
            "model": dict(TINY, learn_sigma=True),
            "objective": {"name": "ddpm"},
            "data": {"name": "synthetic", "subset": 96},
            "train": dict(steps=6, batch_size=6, lr=1e-3, ema_decay=0.9, eval_every=3, ckpt_every=2, log_every=1)
            | train,
            "eval": dict(metrics=[], val_size=8, val_points=2),
            "regularizer": {"name": name},
        }
    )


def test_projector_shape_at_micro_width():
    p = Projector(96)
    assert [tuple(q.shape) for q in p.parameters()] == [(192, 96), (192,), (96, 192), (96,)]
    assert sum(q.numel() for q in p.parameters()) == 37_152
