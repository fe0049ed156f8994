"""SiT as released: its state_dict layout (learn_sigma=True, variance half discarded) and its samplers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from repro.config import load_params, resolve
from repro.models import DiT, config_for, create
from repro.objectives import Interpolant

SIZES = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}


@pytest.mark.parametrize("size", sorted(SIZES))
@pytest.mark.parametrize("patch", [2, 4, 8])
def test_sit_names_have_the_official_state_dict(size, patch, released_shapes):
    depth, d, _ = SIZES[size]
    with torch.device("meta"):
        model = create(f"SiT-{size}/{patch}")
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == released_shapes(depth, d, patch)
    assert model.config.learn_sigma and model.config.discard_sigma


def test_an_official_sit_state_dict_loads_strictly_and_the_variance_half_is_discarded(released_shapes):
    torch.manual_seed(0)
    official = {k: 0.05 * torch.randn(s) for k, s in released_shapes(12, 384, 8).items()}
    model = create("SiT-S/8").eval()
    model.load_state_dict(official, strict=True)
    full = DiT(model.config.replace(discard_sigma=False)).eval()
    full.load_state_dict(official, strict=True)
    x, t, y = torch.randn(2, 4, 32, 32), torch.tensor([0.1, 0.9]), torch.tensor([3, 7])
    out, both = model(x, t, y), full(x, t, y)
    assert out.shape == (2, 4, 32, 32) and both.shape == (2, 8, 32, 32)
    assert torch.equal(out, both[:, :4])
    assert both[:, 4:].abs().max() > 0  # the half that SiT throws away is there and is not what it returns


def test_learn_sigma_false_still_gives_the_small_head_and_discard_needs_learn_sigma():
    small = config_for("SiT-S/2", learn_sigma=False)
    assert not small.learn_sigma and not small.discard_sigma and small.output_channels == 4
    with pytest.raises(ValueError, match="discard_sigma"):
        config_for("DiT-S/2", learn_sigma=False, discard_sigma=True)


def test_micro_sit_method_is_unchanged_and_an_official_sit_trains_with_the_interpolant():
    params = load_params()
    micro = resolve(params, "micro", "sit", 0)
    assert not micro.model.learn_sigma and not micro.model.discard_sigma and micro.model.out_channels == 1
    params["methods"]["sit-official"] = {"objective": dict(params["methods"]["sit"]["objective"]), "model": {}}
    params["scales"]["small"]["model"] = {"name": "SiT-S/8", "in_channels": 1, "num_classes": 10}
    cfg = resolve(params, "small", "sit-official", 0)  # validates: interpolant needs no variance output
    assert cfg.model.learn_sigma and cfg.model.discard_sigma


# -- samplers ---------------------------------------------------------------------------------------------------

MU = torch.linspace(-1.0, 1.5, 16).reshape(1, 4, 4)
STD = torch.linspace(0.3, 1.2, 16).flip(0).reshape(1, 4, 4)


class GaussianVelocity(nn.Module):
    """The exact velocity of the linear path for per-pixel Gaussian data N(MU, STD^2); counts its calls."""

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(num_classes=10, class_dropout_prob=0.1)
        self.calls = 0

    def forward(self, x, t, y, generator=None):
        self.calls += 1
        t = t.double().reshape(-1, 1, 1, 1)
        mu, s2 = MU.double(), STD.double() ** 2
        var = t**2 * s2 + (1 - t) ** 2
        r = x.double() - t * mu
        clean, noise = mu + t * s2 / var * r, (1 - t) / var * r
        return (clean - noise).to(x.dtype)  # v = d/dt (t x1 + (1 - t) eps)


def test_dopri5_solves_the_flow_to_the_data_distribution_exactly():
    pytest.importorskip("torchdiffeq")
    noise = torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.zeros(64, dtype=torch.long)
    model = GaussianVelocity()
    x = Interpolant(sampler="dopri5").sample(model, noise, y)
    # the linear path's flow maps noise z to MU + STD z (the marginals are N(t MU, t^2 STD^2 + (1 - t)^2))
    err = (x - (MU + STD * noise)).abs().max()
    euler = Interpolant(sampler="euler").sample(GaussianVelocity(), noise, y, steps=50)
    assert err < 0.02 and err < (euler - (MU + STD * noise)).abs().max() / 5  # SiT's tolerances, 20 evaluations
    assert 6 <= model.calls < 100  # adaptive: a few steps of 6 stages, far fewer than a fixed fine grid
    tight = Interpolant(sampler="dopri5", atol=1e-9, rtol=1e-9).sample(GaussianVelocity(), noise, y)
    assert (tight - (MU + STD * noise)).abs().max() < 1e-6


def test_sde_heun_has_the_data_marginals_and_two_evaluations_a_step():
    n, steps, h = 4000, 60, 0.04
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(n, 1, 4, 4, generator=g, dtype=torch.float64)
    y = torch.zeros(n, dtype=torch.long)
    model = GaussianVelocity()
    x = Interpolant(sampler="sde-heun").sample(model, noise, y, steps=steps, generator=torch.Generator().manual_seed(2))
    assert model.calls == 2 * (steps - 1) + 1
    # up to t = 1 - h the SDE keeps the exact marginal; the last step is the noise-free mean step
    # x + h (v - E[eps | x]), an affine map whose gain and shift are read off two points
    t = torch.tensor(1.0 - h, dtype=torch.float64)
    mu, s2 = MU.double(), STD.double() ** 2
    var = t**2 * s2 + (1 - t) ** 2

    def last(v):
        x0 = torch.full_like(mu, v)
        r = x0 - t * mu
        clean, eps = mu + t * s2 / var * r, (1 - t) / var * r
        return x0 + h * ((clean - eps) - eps)

    gain, shift = last(1.0) - last(0.0), last(0.0)
    want_mean, want_std = gain * t * mu + shift, gain.abs() * var.sqrt()
    se = want_std / n**0.5
    assert ((x.mean(0) - want_mean).abs() < 5 * se + 0.02).all()
    assert ((x.std(0) / want_std - 1).abs() < 0.06).all()


def test_sde_heun_differs_from_euler_maruyama_and_is_reproducible():
    noise = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    y = torch.zeros(8, dtype=torch.long)

    def run(sampler, seed):
        gen = torch.Generator().manual_seed(seed)
        return Interpolant(sampler=sampler).sample(GaussianVelocity(), noise, y, steps=10, generator=gen)

    assert torch.equal(run("sde-heun", 5), run("sde-heun", 5))
    assert not torch.equal(run("sde-heun", 5), run("sde-heun", 6))
    assert not torch.equal(run("sde-heun", 5), run("sde", 5))
