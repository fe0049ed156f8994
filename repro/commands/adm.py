"""``repro adm reference IMAGE_DIR OUT.npz``: an ADM-layout reference batch of an ImageFolder
(:func:`repro.metrics.adm.write_reference`), for ``repro evaluate SAMPLES --reference OUT.npz``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..cli import add_command


def register(subparsers: Any) -> None:
    p = add_command(
        subparsers,
        "adm",
        run,
        "ADM's evaluation data: a reference batch (arr_0, mu, sigma, mu_s, sigma_s) of an ImageFolder, for "
        "`repro evaluate SAMPLES --reference REF.npz` (`python -m repro.metrics.adm` runs this command).",
        allow_abbrev=False,
    )
    what = p.add_subparsers(dest="what", required=True, metavar="WHAT", parser_class=type(p))
    r = what.add_parser(
        "reference", help="write a reference batch (arr_0, mu, sigma, mu_s, sigma_s)", allow_abbrev=False
    )
    r.add_argument("image_dir", type=Path, help="ImageFolder root")
    r.add_argument("out", type=Path, help=".npz to write")
    r.add_argument("--image-size", type=int, default=256)
    r.add_argument("--limit", type=int, default=None, help="the first N images only (ADM's batches hold 10,000)")
    r.add_argument("--weights", type=Path, default=None, help="Inception weights (torch-fidelity's file)")
    r.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    r.add_argument("--batch-size", type=int, default=100)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..metrics.adm import image_folder_array, write_reference

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    images = image_folder_array(args.image_dir, args.image_size, args.limit)
    write_reference(images, args.out, weights=args.weights, device=device, batch_size=args.batch_size)
    print(json.dumps({"out": str(args.out), "images": len(images), "image_size": args.image_size}))
    return 0
