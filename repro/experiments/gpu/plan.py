"""The campaign's plan: the FLOPs of every part, counted, and its seconds at a stated throughput.

Throughput assumption. An H200 multiplies 8192^3 bf16 matrices at about 790 TFLOP/s (measured); the
plan assumes a DiT-S/2 training step at 256 tokens reaches 30% of that in eager PyTorch (``--mfu``),
and that sampling, which runs in fp32 with TF32 matmuls outside autocast, reaches the same fraction of
half that rate. FLOPs = 2 x MACs counted on the meta device.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from .batch import BENCH_METHODS

H200_BF16_TFLOPS = 790.0  # measured: 8192^3 bf16 matrix products through PyTorch on one H200
CPU_ASSUMED_TFLOPS = 0.05  # the dry run's stated CPU rate (fp32, 2 cores); only sizes its plan

# The dry run: the same code at a size a 2-core CPU runs in seconds
DRY_MODEL = {"patch_size": 4, "hidden_size": 32, "depth": 8, "num_heads": 2}
DRY_DATA = {"subset": 1024}
DRY_TRAIN = {"steps": 6, "batch_size": 8, "eval_every": 2, "ckpt_every": 6, "log_every": 5, "precision": "fp32",
             "threads": 1}  # fmt: skip
DRY_EVAL = {"num_samples": 50, "sample_steps": 2, "reference_size": 300, "val_size": 16, "val_points": 2,
            "batch_size": 50, "metrics": ["fid"]}  # fmt: skip


@dataclass
class Throughput:
    """FLOP/s the plan assumes: ``peak_tflops`` x ``mfu`` for training (bf16 autocast) and bench steps,
    and ``sample_factor`` x that for sampling and validation (fp32 with TF32 matmuls, no autocast), plus
    ``eval_overhead_s`` per evaluation for what FLOPs do not count (features of the samples, FID)."""

    peak_tflops: float
    mfu: float
    sample_factor: float = 0.5
    eval_overhead_s: float = 2.0  # per evaluation: feature network, FID statistics, Python (not FLOP-counted)

    def seconds(self, macs: float, sampling: bool = False) -> float:
        rate = self.peak_tflops * 1e12 * self.mfu * (self.sample_factor if sampling else 1.0)
        return 2.0 * macs / rate


def small_configs(params: dict[str, Any], dry_run: bool, seed: int | None = None) -> list:
    """The small scale's runs (each a RunConfig), or their tiny dry-run versions."""
    from ...build import resolve
    from ...config import runs_of

    p = copy.deepcopy(params)
    s = p["scales"]["small"]
    if dry_run:
        s["model"] = {**s["model"], **DRY_MODEL}
        s["model"].pop("name", None)
        s["model"].setdefault("num_classes", 10)
        s["data"] = {**s.get("data", {}), **DRY_DATA}
        s["train"] = {**s["train"], **DRY_TRAIN}
        s["eval"] = {**s["eval"], **DRY_EVAL}
    runs = runs_of(p, "small")
    if seed is not None:
        runs = [(m, seed) for m, _ in dict(runs).items()]
    return [resolve(p, "small", method, sd) for method, sd in runs]


_COUNTED: dict[str, tuple[int, int]] = {}


def counted_macs(cfg) -> tuple[int, int]:
    """A run's training-step MACs (its regularizer's extra work included, :func:`repro.build.run_step_macs`) and
    its dense model's forward MACs per sample, counted on the meta device once per model, batch and regularizer."""
    key = f"{cfg.model!r}/{cfg.train.batch_size}/{cfg.regularizer!r}"
    if key not in _COUNTED:
        import torch

        from ...build import run_step_macs
        from ...models import DiT, dit_forward_macs

        with torch.device("meta"):
            dense = DiT(cfg.model.replace(routes=(), stochastic_depth=None))
        _COUNTED[key] = (run_step_macs(cfg), sum(dit_forward_macs(dense, 1).values()))
    return _COUNTED[key]


