"""``repro bench``: training-step time, throughput, memory and MFU of DiT vs TREAD vs stochastic depth.

Each method is the same model (``--model``, default DiT-S/2 at 32x32x4 latents, 256 tokens) trained
with SiT's linear-interpolant loss and AdamW for ``--steps`` timed steps after ``--warmup`` steps;
TREAD uses the paper's route (block 2 to depth-4, rate 0.5), stochastic depth skips the same blocks
per sample with probability 0.5. ``--scale micro`` takes instead the model, batch, objective and method
flags of that scale of params.yaml: the step the golden runs train. The step timed is the trainer's own
(:func:`repro.experiments.train.train_step`: draws, forward, loss, backward, AdamW, EMA), optionally compiled.
Reported per method:

- ms/step (median over the timed steps) and images/s, on the named device;
- peak memory: ``torch.cuda.max_memory_allocated`` on a GPU; on a CPU the process's peak resident
  set size (it only grows, so read it as "at most");
- MACs per step (forward + backward, counted on the meta device; FLOPs = 2 x MACs), achieved
  GFLOP/s, its fraction of the device's fp32 matmul rate measured in the same run (a 2048^3 product;
  the model's MLP product is shown too), and, on a GPU with a known peak, MFU = achieved / peak dense
  bf16 (or fp32) FLOP/s from the data sheet;
- for TREAD and stochastic depth: the measured per-step speedup over dense DiT next to the counted
  MAC ratio, the number TREAD's figure implies (about 1.64x for XL/2).

Timings are printed, never asserted.
"""

from __future__ import annotations

import resource
import statistics
import time
from types import SimpleNamespace

import torch

from ..models import StochasticDepth, config_for, train_step_macs, tread_routes
from ..objectives import make_objective
from ..provenance import provenance
from ..runtime import cpu_setup, device_name

# Dense peak FLOP/s (no sparsity) from the vendors' data sheets, by precision
PEAK_TFLOPS = {
    "H100": {"bf16": 989.4, "fp32": 66.9},  # SXM
    "H200": {"bf16": 989.4, "fp32": 66.9},
    "A100": {"bf16": 312.0, "fp32": 19.5},
}
METHODS = ("dit", "tread", "stochastic-depth")


def method_config(name: str, method: str, **overrides):
    cfg = config_for(name, **overrides)
    route = tread_routes(cfg.depth)[0]
    if method == "tread":
        return cfg.replace(routes=(route,))
    if method == "stochastic-depth":
        return cfg.replace(stochastic_depth=StochasticDepth(route.start, route.end, route.rate))
    if method == "dit":
        return cfg
    raise ValueError(f"methods: unknown value {method!r}; allowed: {', '.join(METHODS)}")


def peak_tflops(device: torch.device, precision: str) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peaks in PEAK_TFLOPS.items():
        if key in name:
            return peaks[precision]
    return None


