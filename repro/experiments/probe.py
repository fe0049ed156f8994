"""``repro probe``: how spread out a trained run's tokens are after each block, on a batch drawn as in training.

Why: the dispersive loss (``repro.objectives.regularizers``) repels the batch's representations after one block
and reaches its floor ``-log B`` once every pair is far apart; from there its gradient vanishes, but whatever the
network did to get there stays. This measures that state on a run's checkpoint, for any run (with or without a
regularizer), so two runs can be compared block by block.

The batch: ``batch`` test images of Fashion-MNIST (a seeded choice) with their labels, noise levels and noise
drawn from the run's own objective exactly as its training loss draws them (``objective.draw``), the network run
through the objective's own loss (so EDM's preconditioning applies) in eval mode: dense, no label dropout. Each
block's output (B, N, hidden_size) is captured by a forward hook and summarised as

- ``rms``: the root mean square of its elements;
- ``mean_sq_dist``: the mean over pairs ``i != j`` of ``||z_i - z_j||^2 / (N * hidden_size)``, the distance the
  dispersive loss uses (per element, so 2 for two independent unit-variance representations);
- ``dispersive``: the dispersive loss at ``temperature`` on that block, in ``[-log B, 0]``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ..objectives.regularizers import dispersive_loss
from .sample import find_checkpoint, load_for_sampling


def token_spread(
    source: str | Path,
    *,
    batch: int = 64,
    seed: int = 0,
    temperature: float = 0.5,
    weights: str = "ema",
    config: str | Path | None = None,
) -> dict[str, Any]:
    """Per block of a run's ``weights``: ``rms``, ``mean_sq_dist`` and ``dispersive`` (see the module docstring)."""
    from ..data import fashion_mnist
    from ..validation import check_int, check_real

    check_int("batch", batch, low=2)
    check_int("seed", seed, low=0)
    check_real("temperature", temperature, gt=0)
    ckpt, cfg_path = find_checkpoint(source, config)
    model, objective, run, step = load_for_sampling(ckpt, cfg_path, weights)
    data = (run.get("data") or {}).get("name")
    if data != "fashion-mnist":
        raise ValueError(f"data.name: {data!r} in {cfg_path}; allowed: fashion-mnist (the probe reads its test split)")
    test = fashion_mnist.load("test")
    n = len(test.labels)
    if batch > n:
        raise ValueError(f"batch: {batch} is more than the {n} test images; allowed: 2 .. {n}")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n, generator=g)[:batch]
    x0, y = fashion_mnist.to_float(test.images[idx]), test.labels[idx]

    captured: dict[int, torch.Tensor] = {}
    hooks = [
        block.register_forward_hook(lambda _m, _i, out, i=i: captured.__setitem__(i, out.detach()))
        for i, block in enumerate(model.blocks)
    ]
    try:
        with torch.no_grad():
            t, noise = objective.draw(x0, g)
            objective.loss_at(model.eval(), x0, y, t, noise)
    finally:
        for h in hooks:
            h.remove()
    off = ~torch.eye(batch, dtype=torch.bool)
    blocks = []
    for i in sorted(captured):
        z = captured[i].flatten(1).float()
        d = torch.cdist(z, z).pow(2) / z.shape[1]
        blocks.append(
            {
                "block": i,
                "rms": z.pow(2).mean().sqrt().item(),
                "mean_sq_dist": d[off].mean().item(),
                "dispersive": dispersive_loss(captured[i], temperature).item(),
            }
        )
    return {
        "source": str(ckpt),
        "run_id": run.get("run_id"),
        "step": step,
        "weights": weights,
        "batch": batch,
        "seed": seed,
        "temperature": temperature,
        "floor": -math.log(batch),
        "blocks": blocks,
    }


def format_spread(report: dict[str, Any]) -> str:
    """The report as a table, one row per block (0-based)."""
    head = (
        f"{report['run_id'] or report['source']} at step {report['step']} ({report['weights']} weights), "
        f"{report['batch']} test images drawn with seed {report['seed']}; dispersive loss at temperature "
        f"{report['temperature']:g}, floor -log {report['batch']} = {report['floor']:.3f}"
    )
    rows = [f"{'block':>5}  {'rms':>7}  {'mean sq dist':>12}  {'dispersive':>10}"]
    for b in report["blocks"]:
        rows.append(f"{b['block']:>5}  {b['rms']:>7.3f}  {b['mean_sq_dist']:>12.3f}  {b['dispersive']:>10.3f}")
    return "\n".join([head, *rows])
