"""What every objective shares: the interface, input checks, noise draws and classifier-free guidance.

An objective turns a network into a diffusion model. It owns the forward (noising) process, the
training loss and the sampler; the network only maps ``(x, t, y)`` to a tensor with the data's
channels first (and, for DiT's learned variance, as many more after them).

Randomness is explicit: every draw takes the caller's ``torch.Generator``, so the same generator
state gives the same loss and the same samples.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import ClassVar

import torch
from torch import nn

from ..models import dense_inference
from ..validation import check_bool, check_int, check_real


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the batch: (B, ...) -> (B,)."""
    return x.flatten(1).mean(dim=1)


def per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample quantity (B,) so it broadcasts against ``like`` (B, ...)."""
    return v.reshape(-1, *([1] * (like.ndim - 1))).to(device=like.device, dtype=like.dtype)


def randn(shape, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """Standard normal draws from ``generator`` (on its device), returned on ``like``'s device and dtype."""
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


def rand(shape, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """Uniform [0, 1) draws, like :func:`randn`."""
    device = generator.device if generator is not None else like.device
    return torch.rand(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


# ------------------------------------------------------------------------------------------
# Batch checks (settings are checked with repro.validation)
# ------------------------------------------------------------------------------------------


def check_batch(x: torch.Tensor, y: torch.Tensor, x_name: str) -> None:
    """``x`` is a floating (B, C, ...) batch and ``y`` its (B,) integer labels."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 2:
        got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{x_name}: expected a floating tensor of shape (B, C, ...), got {got}")
    if not isinstance(y, torch.Tensor) or y.ndim != 1 or len(y) != len(x) or y.is_floating_point():
        got = f"{tuple(y.shape)} {y.dtype}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"y: expected integer labels of shape ({len(x)},) to match {x_name}, got {got}")


def split_output(out: torch.Tensor, channels: int, *, extra: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a network output into its first ``channels`` (the prediction) and the rest.

    ``extra=True`` requires exactly as many extra channels (DiT's learned variance), ``False`` none,
    ``None`` allows either (an interpolant or EDM ignores a variance half, as SiT does).
    """
    n = out.shape[1]
    allowed = {True: (2 * channels,), False: (channels,), None: (channels, 2 * channels)}[extra]
    if n not in allowed:
        need = " or ".join(map(str, allowed))
        raise ValueError(f"model output: {n} channels for {channels}-channel data; this objective needs {need}")
    return out[:, :channels], out[:, channels:]


# ------------------------------------------------------------------------------------------
# Classifier-free guidance
# ------------------------------------------------------------------------------------------


def null_label(model: nn.Module) -> int:
    """The label index of the unconditional ("null") class: ``config.num_classes``.

    It exists only when the model was built with label dropout (``config.class_dropout_prob > 0``).
    """
    cfg = getattr(model, "config", None)
    num_classes = getattr(cfg, "num_classes", None)
    if num_classes is None or not getattr(cfg, "class_dropout_prob", 0) > 0:
        raise ValueError(
            "guidance_scale: guidance other than 1 needs a null label; allowed only for a model whose "
            "config has num_classes and class_dropout_prob > 0"
        )
    return num_classes


def guided_output(model: nn.Module, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, scale: float) -> torch.Tensor:
    """Network output with classifier-free guidance on the prediction channels.

    ``out = u + scale * (c - u)`` on the first ``C = x.shape[1]`` channels, where ``c`` and ``u`` are
    the outputs for the labels and for the null label, computed as one doubled batch. Any further
    channels (DiT's learned variance) are the conditional ones. Scale 1 is the conditional output
    itself, computed without the unconditional half. Every objective here maps the network output to
    its prediction affinely with the same coefficients for both halves, so guiding the output is
    guiding the noise, velocity or denoised estimate. All ``C`` channels are guided; DiT's released
    sampler guides only three of its four latent channels (``DiT.forward_with_cfg`` keeps that choice).
    """
    if scale == 1.0:
        return model(x, t, y)
    null = torch.full_like(y, null_label(model))
    out = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
    cond, uncond = out.chunk(2)
    c = x.shape[1]
    guided = uncond[:, :c] + scale * (cond[:, :c] - uncond[:, :c])
    return torch.cat([guided, cond[:, c:]], dim=1)


# ------------------------------------------------------------------------------------------
# A compiled sampling forward
# ------------------------------------------------------------------------------------------

_COMPILED_CALL = None


def _call(module: nn.Module, *args, **kwargs) -> torch.Tensor:
    return module(*args, **kwargs)


class CompiledForward:
    """The network's forward through ``torch.compile``; other attributes (``config``, ...) are the network's.

    The network is an argument of the one compiled function, so nothing here keeps it alive, and its weights
    stay inputs of the graph (no freezing): an EMA model whose weights change between evaluations is served
    by the same compiled code. A new network, batch shape or training flag compiles again (one graph per
    shape). The first call pays the compilation (tens of seconds on a CPU), so it pays off over many forwards.
    """

    def __init__(self, module: nn.Module):
        self.module = module

    def __getattr__(self, name: str):
        return getattr(self.module, name)

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        global _COMPILED_CALL
        if _COMPILED_CALL is None:
            _COMPILED_CALL = torch.compile(_call, dynamic=False)
        return _COMPILED_CALL(self.module, *args, **kwargs)


class SplitForward:
    """The network's forward on ``workers`` consecutive slices of the batch at once, each in its own thread
    with one intra-op thread; other attributes (``config``, ``eval``, ...) are the network's.

    On a CPU this keeps every core busy through the small, serial operations of a forward (and through
    other processes taking a core), where one forward on ``workers`` threads waits at every operation for
    the slowest thread. Each sample's output is computed by the same kernels as in one forward of the whole
    batch (every operation of the network acts per sample), so the outputs are the same up to the kernels'
    blocking; tests/test_eval_path.py checks bitwise equality of the samplers' outputs on this machine.
    The split is made only in eval mode, where the network draws no random numbers.
    """

    def __init__(self, module: nn.Module, workers: int):
        check_int("workers", workers, low=1)
        self.module, self.workers = module, workers

    def __getattr__(self, name: str):
        return getattr(self.module, name)

    def __call__(self, x: torch.Tensor, *args: torch.Tensor, **kwargs) -> torch.Tensor:
        n = len(x)
        if self.workers == 1 or n < 2 or self.module.training or x.device.type != "cpu":
            return self.module(x, *args, **kwargs)
        parts = min(self.workers, n)
        bounds = [n * k // parts for k in range(parts + 1)]
        main_threads = torch.get_num_threads()
        futures = [
            _worker_pool(parts).submit(_one_thread_forward, self.module, x[lo:hi], *(a[lo:hi] for a in args), **kwargs)
            for lo, hi in zip(bounds[:-1], bounds[1:])
        ]
        try:
            return torch.cat([f.result() for f in futures])
        finally:
            torch.set_num_threads(main_threads)  # a worker's setting also sets the default of threads started later


_POOL = None


def _worker_pool(workers: int):
    global _POOL
    if _POOL is None or _POOL._max_workers < workers:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="repro-forward")
    return _POOL


def _one_thread_forward(module: nn.Module, *args, **kwargs) -> torch.Tensor:
    if torch.get_num_threads() != 1:  # per thread: OpenMP's and MKL's thread counts are thread-local
        torch.set_num_threads(1)
    return module(*args, **kwargs)


# ------------------------------------------------------------------------------------------
# The interface
# ------------------------------------------------------------------------------------------


class Objective(abc.ABC):
    """A training loss and a sampler for one diffusion formulation.

    Subclasses are dataclasses whose fields are the objective's settings (validated on creation)
    and define the noise-level variable ``t`` (a DDPM step index, an interpolant time, an EDM
    sigma), how it is drawn in training, a fixed validation grid of it, the loss at given ``t`` and
    noise, and the sampler.
    """

    name: ClassVar[str]
    default_steps: ClassVar[int]

    # -- what a subclass defines ---------------------------------------------------------------
    @abc.abstractmethod
    def draw_t(self, batch: int, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
        """The training distribution of the noise level, (batch,)."""

    @abc.abstractmethod
    def fixed_t(self, points: int, like: torch.Tensor) -> torch.Tensor:
        """``points`` noise levels at the midpoint quantiles of the training distribution, (points,)."""

    @abc.abstractmethod
    def loss_at(
        self,
        model: nn.Module,
        x0: torch.Tensor,
        y: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Per-sample loss (B,) at noise levels ``t`` (B,) with standard normal ``noise``."""

    @abc.abstractmethod
    def _sample(self, model, noise, y, steps, guidance_scale, generator) -> torch.Tensor:
        """The sampler proper; called with checked arguments, in eval mode, without gradients."""

    def check_steps(self, steps: int) -> None:
        check_int("steps", steps, low=1)

    # -- the shared public methods -------------------------------------------------------------
    def loss(
        self, model: nn.Module, x0: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Training loss per sample (B,). Draws ``t``, then the noise, then whatever the model draws
        (label dropout, routes), all from ``generator``."""
        check_batch(x0, y, "x0")
        t, noise = self.draw(x0, generator)
        return self.loss_at(model, x0, y, t, noise, generator)

    def draw(self, x0: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The training draws of :meth:`loss` for a batch like ``x0``: the noise levels ``t`` (B,), then the noise."""
        return self.draw_t(len(x0), generator, x0), randn(x0.shape, generator, x0)

    def fixed_t_loss(
        self,
        model: nn.Module,
        x0: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator | None = None,
        points: int = 8,
    ) -> torch.Tensor:
        """Validation loss per sample (B,): the loss averaged over ``points`` fixed noise levels.

        The levels are the midpoint quantiles of the training distribution of ``t``, so the average
        estimates the training loss with far less variance than random draws. The model runs in
        eval mode (dense, no label dropout) without gradients; for each level a fresh noise tensor
        is drawn from ``generator``, so the value is a deterministic function of its state.
        """
        check_batch(x0, y, "x0")
        check_int("points", points, low=1)
        total = torch.zeros(len(x0), dtype=x0.dtype, device=x0.device)
        with torch.no_grad(), dense_inference(model):
            for t in self.fixed_t(points, x0):
                noise = randn(x0.shape, generator, x0)
                total = total + self.loss_at(model, x0, y, t.expand(len(x0)), noise, generator)
        return total / points

    def sample(
        self,
        model: nn.Module,
        noise: torch.Tensor,
        y: torch.Tensor,
        steps: int | None = None,
        guidance_scale: float = 1.0,
        generator: torch.Generator | None = None,
        compile: bool = False,
        workers: int = 1,
    ) -> torch.Tensor:
        """Samples from standard normal ``noise`` (B, C, H, W) with labels ``y`` (B,).

        ``steps`` is the number of solver steps (the objective's default if ``None``);
        ``guidance_scale`` 1 is the conditional model, 0 the unconditional one. The model runs in
        eval mode (routes, stochastic depth and label dropout off) without gradients, and gets its
        training flag back afterwards. ``compile`` runs the network's forward through
        ``torch.compile`` (see :class:`CompiledForward`): the same random draws, outputs equal
        to the eager ones up to float rounding. ``workers`` > 1 runs each forward on that many
        slices of the batch in parallel threads (see :class:`SplitForward`): the same draws, the
        same outputs.
        """
        check_batch(noise, y, "noise")
        steps = self.default_steps if steps is None else steps
        self.check_steps(steps)
        check_real("guidance_scale", guidance_scale, ge=0.0)
        check_bool("compile", compile)
        if guidance_scale != 1.0:
            null_label(model)
        check_int("workers", workers, low=1)
        if compile and workers > 1:
            raise ValueError(f"workers: {workers} is not allowed with compile=True; allowed: 1")
        with torch.no_grad(), dense_inference(model):
            net = CompiledForward(model) if compile else SplitForward(model, workers) if workers > 1 else model
            return self._sample(net, noise, y, steps, float(guidance_scale), generator)

    def to_dict(self) -> dict:
        """The settings, as recorded in a run's configuration."""
        return {"name": self.name, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}}
