"""EDM (Karras et al., arXiv 2206.00364) as TREAD's code trains and samples with it.

Convention: the noise level is ``sigma``, ``x = x_0 + sigma n`` with ``n ~ N(0, I)``; sampling starts
from ``sigma_max`` times standard normal noise and ends at ``sigma = 0``.

The denoiser wraps the network ``F`` (a DiT taking the first ``C`` output channels) with EDM's
preconditioning for data of standard deviation ``sigma_data``:

    D(x; sigma) = c_skip x + c_out F(c_in x, c_noise),
    c_skip = sd^2 / (sigma^2 + sd^2),  c_out = sigma sd / sqrt(sigma^2 + sd^2),
    c_in = 1 / sqrt(sigma^2 + sd^2),   c_noise = ln(sigma) / 4,

so the network's input and its training target have unit variance. ``c_noise`` is what the DiT's
timestep embedder receives.

Training: ``ln sigma ~ N(p_mean, p_std^2)`` (-1.2, 1.2) and the loss
``lambda(sigma) |D(x_0 + sigma n; sigma) - x_0|^2`` with ``lambda = (sigma^2 + sd^2) / (sigma sd)^2``,
averaged over elements per sample as in TREAD's code (EDM's own code sums them: a constant factor).

Sampling: EDM's second-order Heun solver on the probability-flow ODE ``dx/dsigma = (x - D) / sigma``
over ``sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``,
``i < N``, then ``sigma_N = 0`` (rho 7, sigma in [0.002, 80], N = 40 by default); the step to 0 is an
Euler step, so ``2N - 1`` network evaluations. Stochastic churn (``s_churn > 0``) is off by default.

``clip_denoised=True`` clamps the denoiser's output ``D`` to the pixel range [-1, 1] wherever the sampler
uses it, the analogue of ADM's ``clip_denoised`` for pixel data; the last (Euler) step to ``sigma = 0``
then returns the clamped ``D`` itself. Neither EDM's nor TREAD's sampler clips (off by default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import ClassVar

import torch
from torch import nn

from ..validation import check_bool, check_real
from .base import (
    Objective,
    guided_output,
    mean_flat,
    per_sample,
    randn,
    split_output,
)


def preconditioning(sigma: torch.Tensor, sigma_data: float) -> tuple[torch.Tensor, ...]:
    """EDM's ``(c_skip, c_out, c_in, c_noise)`` at noise levels ``sigma``."""
    total = sigma**2 + sigma_data**2
    return sigma_data**2 / total, sigma * sigma_data / total.sqrt(), 1.0 / total.sqrt(), sigma.log() / 4.0


def loss_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """``lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2 = 1 / c_out^2``."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float) -> list[float]:
    """The ``steps`` decreasing noise levels of EDM's time discretization, then 0."""
    hi, lo = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    return [(hi + i / max(steps - 1, 1) * (lo - hi)) ** rho for i in range(steps)] + [0.0]


@dataclass
class EDM(Objective):
    """TREAD's EDM objective; ``t`` is the noise level ``sigma``."""

    p_mean: float = -1.2
    p_std: float = 1.2
    sigma_data: float = 0.5
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = math.inf
    s_noise: float = 1.0
    clip_denoised: bool = False

    name: ClassVar[str] = "edm"
    default_steps: ClassVar[int] = 40

    def __post_init__(self):
        check_real("p_mean", self.p_mean)
        check_real("p_std", self.p_std, gt=0.0)
        check_real("sigma_data", self.sigma_data, gt=0.0)
        check_real("sigma_min", self.sigma_min, gt=0.0)
        check_real("sigma_max", self.sigma_max, gt=self.sigma_min)
        check_real("rho", self.rho, gt=0.0)
        check_real("s_churn", self.s_churn, ge=0.0)
        check_real("s_tmin", self.s_tmin, ge=0.0)
        check_real("s_tmax", self.s_tmax, ge=self.s_tmin, allow_inf=True)
        check_real("s_noise", self.s_noise, ge=0.0)
        check_bool("clip_denoised", self.clip_denoised)

    def denoise(
        self,
        model: nn.Module,
        x: torch.Tensor,
        sigma: torch.Tensor,
        y: torch.Tensor,
        guidance_scale: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``D(x; sigma)`` for per-sample ``sigma`` (B,), guided on ``F`` (equivalently on ``D``)."""
        c_skip, c_out, c_in, c_noise = preconditioning(sigma, self.sigma_data)
        z = per_sample(c_in, x) * x
        if guidance_scale == 1.0:
            out = model(z, c_noise, y, generator=generator)
        else:
            out = guided_output(model, z, c_noise, y, guidance_scale)
        f, _ = split_output(out, x.shape[1])
        return per_sample(c_skip, x) * x + per_sample(c_out, x) * f

    # -- training ------------------------------------------------------------------------------
    def draw_t(self, batch, generator, like):
        return torch.exp(self.p_mean + self.p_std * randn((batch,), generator, like))

    def fixed_t(self, points, like):
        z = [NormalDist().inv_cdf((k + 0.5) / points) for k in range(points)]
        return torch.exp(self.p_mean + self.p_std * torch.tensor(z, dtype=like.dtype, device=like.device))

    def loss_at(self, model, x0, y, t, noise, generator=None):
        sigma = t
        denoised = self.denoise(model, x0 + per_sample(sigma, x0) * noise, sigma, y, generator=generator)
        return mean_flat(per_sample(loss_weight(sigma, self.sigma_data), x0) * (denoised - x0) ** 2)

    # -- sampling ------------------------------------------------------------------------------
    def _sample(self, model, noise, y, steps, guidance_scale, generator):
        sigmas = karras_sigmas(steps, self.sigma_min, self.sigma_max, self.rho)
        gamma_max = min(self.s_churn / steps, math.sqrt(2.0) - 1.0)

        def slope(x, sigma):
            s = torch.full((len(x),), sigma, dtype=x.dtype, device=x.device)
            denoised = self.denoise(model, x, s, y, guidance_scale)
            if self.clip_denoised:
                denoised = denoised.clamp(-1.0, 1.0)
            return (x - denoised) / sigma

        x = noise * sigmas[0]
        for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
            gamma = gamma_max if self.s_tmin <= sigma <= self.s_tmax else 0.0
            sigma_hat = sigma * (1.0 + gamma)
            if gamma > 0:
                x = x + math.sqrt(sigma_hat**2 - sigma**2) * self.s_noise * randn(x.shape, generator, x)
            d = slope(x, sigma_hat)
            x_next = x + (sigma_next - sigma_hat) * d
            if sigma_next > 0:
                x_next = x + (sigma_next - sigma_hat) * 0.5 * (d + slope(x_next, sigma_next))
            x = x_next
        return x
