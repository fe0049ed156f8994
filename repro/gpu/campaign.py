"""The small-scale GPU campaign in one call of at most ``--budget-s`` seconds (``python -m repro.gpu campaign``).

Install from the wheel folder whatever is not importable (:mod:`repro.gpu.wheels`; nothing from a registry), point
the data loader at the carried copy, print and save the plan (:mod:`repro.gpu.plan`: the FLOPs of every part and its
time at a stated throughput), train the small scale's runs (DiT, TREAD, SiT at equal training MACs) with FID and
validation-loss curves of the EMA weights, then ``repro bench`` DiT-S/2, -B/2 and -XL/2 at the largest batch up to
256 that fits (:mod:`repro.gpu.batch`). Every run gets a time cap from what is left, and whatever exists is always
written to ``--out``:

- ``plan.json``: assumptions and per-part FLOPs and estimated seconds;
- ``campaign.json``: provenance (GPU, driver, torch, CUDA, precision, seed, command, commit), the status and
  seconds of every part, the installed wheels, each run's training log;
- ``curves/<method>-s<seed>.json``: the runs' curves (written after every evaluation);
- ``bench.json``: one ``repro bench`` report per model;
- ``long.json``, ``tokens.json`` (with ``--parts long tokens``): each part's sizing, runs, curves and targets;
- ``log.txt``: everything the command printed.

``parts`` picks what runs (default ``small bench``, the above); ``long`` and ``tokens`` are the long horizon to 17.5x
the core budget (scale ``gpu-long``) and the token axis at 256 tokens (scale ``gpu-tokens``), each sized from
counted FLOPs and the step measured in its own first ``probe_s`` seconds (:mod:`repro.gpu.axes`). ``dry_run`` runs
the same code at a tiny size on the CPU (the tests run it).
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import signal
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

from . import axes as gpu_axes
from .batch import BENCH_MODELS, BENCH_SIZE, DRY_BENCH, bench_largest_batch
from .paths import DEFAULT_WHEELS, PARAMS
from .plan import (
    CPU_ASSUMED_TFLOPS,
    DRY_TRAIN,
    H200_BF16_TFLOPS,
    Throughput,
    bench_plan,
    format_plan,
    run_plan,
    small_configs,
)
from .record import BudgetExceeded, Campaign, Tee, campaign_provenance
from .wheels import MANIFEST, install_missing, use_carried_data

PARTS = ("small", "bench", "long", "tokens")  # what parts may name; long and tokens: repro/gpu/axes.py
DEFAULT_PARTS = ("small", "bench")


def run_campaign(
    out: str | os.PathLike,
    *,
    budget_s: float = 540.0,
    train_budget_s: float = 420.0,
    wheels: str | os.PathLike | None = DEFAULT_WHEELS,
    work: str | os.PathLike | None = None,
    params: str | os.PathLike = PARAMS,
    dry_run: bool = False,
    device: str | None = None,
    mfu: float = 0.30,
    peak_tflops: float | None = None,
    bench_max_batch: int = 256,
    bench_steps: int = 10,
    bench_warmup: int = 3,
    seed: int | None = None,
    command: str | None = None,
    parts: tuple[str, ...] | list[str] = DEFAULT_PARTS,
    probe_s: float = 5.0,
) -> int:
    """The whole campaign; returns 0 when every part finished, 1 when one failed, was cut or skipped."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    command = command or " ".join(["python -m repro.gpu", *sys.argv[1:]])
    camp = Campaign(out, budget_s, command)
    log_file = open(out / "log.txt", "a", buffering=1)  # noqa: SIM115 - closed in finally
    old_out, old_err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = Tee(old_out, log_file), Tee(old_err, log_file)

    fired = []  # the raise below can land where Python swallows it (a gc callback, a finaliser): remember it

    def on_alarm(signum, frame):
        fired.append(camp.elapsed())
        raise BudgetExceeded()

    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(budget_s, 1e-3))
    try:
        _campaign(camp, train_budget_s, wheels, work, params, dry_run, device, mfu, peak_tflops,
                  bench_max_batch, bench_steps, bench_warmup, seed, parts, probe_s)  # fmt: skip
        camp.record["status"] = "done"
    except BudgetExceeded:
        camp.record["status"] = "cut"
        for entry in camp.record["parts"]:  # the timer can fire between a part's start and its own handler
            if entry["status"] == "running":
                entry["status"] = "cut"
        print(f"\nthe campaign's budget of {budget_s} s ran out after {camp.elapsed():.1f} s; what exists is saved")
    except Exception as exc:
        camp.record["status"] = "failed"
        camp.record["error"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        bad = [p["part"] for p in camp.record["parts"] if p["status"] != "done"]
        if camp.record["status"] == "done" and bad:
            camp.record["status"] = "cut" if fired else "incomplete"
            if fired:  # the timer's exception was swallowed where it fired; the parts after it were skipped
                print(f"\nthe campaign's budget of {budget_s} s ran out after {fired[0]:.1f} s; what exists is saved")
        camp.record["not_done"] = bad
        camp.save()
        print(f"campaign {camp.record['status']} in {camp.elapsed():.1f} s; outputs in {out}")
        sys.stdout, sys.stderr = old_out, old_err
        log_file.close()
    return 0 if camp.record["status"] == "done" else 1


def _campaign(camp: Campaign, train_budget_s, wheels, work, params, dry_run, device, mfu, peak_tflops,
              bench_max_batch, bench_steps, bench_warmup, seed, parts=DEFAULT_PARTS, probe_s=5.0) -> None:  # fmt: skip
    out = camp.out
    work = Path(work) if work else Path(tempfile.mkdtemp(prefix="repro-small-"))
    wheels = Path(wheels) if wheels else None
    rec = camp.record
    rec["work"] = str(work)

    with camp.part("install") as entry:
        if wheels is not None and (wheels / MANIFEST).is_file():
            entry["wheels"] = str(wheels)
            entry["installed"] = install_missing(wheels, work / "site")
            data = use_carried_data(wheels)
            entry["data_dir"] = str(data) if data else os.environ.get("REPRO_DATA_DIR")
        else:
            entry["wheels"] = None
            print(f"install: no {MANIFEST} in {wheels}; using the packages this interpreter has")
        for module in ("diffusers", "torch_fidelity", "yaml", "scipy"):
            importlib.import_module(module)
    if entry["status"] != "done":
        raise RuntimeError(f"install failed: {entry.get('error')}")

    import torch

    from ..config import load_params
    from ..io import atomic_write_json
    from ..runtime import cpu_setup
    from ..train import train

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() and not dry_run else "cpu"))
    cpu_setup(dev)
    if dry_run:
        torch.set_num_threads(DRY_TRAIN["threads"])  # tiny matrices: one thread beats two contended ones
    all_params = load_params(params)
    configs = small_configs(all_params, dry_run, seed)
    precision = configs[0].train.precision if dev.type == "cuda" else "fp32"
    if dev.type == "cuda":  # as train() sets it, so the record states what the runs use
        torch.backends.cuda.matmul.allow_tf32 = configs[0].train.tf32
    rec["provenance"] = campaign_provenance(dev, precision, configs[0].seed, camp.command, dry_run)
    rec["parts_asked"] = list(parts)
    configs = configs if "small" in parts else []
    bench_models = BENCH_MODELS if "bench" in parts else ()
    axes = [p for p in ("tokens", "long") if p in parts]
    peak = peak_tflops or (H200_BF16_TFLOPS if dev.type == "cuda" else CPU_ASSUMED_TFLOPS)
    tp = Throughput(peak, mfu, eval_overhead_s=2.0 if dev.type == "cuda" else 0.3)
    overrides = {**BENCH_SIZE, **(DRY_BENCH if dry_run else {})}
    bench_batch = min(bench_max_batch, 4) if dry_run else bench_max_batch
    if dry_run:
        bench_steps, bench_warmup = 1, 0
        probe_s = min(probe_s, gpu_axes.DRY_PROBE_S)

    with camp.part("plan") as entry:
        rows = [run_plan(cfg, tp) for cfg in configs]
        rows += [bench_plan(m, bench_batch, bench_steps, bench_warmup, tp, overrides) for m in bench_models]
        rows += gpu_axes.plan_rows(all_params, dry_run, tp, axes)
        plan = {
            "device": rec["provenance"]["device"],
            "budget_s": camp.budget_s,
            "train_budget_s": train_budget_s,
            "assumptions": {
                "peak_tflops": peak,
                "mfu": mfu,
                "train_tflops": peak * mfu,
                "sample_tflops": peak * mfu * tp.sample_factor,
                "eval_overhead_s": tp.eval_overhead_s,
                "note": "peak: 8192^3 bf16 matmuls measured on an H200; sampling is fp32/TF32, half the bf16 rate"
                if dev.type == "cuda"
                else "a stated CPU rate for the dry run, not a measurement",
                "flops": "2 x MACs counted on the meta device (torch.utils.flop_counter)",
            },
            "parts": rows,
            "total_estimate_s": sum(p["estimate_s"] for p in rows),
        }
        atomic_write_json(out / "plan.json", plan)
        print(format_plan(plan), flush=True)
        entry["total_estimate_s"] = plan["total_estimate_s"]

    # training + evaluation: each run gets a time cap from what is left of the training budget, which also
    # leaves the benchmarks twice their estimate (and 15 s) before the end of the whole budget
    parts = rows[: len(configs) + len(bench_models)]  # the small runs' and the benches' rows
    bench_reserve = 2 * sum(p["estimate_s"] for p in parts[len(configs) :]) + 15
    train_end = min(camp.elapsed() + train_budget_s, camp.budget_s - bench_reserve)
    rec["runs"] = {}
    for i, cfg in enumerate(configs):
        left = train_end - camp.elapsed()
        eval_left = sum(p["eval_s"] for p in parts[i : len(configs)])
        cap = (left - eval_left) / (len(configs) - i)
        name = f"train {cfg.run_id}"
        if cap <= 1.0:
            camp.skip(name, f"{left:.0f} s of the training budget left, {eval_left:.0f} s of evaluation still planned")
            continue
        cfg.train.max_seconds = cap
        curve_path = out / "curves" / f"{cfg.method}-s{cfg.seed}.json"
        with camp.part(name) as entry:
            entry.update({"steps_planned": cfg.train.steps, "time_cap_s": round(cap, 2)})

            def keep(curve, path=curve_path):
                atomic_write_json(path, curve)

            curve = train(cfg, work / cfg.run_id, device=str(dev), resume=False, command=camp.command, on_eval=keep)
            atomic_write_json(curve_path, curve)
            done = curve["points"][-1]["step"] if curve["points"] else 0
            entry.update({"steps_done": done, "time_capped": done < entry["steps_planned"]})
            if entry["time_capped"]:
                entry["status"] = "cut"
        log = work / cfg.run_id / "metrics.jsonl"
        if log.exists():
            rec["runs"][cfg.run_id] = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        camp.save()

    # benchmarks: the largest batch up to the maximum that fits, while the budget lasts
    from ..bench import format_report

    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()

    bench: dict[str, Any] = {"units": "ms per training step (median), MFU of peak dense bf16", "models": {}}
    est = {p["part"]: p for p in parts}
    for model in bench_models:
        name = f"bench {model}"
        need = est[name]["estimate_s"] * 2 + 5
        if camp.left() < need:
            camp.skip(name, f"{camp.left():.0f} s of the budget left, about {need:.0f} s needed")
            continue
        with camp.part(name) as entry:
            rep = bench_largest_batch(model, bench_batch, bench_steps, bench_warmup, str(dev), "bf16", overrides)
            bench["models"][model] = rep
            entry["batch"] = rep["batch"]
            print(format_report(rep), flush=True)
        atomic_write_json(out / "bench.json", bench)

    if axes:  # the long horizon and the token axis: each measured, sized and run on what is left
        gpu_axes.run_parts(camp, axes, all_params, dry_run, str(dev), tp, work, probe_s)
