"""SiT as released: its state_dict layout (learn_sigma=True, variance half discarded) and its samplers."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from repro.build import resolve
from repro.config import load_params
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


def exact_drift(x: torch.Tensor, t: float) -> torch.Tensor:
    """The SDE's drift ``v + D_t s`` for the data N(MU, STD^2), with SiT's ``D_t = sigma_t = 1 - t``: the score is
    ``-E[eps | x] / sigma_t``, so the drift is ``E[x_1 | x] - 2 E[eps | x]``, an affine map of ``x`` per pixel."""
    mu, s2 = MU.double(), STD.double() ** 2
    var = t**2 * s2 + (1 - t) ** 2
    r = x - t * mu
    return mu + t * s2 / var * r - 2 * (1 - t) / var * r


def drift_line(t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Slope and intercept of :func:`exact_drift` at time ``t``, per pixel."""
    zero = exact_drift(torch.zeros_like(MU, dtype=torch.float64), t)
    return exact_drift(torch.ones_like(MU, dtype=torch.float64), t) - zero, zero


def exact_sde_gain(t_end: float, last_step: float) -> torch.Tensor:
    """``d x_1 / d x_0`` per pixel: the exact SDE from ``t = 0`` to ``t_end``, then SiT's last, noise-free step.

    The noise is additive, so ``x_t``'s dependence on ``x_0`` follows ``dx = a(t) x dt`` with the drift's slope
    ``a = (t s^2 - 2 (1 - t)) / V``, ``V = t^2 s^2 + (1 - t)^2``; as ``a = V' / (2 V) - (1 - t) / V`` the gain is
    ``sqrt(V(t_end)) exp(-int_0^t_end (1 - u) / V(u) du)`` (V(0) = 1). The last step ``x + h drift(x)`` multiplies
    it by ``1 + h a(t_end)``."""
    from scipy.integrate import quad

    gains = []
    for s2 in (STD.double() ** 2).flatten().tolist():
        var = lambda u, s2=s2: u * u * s2 + (1 - u) ** 2  # noqa: E731
        integral, _ = quad(lambda u, var=var: (1 - u) / var(u), 0.0, t_end, epsabs=1e-14, epsrel=1e-13)
        slope = (t_end * s2 - 2 * (1 - t_end)) / var(t_end)
        gains.append(math.sqrt(var(t_end)) * math.exp(-integral) * (1 + last_step * slope))
    return torch.tensor(gains, dtype=torch.float64).reshape(MU.shape)


def test_sde_heun_drift_step_is_second_order():
    """SiT's SDE Heun step adds the noise first, then takes a Heun step of the drift, a second-order method: the
    sampler's gain from its starting noise to its output (the noise is additive, so two runs with the same draws
    that start ``delta`` apart end ``gain * delta`` apart) converges to the exact SDE's gain with an error ``C h^2``,
    and halving the step divides the error by 2^2 = 4, up to terms of relative size O(h) (h = 0.96 / 30 at most
    here): between 3.5 and 4.5. An Euler step of the drift (Euler-Maruyama) is first order (ratio 2, and an error
    20 times larger at 61 steps), the probability-flow ODE converges to another gain (ratio 1)."""
    h_last = Interpolant().last_step_size
    exact = exact_sde_gain(1.0 - h_last, h_last)
    errors = []
    for steps in (31, 61):  # 30 and 60 stochastic steps on [0, 0.96]
        ends = []
        for start in (0.0, 1.0):
            noise = torch.full((1, 1, 4, 4), start, dtype=torch.float64)
            sampler = Interpolant(sampler="sde-heun")
            gen = torch.Generator().manual_seed(4)  # the same draws for both starts
            ends.append(
                sampler.sample(GaussianVelocity(), noise, torch.zeros(1, dtype=torch.long), steps, generator=gen)
            )
        gain = (ends[1] - ends[0])[0]
        errors.append((gain / exact - 1).abs().max().item())
    assert 3.5 < errors[0] / errors[1] < 4.5, errors
    assert errors[1] < 5e-3, errors  # C h^2 with C = 7 measured: 1.8e-3 at h = 0.016


def test_sde_heun_has_the_data_marginals_and_two_evaluations_a_step():
    """Up to ``t = 1 - h`` the SDE keeps the exact marginal N(t MU, V(t)); the last step is the noise-free mean step
    ``x + h drift(x)``, an affine map of the marginal. The sampler's own law is Gaussian too (every step is affine in
    the state and the noise): its mean follows the mean's ODE, whose solution ``t MU`` is linear in t and so exact for
    any Runge-Kutta step (error 0), and its variance is ``P <- G^2 (P + 2 D_t h)`` per step, with ``G`` the Heun
    step's gain (a first-order error: the noise is scaled by ``D`` at the step's start). The tolerance is 5 standard
    errors of the sample mean and standard deviation of ``n`` draws, plus the scheme's own error, computed from that
    recursion with the exact drift."""
    n, steps, h = 4000, 60, 0.04
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(n, 1, 4, 4, generator=g, dtype=torch.float64)
    y = torch.zeros(n, dtype=torch.long)
    model = GaussianVelocity()
    x = Interpolant(sampler="sde-heun").sample(model, noise, y, steps=steps, generator=torch.Generator().manual_seed(2))
    assert model.calls == 2 * (steps - 1) + 1
    t_end = 1.0 - h
    slope_end, shift_end = drift_line(t_end)
    gain_end = 1 + h * slope_end  # the last step: x + h (a x + b)
    mu, s2 = MU.double(), STD.double() ** 2
    var_end = t_end**2 * s2 + (1 - t_end) ** 2
    want_mean = gain_end * t_end * mu + h * shift_end
    want_std = gain_end.abs() * var_end.sqrt()
    # the scheme's exact variance at t_end, from the recursion with the exact drift's slopes
    times = torch.linspace(0.0, t_end, steps, dtype=torch.float64).tolist()
    var = torch.ones_like(mu)
    for t, t_next in zip(times[:-1], times[1:]):
        dt = t_next - t
        a, a_next = drift_line(t)[0], drift_line(t_next)[0]
        heun_gain = 1 + dt / 2 * (a + a_next * (1 + dt * a))
        var = heun_gain**2 * (var + 2 * (1 - t) * dt)
    scheme_std_error = (gain_end.abs() * var.sqrt() - want_std).abs()
    assert (scheme_std_error < 0.005 * want_std).all()  # 0.3% at most for these pixels
    se_mean, se_std = want_std / n**0.5, want_std / (2 * (n - 1)) ** 0.5
    assert ((x.mean(0) - want_mean).abs() < 5 * se_mean).all()
    assert ((x.std(0) - want_std).abs() < 5 * se_std + scheme_std_error).all()


def test_sde_heun_differs_from_euler_maruyama_and_is_reproducible():
    noise = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    y = torch.zeros(8, dtype=torch.long)

    def run(sampler, seed):
        gen = torch.Generator().manual_seed(seed)
        return Interpolant(sampler=sampler).sample(GaussianVelocity(), noise, y, steps=10, generator=gen)

    assert torch.equal(run("sde-heun", 5), run("sde-heun", 5))
    assert not torch.equal(run("sde-heun", 5), run("sde-heun", 6))
    assert not torch.equal(run("sde-heun", 5), run("sde", 5))
