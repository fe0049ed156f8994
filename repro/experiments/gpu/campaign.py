"""The small-scale GPU campaign in one call of at most ``--budget-s`` seconds (``python -m repro.experiments.gpu
campaign``).

Install from the wheel folder whatever is not importable (:mod:`repro.experiments.gpu.wheels`; nothing from a registry),
point the data loader at the carried copy, print and save the plan (:mod:`repro.experiments.gpu.plan`: the FLOPs of
every part and its time at a stated throughput), train the small scale's runs (DiT, TREAD, SiT at equal training MACs)
with FID and validation-loss curves of the EMA weights, then ``repro bench`` DiT-S/2, -B/2 and -XL/2 at the largest
batch up to 256 that fits (:mod:`repro.experiments.gpu.batch`). The budget is a deadline polled between parts (no timer
interrupts a part): a part that would not fit in what is left, or comes after the deadline, is skipped and recorded as
such; every run gets a time cap from what is left, checked by the training loop between its steps. Whatever exists is
always written to ``--out``:

- ``plan.json``: assumptions and per-part FLOPs and estimated seconds;
- ``campaign.json``: provenance (GPU, driver, torch, CUDA, precision, seed, command, commit), the status and
  seconds of every part, the installed wheels, each run's training log;
- ``curves/<method>-s<seed>.json``: the runs' curves (written after every evaluation);
- ``bench.json``: one ``repro bench`` report per model;
- ``long.json``, ``tokens.json`` (with ``--parts long tokens``): each part's sizing, runs, curves and targets;
- ``log.txt``: everything the command printed.

``parts`` picks what runs (default ``small bench``, the above); ``long`` and ``tokens`` are the long horizon to 17.5x
the core budget (scale ``gpu-long``) and the token axis at 256 tokens (scale ``gpu-tokens``), each sized from
counted FLOPs and the step measured in its own first ``probe_s`` seconds (:mod:`repro.experiments.gpu.axes`).
``dry_run`` runs the same code at a tiny size on the CPU (the tests run it).
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
    build_plan,
    format_plan,
    run_plan,
    small_configs,
)
from .record import Campaign, Tee, campaign_provenance
from .wheels import MANIFEST, install_missing, use_carried_data

PARTS = ("small", "bench", "long", "tokens")  # what parts may name; long and tokens: repro/experiments/gpu/axes.py
DEFAULT_PARTS = ("small", "bench")


@dataclass(frozen=True)
class CampaignOptions:
    """What one campaign call runs and within what budget: the options of ``python -m repro.experiments.gpu campaign``
    (``bench_steps``, ``bench_warmup`` and ``command`` have no flag). Paths are kept as :class:`~pathlib.Path`."""

    out: Path
    budget_s: float = 540.0
    train_budget_s: float = 420.0
    wheels: Path | None = DEFAULT_WHEELS
    work: Path | None = None
    params: Path = PARAMS
    dry_run: bool = False
    device: str | None = None
    mfu: float = 0.30
    peak_tflops: float | None = None
    bench_max_batch: int = 256
    bench_steps: int = 10
    bench_warmup: int = 3
    seed: int | None = None
    parts: tuple[str, ...] = DEFAULT_PARTS
    probe_s: float = 5.0
    command: str | None = None

    def __post_init__(self) -> None:
        for name in ("out", "wheels", "work", "params"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        object.__setattr__(self, "parts", tuple(self.parts))
        if unknown := sorted(set(self.parts) - set(PARTS)):
            raise ValueError(f"parts: {unknown} are not parts of the campaign; choose from {list(PARTS)}")


@dataclass
class _Prepared:
    """What the campaign settled before its plan: the device, the runs and benches asked for, their sizes."""

    device: Any  # a torch.device
    params: dict[str, Any]
    configs: list  # the small scale's runs (empty when not asked)
    bench_models: Sequence[str]
    axes: list[str]  # the long / token parts asked, in the order they run
    tp: Throughput
    work: Path
    bench_batch: int
    bench_steps: int
    bench_warmup: int
    probe_s: float
    overrides: dict[str, Any]  # the benches' model size


def run_gpu_campaign(options: CampaignOptions, clock: Callable[[], float] = time.monotonic) -> int:
    """The whole campaign within ``options.budget_s`` seconds on ``clock``; returns 0 when every part finished, 1
    when one failed, was cut or was skipped. The budget is a deadline polled between parts (:class:`Campaign`);
    what finished is written whatever happens."""
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    command = options.command or " ".join(["python -m repro.experiments.gpu", *sys.argv[1:]])
    camp = Campaign(out, options.budget_s, command, clock)
    log_file = open(out / "log.txt", "a", buffering=1)  # noqa: SIM115 - closed in finally
    old_out, old_err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = Tee(old_out, log_file), Tee(old_err, log_file)
    try:
        _campaign(camp, options)
        camp.record["status"] = "done"
    except Exception as exc:
        camp.record["status"] = "failed"
        camp.record["error"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    finally:
        bad = [p["part"] for p in camp.record["parts"] if p["status"] != "done"]
        if camp.record["status"] == "done" and bad:
            camp.record["status"] = "cut" if camp.ran_out_s is not None else "incomplete"
        if camp.ran_out_s is not None:
            print(f"\nthe campaign's budget of {options.budget_s:g} s ran out at {camp.ran_out_s:.1f} s: the parts "
                  "that did not fit in what was left were skipped; what finished is saved")  # fmt: skip
        camp.record["not_done"] = bad
        camp.save()
        print(f"campaign {camp.record['status']} in {camp.elapsed():.1f} s; outputs in {out}")
        sys.stdout, sys.stderr = old_out, old_err
        log_file.close()
    return 0 if camp.record["status"] == "done" else 1


def _campaign(camp: Campaign, options: CampaignOptions) -> None:
    """The parts in order: install, plan, the small runs, the benches, then the long and token parts."""
    work = options.work or Path(tempfile.mkdtemp(prefix="repro-small-"))
    camp.record["work"] = str(work)
    if not camp.fits("install"):
        return
    _install(camp, options.wheels, work)
    prep = _prepare(camp, options, work)
    if not camp.fits("plan"):
        for name in _part_names(prep):  # nothing is sized without the plan: the rest is skipped, and said so
            camp.fits(name)
        return
    rows = _plan(camp, options, prep)
    n_runs, n_bench = len(prep.configs), len(prep.bench_models)
    run_rows, bench_rows = rows[:n_runs], rows[n_runs : n_runs + n_bench]
    # training + evaluation end where the training budget does, or earlier so as to leave the benchmarks twice
    # their estimate (and 15 s) before the end of the whole budget
    bench_reserve = 2 * sum(p["estimate_s"] for p in bench_rows) + 15
    train_end = min(camp.elapsed() + options.train_budget_s, camp.budget_s - bench_reserve)
    _train_small(camp, prep, run_rows, train_end)
    _bench(camp, prep, bench_rows)
    if prep.axes:  # the long horizon and the token axis: each measured, sized and run on what is left
        gpu_axes.run_parts(camp, prep.axes, prep.params, options.dry_run, str(prep.device), prep.tp, work, prep.probe_s)


def _part_names(prep: _Prepared) -> list[str]:
    """The names of the parts after the plan, as the record names them."""
    names = [f"train {cfg.run_id}" for cfg in prep.configs] + [f"bench {m}" for m in prep.bench_models]
    return names + [f"{part} ({gpu_axes.SCALES[part]})" for part in prep.axes]


def _install(camp: Campaign, wheels: Path | None, work: Path) -> None:
    """Install what the wheel folder holds and this interpreter lacks; point the data loader at its copy."""
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


def _prepare(camp: Campaign, options: CampaignOptions, work: Path) -> _Prepared:
    """The device (set up as training sets it), the runs and benches asked for, the throughput the plan assumes,
    and the call's provenance in the record."""
    import torch

    from ...config import load_params
    from ...runtime import cpu_setup

    dry_run, parts = options.dry_run, options.parts
    dev = torch.device(options.device or ("cuda" if torch.cuda.is_available() and not dry_run else "cpu"))
    cpu_setup(dev)
    if dry_run:
        torch.set_num_threads(DRY_TRAIN["threads"])  # tiny matrices: one thread beats two contended ones
    params = load_params(options.params)
    configs = small_configs(params, dry_run, options.seed)
    precision = configs[0].train.precision if dev.type == "cuda" else "fp32"
    if dev.type == "cuda":  # as train() sets it, so the record states what the runs use
        torch.backends.cuda.matmul.allow_tf32 = configs[0].train.tf32
    camp.record["provenance"] = campaign_provenance(dev, precision, configs[0].seed, camp.command, dry_run)
    camp.record["parts_asked"] = list(parts)
    peak = options.peak_tflops or (H200_BF16_TFLOPS if dev.type == "cuda" else CPU_ASSUMED_TFLOPS)
    return _Prepared(
        device=dev,
        params=params,
        configs=configs if "small" in parts else [],
        bench_models=BENCH_MODELS if "bench" in parts else (),
        axes=[p for p in ("tokens", "long") if p in parts],
        tp=Throughput(peak, options.mfu, eval_overhead_s=2.0 if dev.type == "cuda" else 0.3),
        work=work,
        bench_batch=min(options.bench_max_batch, 4) if dry_run else options.bench_max_batch,
        bench_steps=1 if dry_run else options.bench_steps,
        bench_warmup=0 if dry_run else options.bench_warmup,
        probe_s=min(options.probe_s, gpu_axes.DRY_PROBE_S) if dry_run else options.probe_s,
        overrides={**BENCH_SIZE, **(DRY_BENCH if dry_run else {})},
    )


