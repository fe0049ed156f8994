"""``repro sample``: samples of a run or a checkpoint as one ADM ``.npz`` (:mod:`repro.experiments.sample`), under
torchrun too: every process runs this same command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..cli import add_command


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


def register(subparsers: Any) -> None:
    from ..experiments import sample

    doc = sample.__doc__.split("\n\n")[1] if sample.__doc__ else None
    # allow_abbrev=False: under torchrun a prefix could also be one of torchrun's options
    p = add_command(subparsers, "sample", run, doc, allow_abbrev=False)
    p.add_argument(
        "source", help="run directory, a run's checkpoint .pt, or an official DiT checkpoint (release or train.py)"
    )
    p.add_argument("--num-samples", type=_positive_int, default=64, help="number of samples (FID-50K: 50000)")
    p.add_argument("--seed", type=_nonnegative_int, default=0, help="seed of the noise (and of stochastic samplers)")
    p.add_argument("--steps", type=_positive_int, default=None, help="solver steps (default: the run's eval setting)")
    p.add_argument(
        "--cfg-scale", type=float, default=None, help="classifier-free guidance scale (default: the run's eval setting)"
    )
    p.add_argument("--weights", choices=sample.WEIGHTS, default="ema", help="which weights of the checkpoint")
    p.add_argument("--config", default=None, help="the run's config.json (default: found beside the checkpoint)")
    p.add_argument(
        "--vae", default=None, help="VAE folder for latent models (default: the one in the latents' manifest)"
    )
    p.add_argument(
        "--batch-size", type=_positive_int, default=256, help="samples per batch (the set depends on it, not on ranks)"
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--compile", action="store_true", help="torch.compile the forward (samples within float rounding)")
    p.add_argument("--out", default=None, help=".npz to write (default: RUN/samples/<settings>.npz)")
    p.add_argument("--grid", type=_nonnegative_int, default=64, help="samples in the PNG grid beside --out (0: none)")


def run(args: argparse.Namespace) -> int:
    import torch
    import torch.distributed as dist

    from ..experiments.sample import (
        Decoder,
        check_samples_out,
        default_out,
        find_checkpoint,
        is_latent_model,
        latents_path,
        load_for_sampling,
        sample_set,
    )
    from ..metrics.grid import save_grid
    from ..provenance import provenance as base_provenance
    from ..provenance import sha256_file
    from ..runtime import cpu_setup, device_name, dist_info, pick_device, setup_distributed

    if args.out is not None and not str(args.out).endswith(".npz"):
        print(f"repro sample: error: --out {args.out!r}: allowed: a path ending in .npz", file=sys.stderr)
        return 2
    rank, world, _ = dist_info()
    try:
        device = pick_device(args.device)
        ckpt, config = find_checkpoint(args.source, args.config)
        model, objective, run, step = load_for_sampling(ckpt, config, args.weights, device)
        decoder = Decoder(run, is_latent_model(run, model), args.vae, device)
    except ValueError as e:
        print(f"repro sample: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    cpu_setup(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    rank, world = setup_distributed(device)
    ev = run.get("eval", {})
    steps = args.steps if args.steps is not None else ev.get("sample_steps") or objective.default_steps
    scale = args.cfg_scale if args.cfg_scale is not None else ev.get("guidance_scale", 1.0)
    out = (
        Path(args.out)
        if args.out
        else default_out(Path(args.source), ckpt, args.weights, steps, scale, args.num_samples, args.seed)
    )
    try:
        check_samples_out(out)
    except ValueError as e:
        print(f"repro sample: error: {e}", file=sys.stderr)
        return 2
    plan = {
        "checkpoint": str(ckpt),
        "checkpoint_sha256": sha256_file(ckpt) if rank == 0 else None,
        "weights": args.weights,
        "objective": objective.to_dict(),
        "steps": steps,
        "guidance_scale": scale,
        "seed": args.seed,
        "num_samples": args.num_samples,
        "batch_size": args.batch_size,
        "decoder": decoder.info,
        "compiled": args.compile,
    }
    provenance = base_provenance(
        args.invocation,
        device=device_name(device),
        seed=args.seed,
        source=str(args.source),
        run_id=run.get("run_id"),
        run_config={k: run[k] for k in ("scale", "method", "model", "data", "train") if k in run},
        official_checkpoint=run.get("official_checkpoint"),
        step=step,
        world_size=world,
        cuda=torch.version.cuda if device.type == "cuda" else None,
        gpu_count=world if device.type == "cuda" else 0,
        sampler={"objective": objective.to_dict(), "steps": steps, "guidance_scale": scale, "guided_channels": "all"},
        labels="class-balanced: sample i has label i % num_classes",
        noise="sample i from a generator seeded by (seed, i); batch b's sampler noise by (seed, b)",
        **{
            k: plan[k]
            for k in ("checkpoint", "checkpoint_sha256", "weights", "num_samples", "batch_size", "decoder", "compiled")
        },
    )
    say = (lambda text: print(text, flush=True)) if rank == 0 else (lambda text: None)
    try:
        wrote = sample_set(
            model,
            objective,
            decoder,
            out,
            num=args.num_samples,
            seed=args.seed,
            steps=steps,
            guidance_scale=scale,
            batch_size=args.batch_size,
            device=device,
            rank=rank,
            world=world,
            plan=plan,
            provenance=provenance,
            compile=args.compile,
            say=say,
        )
    except ValueError as e:  # e.g. guidance for a model trained without a null label
        print(f"repro sample: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if not wrote:
        return 0
    written = [str(out)]
    if decoder.latent:
        written.append(str(latents_path(out)))
    if args.grid:
        from ..metrics.adm import npz_arrays

        first = next(npz_arrays(out)["arr_0"].batches(args.grid))
        grid = out.with_suffix(".png")
        classes = model.config.num_classes
        save_grid(first.transpose(0, 3, 1, 2), grid, nrow=classes if classes <= 16 else None)
        written.append(str(grid))
    who = run.get("run_id") or ckpt.name
    print(
        f"{args.num_samples} samples of {who} (step {step}, {args.weights} weights, {world} process(es)): "
        + ", ".join(written)
    )
    return 0
