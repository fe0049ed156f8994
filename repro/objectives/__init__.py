"""Training objectives and samplers behind one interface: DiT's DDPM, SiT's interpolants, TREAD's EDM.

Every objective has

- ``loss(model, x0, y, generator) -> (B,)``: the training loss per sample;
- ``fixed_t_loss(model, x0, y, generator, points=8) -> (B,)``: the loss averaged over fixed noise
  levels, in eval mode, a cheap and smooth validation metric;
- ``sample(model, noise, y, steps=None, guidance_scale=1.0, generator=None)``: samples from standard
  normal noise, in eval mode (every token through every block) and without gradients.

``make_objective("ddpm" | "interpolant" | "edm", **settings)`` builds one by name.
"""

from __future__ import annotations

import dataclasses

from .base import Objective, guided_output, null_label
from .ddpm import DDPM, dit_respacing
from .edm import EDM, karras_sigmas, preconditioning
from .interpolant import Interpolant, interpolate, path_coefficients, velocity_target

OBJECTIVES: dict[str, type[Objective]] = {"ddpm": DDPM, "interpolant": Interpolant, "edm": EDM}


def make_objective(name: str, **settings) -> Objective:
    """An objective by name with its settings, e.g. ``make_objective("interpolant", path="gvp", sampler="sde")``.

    Unknown names, unknown settings and bad values raise ``ValueError`` naming the field, the value
    and what is allowed.
    """
    if name not in OBJECTIVES:
        raise ValueError(f"objective: unknown name {name!r}; allowed: {', '.join(map(repr, OBJECTIVES))}")
    cls = OBJECTIVES[name]
    allowed = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(settings) - set(allowed))
    if unknown:
        raise ValueError(f"{name}: unknown setting(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}")
    return cls(**settings)


__all__ = [
    "DDPM",
    "EDM",
    "OBJECTIVES",
    "Interpolant",
    "Objective",
    "dit_respacing",
    "guided_output",
    "interpolate",
    "karras_sigmas",
    "make_objective",
    "null_label",
    "path_coefficients",
    "preconditioning",
    "velocity_target",
]
