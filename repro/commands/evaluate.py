"""``repro evaluate``: sample quality of a folder or array of samples (:mod:`repro.metrics.fid`, and
:mod:`repro.metrics.adm` against an ADM reference batch)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ..cli import add_command

DESCRIPTION = (
    "Metrics of a folder of images or an .npy/.npz array of samples. Against a Fashion-MNIST split "
    "(uint8 in [0, 255], or floats in the range given by --range; N x 1 x 32 x 32): FID, KID and precision/recall "
    "in the feature network's space, via torch-fidelity. Against an ADM reference batch (--reference REF.npz, e.g. "
    "VIRTUAL_imagenet256_labeled.npz; RGB samples of any size, arr_0 as ADM stores them): FID, sFID, Inception "
    "Score and precision/recall as ADM's evaluator defines them, on torch-fidelity's Inception (--weights FILE)."
)


def register(subparsers: Any) -> None:
    from ..data.fashion_mnist import SPLITS
    from ..metrics.fid import FMNIST, INCEPTION, METRICS, VALUE_RANGES

    p = add_command(subparsers, "evaluate", run, DESCRIPTION, allow_abbrev=False)
    p.add_argument("samples", type=Path, help="folder of .png/.jpg, or .npy / .npz file")
    p.add_argument(
        "--reference",
        default="test",
        help=f"a Fashion-MNIST split ({', '.join(SPLITS)}) or an ADM reference batch (.npz) (default: test)",
    )
    p.add_argument("--reference-size", type=int, default=None, help="use the first N reference images (a split)")
    p.add_argument(
        "--metrics",
        default=None,
        help=f"comma-separated subset of {','.join(METRICS)} (a split) or fid,sfid,is,prc (an ADM batch) "
        "(default: all of them)",
    )
    p.add_argument(
        "--feature-extractor",
        choices=(FMNIST, INCEPTION),
        default=None,
        help="(default: fmnist for a split, inception-v3-compat for an ADM batch)",
    )
    p.add_argument("--weights", type=Path, default=None, help="feature-network (or Inception) weights file")
    p.add_argument(
        "--cache-dir", type=Path, default=None, help="cache root (default: $REPRO_CACHE_DIR or ~/.cache/repro)"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=100, help="images per Inception forward (an ADM batch)")
    p.add_argument("--seed", type=int, default=2020, help="seed of KID's subsets")
    p.add_argument("--recursive", action="store_true", help="look for images in subfolders too")
    p.add_argument(
        "--range",
        dest="value_range",
        choices=tuple(VALUE_RANGES),
        default=None,
        help="value range of float samples (required for floats; uint8 is [0, 255])",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the result to this file")


def _is_adm_reference(reference: str) -> bool:
    from ..data.fashion_mnist import SPLITS

    return reference not in SPLITS


def _metric_list(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(m.strip() for m in text.split(",") if m.strip())


def _adm(args: argparse.Namespace) -> dict:
    """``repro evaluate SAMPLES --reference REF.npz``: the options checked, then ADM's metrics."""
    from ..data.fashion_mnist import SPLITS
    from ..metrics import fid

    reference = Path(args.reference)
    if reference.suffix != ".npz":
        raise ValueError(
            f"--reference {args.reference!r} is not allowed; a split ({', '.join(SPLITS)}) or an ADM reference "
            "batch (.npz)"
        )
    if args.feature_extractor not in (None, fid.INCEPTION):
        raise ValueError(f"--feature-extractor {args.feature_extractor}: an ADM reference batch needs {fid.INCEPTION}")
    if args.value_range is not None or args.reference_size is not None:
        raise ValueError("--range and --reference-size apply to a Fashion-MNIST split, not to an ADM reference batch")
    return fid.adm_metrics(
        Path(args.samples),
        reference,
        metrics=_metric_list(args.metrics),
        weights=args.weights,
        device=args.device,
        batch_size=args.batch_size,
        recursive=args.recursive,
    )


def run(args: argparse.Namespace) -> int:
    from ..io import atomic_write_text
    from ..metrics import fid

    start = time.perf_counter()
    try:
        if _is_adm_reference(args.reference):
            result = _adm(args)
        else:
            samples = fid.load_samples(args.samples, recursive=args.recursive, value_range=args.value_range)
            result = fid.compute_metrics(
                samples,
                args.reference,
                _metric_list(args.metrics) or fid.METRICS,
                reference_size=args.reference_size,
                feature_extractor=args.feature_extractor or fid.FMNIST,
                weights=args.weights,
                cache_root=args.cache_dir,
                device=args.device,
                seed=args.seed,
            )
    except (OSError, ValueError) as exc:
        where = f"{args.samples}: " if isinstance(exc, fid.TooFewImages) else ""
        print(f"repro evaluate: error: {where}{' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    adm = _is_adm_reference(args.reference)
    report = {
        "samples": str(args.samples),
        "reference": args.reference,
        "feature_extractor": args.feature_extractor or (fid.INCEPTION if adm else fid.FMNIST),
        **result,
        "seconds": round(time.perf_counter() - start, 2),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        atomic_write_text(args.json, text + "\n")
    return 0
