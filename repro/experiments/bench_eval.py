"""``repro bench --eval``: seconds per evaluation of a scale, the reference path against the fast one.

One evaluation is what the training loop does at an evaluation step (:func:`repro.experiments.train.evaluate`): the
validation loss at the fixed noise levels, ``eval.num_samples`` samples of the EMA weights, and FID / KID /
precision-recall of their features against the reference. Two paths compute it, in one process, alternated
(reference, fast, reference, fast, ...) so that both see the same machine load; medians are reported:

- reference: every forward on the whole batch, the metrics through ``torch_fidelity.calculate_metrics``;
- fast: the forwards on slices of the batch in parallel one-thread workers (one per thread of the process,
  :class:`~repro.objectives.base.SplitForward`), the metrics in process from the cached reference features
  (:func:`repro.metrics.fid.compute_metrics`).

Each path is run once untimed first, so the reference features are in the disk cache and the reference's
statistics and radii in the process's memo (the training loop pays that once per process; its time is
printed as ``first_metrics_s``). The report breaks each evaluation into sampling, metrics (feature
extraction and the metrics' maths) and validation loss, in seconds on the named CPU, and gives the
largest difference between the two paths' samples, metrics and validation loss (all 0 when bitwise equal).
Timings are printed, never asserted.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

PARTS = ("sampling_s", "metrics_s", "val_loss_s")


def _model(cfg, run: str | None):
    """The EMA weights of ``run`` (a run directory or checkpoint), or, without one, the scale's model with its
    zero-initialized layers given random weights (for timing: the same operations as a trained model)."""
    from ..models import DiT
    from ..objectives import make_objective

    if run is not None:
        from .sample import find_checkpoint, load_for_sampling

        ckpt, config = find_checkpoint(run)
        model, objective, _, step = load_for_sampling(ckpt, config, "ema")
        return model, objective, f"{ckpt} (step {step}, EMA weights)"
    torch.manual_seed(cfg.seed)
    model = DiT(cfg.model).eval()
    g = torch.Generator().manual_seed(cfg.seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
    return model, make_objective(**cfg.objective), "random weights (timing only)"


def _one_evaluation(model, objective, cfg, val, fast: bool) -> tuple[dict[str, float], torch.Tensor, dict[str, Any]]:
    from ..metrics.fid import compute_metrics
    from ..objectives.base import SplitForward
    from .evaluation import generate

    workers = torch.get_num_threads() if fast else 1
    ev = cfg.eval
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    x, y = val
    net = SplitForward(model, workers) if workers > 1 else model
    with torch.no_grad():
        g = torch.Generator().manual_seed(ev.seed)
        val_loss = float(objective.fixed_t_loss(net, x, y, g, points=ev.val_points).mean())
    times["val_loss_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    samples = generate(model, objective, cfg, torch.device("cpu"), workers=workers)  # what a run's evaluation draws
    times["sampling_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    result = compute_metrics(
        samples.clamp(-1, 1),
        reference=ev.reference,
        metrics=ev.metrics,
        reference_size=ev.reference_size,
        via_torch_fidelity=not fast,
    )
    times["metrics_s"] = time.perf_counter() - t0
    return (
        times,
        samples,
        {"val_loss": val_loss, **{k: result[k] for k in ("fid", "kid", "precision", "recall") if k in result}},
    )


def run_eval_bench(
    scale: str = "micro",
    method: str = "dit",
    reps: int = 3,
    run: str | None = None,
    params: str = "params.yaml",
    threads: int | None = None,
) -> dict[str, Any]:
    """Time ``reps`` evaluations of each path, alternated; see the module docstring. ``threads``: the CPU threads
    (default: the scale's ``train.threads``, what its runs evaluate with); the fast path's workers are one per
    thread, so at one thread the two paths do the same work."""
    from ..build import resolve
    from ..config import load_params
    from ..metrics import fid
    from ..runtime import cpu_setup, device_name
    from .train import TrainData, validation_batch

    cfg = resolve(load_params(params), scale, method, 0)
    cpu_setup("cpu", threads if threads is not None else cfg.train.threads)
    if cfg.data.name != "fashion-mnist" or not cfg.eval.metrics:
        raise ValueError(f"--scale: {scale!r} evaluates no metrics; allowed: a Fashion-MNIST scale with eval.metrics")
    model, objective, weights = _model(cfg, run)
    val = validation_batch(cfg, TrainData(cfg))
    fid._REFERENCE_MEMO.clear()
    t0 = time.perf_counter()
    _, ref_samples, ref_numbers = _one_evaluation(model, objective, cfg, val, fast=False)  # warm: fills the cache
    _one_evaluation(model, objective, cfg, val, fast=True)
    first = time.perf_counter() - t0
    timed: dict[str, list[dict[str, float]]] = {"reference": [], "fast": []}
    diffs = {"samples_max_abs": 0.0, "metrics_max_abs": 0.0}
    for _ in range(reps):
        for path in ("reference", "fast"):
            times, samples, numbers = _one_evaluation(model, objective, cfg, val, fast=path == "fast")
            timed[path].append(times)
            diffs["samples_max_abs"] = max(diffs["samples_max_abs"], (samples - ref_samples).abs().max().item())
            diffs["metrics_max_abs"] = max(
                diffs["metrics_max_abs"], max(abs(numbers[k] - ref_numbers[k]) for k in ref_numbers)
            )
    n = cfg.eval.num_samples
    report: dict[str, Any] = {
        "scale": scale,
        "method": method,
        "weights": weights,
        "device": device_name(torch.device("cpu")),
        "torch": torch.__version__,
        "num_samples": n,
        "sample_steps": cfg.eval.sample_steps,
        "reps": reps,
        "warm_up_s": round(first, 3),
        "numbers": ref_numbers,
        "differences": diffs,
    }
    for path, runs in timed.items():
        med = {k: statistics.median(r[k] for r in runs) for k in PARTS}
        med["evaluation_s"] = sum(med[k] for k in PARTS)
        med["ms_per_sample"] = 1000 * (med["sampling_s"] + med["metrics_s"]) / n
        report[path] = {k: round(v, 4) for k, v in med.items()}
    report["speedup_per_sample"] = round(report["reference"]["ms_per_sample"] / report["fast"]["ms_per_sample"], 3)
    report["speedup_per_evaluation"] = round(report["reference"]["evaluation_s"] / report["fast"]["evaluation_s"], 3)
    return report


def format_eval_report(rep: dict[str, Any]) -> str:
    lines = [
        f"evaluation of {rep['scale']}/{rep['method']} ({rep['num_samples']} samples x {rep['sample_steps']} steps, "
        f"{rep['weights']}) on {rep['device']}, torch {rep['torch']}; medians of {rep['reps']} alternated runs",
        f"{'path':<11}{'sampling s':>11}{'metrics s':>11}{'val loss s':>11}{'eval s':>9}{'ms/sample':>11}",
    ]
    for path in ("reference", "fast"):
        r = rep[path]
        lines.append(
            f"{path:<11}{r['sampling_s']:>11.2f}{r['metrics_s']:>11.2f}{r['val_loss_s']:>11.2f}"
            f"{r['evaluation_s']:>9.2f}{r['ms_per_sample']:>11.2f}"
        )
    d = rep["differences"]
    lines.append(
        f"speedup: {rep['speedup_per_sample']:.2f}x per sample (sampling + metrics), "
        f"{rep['speedup_per_evaluation']:.2f}x per evaluation; warm-up (both paths once) {rep['warm_up_s']:.1f} s"
    )
    lines.append(
        f"largest difference fast vs reference: samples {d['samples_max_abs']:.3g}, "
        f"metrics and validation loss {d['metrics_max_abs']:.3g}"
    )
    return "\n".join(lines)