def run_plan(cfg, tp: Throughput) -> dict[str, Any]:
    """Counted FLOPs and estimated seconds of one run: training, sampling for FID, validation loss."""
    t, e = cfg.train, cfg.eval
    step_macs, fwd = counted_macs(cfg)
    n_evals = sum(1 for s in range(1, t.steps + 1) if t.is_eval_step(s))
    cfg_factor = 2 if e.guidance_scale > 1 else 1
    sample_macs = n_evals * e.num_samples * e.sample_steps * fwd * cfg_factor if e.metrics else 0
    val_macs = n_evals * e.val_size * e.val_points * fwd
    train_s, sample_s, val_s = (
        tp.seconds(t.steps * step_macs),
        tp.seconds(sample_macs, True),
        tp.seconds(val_macs, True),
    )
    sample_s += n_evals * tp.eval_overhead_s if e.metrics else 0.0
    return {
        "part": f"train {cfg.run_id}",
        "steps": t.steps,
        "batch_size": t.batch_size,
        "evaluations": n_evals,
        "train_step_macs": step_macs,
        "forward_macs_per_sample": fwd,
        "train_flops": 2 * t.steps * step_macs,
        "sample_flops": 2 * sample_macs,
        "val_flops": 2 * val_macs,
        "train_s": train_s,
        "eval_s": sample_s + val_s,
        "estimate_s": train_s + sample_s + val_s,
    }


def bench_plan(model: str, batch: int, steps: int, warmup: int, tp: Throughput, overrides: dict) -> dict[str, Any]:
    from ...models import train_step_macs
    from ..bench import method_config

    macs = {m: train_step_macs(method_config(model, m, **overrides), batch) for m in BENCH_METHODS}
    total = (steps + warmup) * sum(macs.values())
    return {"part": f"bench {model}", "batch": batch, "step_macs": macs, "flops": 2 * total,
            "estimate_s": tp.seconds(total), "mac_ratio": macs["dit"] / macs["tread"]}  # fmt: skip


def build_plan(rows: list[dict[str, Any]], tp: Throughput, device: str, cuda: bool, budget_s: float,
               train_budget_s: float) -> dict[str, Any]:  # fmt: skip
    """``plan.json``: the assumptions, every part's row (:func:`run_plan`, :func:`bench_plan`, the long and token
    parts' rows) and the total of their estimates."""
    return {
        "device": device,
        "budget_s": budget_s,
        "train_budget_s": train_budget_s,
        "assumptions": {
            "peak_tflops": tp.peak_tflops,
            "mfu": tp.mfu,
            "train_tflops": tp.peak_tflops * tp.mfu,
            "sample_tflops": tp.peak_tflops * tp.mfu * tp.sample_factor,
            "eval_overhead_s": tp.eval_overhead_s,
            "note": "peak: 8192^3 bf16 matmuls measured on an H200; sampling is fp32/TF32, half the bf16 rate"
            if cuda
            else "a stated CPU rate for the dry run, not a measurement",
            "flops": "2 x MACs counted on the meta device (torch.utils.flop_counter)",
        },
        "parts": rows,
        "total_estimate_s": sum(p["estimate_s"] for p in rows),
    }


def format_plan(plan: dict[str, Any]) -> str:
    a = plan["assumptions"]
    lines = [
        f"plan on {plan['device']}: budget {plan['budget_s']:.0f} s "
        f"(training + evaluation {plan['train_budget_s']:.0f} s)",
        f"  assumed: {a['peak_tflops']:g} TFLOP/s peak x MFU {a['mfu']:.0%} = {a['train_tflops']:.1f} TFLOP/s "
        f"for training/bench steps, {a['sample_tflops']:.1f} TFLOP/s for sampling, "
        f"+{a['eval_overhead_s']:g} s per evaluation for the metrics ({a['note']})",
        f"  {'part':<28}{'steps/batch':>12}{'PFLOP':>10}{'est. s':>9}",
    ]
    for r in plan["parts"]:
        size = f"{r['steps']}x{r['batch_size']}" if "steps" in r else f"b{r['batch']}"
        flops = r.get("flops", r.get("train_flops", 0) + r.get("sample_flops", 0) + r.get("val_flops", 0))
        lines.append(f"  {r['part']:<28}{size:>12}{flops / 1e15:>10.2f}{r['estimate_s']:>9.1f}")
    lines.append(f"  {'total':<28}{'':>12}{'':>10}{plan['total_estimate_s']:>9.1f}")
    return "\n".join(lines)
