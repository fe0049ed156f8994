"""SiT's stochastic interpolants (Ma et al., arXiv 2401.08740): Linear and GVP paths, ODE and SDE samplers.

Time convention (SiT's): ``t = 0`` is noise and ``t = 1`` is data,

    x_t = alpha_t x_1 + sigma_t eps,    x_1 ~ data,  eps ~ N(0, I),

- Linear: ``alpha_t = t``, ``sigma_t = 1 - t``;
- GVP: ``alpha_t = sin(pi t / 2)``, ``sigma_t = cos(pi t / 2)``, written as ``sin(pi (1 - t) / 2)`` so
  that both ends are exact in floating point (``x_0`` is exactly the noise, ``x_1`` exactly the data).

The network gets ``t`` in [0, 1] directly (SiT feeds it to DiT's timestep embedder unchanged) and
predicts, per ``prediction``:

- ``"velocity"``: ``v = alpha'_t x_1 + sigma'_t eps``, the time derivative of the path (SiT's default);
- ``"noise"``: ``eps``;
- ``"score"``: ``grad log p_t(x) = -E[eps | x_t] / sigma_t``, trained as ``|sigma_t s + eps|^2``.

Training draws ``t`` uniformly on ``[t0, t1]``: [0, 1] for velocity, which is well defined at both
ends, and ``[eps, 1 - eps]`` with ``eps = 1e-3`` for noise and score, whose conversion to a velocity
divides by ``alpha_t`` (zero at ``t = 0``) and whose score divides by ``sigma_t`` (zero at ``t = 1``);
these are SiT's defaults. Samplers integrate forward in ``t`` from the noise:

- ``"euler"`` and ``"heun"``: the probability-flow ODE ``dx = v dt`` on ``steps`` equal steps from
  ``t0`` to ``t1`` (1 and 2 network evaluations a step).
- ``"sde"``: Euler-Maruyama on ``dx = [v + D_t s] dt + sqrt(2 D_t) dW`` with ``s`` the score, which
  has the same marginals as the ODE for any ``D_t >= 0``. As SiT by default, ``D_t = sigma_t``
  (``diffusion="sigma"``; ``"constant"`` gives ``D_t = 1``), times ``diffusion_norm``; with the sigma
  form the extra drift ``D_t s`` is minus the noise estimate, and the injected noise vanishes at the
  data end. The first ``steps - 1`` steps are stochastic on an equal grid from ``t0`` to
  ``1 - last_step_size``; the last step, to ``t = 1``, is the noise-free mean of an Euler-Maruyama
  step (SiT's "Mean" last step, size 0.04 by default). ``steps`` network evaluations in all.
- ``"sde-heun"``: the same SDE, grid and last step, with SiT's Heun step: the noise is added first,
  ``x^ = x + sqrt(2 D_t h) z``, then one Heun step of the drift from ``x^`` (2 network evaluations a
  stochastic step, ``2 (steps - 1) + 1`` in all).
- ``"dopri5"``: the probability-flow ODE from ``t0`` to ``t1`` with torchdiffeq's adaptive Dormand-Prince
  5(4) solver, SiT's default sampler (``atol`` 1e-6, ``rtol`` 1e-3 as SiT's defaults); ``steps`` is
  ignored, the solver picks its own. Needs ``pip install torchdiffeq`` (the ``sit`` extra).

``clip_denoised=True`` (off by default; SiT's samplers do not clip, and its latents are unbounded) is the
analogue of ADM's ``clip_denoised`` for pixel data: every network output is read as a clean estimate
``x_1`` and a noise estimate (:func:`clean_estimate`); where ``x_1`` lies outside [-1, 1] it is clamped
and the noise estimate recomputed from ``x_t`` and the clamped ``x_1``, as DDPM's posterior mean is formed
from the clamped ``x_0`` and ``x_t`` (:func:`clip_prediction`). An Euler step to ``t = 1`` then lands on the
clamped ``x_1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..validation import check_bool, check_choice, check_real
from .base import (
    Objective,
    guided_output,
    mean_flat,
    per_sample,
    rand,
    randn,
    split_output,
)

PATHS = ("linear", "gvp")
PREDICTIONS = ("velocity", "noise", "score")
SAMPLERS = ("euler", "heun", "sde", "sde-heun", "dopri5")
DIFFUSIONS = ("sigma", "constant")


def path_coefficients(path: str, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(alpha_t, sigma_t, d alpha/dt, d sigma/dt)`` of the path at times ``t``."""
    if path == "linear":
        return t, 1.0 - t, torch.ones_like(t), -torch.ones_like(t)
    half_pi = math.pi / 2.0
    alpha, sigma = torch.sin(half_pi * t), torch.sin(half_pi * (1.0 - t))
    return alpha, sigma, half_pi * sigma, -half_pi * alpha


