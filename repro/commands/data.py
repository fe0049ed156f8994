"""``repro data``: the data sets, prepared and checked: ``fashion-mnist`` (found or downloaded, verified against
its sha256, described in a manifest: :mod:`repro.data.fashion_mnist`) and ``latents`` (an ImageFolder encoded into
SD-VAE latent shards: :mod:`repro.data.latents`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..cli import add_command


def register(subparsers: Any) -> None:
    from ..data.latents import SD_VAE_SCALE

    p = add_command(subparsers, "data", run, "Prepare and check a data set: Fashion-MNIST, or ImageNet-style latents.")
    kinds = p.add_subparsers(dest="dataset", required=True, metavar="DATASET", parser_class=type(p))
    f = kinds.add_parser(
        "fashion-mnist",
        help="find, verify and describe Fashion-MNIST (python -m repro.data.fashion_mnist)",
        description="Find Fashion-MNIST (or download it when online), verify it and describe it.",
    )
    f.add_argument("--manifest", type=Path, default=None, help="write the description as JSON here")
    f.add_argument("--no-download", action="store_true", help="never download, even when online")
    f.set_defaults(func=fashion_mnist)
    lt = kinds.add_parser(
        "latents",
        help="encode an ImageFolder into SD-VAE latent shards (python -m repro.data.latents)",
        description="Encode an ImageFolder into SD-VAE latent shards.",
        allow_abbrev=False,
    )
    lt.add_argument("image_dir", type=Path, help="ImageFolder root: one subfolder per class")
    lt.add_argument("out_dir", type=Path)
    lt.add_argument("--vae", default="stabilityai/sd-vae-ft-ema", help="local directory or hub id (online only)")
    lt.add_argument("--image-size", type=int, default=256)
    lt.add_argument("--batch-size", type=int, default=32)
    lt.add_argument("--shard-size", type=int, default=10_000)
    lt.add_argument("--scale", type=float, default=SD_VAE_SCALE)
    lt.add_argument("--posterior", choices=("sample", "mean"), default="sample")
    lt.add_argument("--hflip", action="store_true", help="also encode each image mirrored (DiT trains on random flips)")
    lt.add_argument(
        "--val-per-class",
        type=int,
        default=0,
        help="hold out this many images of every class as the validation set (val.pt; never trained on)",
    )
    lt.add_argument("--seed", type=int, default=0)
    lt.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32", help="stored dtype")
    lt.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    lt.add_argument("--num-workers", type=int, default=4)
    lt.set_defaults(func=latents)


def run(args: argparse.Namespace) -> int:  # pragma: no cover - a DATASET is required, and each sets its own func
    raise ValueError("DATASET: none given; allowed: fashion-mnist, latents")


def fashion_mnist(args: argparse.Namespace) -> int:
    from ..data.fashion_mnist import SPLITS, DataCorruptError, DataNotFoundError, find_data_dir, load, manifest
    from ..io import atomic_write_text

    try:
        directory = find_data_dir(download=False if args.no_download else None)
        description = manifest()
    except (DataNotFoundError, DataCorruptError) as exc:  # no data here: status 1 (bad input is 2)
        print(exc, file=sys.stderr)
        return 1
    if args.manifest is not None:
        atomic_write_text(args.manifest, json.dumps(description, indent=2) + "\n")
    print(f"Fashion-MNIST verified in {directory}: " + ", ".join(f"{s} {len(load(s))}" for s in SPLITS))
    return 0


def latents(args: argparse.Namespace) -> int:
    import torch

    from ..data.latents import encode_image_folder, load_vae

    if not args.image_dir.is_dir():
        raise ValueError(f"image_dir: {args.image_dir} is not a folder (an ImageFolder root: one subfolder per class)")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    vae = load_vae(args.vae, device=device)
    manifest = encode_image_folder(
        args.image_dir,
        args.out_dir,
        vae,
        image_size=args.image_size,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
        scale=args.scale,
        posterior=args.posterior,
        hflip=args.hflip,
        seed=args.seed,
        dtype=getattr(torch, args.dtype),
        vae_source=str(args.vae),
        num_workers=args.num_workers,
        val_per_class=args.val_per_class,
        say=lambda text: print(text, flush=True),
    )
    held = manifest["validation"]["count"] if manifest.get("validation") else 0
    print(
        f"{manifest['count']} latents {manifest['latent_shape']} in {len(manifest['shards'])} shards and {held} "
        f"held-out validation latents -> {args.out_dir}"
    )
    return 0