def matmul_rate(m: int, k: int, n: int, device: torch.device, seconds: float = 0.5) -> float:
    """Achieved FLOP/s (2 m k n per product) of an fp32 (m, k) @ (k, n) product on ``device``: the median
    of repeated timings for about ``seconds`` in all."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=g).to(device)
    b = torch.randn(k, n, generator=g).to(device)
    out = torch.empty(m, n, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times, spent = [], 0.0
    for i in range(10_000):
        sync()
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        sync()
        dt = time.perf_counter() - t0
        if i >= 2:
            times.append(dt)
        spent += dt
        if spent > seconds and len(times) >= 5:
            break
    return 2 * m * k * n / statistics.median(times)


def bench_method(
    cfg, batch: int, steps: int, warmup: int, device: torch.device, precision: str, seed: int = 0, **kw
) -> tuple[float, float]:
    """Median seconds of the training step that ``repro train`` runs (draws, forward, loss, backward,
    AdamW, EMA) on fixed data, and the peak memory in MiB. ``objective`` (default: SiT's interpolant) and
    ``compile`` as keywords, and ``train`` (a scale's training settings: gradient clipping and EMA decay; by
    default none and 0.999, DiT's)."""
    from ..models import DiT
    from .train import RunState, draw_micro_batch, train_step

    torch.manual_seed(seed)
    model = DiT(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    state = RunState(model, DiT(cfg).to(device).requires_grad_(False).eval(), opt)
    objective = kw.get("objective") or make_objective("interpolant")
    net = torch.compile(model) if kw.get("compile") else model
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g).clamp(-1, 1).to(device)
    y = torch.randint(0, cfg.num_classes, (batch,), generator=g).to(device)

    train = kw.get("train") or SimpleNamespace(grad_clip=None, ema_decay=0.999)
    tc = SimpleNamespace(grad_clip=train.grad_clip, ema_decay=train.ema_decay, precision=precision)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        micro = draw_micro_batch(objective, model, x, y, torch.Generator().manual_seed(i))
        train_step(state, net, objective, [micro], tc)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    del model, opt, state
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return statistics.median(times), peak_mb


def run_bench(
    model: str,
    batch: int,
    steps: int,
    warmup: int,
    device: str | None,
    precision: str,
    methods=METHODS,
    *,
    scale: str | None = None,
    compile: bool = False,
    threads: int | None = None,
    **overrides,
) -> dict:
    """Time each method's training step; ``scale`` takes the model, batch and objective of that scale of
    params.yaml (and its methods' model flags) instead of ``model`` + ``overrides``. The same run measures
    the device's fp32 matmul rate (a 2048^3 product, and the model's own MLP product) to set the
    step's achieved FLOP/s against."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cpu_setup(dev, threads)
    if dev.type == "cpu":
        precision = "fp32"  # bf16 autocast on CPU measures the CPU's bf16 emulation, not the model
    peak = peak_tflops(dev, precision)
    configs = {}
    if scale is not None:
        overrides = {}  # the scale's model, not the command line's size
    for method in methods:
        if scale is not None:
            from ..build import resolve
            from ..config import load_params

            rc = resolve(load_params(), scale, method, 0)
            if rc.regularizer is not None:  # the bench times the bare step; a regularizer's work would be missing
                raise ValueError(
                    f"--methods: {method!r} trains with a regularizer, which the bench does not time; "
                    "allowed: methods without one"
                )
            configs[method] = (rc.model, make_objective(**rc.objective), rc.train)
            batch = rc.train.batch_size
            model = scale
        else:
            configs[method] = (method_config(model, method, **overrides), None, None)
    first = next(iter(configs.values()))[0]
    rows_mlp = batch * first.num_tokens
    rates = {
        "square_2048": matmul_rate(2048, 2048, 2048, dev),
        "mlp_fc1": matmul_rate(rows_mlp, first.hidden_size, int(first.hidden_size * first.mlp_ratio), dev),
    }
    rows = {}
    for method, (cfg, objective, train) in configs.items():
        sec, mem = bench_method(
            cfg, batch, steps, warmup, dev, precision, objective=objective, compile=compile, train=train
        )
        macs = train_step_macs(cfg, batch)
        achieved = 2 * macs / sec
        rows[method] = {
            "ms_per_step": 1e3 * sec,
            "images_per_s": batch / sec,
            "peak_memory_mb": mem,
            "macs_per_step": macs,
            "achieved_gflops": achieved / 1e9,
            "fraction_of_matmul_rate": achieved / rates["square_2048"],
            "achieved_tflops": achieved / 1e12,
            "mfu": achieved / 1e12 / peak if peak else None,
        }
    if "dit" in rows:
        for r in rows.values():
            r["measured_speedup_vs_dit"] = rows["dit"]["ms_per_step"] / r["ms_per_step"]
            r["mac_ratio_vs_dit"] = rows["dit"]["macs_per_step"] / r["macs_per_step"]
            r["speedup_over_mac_ratio"] = r["measured_speedup_vs_dit"] / r["mac_ratio_vs_dit"]
    return {
        "model": model,
        "overrides": overrides,
        "batch": batch,
        "steps": steps,
        "warmup": warmup,
        "device": device_name(dev),
        "precision": precision,
        "compiled": compile,
        "peak_tflops": peak,
        "matmul_gflops": {k: v / 1e9 for k, v in rates.items()},
        "torch": torch.__version__,
        "units": {
            "macs_per_step": "multiply-accumulates, forward + backward",
            "achieved_gflops": "1e9 FLOP/s, FLOPs = 2 x MACs",
            "matmul_gflops": "1e9 FLOP/s of one fp32 matmul on the same device, measured in the same run",
            "fraction_of_matmul_rate": "achieved_gflops / matmul_gflops.square_2048",
            "peak_memory_mb": "MiB (GPU: allocated; CPU: process peak RSS)",
        },
        "methods": rows,
        "provenance": provenance(None, device=device_name(dev), precision=precision, compiled=compile),
    }


def format_report(rep: dict) -> str:
    mm = rep["matmul_gflops"]
    lines = [
        f"{rep['model']} {rep['overrides'] or ''} batch {rep['batch']} on {rep['device']} ({rep['precision']}"
        f"{', compiled' if rep.get('compiled') else ''}), median of {rep['steps']} steps after {rep['warmup']} warm-up",
        f"matmul rate, this run: {mm['square_2048']:.1f} GFLOP/s (2048^3), {mm['mlp_fc1']:.1f} GFLOP/s (the MLP's "
        "first product); FLOPs = 2 x MACs",
    ]
    lines.append(
        f"{'method':<18}{'ms/step':>9}{'img/s':>8}{'peak MiB':>9}{'GMACs':>8}{'GFLOP/s':>9}{'of mm':>7}"
        f"{'MFU':>7}{'speedup':>9}{'MAC ratio':>10}"
    )
    for m, r in rep["methods"].items():
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        lines.append(
            f"{m:<18}{r['ms_per_step']:>9.1f}{r['images_per_s']:>8.1f}{r['peak_memory_mb']:>9.0f}"
            f"{r['macs_per_step'] / 1e9:>8.2f}{r['achieved_gflops']:>9.1f}{100 * r['fraction_of_matmul_rate']:>6.0f}%"
            f"{mfu:>7}{r.get('measured_speedup_vs_dit', float('nan')):>8.2f}x"
            f"{r.get('mac_ratio_vs_dit', float('nan')):>9.2f}x"
        )
    return "\n".join(lines)