def interpolate(path: str, x1: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The point on the path: ``x_t = alpha_t x_1 + sigma_t eps``."""
    alpha, sigma, _, _ = (per_sample(c, x1) for c in path_coefficients(path, t))
    return alpha * x1 + sigma * noise


def velocity_target(path: str, x1: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The time derivative of the path: ``v = alpha'_t x_1 + sigma'_t eps``."""
    _, _, d_alpha, d_sigma = (per_sample(c, x1) for c in path_coefficients(path, t))
    return d_alpha * x1 + d_sigma * noise


def velocity_from(prediction: str, out: torch.Tensor, x: torch.Tensor, coefs) -> torch.Tensor:
    """The velocity implied by a noise or score prediction (a velocity prediction is itself).

    From ``x = alpha x_1 + sigma eps``: ``v = (alpha'/alpha) (x - sigma eps) + sigma' eps``, and
    ``eps = -sigma s`` for a score ``s``.
    """
    if prediction == "velocity":
        return out
    alpha, sigma, d_alpha, d_sigma = coefs
    eps = out if prediction == "noise" else -sigma * out
    return d_alpha / alpha * (x - sigma * eps) + d_sigma * eps


def score_from(prediction: str, out: torch.Tensor, x: torch.Tensor, coefs) -> torch.Tensor:
    """The score implied by any prediction.

    From a velocity: ``s = ((alpha/alpha') v - x) / (sigma^2 - (alpha/alpha') sigma sigma')``,
    which is finite at ``t = 0`` (where it is ``-x``) but not at ``t = 1``.
    """
    alpha, sigma, d_alpha, d_sigma = coefs
    if prediction == "score":
        return out
    if prediction == "noise":
        return -out / sigma
    ratio = alpha / d_alpha
    return (ratio * out - x) / (sigma**2 - ratio * sigma * d_sigma)


def clean_estimate(prediction: str, out: torch.Tensor, x: torch.Tensor, coefs) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_1, eps)`` implied by a prediction at ``x = alpha x_1 + sigma eps``.

    A velocity ``v = alpha' x_1 + sigma' eps`` and ``x`` give both by solving the 2x2 system, whose
    determinant ``alpha sigma' - sigma alpha'`` is -1 (linear) or -pi/2 (GVP); noise and score give ``eps``
    and then ``x_1 = (x - sigma eps) / alpha``.
    """
    alpha, sigma, d_alpha, d_sigma = coefs
    if prediction == "velocity":
        det = alpha * d_sigma - sigma * d_alpha
        return (d_sigma * x - sigma * out) / det, (alpha * out - d_alpha * x) / det
    eps = out if prediction == "noise" else -sigma * out
    return (x - sigma * eps) / alpha, eps


def clip_prediction(
    prediction: str, out: torch.Tensor, x: torch.Tensor, coefs, low: float = -1.0, high: float = 1.0
) -> torch.Tensor:
    """``out`` with its clean estimate clamped to ``[low, high]``; elements whose estimate is in range are kept as is.

    The clamped estimate ``x_1c`` and ``x`` fix the noise estimate ``eps_c = (x - alpha x_1c) / sigma`` (at
    ``sigma = 0``, where ``x`` is the clean image itself, the prediction's own noise estimate is kept), and the
    output is rebuilt in the prediction's own form.
    """
    alpha, sigma, d_alpha, d_sigma = coefs
    x1, eps = clean_estimate(prediction, out, x, coefs)
    x1c = x1.clamp(low, high)
    positive = sigma > 0
    eps_c = torch.where(positive, (x - alpha * x1c) / torch.where(positive, sigma, torch.ones_like(sigma)), eps)
    if prediction == "velocity":
        rebuilt = d_alpha * x1c + d_sigma * eps_c
    elif prediction == "noise":
        rebuilt = eps_c
    else:
        rebuilt = -eps_c / sigma
    return torch.where(x1c == x1, out, rebuilt)


@dataclass
class Interpolant(Objective):
    """SiT's interpolant objective; ``t`` is the time in [0, 1], 1 at the data."""

    path: str = "linear"
    prediction: str = "velocity"
    sampler: str = "euler"
    diffusion: str = "sigma"
    diffusion_norm: float = 1.0
    last_step_size: float = 0.04
    eps: float | None = None
    clip_denoised: bool = False
    atol: float = 1e-6
    rtol: float = 1e-3

    name: ClassVar[str] = "interpolant"

    def __post_init__(self):
        check_choice("path", self.path, PATHS)
        check_choice("prediction", self.prediction, PREDICTIONS)
        check_choice("sampler", self.sampler, SAMPLERS)
        check_choice("diffusion", self.diffusion, DIFFUSIONS)
        check_real("diffusion_norm", self.diffusion_norm, ge=0.0)
        check_real("last_step_size", self.last_step_size, gt=0.0, lt=1.0)
        check_bool("clip_denoised", self.clip_denoised)
        check_real("atol", self.atol, gt=0.0)
        check_real("rtol", self.rtol, gt=0.0)
        if self.eps is None:
            self.eps = 0.0 if self.prediction == "velocity" else 1e-3
        check_real("eps", self.eps, ge=0.0, le=0.5)
        if self.prediction != "velocity" and self.eps == 0:
            raise ValueError(f"eps: 0 is not allowed with prediction={self.prediction!r}; must be > 0")

    @property
    def default_steps(self) -> int:
        """SiT's 250 steps for the SDE; 50 for the fixed-step ODE solvers."""
        return 250 if self.sampler in ("sde", "sde-heun") else 50

    @property
    def interval(self) -> tuple[float, float]:
        """``(t0, t1)``: the training range of ``t`` and the ODE's integration range."""
        return self.eps, 1.0 - self.eps

    def coefficients(self, t: torch.Tensor, like: torch.Tensor):
        return tuple(per_sample(c, like) for c in path_coefficients(self.path, t))

    # -- training ------------------------------------------------------------------------------
    def draw_t(self, batch, generator, like):
        t0, t1 = self.interval
        return t0 + (t1 - t0) * rand((batch,), generator, like)

    def fixed_t(self, points, like):
        t0, t1 = self.interval
        k = torch.arange(points, dtype=like.dtype, device=like.device)
        return t0 + (t1 - t0) * (k + 0.5) / points

    def loss_at(self, model, x0, y, t, noise, generator=None):
        xt = interpolate(self.path, x0, noise, t)
        out, _ = split_output(model(xt, t, y, generator=generator), x0.shape[1])
        if self.prediction == "velocity":
            return mean_flat((out - velocity_target(self.path, x0, noise, t)) ** 2)
        if self.prediction == "noise":
            return mean_flat((out - noise) ** 2)
        sigma = self.coefficients(t, x0)[1]
        return mean_flat((sigma * out + noise) ** 2)

    # -- sampling ------------------------------------------------------------------------------
    def _predict(self, model: nn.Module, x, t: float, y, guidance_scale):
        t_batch = torch.full((len(x),), t, dtype=x.dtype, device=x.device)
        out, _ = split_output(guided_output(model, x, t_batch, y, guidance_scale), x.shape[1])
        coefs = self.coefficients(t_batch, x)
        if self.clip_denoised:
            out = clip_prediction(self.prediction, out, x, coefs)
        return out, coefs

    def velocity(self, model, x, t, y, guidance_scale):
        out, coefs = self._predict(model, x, t, y, guidance_scale)
        return velocity_from(self.prediction, out, x, coefs)

    def sde_drift(self, model, x, t, y, guidance_scale):
        """``(v + D_t s, D_t)`` at time ``t``."""
        out, coefs = self._predict(model, x, t, y, guidance_scale)
        d = self.diffusion_norm * (coefs[1] if self.diffusion == "sigma" else torch.ones_like(coefs[1]))
        return velocity_from(self.prediction, out, x, coefs) + d * score_from(self.prediction, out, x, coefs), d

    def _sample(self, model, noise, y, steps, guidance_scale, generator):
        if self.sampler == "sde":
            return self._sample_sde(model, noise, y, steps, guidance_scale, generator)
        if self.sampler == "sde-heun":
            return self._sample_sde_heun(model, noise, y, steps, guidance_scale, generator)
        if self.sampler == "dopri5":
            return self._sample_dopri5(model, noise, y, guidance_scale)
        t0, t1 = self.interval
        times = torch.linspace(t0, t1, steps + 1, dtype=torch.float64).tolist()
        x = noise
        for t, t_next in zip(times[:-1], times[1:]):
            h = t_next - t
            v = self.velocity(model, x, t, y, guidance_scale)
            if self.sampler == "euler":
                x = x + h * v
            else:
                v_next = self.velocity(model, x + h * v, t_next, y, guidance_scale)
                x = x + h / 2.0 * (v + v_next)
        return x

    def _sde_grid(self, steps: int) -> tuple[list[tuple[float, float]], float]:
        """SiT's SDE grid, ``steps`` times from ``eps`` to ``1 - last_step_size``: the (t, t_next) pairs of the
        stochastic steps, and the time the last, drift-only step starts from."""
        times = torch.linspace(self.eps, 1.0 - self.last_step_size, steps, dtype=torch.float64).tolist()
        return list(zip(times[:-1], times[1:])), times[-1]

    def _last_sde_step(self, model, x, t, y, guidance_scale):
        """SiT's ``last_step``: from ``t`` to 1 along the drift, without noise."""
        drift, _ = self.sde_drift(model, x, t, y, guidance_scale)
        return x + (1.0 - t) * drift

    def _sample_sde(self, model, noise, y, steps, guidance_scale, generator):
        pairs, t_last = self._sde_grid(steps)
        x = noise
        for t, t_next in pairs:
            h = t_next - t
            drift, d = self.sde_drift(model, x, t, y, guidance_scale)
            x = x + h * drift + (2.0 * d * h).sqrt() * randn(x.shape, generator, x)
        return self._last_sde_step(model, x, t_last, y, guidance_scale)

    def _diffusion(self, x, t: float) -> torch.Tensor:
        """``D_t`` per sample, shaped to broadcast against ``x`` (no network evaluation)."""
        t_batch = torch.full((len(x),), t, dtype=x.dtype, device=x.device)
        sigma = self.coefficients(t_batch, x)[1]
        return self.diffusion_norm * (sigma if self.diffusion == "sigma" else torch.ones_like(sigma))

    def _sample_sde_heun(self, model, noise, y, steps, guidance_scale, generator):
        pairs, t_last = self._sde_grid(steps)
        x = noise
        for t, t_next in pairs:
            h = t_next - t
            x_hat = x + (2.0 * self._diffusion(x, t) * h).sqrt() * randn(x.shape, generator, x)
            k1, _ = self.sde_drift(model, x_hat, t, y, guidance_scale)
            k2, _ = self.sde_drift(model, x_hat + h * k1, t_next, y, guidance_scale)
            x = x_hat + h / 2.0 * (k1 + k2)
        return self._last_sde_step(model, x, t_last, y, guidance_scale)

    def _sample_dopri5(self, model, noise, y, guidance_scale):
        try:
            from torchdiffeq import odeint
        except ImportError:
            raise ValueError(
                "sampler: 'dopri5' needs torchdiffeq (pip install 'repro[sit]' or pip install torchdiffeq)"
            ) from None
        t0, t1 = self.interval

        def flow(t, x):
            return self.velocity(model, x, float(t), y, guidance_scale)

        times = torch.tensor([t0, t1], dtype=noise.dtype, device=noise.device)
        return odeint(flow, noise, times, method="dopri5", atol=self.atol, rtol=self.rtol)[-1]
