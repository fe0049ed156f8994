"""DiT's diffusion: DDPM with a learned-range variance (Ho et al. 2020; Nichol & Dhariwal 2021).

Conventions, as in DiT's code:

- ``T = 1000`` steps indexed ``t = 0 .. T-1``; betas linear from 1e-4 to 0.02 (computed in float64);
  ``abar_t = prod_{s <= t} (1 - beta_s)`` and ``q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)``.
- The network gets the integer step ``t`` and returns ``2C`` channels: the noise estimate ``eps`` and
  ``v``, which sets the reverse variance by interpolating in log space between the posterior
  variance (``v = -1``) and ``beta_t`` (``v = +1``):
  ``log var = (v+1)/2 * log beta_t + (1-v)/2 * log beta~_t``. With ``learn_sigma=False`` it returns
  ``C`` channels and the reverse variance is ``beta_t`` (DiT's fixed "large" variance).
- Training loss (DiT's ``LossType.MSE`` with a learned variance): ``mse + vb`` per sample, where
  ``mse`` is the mean squared error of ``eps`` and ``vb`` is the variational-bound term in bits per
  dimension, computed with the predicted mean frozen (gradient stopped), so ``vb`` trains only the
  variance. ``vb`` is ``KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))`` for ``t > 0`` and, at
  ``t = 0``, the negative log-likelihood of ``x_0`` under a Gaussian discretized into 256 bins on
  [-1, 1] (ADM's decoder). With ``T = 1000`` the "rescaled" variants' factor ``T / 1000`` is 1.
- Sampling: ``diffusers.DDPMScheduler`` driven through DiT's respaced chain (below), epsilon
  prediction, no noise added at the last step. The predicted ``x_0`` is not clipped by default: DiT
  samples SD-VAE latents and passes ``clip_denoised=False``. ``clip_denoised=True`` clamps it to the
  pixel range [-1, 1] before the posterior mean is formed, as ADM (``guided_diffusion``, whose
  ``p_mean_variance`` DiT's code keeps) does for pixel data; the step then uses the clamped ``x_0``
  and the current ``x_t``, and the variance is unchanged. The last step returns the clamped ``x_0``
  itself, so the samples lie in [-1, 1].

Respacing. DiT samples with ``n`` of the ``T`` steps, kept at ``round(i (T-1)/(n-1))``, ``i < n``
(the stride accumulated in floating point, ties rounded to even), and recomputes the betas of the
kept chain, ``beta'_k = 1 - abar_{t_k} / abar_{t_{k-1}}``; the learned variance then interpolates
between ``beta'_k`` and the kept chain's posterior variance. ``DDPMScheduler.step`` computes exactly
these from ``alphas_cumprod`` at the current and the previous kept step, so the update is DiT's.
Its ``timestep_spacing="linspace"`` keeps the same steps as DiT for ``n = 250`` but not for every
``n`` (for 278 values of ``n`` in 2..1000 a position falls on .5 and the two roundings break the tie
differently), so the kept steps are computed here with DiT's rule and handed to the scheduler.
The scheduler gets the float64 ``alphas_cumprod``, so its per-step coefficients are computed in
float64 as DiT's are: in float32, ``1 - abar_t / abar_{t-1}`` near ``t = 0`` keeps only about three
significant digits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from diffusers import DDPMScheduler

from ..validation import check_bool, check_int, check_real
from .base import (
    Objective,
    guided_output,
    mean_flat,
    per_sample,
    split_output,
)


def linear_betas(num_timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """DDPM's linear schedule, float64 (T,)."""
    return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)


