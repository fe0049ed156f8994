"""``repro sample``: samples of a trained run (or one checkpoint) as an ``.npz`` that ``repro evaluate`` reads.

The source is a run directory (``config.json`` and ``checkpoints/last.pt``) or a checkpoint file whose
run directory holds ``config.json`` (``--config`` names another). The EMA weights are used unless
``--weights model``. The sampler is the run's objective with its settings; ``--steps`` and
``--cfg-scale`` default to the run's evaluation settings. Noise comes from ``--seed`` alone and the
labels cycle through the classes (class-balanced), so the same command gives the same samples.

The ``.npz`` holds ``samples`` (uint8, N x C x H x W, clamped from [-1, 1]), ``labels`` (int64) and
``provenance`` (a JSON string: command, source, checkpoint step, weights, sampler settings, seed,
torch version, device). Beside it, a PNG grid of the first ``--grid`` samples (grey or RGB data only;
latents need decoding first).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

WEIGHTS = ("ema", "model")


def find_checkpoint(source: str | Path, config: str | Path | None = None) -> tuple[Path, Path]:
    """``(checkpoint, config.json)`` of a run directory or a checkpoint file."""
    source = Path(source)
    if source.is_dir():
        ckpt = source / "checkpoints" / "last.pt"
        if not ckpt.is_file():
            raise ValueError(f"source: {source} has no checkpoints/last.pt; allowed: a run directory or a .pt file")
        candidates = [source / "config.json"]
    elif source.is_file():
        ckpt = source
        candidates = [source.parent.parent / "config.json", source.parent / "config.json"]
    else:
        raise ValueError(f"source: {source} does not exist; allowed: a run directory or a checkpoint file")
    if config is not None:
        candidates = [Path(config)]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise ValueError(f"config: none of {', '.join(map(str, candidates))} exists; pass --config RUN/config.json")
    return ckpt, found


def load_for_sampling(ckpt_path: Path, config_path: Path, weights: str = "ema", device: str | torch.device = "cpu"):
    """``(model, objective, run config dict, checkpoint step)`` with ``weights`` loaded strictly."""
    from .models import DiT, DiTConfig
    from .objectives import make_objective

    if weights not in WEIGHTS:
        raise ValueError(f"weights: {weights!r}; allowed: {', '.join(WEIGHTS)}")
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, or holding non-tensor objects
        raise ValueError(
            f"checkpoint: {ckpt_path} cannot be read ({type(e).__name__}); allowed: a checkpoint written by "
            "repro train (tensors and plain data only)"
        ) from None
    if not isinstance(ckpt, dict) or "config" not in ckpt or weights not in ckpt:
        have = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"checkpoint: {ckpt_path} has no {weights!r} weights (holds {have}); try --weights model")
    run = json.loads(Path(config_path).read_text())
    model = DiT(DiTConfig(**ckpt["config"]))
    model.load_state_dict(ckpt[weights], strict=True)
    model = model.to(device).eval()
    objective = make_objective(**run["objective"])
    return model, objective, run, ckpt.get("step")


@torch.no_grad()
def draw(
    model,
    objective,
    num: int,
    seed: int,
    steps: int | None = None,
    guidance_scale: float = 1.0,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    compile: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``num`` samples in [-1, 1] (float32, on CPU) and their labels; noise and labels depend on ``seed`` only.

    On a CPU each forward runs on slices of the batch in parallel one-thread workers, one per thread of the
    process (bitwise the same samples); ``compile`` runs it through ``torch.compile`` instead (the same draws,
    samples within float rounding; worth its compilation only for many samples)."""
    cfg = model.config
    workers = torch.get_num_threads() if torch.device(device).type == "cpu" and not compile else 1
    g = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn(num, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g)
    labels = torch.arange(num) % cfg.num_classes
    out = []
    for i in range(0, num, batch_size):
        sg = torch.Generator(device="cpu").manual_seed(seed + 1 + i)
        x = objective.sample(
            model,
            noise[i : i + batch_size].to(device),
            labels[i : i + batch_size].to(device),
            steps=steps,
            guidance_scale=guidance_scale,
            generator=sg,
            compile=compile,
            workers=workers,
        )
        out.append(x.float().cpu())
    return torch.cat(out), labels


