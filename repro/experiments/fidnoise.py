"""The FID's sampling noise at a sample count, measured on one checkpoint: FIDs of independent sample sets.

``repro fidnoise RUN [--checkpoint PT] --num 2000 --sets 4 --out fid-noise.json`` (or ``python -m
repro.experiments.fidnoise``) draws ``sets`` independent sets of ``num`` class-balanced samples (each from its own noise
seed) with the run's sampler and evaluation settings, and reports each set's FID against the run's reference, their mean
and sd, and the same for the disjoint halves and quarters of each set (the sd at ``num / 2`` and ``num / 4``, to
see how it falls with the sample count). This is how a scale's ``eval.num_samples`` is chosen: the sd at the
chosen count must be well below the FID differences that decide a verdict.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

SEED_STRIDE = 1_000_003
"""Noise seed of set k: (k + 1) * SEED_STRIDE, far from the evaluation seed and from each other's batches."""


def fid_noise(
    run_dir: Path, checkpoint: Path | None, num: int, sets: int, device: str = "cpu", command: str | None = None
) -> dict[str, Any]:
    """The report of ``sets`` independent sets of ``num`` samples of a run (see above); ``command`` is recorded
    as what made it (default: ``python -m repro.experiments.fidnoise`` and this process's arguments)."""
    import torch

    from ..metrics.fid import compute_metrics
    from ..runtime import cpu_setup, device_name, pick_device
    from .sample import draw, find_checkpoint, load_for_sampling

    dev = pick_device(device)
    cpu_setup(dev)
    ckpt, config = find_checkpoint(checkpoint or run_dir)
    model, objective, run, step = load_for_sampling(ckpt, config, "ema", dev)
    ev = run.get("eval", {})
    fids: dict[int, list[float]] = {num: [], num // 2: [], num // 4: []}
    t0 = time.perf_counter()
    for k in range(sets):
        samples, _ = draw(
            model, objective, num, (k + 1) * SEED_STRIDE, ev.get("sample_steps"), ev.get("guidance_scale", 1.0),
            ev.get("batch_size", 500), dev,
        )  # fmt: skip
        samples = samples.clamp(-1, 1)
        kw = dict(reference=ev.get("reference", "test"), reference_size=ev.get("reference_size"), device=dev)
        for size in fids:
            for b in range(num // size):
                part = samples[b * size : (b + 1) * size]
                fids[size].append(float(compute_metrics(part, metrics=("fid",), **kw)["fid"]))
    return {
        "run_id": run.get("run_id"),
        "checkpoint": str(ckpt),
        "step": step,
        "sets": sets,
        "by_sample_count": {
            str(size): {
                "fid": values,
                "mean": statistics.fmean(values),
                "sd": statistics.stdev(values) if len(values) > 1 else None,
                "n": len(values),
            }
            for size, values in fids.items()
        },
        "sample_steps": ev.get("sample_steps"),
        "clip_denoised": run.get("objective", {}).get("clip_denoised", False),
        "seconds": round(time.perf_counter() - t0, 1),
        "command": command if command is not None else "python -m repro.experiments.fidnoise " + " ".join(sys.argv[1:]),
        "torch": torch.__version__,
        "device": device_name(dev),
    }


if __name__ == "__main__":  # `python -m repro.experiments.fidnoise ARGS` is `repro fidnoise ARGS`
    from repro.cli import run_as_module

    run_as_module("fidnoise")
