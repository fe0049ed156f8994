"""Evaluation of a run's EMA weights: the validation loss at fixed noise levels and, on Fashion-MNIST, sample
quality (FID, KID, precision/recall) of class-balanced samples from fixed noise."""

from __future__ import annotations

from typing import Any

import torch

from ..config import RunConfig


@torch.no_grad()
def generate(
    model,
    objective,
    cfg: RunConfig,
    device: torch.device,
    num: int | None = None,
    steps: int | None = None,
    workers: int | None = None,
) -> torch.Tensor:
    """``num`` class-balanced samples from fixed noise (the same at every evaluation), in [-1, 1], in ``steps``
    sampling steps (default: the scale's ``eval.sample_steps``). ``workers``: the CPU workers a sampler splits each
    batch over (default: one per torch thread on the CPU; the samples are the same for any count)."""
    num = num or cfg.eval.num_samples
    m = cfg.model
    g = torch.Generator(device="cpu").manual_seed(cfg.eval.seed)
    noise = torch.randn(num, m.in_channels, m.input_size, m.input_size, generator=g)
    labels = torch.arange(num) % m.num_classes
    if workers is None:
        workers = torch.get_num_threads() if device.type == "cpu" else 1  # the same samples, all cores busy
    out = []
    for i in range(0, num, cfg.eval.batch_size):
        sg = torch.Generator(device="cpu").manual_seed(cfg.eval.seed + 1 + i)
        out.append(
            objective.sample(
                model,
                noise[i : i + cfg.eval.batch_size].to(device),
                labels[i : i + cfg.eval.batch_size].to(device),
                steps=steps or cfg.eval.sample_steps,
                guidance_scale=cfg.eval.guidance_scale,
                generator=sg,
                workers=workers,
            )
            .float()
            .cpu()
        )
    return torch.cat(out)


def evaluate(
    model,
    objective,
    cfg: RunConfig,
    device: torch.device,
    val: tuple[torch.Tensor, torch.Tensor],
    with_samples: bool = True,
    keep: dict[str, Any] | None = None,
) -> dict:
    """The validation loss and, with ``with_samples`` (on Fashion-MNIST with metrics), sample quality.
    ``keep``, when given, receives the samples under ``"samples"`` (for a grid)."""
    from ..objectives.base import SplitForward

    x, y = val
    g = torch.Generator(device="cpu").manual_seed(cfg.eval.seed)
    net = SplitForward(model, torch.get_num_threads()) if device.type == "cpu" else model  # the same numbers
    with torch.no_grad():
        val_loss = float(objective.fixed_t_loss(net, x.to(device), y.to(device), g, points=cfg.eval.val_points).mean())
    out: dict[str, Any] = {"val_loss": val_loss}
    if with_samples and cfg.data.name == "fashion-mnist" and cfg.eval.metrics:
        from ..metrics.fid import compute_metrics

        samples = generate(model, objective, cfg, device)
        if keep is not None:
            keep["samples"] = samples
        res = compute_metrics(
            samples.clamp(-1, 1),
            reference=cfg.eval.reference,
            metrics=cfg.eval.metrics,
            reference_size=cfg.eval.reference_size,
            device=device,
        )
        out.update({k: res[k] for k in ("fid", "kid", "precision", "recall") if k in res})
        if "fid" in res and cfg.eval.fid_blocks > 1:
            from ..metrics.fid import block_fids, fid_sd_from_blocks

            blocks = block_fids(
                samples.clamp(-1, 1),
                cfg.eval.fid_blocks,
                reference=cfg.eval.reference,
                reference_size=cfg.eval.reference_size,
                device=device,
            )
            out["fid_sd"] = fid_sd_from_blocks(blocks)
            out["fid_blocks"] = [float(b) for b in blocks]
    return out


def extra_fid(model, objective, cfg: RunConfig, device: torch.device, steps: int) -> dict[str, float]:
    """``{"fid@<steps>": FID}`` of the same fixed noise sampled in ``steps`` steps (``eval.extra_fid``)."""
    from ..metrics.fid import compute_metrics

    samples = generate(model, objective, cfg, device, steps=steps)
    res = compute_metrics(
        samples.clamp(-1, 1),
        reference=cfg.eval.reference,
        metrics=("fid",),
        reference_size=cfg.eval.reference_size,
        device=device,
    )
    return {f"fid@{steps}": float(res["fid"])}
