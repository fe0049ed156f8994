"""The evaluation's faster paths give the reference path's numbers.

- :class:`~repro.objectives.base.SplitForward` (the forward on slices of the batch in parallel one-thread
  workers) against one forward of the whole batch: the same random draws and, for every sampler, the same samples
  to float rounding (bitwise on CPUs whose kernels do not depend on the batch size); the validation loss bitwise;
- the compiled sampling forward (``compile=True``) against the eager one: the same random draws, outputs
  within float rounding;
- ``generate`` / ``evaluate`` of the training loop against the plain sampler call.

No test here looks at a timing.
"""

from __future__ import annotations

import json
import re

import pytest
import torch

from repro.models import create
from repro.objectives import make_objective
from repro.objectives.base import SplitForward

OBJECTIVES = {
    "ddpm": dict(name="ddpm"),
    "ddpm-fixed": dict(name="ddpm", learn_sigma=False),
    "ddpm-clip": dict(name="ddpm", clip_denoised=True),
    "interpolant-euler": dict(name="interpolant", sampler="euler"),
    "interpolant-sde": dict(name="interpolant", sampler="sde"),
    "edm": dict(name="edm", s_churn=10.0),
}


def tiny(learn_sigma: bool, class_dropout_prob: float = 0.1, seed: int = 0):
    """A 2-block DiT on 8x8 images, zero-initialized weights perturbed so every layer matters."""
    torch.manual_seed(seed)
    model = create(
        "DiT-S/2",
        input_size=8,
        in_channels=2,
        hidden_size=32,
        depth=2,
        num_heads=2,
        num_classes=10,
        learn_sigma=learn_sigma,
        class_dropout_prob=class_dropout_prob,
    )
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.train()


@pytest.fixture
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def draw(objective, model, workers=1, compile=False, guidance_scale=1.0, n=13):
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(n, 2, 8, 8, generator=g)
    y = torch.arange(n) % 10
    sg = torch.Generator().manual_seed(4)
    out = objective.sample(
        model, noise, y, steps=5, guidance_scale=guidance_scale, generator=sg, workers=workers, compile=compile
    )
    return out, sg.get_state()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(OBJECTIVES))
@pytest.mark.parametrize("workers", [2, 3])
def test_split_forward_samples_are_bitwise_the_whole_batchs(name, workers, two_threads):
    settings = OBJECTIVES[name]
    objective = make_objective(**settings)
    model = tiny(learn_sigma=settings["name"] == "ddpm" and settings.get("learn_sigma", True))
    for scale in (1.0, 2.5):  # guidance doubles the batch the workers split
        ref, ref_state = draw(objective, model, guidance_scale=scale)
        out, state = draw(objective, model, workers=workers, guidance_scale=scale)
        # bitwise where the CPU's kernels do not depend on the batch size (AMD EPYC); an Intel Xeon's pick their
        # path by batch size and differ by float rounding (at most 2e-7 of the output's scale measured). A wrong
        # split (rows swapped, noise or labels misaligned) differs by the output's own scale.
        assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()
        assert torch.equal(state, ref_state)  # the same random numbers were drawn
    assert model.training  # the training flag came back
    assert torch.get_num_threads() == 2  # the caller's thread count is kept


def test_split_forward_validation_loss_is_bitwise(two_threads):
    objective = make_objective(name="ddpm")
    model = tiny(learn_sigma=True)
    x = torch.randn(9, 2, 8, 8, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    y = torch.arange(9) % 10
    ref = objective.fixed_t_loss(model, x, y, torch.Generator().manual_seed(1), points=4)
    out = objective.fixed_t_loss(SplitForward(model, 2), x, y, torch.Generator().manual_seed(1), points=4)
    assert torch.equal(out, ref)
    assert model.training


def test_split_forward_does_not_split_in_training_mode():
    """In training mode the network draws label dropout and routes from the generator: never split there."""
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x, t, y, generator=None):
            seen.append(len(x))
            return x

    net = SplitForward(Recorder().train(), 2)
    net(torch.zeros(6, 1), torch.zeros(6), torch.zeros(6, dtype=torch.long))
    net.eval()
    net(torch.zeros(6, 1), torch.zeros(6), torch.zeros(6, dtype=torch.long))
    assert seen == [6, 3, 3]


def test_bad_workers_and_compile_settings_are_refused():
    objective, model = make_objective(name="ddpm"), tiny(learn_sigma=True)
    with pytest.raises(ValueError, match="workers: 0 is not allowed"):
        draw(objective, model, workers=0)
    with pytest.raises(ValueError, match="workers: 2 is not allowed with compile=True"):
        draw(objective, model, workers=2, compile=True)
    with pytest.raises(ValueError, match="compile: 'yes' is not allowed"):
        draw(objective, model, compile="yes")


@pytest.mark.slow
def test_compiled_sampling_matches_eager_within_rounding():
    """The compiled forward changes the order of float operations only: the same draws, outputs within 1e-5 of
    their largest magnitude (float32 rounding through 5 steps; the tiny random network's samples reach ~400)."""
    objective, model = make_objective(name="ddpm"), tiny(learn_sigma=True)
    ref, ref_state = draw(objective, model)
    out, state = draw(objective, model, compile=True)
    assert torch.equal(state, ref_state)
    assert (out - ref).abs().max().item() < 1e-5 * ref.abs().max().item()
    # the weights are inputs of the compiled graph, not constants: new weights are used without recompiling
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.9)
    ref2, _ = draw(objective, model)
    out2, _ = draw(objective, model, compile=True)
    assert (out2 - ref2).abs().max().item() < 1e-5 * ref2.abs().max().item()
    assert not torch.allclose(ref2, ref)


def test_eval_bench_times_both_paths_and_finds_them_equal(tmp_path, capsys):
    """``repro bench --eval`` on the smoke scale: both paths' parts are timed and their numbers agree bitwise."""
    from repro import cli
    from repro.data import fashion_mnist as fm

    if fm._missing(fm.DEBIAN_DIR):
        pytest.skip("Fashion-MNIST is not installed")
    out = tmp_path / "eval.json"
    assert cli.main(["bench", "--eval", "--scale", "smoke", "--reps", "1", "--threads", "1", "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert re.search(r"\b1 threads?\b", rep["device"]), rep["device"]  # --threads, not torch's default
    assert rep["differences"] == {"samples_max_abs": 0.0, "metrics_max_abs": 0.0}
    for path in ("reference", "fast"):
        assert all(rep[path][k] > 0 for k in ("sampling_s", "metrics_s", "val_loss_s", "ms_per_sample"))
    assert set(rep["numbers"]) == {"val_loss", "fid"}
    assert "ms/sample" in capsys.readouterr().out
    assert cli.main(["bench", "--eval", "--scale", "smoke", "--reps", "0"]) == 2
    assert cli.main(["bench", "--eval", "--scale", "smoke", "--threads", "0"]) == 2
