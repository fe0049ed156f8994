"""Properties of the objectives: losses, forward processes, samplers against closed forms, guidance, errors.

The sampler checks use Gaussian data ``N(mu, s^2)`` per pixel, for which the ideal noise predictor,
velocity field and denoiser are closed forms. The "exact models" below are written from those
formulas and the path/schedule definitions alone, independently of the code under test.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from ideal import Exact
from torch import nn

from repro.models import create
from repro.objectives import (
    DDPM,
    EDM,
    Interpolant,
    dit_respacing,
    guided_output,
    interpolate,
    karras_sigmas,
    make_objective,
    preconditioning,
    velocity_target,
)
from repro.objectives.edm import loss_weight


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tensors here are tiny: on a busy 2-core machine, splitting each op over two threads made
    the samplers about 20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------
# Tiny DiTs
# ------------------------------------------------------------------------------------------


def tiny_dit(learn_sigma=True, routes=(), seed=0, in_channels=2):
    """A 2-block DiT on 8x8 images whose zero-initialized weights are perturbed, so every parameter
    influences the output (at DiT's init the output layer is zero and nothing else gets a gradient)."""
    torch.manual_seed(seed)
    model = create(
        "DiT-S/2",
        input_size=8,
        in_channels=in_channels,
        hidden_size=32,
        depth=2,
        num_heads=2,
        num_classes=10,
        learn_sigma=learn_sigma,
        routes=routes,
    )
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return model


MODELS = {}


def cached_dit(learn_sigma, routes=()):
    key = (learn_sigma, tuple(routes))
    if key not in MODELS:
        MODELS[key] = tiny_dit(learn_sigma, routes)
    return MODELS[key]


OBJECTIVE_SETTINGS = [
    ("ddpm", {}),
    ("ddpm", {"learn_sigma": False}),
    ("interpolant", {"path": "linear"}),
    ("interpolant", {"path": "gvp"}),
    ("interpolant", {"path": "linear", "prediction": "noise"}),
    ("interpolant", {"path": "gvp", "prediction": "score"}),
    ("edm", {}),
]


def model_for(objective, routes=()):
    learn_sigma = getattr(objective, "learn_sigma", True)
    return cached_dit(learn_sigma, routes)


def batch(seed, b=4, c=2, size=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, size, size, generator=g).clamp(-1, 1), torch.randint(0, 10, (b,), generator=g)


# ------------------------------------------------------------------------------------------
# Losses
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("setting", OBJECTIVE_SETTINGS)  # every setting, not a draw that may miss one
@given(seed=st.integers(0, 2**16))
def test_loss_is_finite_non_negative_and_reaches_every_parameter(setting, seed):
    objective = make_objective(setting[0], **setting[1])
    model = model_for(objective, routes=[(0, 1, 0.5)])
    model.train()
    model.zero_grad(set_to_none=True)
    x0, y = batch(seed)
    loss = objective.loss(model, x0, y, torch.Generator().manual_seed(seed))
    assert loss.shape == (len(x0),)
    assert torch.isfinite(loss).all() and (loss >= 0).all()
    loss.mean().backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"


@pytest.mark.parametrize("setting", OBJECTIVE_SETTINGS[:1] + OBJECTIVE_SETTINGS[2:3] + OBJECTIVE_SETTINGS[-1:])
def test_loss_is_a_function_of_the_generator(setting):
    objective = make_objective(setting[0], **setting[1])
    model = model_for(objective, routes=[(0, 1, 0.5)])
    model.train()
    x0, y = batch(1)
    a = objective.loss(model, x0, y, torch.Generator().manual_seed(5))
    b = objective.loss(model, x0, y, torch.Generator().manual_seed(5))
    c = objective.loss(model, x0, y, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


@given(seed=st.integers(0, 2**16))
def test_ddpm_loss_parts_are_non_negative_at_every_step_including_the_decoder(seed):
    objective = DDPM()
    model = cached_dit(True)
    x0, y = batch(seed)
    g = torch.Generator().manual_seed(seed)
    t = torch.tensor([0, 0, 1, 999])  # step 0 uses the discretized decoder likelihood
    terms = objective.loss_terms(model, x0, y, t, torch.randn(x0.shape, generator=g))
    for name in ("mse", "vb", "loss"):
        assert torch.isfinite(terms[name]).all() and (terms[name] >= 0).all(), name
    assert torch.allclose(terms["loss"], terms["mse"] + terms["vb"])
    assert (terms["vb"] > 0).all()


class Fixed(nn.Module):
    """Returns a given output whatever the input, so gradients can be read off per output channel."""

    def __init__(self, out):
        super().__init__()
        self.out = nn.Parameter(out)

    def forward(self, x, t, y, generator=None):
        return self.out


def test_ddpm_vb_trains_only_the_variance_channels_and_mse_only_the_noise_channels():
    x0, y = batch(3)
    t = torch.tensor([0, 10, 500, 999])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    c = x0.shape[1]
    for part, trained in (("vb", slice(c, None)), ("mse", slice(0, c))):
        model = Fixed(0.5 * torch.randn(4, 2 * c, 8, 8, generator=torch.Generator().manual_seed(4)))
        DDPM().loss_terms(model, x0, y, t, noise)[part].sum().backward()
        grad = model.out.grad
        assert (grad[:, trained] != 0).any(1).all()
        assert grad.abs().sum() == grad[:, trained].abs().sum(), f"{part} reaches the wrong channels"


@pytest.mark.parametrize("setting", OBJECTIVE_SETTINGS)
def test_fixed_t_loss_is_deterministic_dense_and_restores_the_training_flag(setting):
    objective = make_objective(setting[0], **setting[1])
    model = model_for(objective, routes=[(0, 1, 0.5)])
    model.train()
    x0, y = batch(2)
    a = objective.fixed_t_loss(model, x0, y, torch.Generator().manual_seed(0), points=4)
    b = objective.fixed_t_loss(model, x0, y, torch.Generator().manual_seed(0), points=4)
    assert model.training
    assert a.shape == (len(x0),) and torch.isfinite(a).all() and (a >= 0).all()
    assert torch.equal(a, b) and not a.requires_grad
    # the same as averaging loss_at over the fixed levels with the model in eval mode
    g = torch.Generator().manual_seed(0)
    model.eval()
    with torch.no_grad():
        ref = (
            sum(
                objective.loss_at(model, x0, y, t.expand(len(x0)), torch.randn(x0.shape, generator=g))
                for t in objective.fixed_t(4, x0)
            )
            / 4
        )
    model.train()
    assert torch.allclose(a, ref, rtol=1e-6, atol=0)


def test_fixed_levels_are_midpoint_quantiles_of_the_training_distributions():
    like = torch.zeros(1, dtype=torch.float64)
    assert DDPM().fixed_t(8, like).tolist() == [62, 187, 312, 437, 562, 687, 812, 937]
    assert torch.allclose(Interpolant().fixed_t(4, like), torch.tensor([0.125, 0.375, 0.625, 0.875]).double())
    # EDM: ln sigma = P_mean + P_std * z, z at the normal's quantiles, symmetric around P_mean
    log_sigma = EDM().fixed_t(8, like).log()
    assert torch.allclose(log_sigma + log_sigma.flip(0), torch.full((8,), -2.4, dtype=torch.float64))


# ------------------------------------------------------------------------------------------
# Forward processes
# ------------------------------------------------------------------------------------------

BETAS = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
ALPHA_BAR = np.cumprod(1.0 - BETAS)


def test_ddpm_schedule_is_dits():
    objective = DDPM()
    assert np.allclose(objective.alphas_cumprod.numpy(), ALPHA_BAR, rtol=1e-12, atol=0)
    sched = objective.scheduler(250)
    assert np.allclose(sched.alphas_cumprod.numpy(), ALPHA_BAR, rtol=1e-12, atol=0)


@given(t=st.integers(0, 999), seed=st.integers(0, 2**16))
def test_ddpm_q_sample_has_the_closed_form_mean_and_variance(t, seed):
    g = torch.Generator().manual_seed(seed)
    n = 20000
    x0 = torch.randn(1, 3, generator=g, dtype=torch.float64).expand(n, 3)
    noise = torch.randn(n, 3, generator=g, dtype=torch.float64)
    xt = DDPM().q_sample(x0, torch.full((n,), t), noise)
    mean, var = math.sqrt(ALPHA_BAR[t]) * x0[0], 1.0 - ALPHA_BAR[t]
    assert torch.allclose(xt.mean(0), mean, atol=5 * math.sqrt(var / n))
    assert torch.allclose(xt.var(0), torch.full((3,), var, dtype=torch.float64), rtol=5 * math.sqrt(2 / n))


@given(
    path=st.sampled_from(["linear", "gvp"]), seed=st.integers(0, 2**16), shape=st.sampled_from([(3, 2), (2, 1, 4, 4)])
)
def test_interpolant_ends_are_exactly_noise_and_data(path, seed, shape):
    g = torch.Generator().manual_seed(seed)
    x1, noise = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    b = shape[0]
    assert torch.equal(interpolate(path, x1, noise, torch.zeros(b)), noise)
    assert torch.equal(interpolate(path, x1, noise, torch.ones(b)), x1)


@given(path=st.sampled_from(["linear", "gvp"]), t=st.floats(0.01, 0.99), seed=st.integers(0, 2**16))
def test_velocity_target_is_the_time_derivative_of_the_path(path, t, seed):
    g = torch.Generator().manual_seed(seed)
    x1, noise = torch.randn(2, 5, generator=g, dtype=torch.float64), torch.randn(2, 5, generator=g, dtype=torch.float64)
    h = 1e-5
    tt = torch.full((2,), t, dtype=torch.float64)
    fd = (interpolate(path, x1, noise, tt + h) - interpolate(path, x1, noise, tt - h)) / (2 * h)
    assert torch.allclose(velocity_target(path, x1, noise, tt), fd, rtol=0, atol=1e-8)


def path_reference(path, t):
    """alpha, sigma and their derivatives, from SiT's definitions."""
    if path == "linear":
        return t, 1 - t, torch.ones_like(t), -torch.ones_like(t)
    return (
        torch.sin(math.pi * t / 2),
        torch.cos(math.pi * t / 2),
        math.pi / 2 * torch.cos(math.pi * t / 2),
        -math.pi / 2 * torch.sin(math.pi * t / 2),
    )


@given(sigma=st.floats(1e-3, 1e3), sigma_data=st.floats(0.1, 2.0))
def test_edm_preconditioning_gives_unit_variance_input_and_target(sigma, sigma_data):
    s = torch.tensor([sigma], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = preconditioning(s, sigma_data)
    # input x0 + sigma n has variance sd^2 + sigma^2; c_in scales it to 1
    assert torch.allclose(c_in**2 * (sigma_data**2 + s**2), torch.ones(1, dtype=torch.float64))
    # the effective target (x0 - c_skip x) / c_out has unit variance
    target_var = ((1 - c_skip) ** 2 * sigma_data**2 + c_skip**2 * s**2) / c_out**2
    assert torch.allclose(target_var, torch.ones(1, dtype=torch.float64))
    assert torch.allclose(loss_weight(s, sigma_data) * c_out**2, torch.ones(1, dtype=torch.float64))
    assert torch.allclose(c_noise, s.log() / 4)


@pytest.mark.parametrize("sigma", [0.01, 0.3, 2.0, 50.0])
def test_edm_loss_of_a_zero_network_is_one_for_data_of_std_sigma_data(sigma):
    """With F = 0 the weighted loss is the squared effective target, which EDM scales to unit variance."""
    n = 20000
    x0 = 0.5 * torch.randn(n, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    zero = Fixed(torch.zeros(n, 1, 2, 2, dtype=torch.float64))
    loss = EDM().loss_at(zero, x0, torch.zeros(n, dtype=torch.long), torch.full((n,), sigma), noise)
    assert abs(loss.mean().item() - 1.0) < 5 * math.sqrt(2 / (4 * n))


def test_edm_sigma_schedule():
    sig = karras_sigmas(40, 0.002, 80.0, 7.0)
    assert len(sig) == 41 and sig[-1] == 0.0
    assert math.isclose(sig[0], 80.0) and math.isclose(sig[-2], 0.002)
    assert all(a > b for a, b in zip(sig, sig[1:]))
    assert karras_sigmas(1, 0.002, 80.0, 7.0) == [pytest.approx(80.0), 0.0]


# ------------------------------------------------------------------------------------------
# DiT's respaced sampler
# ------------------------------------------------------------------------------------------


def dit_space_timesteps(num_timesteps, count):
    """DiT's ``space_timesteps(num_timesteps, str(count))``, transcribed."""
    frac_stride = 1 if count <= 1 else (num_timesteps - 1) / (count - 1)
    cur, taken = 0.0, []
    for _ in range(count):
        taken.append(round(cur))
        cur += frac_stride
    return sorted(set(taken))


@pytest.mark.parametrize("steps", [250, 21, 100, 1, 2, 1000])
def test_respacing_keeps_dits_steps(steps):
    from diffusers import DDPMScheduler

    assert dit_respacing(1000, steps) == dit_space_timesteps(1000, steps)
    assert DDPM().scheduler(steps).timesteps.tolist() == dit_space_timesteps(1000, steps)[::-1]
    if steps == 250:  # diffusers' own linspace spacing agrees for DiT's 250 steps
        s = DDPMScheduler(timestep_spacing="linspace")
        s.set_timesteps(250)
        assert s.timesteps.tolist() == dit_space_timesteps(1000, 250)[::-1]


def dit_p_sample_loop(model, noise, y, steps, g):
    """DiT's respaced ancestral sampler with a learned-range variance, in float64, from its definition."""
    kept = dit_space_timesteps(1000, steps)
    abar = ALPHA_BAR[kept]
    abar_prev = np.append(1.0, abar[:-1])
    betas = 1.0 - abar / abar_prev
    post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
    post_log_var = np.log(np.append(post_var[1], post_var[1:]))
    x = noise.double()
    for i in reversed(range(len(kept))):
        out = model(x.float(), torch.full((len(x),), kept[i]), y).double()
        eps, v = out.chunk(2, dim=1)
        x0 = math.sqrt(1 / abar[i]) * x - math.sqrt(1 / abar[i] - 1) * eps
        mean = (betas[i] * math.sqrt(abar_prev[i]) / (1 - abar[i])) * x0 + (
            (1 - abar_prev[i]) * math.sqrt(1 - betas[i]) / (1 - abar[i])
        ) * x
        frac = (v + 1) / 2
        log_var = frac * math.log(betas[i]) + (1 - frac) * post_log_var[i]
        if i > 0:
            x = mean + torch.exp(0.5 * log_var) * torch.randn(x.shape, generator=g).double()
        else:
            x = mean
    return x


class Smooth(nn.Module):
    """A fixed nonlinear stand-in for a trained network (any output is a valid test input)."""

    def __init__(self, out_factor=2, labelled_extra=True):
        super().__init__()
        self.out_factor = out_factor
        self.labelled_extra = labelled_extra
        self.config = SimpleNamespace(num_classes=10, class_dropout_prob=0.1)

    def forward(self, x, t, y, generator=None):
        t = t.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        lab = (y.to(x.dtype) / 10).reshape(-1, *([1] * (x.ndim - 1)))
        eps = torch.tanh(x) * 0.7 + 0.3 * torch.sin(t / 100 + lab)
        extra = [torch.cos(x + t / 300 - self.labelled_extra * lab)] * (self.out_factor - 1)
        return torch.cat([eps, *extra], dim=1)


@given(t=st.integers(1, 999), seed=st.integers(0, 2**16))
def test_ddpm_vb_scores_the_reverse_step_the_sampler_takes(t, seed):
    """The KL term compares the closed-form posterior with the very Gaussian that a full 1000-step
    sampler step draws from (diffusers' step, given the same eps and v)."""
    g = torch.Generator().manual_seed(seed)
    x0, xt = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64), torch.randn(3, 2, 3, 3, generator=g)
    xt = xt.double()
    out = Smooth()(xt, torch.full((3,), t), torch.tensor([1, 2, 3]))
    eps, v = out.chunk(2, dim=1)
    objective = DDPM()
    tt = torch.full((3,), t)
    # the sampler's step: x_prev = mean + std * z
    z = torch.randn(xt.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x_prev = objective.scheduler(1000).step(out, t, xt, generator=torch.Generator().manual_seed(seed)).prev_sample
    mean, log_var = objective.p_mean_log_variance(eps, v, xt, tt)
    assert torch.allclose(x_prev, mean + torch.exp(0.5 * log_var) * z, rtol=1e-9, atol=1e-9)
    # the posterior q(x_{t-1} | x_t, x_0), from the schedule alone, and the KL between the two Gaussians
    ab, ab_prev, beta = ALPHA_BAR[t], ALPHA_BAR[t - 1], BETAS[t]
    q_mean = (math.sqrt(ab_prev) * beta * x0 + math.sqrt(1 - beta) * (1 - ab_prev) * xt) / (1 - ab)
    q_var = beta * (1 - ab_prev) / (1 - ab)
    p_var = log_var.exp()
    kl = 0.5 * (p_var.log() - math.log(q_var) + (q_var + (q_mean - mean) ** 2) / p_var - 1)
    expected = kl.flatten(1).mean(1) / math.log(2)
    assert torch.allclose(objective.vb_bits(x0, xt, tt, eps, v), expected, rtol=1e-9, atol=1e-12)


def _tanh_cdf(x: np.ndarray) -> np.ndarray:
    """ADM's tanh approximation of the standard normal CDF, written from its formula."""
    return 0.5 * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _tanh_cdf_errors() -> tuple[float, float]:
    """``(sup |A - Phi|, sup |A' - phi|)`` for the tanh approximation ``A`` of the normal CDF ``Phi``, on a grid of
    step 1e-4 over [-12, 12] (beyond it both errors are below 1e-30). On that grid a maximum is missed by at most
    ``step^2 / 8`` times the error's second derivative (under 10 for both): under 1e-7, inside the 1% margin the
    callers add (the errors are ~1e-4)."""
    from scipy.stats import norm

    x = np.linspace(-12.0, 12.0, 240_001)
    a = _tanh_cdf(x)
    c = math.sqrt(2.0 / math.pi)
    density = 2.0 * a * (1.0 - a) * c * (1.0 + 3 * 0.044715 * x**2)  # d/dx of 0.5 (1 + tanh(c (x + k x^3)))
    return float(np.abs(a - norm.cdf(x)).max()), float(np.abs(density - norm.pdf(x)).max())


@given(mean=st.floats(-1.2, 1.2), log_scale=st.floats(-6.0, 0.0))
def test_ddpm_decoder_is_a_normalized_discretized_gaussian(mean, log_scale):
    """Each inner bin holds the Gaussian mass within half a bin (1/255) of its value, as ADM computes it: through
    the tanh approximation ``A`` of the normal CDF. A bin's mass is ``A(u) - A(l)`` against the exact
    ``Phi(u) - Phi(l)``, so it is off by at most ``2 sup |A - Phi|`` (3.6e-4), and, as the integral of ``A' - phi``
    over the bin's width ``w = (2/255) / s`` in standard units, by at most ``w sup |A' - phi|``: the tolerance is
    the smaller of the two, plus 1%. A mean or scale off by a bin, or a bin of the wrong width, misses by more."""
    from scipy.stats import norm

    from repro.objectives.ddpm import discretized_gaussian_nll

    bins = torch.linspace(-1, 1, 256, dtype=torch.float64)  # the 256 pixel values
    m, ls = torch.full_like(bins, mean), torch.full_like(bins, log_scale)
    p = torch.exp(-discretized_gaussian_nll(bins, m, ls))
    assert abs(p.sum().item() - 1.0) < 1e-6
    s = math.exp(log_scale)
    exact = norm.cdf((bins[1:-1] + 1 / 255 - mean) / s) - norm.cdf((bins[1:-1] - 1 / 255 - mean) / s)
    cdf_error, density_error = _tanh_cdf_errors()
    tol = 1.01 * min(2 * cdf_error, (2 / 255) / s * density_error)
    # the implementation floors each bin's probability at 1e-12 before the log (a bin far in the tail)
    assert np.abs(p[1:-1].numpy() - exact).max() <= tol + 1e-12


def test_ddpm_vb_at_step_zero_is_the_decoder_likelihood_in_bits():
    from repro.objectives.ddpm import discretized_gaussian_nll

    objective = DDPM()
    out = Smooth()(torch.randn(3, 2, 4, 4), torch.zeros(3), torch.tensor([1, 2, 3])).double()
    eps, v = out.chunk(2, dim=1)
    x0 = torch.randint(0, 256, (3, 2, 4, 4)).double() / 127.5 - 1
    t = torch.zeros(3, dtype=torch.long)
    xt = objective.q_sample(x0, t, torch.randn(3, 2, 4, 4, dtype=torch.float64))
    mean, log_var = objective.p_mean_log_variance(eps, v, xt, t)
    nll = discretized_gaussian_nll(x0, mean, 0.5 * log_var).flatten(1).mean(1) / math.log(2)
    assert torch.equal(objective.vb_bits(x0, xt, t, eps, v), nll)


@pytest.mark.parametrize("steps", [10, 21])
def test_ddpm_sampler_is_dits_respaced_sampler(steps):
    model = Smooth()
    noise = torch.randn(8, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    y = torch.arange(8)
    ours = DDPM().sample(model, noise, y, steps, generator=torch.Generator().manual_seed(1))
    ref = dit_p_sample_loop(model, noise, y, steps, torch.Generator().manual_seed(1))
    assert torch.allclose(ours.double(), ref, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------
# Samplers against the exact answer for Gaussian data
# ------------------------------------------------------------------------------------------

N_SAMPLES = 4096
MU = torch.linspace(-1.0, 1.5, 16).reshape(1, 4, 4)
STD = torch.linspace(0.3, 1.2, 16).flip(0).reshape(1, 4, 4)
TOL_SIGMAS = 5.0


def exact_ddpm(steps):
    """eps = E[eps | x_t]; v such that the reverse variance is the true Var(x_prev | x_t) of the kept chain."""
    kept = dit_space_timesteps(1000, steps)
    previous = dict(zip(kept, [-1] + kept[:-1]))
    mu, s2 = MU.double(), STD.double() ** 2

    def fn(x, t):
        t = int(t)
        ab, ab_prev = ALPHA_BAR[t], (ALPHA_BAR[previous[t]] if previous[t] >= 0 else 1.0)
        var_x = ab * s2 + 1 - ab
        eps = math.sqrt(1 - ab) / var_x * (x.double() - math.sqrt(ab) * mu)
        beta = 1 - ab / ab_prev
        if previous[t] < 0:  # last step: no noise is added, the variance is unused
            v = torch.ones_like(eps)
        else:
            post_var = beta * (1 - ab_prev) / (1 - ab)
            true_var = post_var + (math.sqrt(ab_prev) * beta / (1 - ab)) ** 2 * s2 * (1 - ab) / var_x
            v = 2 * (true_var.log() - math.log(post_var)) / (math.log(beta) - math.log(post_var)) - 1
        return torch.cat([eps, v.expand_as(eps)], dim=1).to(x.dtype)

    return Exact(fn)


def exact_interpolant(path, prediction):
    mu, s2 = MU.double(), STD.double() ** 2

    def fn(x, t):
        a, s, da, ds = path_reference(path, t.double())
        var_x = a**2 * s2 + s**2
        r = x.double() - a * mu
        if prediction == "score":
            out = -r / var_x
        elif prediction == "noise":
            out = s / var_x * r
        else:
            out = da * (mu + a * s2 / var_x * r) + ds * (s / var_x * r)
        return out.to(x.dtype)

    return Exact(fn)


def exact_edm(sigma_data=0.5):
    mu, s2 = MU.double(), STD.double() ** 2

    def fn(z, c_noise):
        sigma = torch.exp(4 * c_noise.double())
        total = sigma**2 + sigma_data**2
        x = z.double() * total.sqrt()
        denoised = mu + s2 / (s2 + sigma**2) * (x - mu)
        c_skip, c_out = sigma_data**2 / total, sigma * sigma_data / total.sqrt()
        return ((denoised - c_skip * x) / c_out).to(z.dtype)

    return Exact(fn)


def sde_target(path, last_step_size=0.04):
    """Per-pixel mean and std after SiT's SDE sampler with the exact model.

    The SDE keeps the exact marginal up to ``t = 1 - h``; its last step is the noise-free mean
    ``x + h (v - E[eps | x])`` (the sigma-form drift ``v + sigma * score``), an affine map of a
    Gaussian, which shrinks the spread slightly (about 1% of the std for this data and h = 0.04).
    """
    h, t = last_step_size, torch.tensor(1.0 - last_step_size, dtype=torch.float64)
    a, s, _, _ = path_reference(path, t)
    velocity, noise = exact_interpolant(path, "velocity").fn, exact_interpolant(path, "noise").fn

    def last_step(x):
        x = torch.full_like(MU, x, dtype=torch.float64)
        return x + h * (velocity(x, t) - noise(x, t))

    gain, shift = last_step(1.0) - last_step(0.0), last_step(0.0)
    return gain * a * MU.double() + shift, gain.abs() * (a**2 * STD.double() ** 2 + s**2).sqrt()


# name: (objective, exact model, steps, expected per-pixel (mean, std) when it is not (MU, STD))
GAUSSIAN_CASES = {
    "ddpm-250": (lambda: DDPM(), lambda: exact_ddpm(250), 250, None),
    "linear-euler-500": (lambda: Interpolant(), lambda: exact_interpolant("linear", "velocity"), 500, None),
    "linear-heun-50": (lambda: Interpolant(sampler="heun"), lambda: exact_interpolant("linear", "velocity"), 50, None),
    "gvp-heun-50": (
        lambda: Interpolant(path="gvp", sampler="heun"),
        lambda: exact_interpolant("gvp", "velocity"),
        50,
        None,
    ),
    "linear-noise-heun-50": (
        lambda: Interpolant(prediction="noise", sampler="heun"),
        lambda: exact_interpolant("linear", "noise"),
        50,
        None,
    ),
    "linear-sde-250": (
        lambda: Interpolant(sampler="sde"),
        lambda: exact_interpolant("linear", "velocity"),
        250,
        lambda: sde_target("linear"),
    ),
    "gvp-sde-250": (
        lambda: Interpolant(path="gvp", sampler="sde"),
        lambda: exact_interpolant("gvp", "velocity"),
        250,
        lambda: sde_target("gvp"),
    ),
    "gvp-score-sde-250": (
        lambda: Interpolant(path="gvp", prediction="score", sampler="sde"),
        lambda: exact_interpolant("gvp", "score"),
        250,
        lambda: sde_target("gvp"),
    ),
    "edm-heun-100": (lambda: EDM(), lambda: exact_edm(), 100, None),
}


def gaussian_check(case, seed=0, steps=None):
    """Sample with the exact model; the standardized samples' mean and std errors and their tolerances.

    Returns ``(mean_err, std_err, mean_tol, std_tol)``: ``mean_err`` is the mean of
    ``(x - mean) / std`` over all pixels and samples, ``std_err`` its standard deviation minus 1; the
    tolerances are TOL_SIGMAS standard errors for that many independent values.
    """
    make, make_model, default_steps, target = GAUSSIAN_CASES[case]
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(N_SAMPLES, *MU.shape, generator=g)
    y = torch.zeros(N_SAMPLES, dtype=torch.long)
    x = make().sample(make_model(), noise, y, steps or default_steps, generator=g)
    mean, std = target() if target is not None else (MU.double(), STD.double())
    z = (x.double() - mean) / std
    n = z.numel()
    return z.mean().item(), z.std().item() - 1.0, TOL_SIGMAS / math.sqrt(n), TOL_SIGMAS / math.sqrt(2 * n)


@pytest.mark.parametrize("case", list(GAUSSIAN_CASES))
def test_sampler_reproduces_gaussian_data_with_the_exact_model(case):
    mean_err, std_err, mean_tol, std_tol = gaussian_check(case)
    assert abs(mean_err) < mean_tol, f"{case}: mean off by {mean_err:.4f} std units (tolerance {mean_tol:.4f})"
    assert abs(std_err) < std_tol, f"{case}: std off by {std_err:.4f} (relative; tolerance {std_tol:.4f})"


class Scaled(nn.Module):
    """``model`` with its prediction channels (the first ``channels``) multiplied by ``factor``."""

    def __init__(self, model, factor, channels=1):
        super().__init__()
        self.model, self.factor, self.channels = model, factor, channels
        self.config = model.config

    def forward(self, x, t, y, generator=None):
        out = self.model(x, t, y)
        return torch.cat([self.factor * out[:, : self.channels], out[:, self.channels :]], dim=1)


MINIMIZER_CASES = {
    "ddpm": (lambda: DDPM(), lambda: exact_ddpm(1000)),
    "linear-velocity": (lambda: Interpolant(), lambda: exact_interpolant("linear", "velocity")),
    "gvp-velocity": (lambda: Interpolant(path="gvp"), lambda: exact_interpolant("gvp", "velocity")),
    "linear-noise": (lambda: Interpolant(prediction="noise"), lambda: exact_interpolant("linear", "noise")),
    "gvp-score": (lambda: Interpolant(path="gvp", prediction="score"), lambda: exact_interpolant("gvp", "score")),
    "edm": (lambda: EDM(), lambda: exact_edm()),
}


@pytest.mark.parametrize("case", list(MINIMIZER_CASES))
def test_the_exact_model_minimizes_the_loss(case):
    """The loss is quadratic in the prediction and minimized by its conditional mean, so scaling the
    exact prediction by 1 +- 20% must raise the average loss at every noise level (this pins down
    what each loss regresses on, weights included)."""
    objective, exact = MINIMIZER_CASES[case][0](), MINIMIZER_CASES[case][1]()
    g = torch.Generator().manual_seed(0)
    x0 = MU + STD * torch.randn(N_SAMPLES, *MU.shape, generator=g)
    y = torch.zeros(N_SAMPLES, dtype=torch.long)
    for t in objective.fixed_t(4, x0):
        noise = torch.randn(x0.shape, generator=g)
        t = t.expand(N_SAMPLES)
        loss = {f: objective.loss_at(Scaled(exact, f), x0, y, t, noise).mean() for f in (0.8, 1, 1.2)}
        assert loss[1] < loss[0.8] and loss[1] < loss[1.2], f"t={t[0].item():.3f}: {loss}"


def test_gaussian_check_fails_for_wrong_data():
    """The check has power: an exact model for other data (mean shifted by 0.1 std) fails it."""
    global MU
    saved = MU
    try:
        MU = saved + 0.1 * STD
        model = exact_interpolant("linear", "velocity")
    finally:
        MU = saved
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(N_SAMPLES, *MU.shape, generator=g)
    x = Interpolant(sampler="heun").sample(model, noise, torch.zeros(N_SAMPLES, dtype=torch.long), 50)
    z = (x - MU) / STD
    assert abs(z.mean().item()) > TOL_SIGMAS / math.sqrt(z.numel())


# ------------------------------------------------------------------------------------------
# Guidance and dense inference
# ------------------------------------------------------------------------------------------


class Spy(Smooth):
    """Records the labels, batch sizes and training flags it is called with."""

    def __init__(self, out_factor=2, labelled_extra=True):
        super().__init__(out_factor, labelled_extra)
        self.calls = []

    def forward(self, x, t, y, generator=None):
        self.calls.append((y.clone(), len(x), self.training))
        return super().forward(x, t, y)


def test_guided_output_combines_prediction_channels_and_keeps_conditional_variance():
    model = Spy()
    x = torch.randn(3, 2, 4, 4)
    t, y = torch.full((3,), 7.0), torch.tensor([1, 2, 3])
    cond, uncond = model(x, t, y), model(x, t, torch.full_like(y, 10))
    out = guided_output(model, x, t, y, 2.5)
    assert torch.equal(model.calls[-1][0], torch.tensor([1, 2, 3, 10, 10, 10]))
    assert torch.allclose(out[:, :2], uncond[:, :2] + 2.5 * (cond[:, :2] - uncond[:, :2]))
    assert torch.equal(out[:, 2:], cond[:, 2:])
    assert torch.allclose(guided_output(model, x, t, y, 0.0)[:, :2], uncond[:, :2])
    # the combination at scale 1 is the conditional output; the sampler skips the unconditional half
    assert torch.allclose(uncond[:, :2] + 1.0 * (cond[:, :2] - uncond[:, :2]), cond[:, :2], atol=1e-6)
    n = len(model.calls)
    assert torch.equal(guided_output(model, x, t, y, 1.0), cond) and model.calls[n][1] == 3


SAMPLER_SETTINGS = [
    ("ddpm", {}),
    ("interpolant", {"sampler": "heun"}),
    ("interpolant", {"sampler": "sde"}),
    ("edm", {}),
]


@pytest.mark.parametrize("setting", SAMPLER_SETTINGS)
def test_guidance_scale_one_is_the_conditional_sampler_and_zero_the_unconditional(setting):
    objective = make_objective(setting[0], **setting[1])
    # DDPM's variance channels come from the conditional half, so here they ignore the label
    model = Spy(2 if setting[0] == "ddpm" else 1, labelled_extra=False)
    noise = torch.randn(4, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 3, 5, 9])

    def run(labels, scale):
        return objective.sample(model, noise, labels, 6, scale, generator=torch.Generator().manual_seed(1))

    conditional = run(y, 1.0)
    assert all(n == 4 and torch.equal(labels, y) for labels, n, _ in model.calls)
    assert torch.equal(run(y, 1.0), conditional)
    assert torch.allclose(run(y, 0.0), run(torch.full_like(y, 10), 1.0), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(run(y, 3.0), conditional, atol=1e-3)


@pytest.mark.parametrize("setting", SAMPLER_SETTINGS)
def test_sampling_a_routed_model_in_training_mode_is_dense_and_restores_the_flag(setting):
    objective = make_objective(setting[0], **setting[1])
    model = tiny_dit(learn_sigma=True, routes=[(0, 1, 0.5)])
    flags = []
    model.register_forward_pre_hook(lambda m, args: flags.append(m.training))
    noise = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([1, 4])
    model.train()
    a = objective.sample(model, noise, y, 3, 1.5, generator=torch.Generator().manual_seed(1))
    assert model.training and flags and not any(flags)
    model.eval()
    b = objective.sample(model, noise, y, 3, 1.5, generator=torch.Generator().manual_seed(1))
    assert not model.training
    assert torch.equal(a, b)
    # routing would have changed the output: the same call with routes forced on differs
    t = torch.full((2,), 0.5)
    assert not torch.allclose(model(noise, t, y), model(noise, t, y, force_routing=True, generator=torch.Generator()))


def test_sampling_restores_the_training_flag_after_an_error():
    model = Spy(3)
    model.train()
    with pytest.raises(ValueError, match="model output: 6 channels for 2-channel data; this objective needs 4"):
        DDPM().sample(model, torch.randn(2, 2, 4, 4), torch.tensor([0, 1]), 2)
    assert model.calls and not model.calls[0][2]
    assert model.training


# ------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, settings, match",
    [
        ("vdm", {}, r"objective: unknown name 'vdm'; allowed: 'ddpm', 'interpolant', 'edm'"),
        ("interpolant", {"path": "quadratic"}, r"path: unknown value 'quadratic'; allowed: 'linear', 'gvp'"),
        ("interpolant", {"prediction": "x0"}, r"prediction: unknown value 'x0'; allowed: 'velocity'"),
        ("interpolant", {"sampler": "rk4"}, r"sampler: unknown value 'rk4'; allowed: 'euler', 'heun', 'sde'"),
        ("interpolant", {"diffusion": "sbdm"}, r"diffusion: unknown value 'sbdm'"),
        ("interpolant", {"last_step_size": 1.5}, r"last_step_size: 1.5 is not allowed"),
        ("interpolant", {"prediction": "noise", "eps": 0.0}, r"eps: 0 is not allowed"),
        ("interpolant", {"steps": 10}, r"interpolant: unknown setting\(s\) 'steps'; allowed: path, prediction"),
        ("ddpm", {"beta_end": 2.0}, r"beta_end: 2.0 is not allowed; must be a finite real number > 0.0001 and < 1"),
        ("ddpm", {"num_timesteps": 0}, r"num_timesteps: 0 is not allowed; must be an integer >= 2"),
        ("ddpm", {"learn_sigma": "yes"}, r"learn_sigma: 'yes' is not allowed"),
        ("edm", {"sigma_min": -1.0}, r"sigma_min: -1.0 is not allowed; must be a finite real number > 0"),
        ("edm", {"rho": 0}, r"rho: 0 is not allowed"),
        ("edm", {"p_std": float("nan")}, r"p_std: nan is not allowed"),
        ("edm", {"sigma_max": 0.001}, r"sigma_max: 0.001 is not allowed; must be a finite real number > 0.002"),
    ],
)
def test_bad_settings_fail_naming_field_value_and_allowed(name, settings, match):
    with pytest.raises(ValueError, match=match):
        make_objective(name, **settings)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"steps": 0}, r"steps: 0 is not allowed; must be an integer >= 1"),
        ({"steps": 2.5}, r"steps: 2.5 is not allowed"),
        ({"guidance_scale": -1.0}, r"guidance_scale: -1.0 is not allowed; must be a finite real number >= 0"),
        ({"guidance_scale": float("inf")}, r"guidance_scale: inf is not allowed"),
    ],
)
@pytest.mark.parametrize("setting", SAMPLER_SETTINGS)
def test_bad_sampler_arguments_fail(setting, kwargs, match):
    objective = make_objective(setting[0], **setting[1])
    model = Spy(2)
    with pytest.raises(ValueError, match=match):
        objective.sample(model, torch.randn(2, 2, 4, 4), torch.tensor([0, 1]), **kwargs)
    assert not model.calls


def test_bad_batches_and_models_fail():
    model = Spy(2)
    with pytest.raises(ValueError, match=r"steps: 1001 is not allowed; must be an integer >= 1 and <= 1000"):
        DDPM().sample(model, torch.randn(2, 2, 4, 4), torch.tensor([0, 1]), 1001)
    with pytest.raises(ValueError, match=r"y: expected integer labels of shape \(2,\)"):
        EDM().sample(model, torch.randn(2, 2, 4, 4), torch.tensor([0, 1, 2]), 4)
    with pytest.raises(ValueError, match=r"y: expected integer labels"):
        EDM().loss(model, torch.randn(2, 2, 4, 4), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"x0: expected a floating tensor"):
        EDM().loss(model, torch.zeros(2, 2, 4, 4, dtype=torch.long), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"model output: 2 channels for 2-channel data; this objective needs 4"):
        DDPM().loss(Spy(1), torch.randn(2, 2, 4, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"points: 0 is not allowed"):
        EDM().fixed_t_loss(model, torch.randn(2, 2, 4, 4), torch.tensor([0, 1]), points=0)
    no_null = create(
        "DiT-S/2", input_size=8, in_channels=2, hidden_size=32, depth=1, num_heads=2, class_dropout_prob=0.0
    )
    with pytest.raises(ValueError, match=r"guidance_scale: guidance other than 1 needs a null label"):
        EDM().sample(no_null, torch.randn(2, 2, 8, 8), torch.tensor([0, 1]), 2, guidance_scale=2.0)
