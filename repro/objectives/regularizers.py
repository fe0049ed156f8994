"""Representation regularizers: terms added to a diffusion objective's training loss that act on a block's tokens.

Two families that the reply names and that need no external encoder (REPA's DINOv2 cannot be downloaded here):

- **Dispersive loss** (Wang & He 2025, "Diffuse and Disperse", arXiv 2506.09027): the repulsive half of InfoNCE
  over the batch, no positive pairs, no parameters. With ``z_i`` the tokens of sample ``i`` after a chosen block,
  flattened (``N * hidden_size`` numbers), and ``D_ij = ||z_i - z_j||^2 / (N * hidden_size)``,
  ``L = log mean_{i,j} exp(-D_ij / tau)`` over the whole B x B matrix, diagonal included. So ``L <= 0`` (0 when
  every sample has the same representation) and ``L >= -log B`` (the diagonal's share of the mean), which it
  approaches as the representations spread: the authors' note that the loss falls to about ``-log B``. A batch of
  one has nothing to repel: the loss needs ``B >= 2``.
- **Self-representation alignment** (SRA, Jiang et al. 2025, "No Other Representation Component Is Needed",
  arXiv 2505.02831): the tokens after an early block of the model at noise level ``t``, through a small trained
  projector, are pulled (smooth L1) towards the tokens after a later block of the model's EMA at a lower noise
  level ``t' <= t`` (the same image and noise, the same labels after dropout), computed without gradients.

What was read (ideas only; the code here is this project's): the dispersive loss's paper abstract and its
authors' PyTorch release (``disp_loss`` in its ``transport/transport.py`` and its README), and SRA's release
(github vvvvvjdy/SRA: ``DiT-SRA/train.py``, ``DiT-SRA/diffusion/gaussian_diffusion.py``, ``DiT-SRA/models/dit.py``
and its README's DiT-XL/2 command).

Dispersive loss: the paper's results come from the authors' JAX code with ``lambda = 0.5``, ``tau = 0.5`` and the
loss on the output of block ``depth // 4``; their PyTorch re-implementation uses ``lambda = 0.25``, ``tau = 1`` on
the last block (their README's table: about the same FID for SiT-B/2 at 80 epochs, 32.35 vs 32.64). The defaults
here are the paper's: ``weight 0.5``, ``temperature 0.5``, block ``depth // 4`` (the output of the 3rd of 12 blocks
at micro, index 2). Both releases compute it per device over the local batch (16 in JAX, 32 in PyTorch); here it
is over each micro-batch of the process (64 at micro, one process), so its floor is ``-log 64``.

SRA (DiT's release, its README's DiT-XL/2 run): student block 8 and teacher block 20 of 28 (1-based outputs), the
teacher's level ``t - U{0, ..., 199}`` of 1000 DDPM steps (``--t-max 0.2``), smooth L1 with ``beta = 0.05``
averaged over every element, weight ``0.4 * 0.1 = 0.04`` (its schedule keeps that value for the first 150 epochs,
far beyond this project's few epochs), projector ``Linear(d, 2d) -> SiLU -> Linear(2d, d)`` on each token,
initialised xavier-uniform with zero biases like the rest of DiT, the teacher the EMA in eval mode, given the
labels the student saw after dropout. Adapted to 12 blocks: the blocks at the same fractions of the depth,
rounded, ``round(12 * 8/28) = 3`` and ``round(12 * 20/28) = 9`` (indices 2 and 8); the gap is a fraction of the
chain (0.2) so it does not depend on the token count; the projector's width follows ``d`` (96 at micro: 96 ->
192 -> 96, 37,152 parameters). One change: the release clamps the teacher's step to ``[1, 999]``, which makes the
teacher noisier than the student when ``t = 0``; here ``t' = max(t - gap, 0)``, so ``t' <= t`` always. The teacher
runs only the blocks it needs (up to the teacher block): the same target as the release's whole forward, fewer
MACs. SRA is implemented for DDPM (DiT's objective, whose ``t`` is a step index), the objective of ``dit-sra``.

Costs (the budget is equal in training MACs, so a regularizer pays for its own): :meth:`extra_macs` counts, with
the project's counter on the meta device, the dispersive loss's pairwise products forward and backward, and SRA's
teacher forward and its projector forward and backward.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..validation import check_int, check_real, invalid

REGULARIZERS = ("dispersive", "sra")


def _no_autocast(device: torch.device):
    """Autocast off on a device where it is on (float32 distances and targets); a no-op elsewhere and on meta."""
    on = device.type != "meta" and torch.is_autocast_enabled(device.type)
    return torch.autocast(device_type=device.type, enabled=False) if on else _Null()


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


# ------------------------------------------------------------------------------------------
# The dispersive loss
# ------------------------------------------------------------------------------------------


def dispersive_loss(z: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """``log mean_{i,j} exp(-||z_i - z_j||^2 / (dim * temperature))`` over a batch ``z`` (B, ...), a scalar in
    ``[-log B, 0]``. The squared distances come from one Gram matrix (a matrix product, counted as MACs), in
    float32, clamped at 0 and exactly 0 on the diagonal."""
    if z.ndim < 2 or z.shape[0] < 2:
        got = tuple(z.shape)
        raise ValueError(f"dispersive loss: needs a batch of >= 2 samples to repel each other, got shape {got}")
    check_real("temperature", temperature, gt=0)
    with _no_autocast(z.device):
        z = z.flatten(1).float()
        b, dim = z.shape
        sq = (z * z).sum(dim=1)
        d = (sq[:, None] + sq[None, :] - 2.0 * (z @ z.T)).clamp_min(0.0) / dim
        eye = torch.eye(b, dtype=torch.bool, device=z.device)
        d = d.masked_fill(eye, 0.0)
        return torch.logsumexp((-d / temperature).flatten(), dim=0) - 2.0 * math.log(b)


# ------------------------------------------------------------------------------------------
# SRA's projector and teacher noise level
# ------------------------------------------------------------------------------------------


class Projector(nn.Module):
    """SRA's head on each token: ``Linear(d, 2d) -> SiLU -> Linear(2d, d)``, xavier-uniform weights, zero biases."""

    def __init__(self, hidden_size: int, generator: torch.Generator | None = None):
        super().__init__()
        d = hidden_size
        self.fc1 = nn.Linear(d, 2 * d)
        self.act = nn.SiLU()
        self.fc2 = nn.Linear(2 * d, d)
        if self.fc1.weight.device.type != "meta":
            for lin in (self.fc1, self.fc2):
                nn.init.xavier_uniform_(lin.weight, generator=generator)
                nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