def dit_respacing(num_timesteps: int, steps: int) -> list[int]:
    """The ascending steps DiT keeps when it samples with ``steps`` of ``num_timesteps``.

    Positions ``0, s, 2s, ...`` with ``s = (T-1)/(n-1)`` accumulated in floating point and rounded
    half to even; with one step, only step 0.
    """
    stride = (num_timesteps - 1) / (steps - 1) if steps > 1 else 1.0
    kept, position = [], 0.0
    for _ in range(steps):
        kept.append(round(position))
        position += stride
    return sorted(set(kept))


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) per element, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """The tanh approximation of the standard normal CDF that ADM's decoder likelihood uses."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_nll(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """-log P(x) per element, in nats, for data on [-1, 1] in 256 bins of width 2/255.

    Each bin takes the Gaussian mass within half a bin of ``x``; the end bins take the whole tails.
    The probability is at most 1, so the result is non-negative.
    """
    inv_std = torch.exp(-log_scale)
    cdf_plus = approx_standard_normal_cdf(inv_std * (x - mean + 1.0 / 255.0))
    cdf_minus = approx_standard_normal_cdf(inv_std * (x - mean - 1.0 / 255.0))
    log_below = torch.log(cdf_plus.clamp(min=1e-12))
    log_above = torch.log((1.0 - cdf_minus).clamp(min=1e-12))
    log_bin = torch.log((cdf_plus - cdf_minus).clamp(min=1e-12))
    return -torch.where(x < -0.999, log_below, torch.where(x > 0.999, log_above, log_bin))


@dataclass
class DDPM(Objective):
    """DiT's DDPM objective; ``t`` is the integer step index in ``[0, num_timesteps)``."""

    num_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    learn_sigma: bool = True
    clip_denoised: bool = False

    name: ClassVar[str] = "ddpm"
    default_steps: ClassVar[int] = 250

    def __post_init__(self):
        check_int("num_timesteps", self.num_timesteps, low=2)
        check_real("beta_start", self.beta_start, gt=0.0, lt=1.0)
        check_real("beta_end", self.beta_end, gt=self.beta_start, lt=1.0)
        check_bool("learn_sigma", self.learn_sigma)
        check_bool("clip_denoised", self.clip_denoised)
        betas = linear_betas(self.num_timesteps, self.beta_start, self.beta_end)
        abar = torch.cumprod(1.0 - betas, dim=0)
        abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
        posterior_variance = betas * (1.0 - abar_prev) / (1.0 - abar)
        self.betas = betas
        self.alphas_cumprod = abar
        # beta~_0 = 0; like DiT, its log is taken as that of beta~_1 (step 0 adds no noise anyway)
        self.posterior_log_variance = torch.log(torch.cat([posterior_variance[1:2], posterior_variance[1:]]))
        self.posterior_coef_x0 = betas * abar_prev.sqrt() / (1.0 - abar)
        self.posterior_coef_xt = (1.0 - abar_prev) * (1.0 - betas).sqrt() / (1.0 - abar)

    # -- the forward process and its posterior -------------------------------------------------
    @staticmethod
    def _at(table: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``table[t]`` per sample, computed in float64 and broadcast against ``like``."""
        return per_sample(table[t.long().cpu()], like)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise."""
        abar = self.alphas_cumprod
        return self._at(abar.sqrt(), t, x0) * x0 + self._at((1.0 - abar).sqrt(), t, x0) * noise

    def q_posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log variance of q(x_{t-1} | x_t, x_0)."""
        mean = self._at(self.posterior_coef_x0, t, xt) * x0 + self._at(self.posterior_coef_xt, t, xt) * xt
        return mean, self._at(self.posterior_log_variance, t, xt).expand_as(xt)

    def p_mean_log_variance(
        self, eps: torch.Tensor, v: torch.Tensor | None, xt: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log variance of the model's p(x_{t-1} | x_t) from its ``eps`` and ``v``."""
        abar = self.alphas_cumprod
        x0_hat = self._at((1.0 / abar).sqrt(), t, xt) * xt - self._at((1.0 / abar - 1.0).sqrt(), t, xt) * eps
        mean, min_log = self.q_posterior(x0_hat, xt, t)
        max_log = self._at(self.betas.log(), t, xt)
        if v is None:
            return mean, max_log.expand_as(xt)
        frac = (v + 1.0) / 2.0
        return mean, frac * max_log + (1.0 - frac) * min_log

    def vb_bits(
        self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, v: torch.Tensor
    ) -> torch.Tensor:
        """The variational-bound term per sample (B,), in bits per dimension."""
        true_mean, true_log_var = self.q_posterior(x0, xt, t)
        mean, log_var = self.p_mean_log_variance(eps, v, xt, t)
        kl = mean_flat(normal_kl(true_mean, true_log_var, mean, log_var)) / math.log(2.0)
        nll = mean_flat(discretized_gaussian_nll(x0, mean, 0.5 * log_var)) / math.log(2.0)
        return torch.where(t.to(kl.device) == 0, nll, kl)

    # -- training ------------------------------------------------------------------------------
    def draw_t(self, batch, generator, like):
        device = generator.device if generator is not None else like.device
        return torch.randint(0, self.num_timesteps, (batch,), generator=generator, device=device).to(like.device)

    def fixed_t(self, points, like):
        t = [(2 * k + 1) * self.num_timesteps // (2 * points) for k in range(points)]
        return torch.tensor(t, dtype=torch.long, device=like.device)

    def loss_terms(self, model, x0, y, t, noise, generator=None) -> dict[str, torch.Tensor]:
        """``{"mse", "vb", "loss"}`` per sample at steps ``t`` with ``noise`` (the arguments of ``loss_at``);
        ``vb`` is 0 without a learned variance."""
        xt = self.q_sample(x0, t, noise)
        eps, v = split_output(model(xt, t, y, generator=generator), x0.shape[1], extra=self.learn_sigma)
        mse = mean_flat((noise - eps) ** 2)
        vb = self.vb_bits(x0, xt, t, eps.detach(), v) if self.learn_sigma else torch.zeros_like(mse)
        return {"mse": mse, "vb": vb, "loss": mse + vb}

    def loss_at(self, model, x0, y, t, noise, generator=None):
        return self.loss_terms(model, x0, y, t, noise, generator)["loss"]

    # -- sampling ------------------------------------------------------------------------------
    def check_steps(self, steps):
        check_int("steps", steps, low=1, high=self.num_timesteps)

    def scheduler(self, steps: int) -> DDPMScheduler:
        """A ``DDPMScheduler`` set to DiT's ``steps``-step respaced sampler."""
        sched = DDPMScheduler(
            num_train_timesteps=self.num_timesteps,
            trained_betas=self.betas.numpy(),
            variance_type="learned_range" if self.learn_sigma else "fixed_large",
            prediction_type="epsilon",
            clip_sample=self.clip_denoised,
            clip_sample_range=1.0,
        )
        sched.alphas_cumprod = self.alphas_cumprod  # float64, see the module docstring
        sched.set_timesteps(timesteps=dit_respacing(self.num_timesteps, steps)[::-1])
        return sched

    def _sample(self, model, noise, y, steps, guidance_scale, generator):
        sched = self.scheduler(steps)
        x = noise
        for t in sched.timesteps.tolist():
            t_batch = torch.full((len(x),), t, dtype=torch.long, device=x.device)
            out = guided_output(model, x, t_batch, y, guidance_scale)
            split_output(out, x.shape[1], extra=self.learn_sigma)
            x = sched.step(out, t, x, generator=generator).prev_sample
        return x
