"""The main job's re-check (``nox -s repro``): which golden runs it re-trains, and why each.

Re-training one run per method makes the main job grow by a run with every new method; most methods differ from
another only in a number (a selection rate), not in the code they run. So the main job re-checks a declared
subset chosen to run every code path the scale's methods use: each objective, the learned variance on and off,
dense training, TREAD's routes and stochastic depth, each block variant, each initialisation and each
representation regularizer.
:func:`uncovered` names the code paths of a scale's methods that no member runs (a test keeps it empty for the
micro scale, so a method that brings a new variant needs a member here). ``nox -s repro -- --full`` re-runs the
whole campaign instead.

Stdlib only at import: the noxfile reads this file with nox's own interpreter.
"""

from __future__ import annotations

from typing import Any

SEED = 0
"""The seed of every re-checked run (seeds are paired across methods)."""

POINTS = 2
"""Each member re-trains to its golden's second evaluation (200 dense-step equivalents at micro) and compares
those points; none of them has an FID in the golden, so a re-check computes none (``repro rerun --points``)."""

MEMBERS: dict[str, dict[str, str]] = {
    "micro": {
        "dit": "DDPM with learned variance on the dense pre-norm adaLN-Zero block: the baseline every speedup "
        "divides by",
        "tread": "TREAD's routes (tokens bypass blocks 2 -> 8 and are merged back) on DDPM: the claim under test",
        "sit": "SiT's linear interpolant with velocity prediction and Euler sampling; the fixed variance "
        "(learn_sigma off)",
        "tread-edm": "EDM's preconditioning and loss (Heun sampler) with routes: the third objective; dit-edm runs "
        "the same objective without routes, which dit and sit already cover",
        "stochastic-depth": "stochastic depth: whole blocks skipped per sample, a code path of its own in the "
        "model and the step's cost",
        "post-norm": "the post-norm block (norm_placement: post)",
        "lightningdit": "LightningDiT's block: RMSNorm with a weight, SwiGLU, sin-cos table plus 2-D RoPE",
        "tread-xavier": "the xavier initialisation of TREAD's release (init: xavier) instead of adaLN-Zero's; "
        "tread-rate-25 and tread-rate-75 run tread's code with another rate, so they have no member",
        "dit-dispersive": "the dispersive loss: a block's output taken from the forward and a batch-wise repulsion "
        "added to DDPM's loss",
        "dit-sra": "self-representation alignment: the EMA model's forward at a lower noise level as the target, "
        "the projector trained beside the model",
    },
}


def _paths(method_cfg: Any) -> set[tuple[str, str]]:
    """The code paths one resolved run configuration takes: each model field's value (routes and stochastic
    depth as on or off: their rates and blocks are numbers, not code) and each objective setting."""
    import dataclasses

    model = method_cfg.model
    out = set()
    for f in dataclasses.fields(model):
        value = getattr(model, f.name)
        if f.name == "routes":
            value = "routed" if value else "dense"
        elif f.name == "stochastic_depth":
            value = "on" if value is not None else "off"
        out.add((f"model.{f.name}", repr(value)))
    for key, value in method_cfg.objective.items():
        out.add((f"objective.{key}", repr(value)))
    regularizer = getattr(method_cfg, "regularizer", None)  # which loss term, not its weight or temperature
    out.add(("regularizer.name", repr(regularizer["name"] if regularizer else None)))
    return out


def uncovered(params: dict[str, Any], scale: str) -> dict[str, list[str]]:
    """``"field=value" -> [methods]``: each code path that a method of ``scale`` takes and no member of the
    scale's declared subset takes, with the methods that take it. Empty when the subset covers the scale."""
    from ..build import resolve

    methods = params["scales"][scale]["methods"]
    members = MEMBERS.get(scale, {})
    unknown = sorted(set(members) - set(methods))
    if unknown:
        raise ValueError(f"repro.experiments.recheck.MEMBERS[{scale!r}]: {unknown} are not methods of scale {scale}")
    covered = set().union(*(_paths(resolve(params, scale, m, SEED)) for m in members)) if members else set()
    missing: dict[str, list[str]] = {}
    for m in methods:
        for field, value in sorted(_paths(resolve(params, scale, m, SEED)) - covered):
            missing.setdefault(f"{field}={value}", []).append(m)
    return missing