def save_samples(path: str | Path, samples: torch.Tensor, labels: torch.Tensor, provenance: dict[str, Any]) -> Path:
    """The ``.npz`` that ``repro evaluate`` reads, written atomically."""
    from .io import atomic_write_bytes
    from .metrics.grid import to_uint8

    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        samples=to_uint8(samples),
        labels=labels.numpy().astype(np.int64),
        provenance=np.array(json.dumps(provenance, sort_keys=True)),
    )
    return atomic_write_bytes(path, buf.getvalue())


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not an integer >= 1")
    return value


def _nonnegative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not an integer >= 0")
    return value


def register_cli(subparsers: Any) -> argparse.ArgumentParser:
    from .cli import add_command

    p = add_command(subparsers, "sample", _run_cli, __doc__.split("\n\n")[1] if __doc__ else None)
    p.add_argument("source", help="run directory (config.json, checkpoints/last.pt) or a checkpoint .pt file")
    p.add_argument("--num", type=_positive_int, default=64, help="number of samples")
    p.add_argument("--seed", type=_nonnegative_int, default=0, help="seed of the noise (and of stochastic samplers)")
    p.add_argument("--steps", type=_positive_int, default=None, help="solver steps (default: the run's eval setting)")
    p.add_argument(
        "--cfg-scale", type=float, default=None, help="classifier-free guidance scale (default: the run's eval setting)"
    )
    p.add_argument("--weights", choices=WEIGHTS, default="ema", help="which weights of the checkpoint")
    p.add_argument("--config", default=None, help="the run's config.json (default: found beside the checkpoint)")
    p.add_argument("--batch-size", type=_positive_int, default=256, help="samples per forward pass")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--compile", action="store_true", help="torch.compile the forward (samples within float rounding)")
    p.add_argument("--out", default="samples.npz", help=".npz to write")
    p.add_argument("--grid", type=_nonnegative_int, default=64, help="samples in the PNG grid beside --out (0: none)")
    return p


def _run_cli(args: argparse.Namespace) -> int:
    from .metrics.grid import save_grid
    from .runtime import cpu_setup, device_name, pick_device

    out = Path(args.out)
    if out.suffix != ".npz":
        print(f"repro sample: error: --out {args.out!r}: allowed: a path ending in .npz", file=sys.stderr)
        return 2
    try:
        device = pick_device(args.device)
        ckpt, config = find_checkpoint(args.source, args.config)
        model, objective, run, step = load_for_sampling(ckpt, config, args.weights, device)
    except ValueError as e:
        print(f"repro sample: error: {e}", file=sys.stderr)
        return 2
    cpu_setup(device)
    ev = run.get("eval", {})
    steps = args.steps if args.steps is not None else ev.get("sample_steps")
    scale = args.cfg_scale if args.cfg_scale is not None else ev.get("guidance_scale", 1.0)
    try:
        samples, labels = draw(
            model, objective, args.num, args.seed, steps, scale, args.batch_size, device, compile=args.compile
        )
    except ValueError as e:  # e.g. guidance for a model trained without a null label
        print(f"repro sample: error: {e}", file=sys.stderr)
        return 2
    provenance = {
        "command": "repro " + " ".join(sys.argv[1:]),
        "source": str(args.source),
        "checkpoint": str(ckpt),
        "step": step,
        "run_id": run.get("run_id"),
        "weights": args.weights,
        "objective": objective.to_dict(),
        "steps": steps,
        "guidance_scale": scale,
        "compiled": args.compile,
        "seed": args.seed,
        "num": args.num,
        "torch": torch.__version__,
        "device": device_name(device),
    }
    save_samples(out, samples, labels, provenance)
    written = [str(out)]
    if args.grid and samples.shape[1] in (1, 3):
        grid = out.with_suffix(".png")
        save_grid(samples[: args.grid], grid)
        written.append(str(grid))
    print(f"{args.num} samples of {run.get('run_id')} (step {step}, {args.weights} weights): {', '.join(written)}")
    return 0
