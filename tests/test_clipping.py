"""Clipping the clean-image estimate to the pixel range (``clip_denoised``) in the DDPM, interpolant and EDM samplers.

The checks use per-pixel Gaussian data ``N(mu, s^2)``, for which the ideal network is known in closed form (as in
``tests/test_objectives.py``): with data well inside [-1, 1] the clean estimates never leave the range and clipping
changes nothing, bit for bit; with data outside it, clipping bounds what the samplers return.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from ideal import Exact
from torch import nn

from repro.objectives import DDPM, EDM, Interpolant, make_objective
from repro.objectives.interpolant import clean_estimate, clip_prediction, path_coefficients

SHAPE = (1, 4, 4)
IN_RANGE = (torch.linspace(-0.6, 0.6, 16).reshape(SHAPE), 0.03)
OUTSIDE = (torch.linspace(-3.0, 3.0, 16).reshape(SHAPE), 0.05)


def exact_ddpm(mu, std):
    abar = DDPM().alphas_cumprod

    def fn(x, t):
        ab = abar[int(t)]
        return (1 - ab).sqrt() / (ab * std**2 + 1 - ab) * (x - ab.sqrt() * mu)

    return Exact(fn)


def exact_velocity(mu, std):
    def fn(x, t):  # linear path: alpha = t, sigma = 1 - t
        var_x = t**2 * std**2 + (1 - t) ** 2
        r = x - t * mu
        return (mu + t * std**2 / var_x * r) - (1 - t) / var_x * r

    return Exact(fn)


def exact_edm(mu, std, sigma_data=0.5):
    def fn(z, c_noise):
        sigma = torch.exp(4 * c_noise)
        total = sigma**2 + sigma_data**2
        x = z * total.sqrt()
        denoised = mu + std**2 / (std**2 + sigma**2) * (x - mu)
        return (denoised - sigma_data**2 / total * x) / (sigma * sigma_data / total.sqrt())

    return Exact(fn)


CASES = {
    "ddpm-50": (lambda **kw: DDPM(learn_sigma=False, **kw), exact_ddpm, 50),
    "linear-euler-50": (lambda **kw: Interpolant(**kw), exact_velocity, 50),
    "linear-heun-25": (lambda **kw: Interpolant(sampler="heun", **kw), exact_velocity, 25),
    "linear-sde-100": (lambda **kw: Interpolant(sampler="sde", **kw), exact_velocity, 100),
    "edm-heun-40": (lambda **kw: EDM(**kw), exact_edm, 40),
}
# samplers whose last step returns the clean estimate itself: their clipped output lies in [-1, 1]
ENDS_ON_THE_ESTIMATE = ("ddpm-50", "linear-euler-50", "edm-heun-40")


def draw(case, data, clip, n=512, seed=0):
    make, exact, steps = CASES[case]
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, *SHAPE, generator=g)
    y = torch.zeros(n, dtype=torch.long)
    return make(clip_denoised=clip).sample(exact(*data), noise, y, steps, generator=g)


@pytest.mark.parametrize("case", list(CASES))
def test_clipping_leaves_in_range_data_unaffected(case):
    clipped, plain = draw(case, IN_RANGE, True), draw(case, IN_RANGE, False)
    assert torch.equal(clipped, plain)
    mu, std = IN_RANGE
    assert (clipped.mean(0) - mu).abs().max() < 6 * std / math.sqrt(512) + 0.02  # and it samples the data


@pytest.mark.parametrize("case", list(CASES))
def test_clipping_bounds_the_samples_of_out_of_range_data(case):
    clipped, plain = draw(case, OUTSIDE, True), draw(case, OUTSIDE, False)
    assert plain.abs().max() > 2.5  # without clipping the samplers follow the data out of the range
    if case in ENDS_ON_THE_ESTIMATE:
        assert clipped.abs().max() <= 1.0 + 1e-5
    else:  # the last step mixes the clamped estimate with the current state; it stays close to the range
        assert clipped.abs().max() <= 1.2
    # clipping is per element: pixels whose data lie inside the range are sampled exactly as before
    inside = (OUTSIDE[0].abs() < 0.8).expand_as(clipped)
    assert torch.equal(clipped[inside], plain[inside])


class Wild(nn.Module):
    """A network whose outputs are far too large: without clipping its samples blow up."""

    config = SimpleNamespace(num_classes=10, class_dropout_prob=0.1)

    def forward(self, x, t, y, generator=None):
        return 40.0 * torch.sin(3.0 * x) + 25.0


@pytest.mark.parametrize("case", ENDS_ON_THE_ESTIMATE)
def test_clipped_samplers_stay_in_range_whatever_the_network(case):
    make, _, steps = CASES[case]
    noise = torch.randn(64, *SHAPE, generator=torch.Generator().manual_seed(1))
    y = torch.zeros(64, dtype=torch.long)
    out = make(clip_denoised=True).sample(Wild(), noise, y, steps)
    assert torch.isfinite(out).all() and out.abs().max() <= 1.0 + 1e-5
    assert make(clip_denoised=False).sample(Wild(), noise, y, steps).abs().max() > 2.0


@given(
    path=st.sampled_from(["linear", "gvp"]),
    prediction=st.sampled_from(["velocity", "noise", "score"]),
    t=st.floats(0.01, 0.99),
    seed=st.integers(0, 2**16),
)
def test_clip_prediction_clamps_the_implied_clean_estimate_and_keeps_the_path(path, prediction, t, seed):
    g = torch.Generator().manual_seed(seed)
    x = 2.0 * torch.randn(8, 1, 3, 3, generator=g, dtype=torch.float64)
    out = 3.0 * torch.randn(8, 1, 3, 3, generator=g, dtype=torch.float64)
    coefs = tuple(c.reshape(1, 1, 1, 1) for c in path_coefficients(path, torch.tensor([t], dtype=torch.float64)))
    x1, _ = clean_estimate(prediction, out, x, coefs)
    clipped = clip_prediction(prediction, out, x, coefs)
    x1c, eps_c = clean_estimate(prediction, clipped, x, coefs)
    torch.testing.assert_close(x1c, x1.clamp(-1, 1))
    alpha, sigma = coefs[0], coefs[1]
    torch.testing.assert_close(alpha * x1c + sigma * eps_c, x)  # still a decomposition of the same x_t
    inside = x1.abs() <= 1
    assert torch.equal(clipped[inside], out[inside])


def test_clip_denoised_is_a_checked_setting_of_every_objective():
    for name in ("ddpm", "interpolant", "edm"):
        assert make_objective(name).clip_denoised is False
        assert make_objective(name, clip_denoised=True).clip_denoised is True
        with pytest.raises(ValueError, match="clip_denoised: 'yes' is not allowed; must be true or false"):
            make_objective(name, clip_denoised="yes")