# ------------------------------------------------------------------------------------------
# The regularizers as settings of a method
# ------------------------------------------------------------------------------------------


@dataclass
class Dispersive:
    """The dispersive loss (InfoNCE with squared L2 distance) on the tokens after block ``block`` (0-based; None:
    the paper's ``depth // 4``-th block's output), added with ``weight``."""

    block: int | None = None
    temperature: float = 0.5
    weight: float = 0.5

    name: ClassVar[str] = "dispersive"

    def resolve(self, depth: int) -> Dispersive:
        block = max(depth // 4, 1) - 1 if self.block is None else self.block
        return dataclasses.replace(self, block=block)

    def check(self, depth: int) -> None:
        check_int("block", self.block, low=0, high=depth - 1)
        check_real("temperature", self.temperature, gt=0)
        check_real("weight", self.weight, gt=0)

    def blocks(self) -> tuple[int, ...]:
        return (self.block,)

    def draw(self, objective, t: torch.Tensor, generator: torch.Generator | None) -> None:
        return None  # nothing random

    def term(self, hidden: dict[int, torch.Tensor], **_) -> torch.Tensor:
        return dispersive_loss(hidden[self.block], self.temperature)

    def macs_run(self, model_cfg, batch: int):
        z = torch.empty(batch, model_cfg.num_tokens, model_cfg.hidden_size, device="meta", requires_grad=True)
        return lambda: dispersive_loss(z, self.temperature).backward()


@dataclass
class SRA:
    """Self-representation alignment: the tokens after ``student_block`` (0-based) through a projector, pulled
    (smooth L1, ``beta``) towards the EMA's tokens after ``teacher_block`` at the DDPM step ``max(t - g, 0)`` with
    ``g`` uniform in ``0 .. round(max_gap * T) - 1``; added with ``weight``. Blocks None: the release's 8 and 20 of
    28 at the same fractions of the depth."""

    student_block: int | None = None
    teacher_block: int | None = None
    max_gap: float = 0.2
    weight: float = 0.04
    beta: float = 0.05

    name: ClassVar[str] = "sra"

    def resolve(self, depth: int) -> SRA:
        s = round(depth * 8 / 28) - 1 if self.student_block is None else self.student_block
        t = round(depth * 20 / 28) - 1 if self.teacher_block is None else self.teacher_block
        return dataclasses.replace(self, student_block=max(s, 0), teacher_block=max(t, 0))

    def check(self, depth: int) -> None:
        check_int("student_block", self.student_block, low=0, high=depth - 1)
        check_int("teacher_block", self.teacher_block, low=0, high=depth - 1)
        check_real("max_gap", self.max_gap, gt=0, le=1)
        check_real("weight", self.weight, gt=0)
        check_real("beta", self.beta, gt=0)

    def blocks(self) -> tuple[int, ...]:
        return (self.student_block,)

    def gap_steps(self, num_timesteps: int) -> int:
        return max(1, round(self.max_gap * num_timesteps))

    def draw(self, objective, t: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """The teacher's DDPM steps (B,): ``max(t - g, 0)``, ``g`` drawn after every other draw of the batch."""
        device = generator.device if generator is not None else t.device
        gap = self.gap_steps(objective.num_timesteps)
        g = torch.randint(0, gap, t.shape, generator=generator, device=device)
        return (t - g.to(t.device)).clamp_min(0)

    def term(self, hidden, *, objective, batch, ema, projector) -> torch.Tensor:
        student = projector(hidden[self.student_block])
        drop_ids = batch.draws.drop_ids if batch.draws is not None else None
        with torch.no_grad():
            xt = objective.q_sample(batch.x, batch.extra, batch.noise)
            target = ema.features(xt, batch.extra, batch.y, self.teacher_block, force_drop_ids=drop_ids)
        with _no_autocast(student.device):
            return F.smooth_l1_loss(student.float(), target.float(), beta=self.beta)

    def macs_run(self, model_cfg, batch: int):
        from ..models import DiT

        cfg = model_cfg.replace(routes=(), stochastic_depth=None)
        with torch.device("meta"):
            teacher = DiT(cfg).eval().requires_grad_(False)
            projector = Projector(cfg.hidden_size)
        x = torch.empty(batch, cfg.in_channels, cfg.input_size, cfg.input_size, device="meta")
        t, y = torch.empty(batch, device="meta"), torch.zeros(batch, dtype=torch.long, device="meta")
        h = torch.empty(batch, cfg.num_tokens, cfg.hidden_size, device="meta", requires_grad=True)

        def run():
            with torch.no_grad():
                teacher.features(x, t, y, self.teacher_block)
            projector(h).square().mean().backward()

        return run


_CLASSES = {"dispersive": Dispersive, "sra": SRA}


def settings_of(reg: Dispersive | SRA) -> dict[str, Any]:
    """A regularizer's settings as a run records them (its blocks resolved)."""
    return {"name": reg.name, **dataclasses.asdict(reg)}


def make_regularizer(settings: dict[str, Any], depth: int) -> Dispersive | SRA:
    """A regularizer from a method's ``regularizer`` section (``name`` and settings), its blocks resolved for a
    model of ``depth`` blocks. Raises ``ValueError`` naming the field (without the section's prefix)."""
    if not isinstance(settings, dict) or "name" not in settings:
        raise invalid("name", settings, f"a mapping with a name: {', '.join(REGULARIZERS)}")
    name = settings["name"]
    if name not in _CLASSES:
        raise invalid("name", name, f"allowed: {', '.join(REGULARIZERS)}")
    cls = _CLASSES[name]
    allowed = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(settings) - {"name", *allowed})
    if unknown:
        raise invalid(unknown[0], settings[unknown[0]], f"not a setting of regularizer {name!r}; allowed: {allowed}")
    reg = cls(**{k: v for k, v in settings.items() if k != "name"}).resolve(depth)
    reg.check(depth)
    return reg


def check_regularizer(reg: Dispersive | SRA, model_cfg, objective_name: str, micro_batch: int) -> None:
    """What the model, objective and batch must give a regularizer (``ValueError`` naming the field)."""
    if reg.name == "dispersive" and micro_batch < 2:
        raise invalid("name", reg.name, f"the dispersive loss needs >= 2 samples a micro-batch, not {micro_batch}")
    if reg.name == "sra":
        if objective_name != "ddpm":
            raise invalid("name", reg.name, f"SRA is implemented for objective ddpm (DiT's), not {objective_name!r}")
        if model_cfg.routes or model_cfg.stochastic_depth is not None:
            raise invalid("name", reg.name, "SRA with routes or stochastic depth is not implemented")


def extra_macs(reg: Dispersive | SRA | None, model_cfg, batch: int) -> int:
    """The training MACs a regularizer adds to one step of ``batch`` samples (0 without one), counted with the
    project's counter on the meta device: matrix products forward and backward (the elementwise work, like the
    model's, is not counted)."""
    if reg is None:
        return 0
    from ..models.cost import macs_by_op

    return sum(macs_by_op(reg.macs_run(model_cfg, batch)).values())


def projector_for(reg: Dispersive | SRA | None, hidden_size: int, seed: int) -> Projector | None:
    """SRA's projector, initialised from its own generator (the model's initialisation is left as it was)."""
    if reg is None or reg.name != "sra":
        return None
    return Projector(hidden_size, torch.Generator().manual_seed(seed * 1_000_003 + 7))


def regularized_loss(reg, objective, call, batch, *, ema=None, projector=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(the objective's mean loss, the mean loss plus ``weight`` x the regularizer's term) of one micro-batch whose
    draws are made (``batch``: a ``repro.experiments.train.MicroBatch``); ``call(x, t, y, generator=None, capture=...)``
    is the network with the batch's draws bound."""
    hidden: dict[int, torch.Tensor] = {}

    def net(x, t, y, generator=None):
        out, h = call(x, t, y, generator=generator, capture=reg.blocks())
        hidden.update(h)
        return out

    base = objective.loss_at(net, batch.x, batch.y, batch.t, batch.noise).mean()
    term = reg.term(hidden, objective=objective, batch=batch, ema=ema, projector=projector)
    return base, base + reg.weight * term