def _plan(camp: Campaign, options: CampaignOptions, prep: _Prepared) -> list[dict[str, Any]]:
    """``plan.json`` and its table: every part's counted FLOPs and seconds at the stated throughput."""
    from ...io import atomic_write_json

    with camp.part("plan") as entry:
        tp = prep.tp
        rows = [run_plan(cfg, tp) for cfg in prep.configs]
        rows += [
            bench_plan(m, prep.bench_batch, prep.bench_steps, prep.bench_warmup, tp, prep.overrides)
            for m in prep.bench_models
        ]
        rows += gpu_axes.plan_rows(prep.params, options.dry_run, tp, prep.axes)
        device = camp.record["provenance"]["device"]
        plan = build_plan(rows, tp, device, prep.device.type == "cuda", camp.budget_s, options.train_budget_s)
        atomic_write_json(camp.out / "plan.json", plan)
        print(format_plan(plan), flush=True)
        entry["total_estimate_s"] = plan["total_estimate_s"]
    if entry["status"] != "done":
        raise RuntimeError(f"plan failed: {entry.get('error')}")
    return rows


def _train_small(camp: Campaign, prep: _Prepared, rows: list[dict[str, Any]], train_end: float) -> None:
    """The small runs, each with a time cap from what is left until ``train_end`` (on the campaign's clock) after
    the evaluations still planned, shared equally by the runs still to go."""
    from ...io import atomic_write_json
    from ..train import train

    camp.record["runs"] = {}
    configs = prep.configs
    for i, cfg in enumerate(configs):
        left = train_end - camp.elapsed()
        eval_left = sum(p["eval_s"] for p in rows[i:])
        cap = (left - eval_left) / (len(configs) - i)
        name = f"train {cfg.run_id}"
        if not camp.fits(name):  # the deadline passed: the run is not started
            continue
        if cap <= 1.0:
            camp.skip(name, f"{left:.0f} s of the training budget left, {eval_left:.0f} s of evaluation still planned")
            continue
        cfg = cfg.with_train(max_seconds=cap)
        curve_path = camp.out / "curves" / f"{cfg.method}-s{cfg.seed}.json"
        with camp.part(name) as entry:
            entry.update({"steps_planned": cfg.train.steps, "time_cap_s": round(cap, 2)})

            def keep(curve, path=curve_path):
                atomic_write_json(path, curve)

            run_dir = prep.work / cfg.run_id
            curve = train(cfg, run_dir, device=str(prep.device), resume=False, command=camp.command, on_eval=keep)
            atomic_write_json(curve_path, curve)
            done = curve["points"][-1]["step"] if curve["points"] else 0
            entry.update({"steps_done": done, "time_capped": done < entry["steps_planned"]})
            if entry["time_capped"]:
                entry["status"] = "cut"
        log = prep.work / cfg.run_id / "metrics.jsonl"
        if log.exists():
            camp.record["runs"][cfg.run_id] = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
        camp.save()


def _bench(camp: Campaign, prep: _Prepared, rows: list[dict[str, Any]]) -> None:
    """The benchmarks: the largest batch up to the maximum that fits, while the budget lasts."""
    import torch

    from ...io import atomic_write_json
    from ..bench import format_report

    gc.collect()
    if prep.device.type == "cuda":
        torch.cuda.empty_cache()
    bench: dict[str, Any] = {"units": "ms per training step (median), MFU of peak dense bf16", "models": {}}
    est = {p["part"]: p for p in rows}
    for model in prep.bench_models:
        name = f"bench {model}"
        if not camp.fits(name, est[name]["estimate_s"] * 2 + 5):
            continue
        with camp.part(name) as entry:
            rep = bench_largest_batch(
                model, prep.bench_batch, prep.bench_steps, prep.bench_warmup, str(prep.device), "bf16", prep.overrides
            )
            bench["models"][model] = rep
            entry["batch"] = rep["batch"]
            print(format_report(rep), flush=True)
        atomic_write_json(camp.out / "bench.json", bench)
