"""FID, KID and precision/recall of generated Fashion-MNIST samples, all from ``torch_fidelity.calculate_metrics``.

Conventions:

- samples: ``(N, 1, 32, 32)`` (or ``(N, 32, 32)``, ``(N, 32, 32, 1)``; 28x28 is padded like the data),
  either uint8 in ``[0, 255]`` or float in ``[-1, 1]`` (converted with rounding; values outside are
  clamped), as a torch tensor or numpy array;
- the reference is a split of Fashion-MNIST (``"test"`` by default, optionally its first
  ``reference_size`` images) or a tensor of images in the same conventions;
- torch-fidelity's roles: ``input1`` is the generated set, ``input2`` the real one; precision is the
  share of samples inside the reference manifold, recall the share of reference images inside the
  samples' manifold (k = 3 nearest neighbours);
- features come from the domain classifier of :mod:`repro.metrics.featurenet` (``"fmnist"``), or from
  torch-fidelity's ``"inception-v3-compat"`` for users who have its weights file (images are then handed
  over as 3 equal channels and resized by the extractor);
- the reference's features are cached under ``<cache dir>/fidelity`` (see :func:`repro.data.cache_dir`)
  in ``.npz`` files (read with ``allow_pickle=False``, so a cache file cannot run code) whose names carry
  a hash of the reference data and one of the feature weights, each with a JSON record of its key and
  sha256; a repeated call only extracts the samples' features. torch-fidelity itself unpickles its cache
  files with ``weights_only=False``, so it never sees that folder: each call hands it a fresh private
  folder holding only what this module wrote there from the checked ``.npz``. A user's Inception
  weights file must load weights-only before torch-fidelity (which unpickles it fully) gets it.

Results are returned under short keys: ``fid``, ``kid``, ``kid_std``, ``precision``, ``recall``,
``f_score``, plus ``num_samples`` and ``num_reference``.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from repro.data.fashion_mnist import FILES, PAYLOAD_SHA256, SPLITS, cache_dir, load, to_float, to_uint8
from repro.io import atomic_write_json
from repro.metrics import featurenet
from repro.provenance import sha256_file

METRICS = ("fid", "kid", "prc")
FMNIST = "fmnist"
INCEPTION = "inception-v3-compat"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
SPLIT_SIZES = {"train": 60_000, "test": 10_000}

_KEYS = {
    "frechet_inception_distance": "fid",
    "kernel_inception_distance_mean": "kid",
    "kernel_inception_distance_std": "kid_std",
    "precision": "precision",
    "recall": "recall",
    "f_score": "f_score",
}


def as_uint8_images(samples: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Samples in any accepted layout and range (see the module docstring) as uint8 ``(N, 1, 32, 32)``."""
    x = torch.as_tensor(np.asarray(samples)) if isinstance(samples, np.ndarray) else samples
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"samples must be a torch.Tensor or numpy array, got {type(samples).__name__}")
    x = x.detach().cpu()
    if x.dim() == 3:
        x = x.unsqueeze(1)
    elif x.dim() == 4 and x.shape[1] != 1 and x.shape[-1] == 1:
        x = x.permute(0, 3, 1, 2)
    if x.dim() != 4 or x.shape[1] != 1 or x.shape[2] != x.shape[3] or x.shape[2] not in (28, 32) or len(x) == 0:
        raise ValueError(
            f"samples must be N >= 1 grey images (N, 1, 32, 32) (or 28x28), got shape {tuple(x.shape)}; RGB samples "
            "of any size are scored with Inception against an ADM reference batch (repro evaluate --reference REF.npz)"
        )
    if x.dtype != torch.uint8:
        if not x.is_floating_point():
            raise ValueError(f"samples must be uint8 in [0, 255] or float in [-1, 1], got dtype {x.dtype}")
        x = to_uint8(x)
    if x.shape[-1] == 28:
        x = F.pad(x, (2, 2, 2, 2), value=0)
    return x.contiguous()


class ImageDataset(Dataset):
    """uint8 images ``(N, 1, H, W)`` served one by one as torch-fidelity wants them, optionally as 3 channels."""

    def __init__(self, images: torch.Tensor, channels: int = 1):
        self.images, self.channels = images, channels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        x = self.images[i]
        return x.expand(self.channels, -1, -1).contiguous() if self.channels != 1 else x


class _SplitDataset(ImageDataset):
    """The first ``size`` images of a split, read only if torch-fidelity needs them (a cache miss)."""

    def __init__(self, split: str, size: int, channels: int = 1):
        super().__init__(torch.empty(0, 1, 32, 32, dtype=torch.uint8), channels)
        self.split, self.size = split, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> torch.Tensor:
        if len(self.images) == 0:
            self.images = load(self.split).images[: self.size]
        return super().__getitem__(i)


def _tensor_hash(images: torch.Tensor) -> str:
    return hashlib.sha256(images.numpy().tobytes()).hexdigest()


def _reference(reference: str | torch.Tensor | np.ndarray, size: int | None, channels: int) -> tuple[Dataset, str]:
    """The reference as a dataset and a cache key that changes whenever its content does."""
    if isinstance(reference, str):
        if reference not in SPLITS:
            raise ValueError(f"reference must be one of {SPLITS} or an image tensor, got {reference!r}")
        total = SPLIT_SIZES[reference]
        n = total if size is None else int(size)
        if not 1 <= n <= total:
            raise ValueError(f"reference_size must be in 1..{total} for the {reference} split, got {size}")
        key = f"fmnist-{reference}-{PAYLOAD_SHA256[FILES[reference][0]][:12]}-n{n}"
        return _SplitDataset(reference, n, channels), key
    images = as_uint8_images(reference)
    if size is not None:
        images = images[: int(size)]
    return ImageDataset(images, channels), f"tensor-{_tensor_hash(images)[:16]}-n{len(images)}"


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


@functools.lru_cache(maxsize=4)
def _check_weights_only(path: str, size: int, mtime_ns: int) -> None:
    """torch-fidelity loads an Inception weights file with ``weights_only=False`` (a full unpickle, which can run
    code); refuse a file that does not load weights-only, i.e. one that holds more than tensors and plain data."""
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ... on such files
        raise ValueError(
            f"{path}: the Inception weights do not load weights-only ({type(e).__name__}); "
            "refusing to hand the file to torch-fidelity, which would unpickle it fully"
        ) from None


CACHE_FORMAT = 1
_FEATURES = "-features-"


def _cache_record(path: Path) -> Path:
    return path.with_suffix(".json")


def _read_feature_cache(path: Path, key: str) -> dict[str, np.ndarray] | None:
    """The cached feature arrays of ``key`` when the ``.npz`` and its record agree (key, format, sha256, shapes);
    None otherwise (a miss: the features are recomputed and the entry rewritten)."""
    found = _read_feature_cache_checked(path, key)
    return None if found is None else found[0]


def _read_feature_cache_checked(path: Path, key: str) -> tuple[dict[str, np.ndarray], str] | None:
    """Like :func:`_read_feature_cache`, with the sha256 the file was checked against."""
    record = _cache_record(path)
    if not (path.is_file() and record.is_file()):
        return None
    try:
        meta = json.loads(record.read_text())
        if meta.get("format") != CACHE_FORMAT or meta.get("key") != key:
            return None
        payload = path.read_bytes()
        digest = hashlib.sha256(payload).hexdigest()
        if digest != meta.get("sha256"):
            return None
        with np.load(io.BytesIO(payload), allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except (OSError, ValueError, json.JSONDecodeError, AttributeError):
        return None
    shapes = meta.get("shapes", {})
    if sorted(arrays) != sorted(shapes) or any(list(a.shape) != shapes[n] or a.ndim != 2 for n, a in arrays.items()):
        return None
    return arrays, digest


def _write_feature_cache(path: Path, key: str, arrays: dict[str, np.ndarray]) -> None:
    from repro.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    digest = sha256_file(path)
    record = {
        "format": CACHE_FORMAT,
        "key": key,
        "sha256": digest,
        "shapes": {n: list(a.shape) for n, a in arrays.items()},
    }
    atomic_write_json(_cache_record(path), record)


def _fidelity_with_cache(cache_folder: Path, key: str, extractor_name: str, **kwargs) -> dict:
    """``torch_fidelity.calculate_metrics`` with the reference's features from (and into) the project's ``.npz``
    cache; torch-fidelity only sees a private folder made for this call."""
    import torch_fidelity

    npz = cache_folder / f"{key}.npz"
    cached = _read_feature_cache(npz, key)
    prefix = f"{key}-{extractor_name}{_FEATURES}"
    with tempfile.TemporaryDirectory(prefix="repro-fidelity-") as private:
        private_dir = Path(private)
        for layer, array in (cached or {}).items():
            torch.save(torch.from_numpy(array), private_dir / f"{prefix}{layer}.pt")
        raw = torch_fidelity.calculate_metrics(input2_cache_name=key, cache_root=str(private_dir), cache=True, **kwargs)
        found = {}
        for p in sorted(private_dir.glob(f"{prefix}*.pt")):
            layer = p.name[len(prefix) : -len(".pt")]
            tensor = torch.load(p, map_location="cpu", weights_only=True)  # written in this call; tensors only
            if isinstance(tensor, torch.Tensor) and tensor.dim() == 2:
                found[layer] = tensor.detach().cpu().numpy()
    if found and (cached is None or any(k not in cached for k in found)):
        _write_feature_cache(npz, key, {**(cached or {}), **found})
    return raw


def _extractor(feature_extractor: str, weights: str | os.PathLike | None) -> tuple[str, dict, int, str]:
    """torch-fidelity name, extra kwargs, input channels and a weights key for the cache."""
    if feature_extractor == FMNIST:
        name = featurenet.register(weights)
        return name, {}, 1, name.removeprefix(featurenet.NAME_PREFIX)
    if feature_extractor == INCEPTION:
        if weights is None:
            if os.environ.get("REPRO_OFFLINE", "").strip().lower() not in ("", "0", "false", "no"):
                raise FileNotFoundError(
                    f"the Inception path needs its weights: pass weights=PATH to {INCEPTION_FILE} "
                    "(torch-fidelity's converted TF Inception), or unset REPRO_OFFLINE to let torch-fidelity "
                    "download it"
                )
            return INCEPTION, {}, 3, "download-6726825d"
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"Inception weights {path} not found (expected torch-fidelity's {INCEPTION_FILE})")
        stat = path.stat()
        _check_weights_only(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        key = _file_sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)[:12]
        return INCEPTION, {"feature_extractor_weights_path": str(path)}, 3, key
    raise ValueError(f"feature_extractor must be {FMNIST!r} or {INCEPTION!r}, got {feature_extractor!r}")


# ------------------------------------------------------------------------------------------
# The in-process path: the same numbers as torch-fidelity's, with the reference's work done once per process
# ------------------------------------------------------------------------------------------

# KID's 300 kernel products of (n x 128) matrices and the FID's covariance and eigenvalues run in numpy. With numpy's
# BLAS on 2 threads next to torch's own thread pool, each such small product took ~30 ms instead of ~0.5 ms on 2 busy
# cores (threads waiting on each other), so the in-process path runs numpy's BLAS on one thread; the numbers are
# bitwise the same (tests/test_metrics.py compares them with torch-fidelity's path).
_REFERENCE_MEMO: dict[tuple, Any] = {}  # (reference features' sha256, layer, what) -> FID statistics or PRC radii
_EXTRACTORS: dict[tuple[str, str], Any] = {}  # (extractor name, layer) -> a torch-fidelity feature extractor
_MEMO_LIMIT = 16


def _memo(key: tuple, compute):
    if key not in _REFERENCE_MEMO:
        if len(_REFERENCE_MEMO) >= _MEMO_LIMIT:
            _REFERENCE_MEMO.pop(next(iter(_REFERENCE_MEMO)))
        _REFERENCE_MEMO[key] = compute()
    return _REFERENCE_MEMO[key]


def _feature_extractor(name: str, layer: str):
    """The registered extractor ``name`` for one layer, made (and its weights checked) once per process."""
    if (name, layer) not in _EXTRACTORS:
        from torch_fidelity.utils import create_feature_extractor

        _EXTRACTORS[(name, layer)] = create_feature_extractor(name, [layer], cuda=False, verbose=False)
    return _EXTRACTORS[(name, layer)]


@torch.no_grad()
def _sample_features(extractor, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Features of uint8 ``images`` in consecutive batches of ``batch_size``, as torch-fidelity's loader feeds them."""
    batch_size = min(batch_size, len(images))
    return torch.cat([extractor(images[i : i + batch_size])[0].cpu() for i in range(0, len(images), batch_size)])


def _distances(rows: torch.Tensor, cols: torch.Tensor, batch: int) -> torch.Tensor:
    """Euclidean distances ``(len(rows), len(cols))``, the columns in blocks of ``batch``."""
    return torch.cat([torch.cdist(rows, part) for part in cols.split(batch)], dim=1)


def _kth_neighbour_radii(features: torch.Tensor, k: int, batch: int) -> torch.Tensor:
    """Each point's distance to its ``k``-th nearest other point (the point itself is the 0th)."""
    return torch.cat([_distances(part, features, batch).kthvalue(k + 1).values for part in features.split(batch)])


def _share_inside(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, batch: int) -> float:
    """The share of ``points`` within ``radii`` of at least one of ``centres``."""
    inside = [(_distances(part, centres, batch) <= radii).any(dim=1).float() for part in points.split(batch)]
    return torch.cat(inside).mean().item()


def _metrics_in_process(
    npz: Path,
    key: str,
    name: str,
    images: torch.Tensor,
    wanted: tuple[str, ...],
    **settings: int,
) -> dict | None:
    """``settings``: batch_size, kid_subsets, kid_subset_size, prc_neighborhood and seed, as torch-fidelity takes them.

    torch-fidelity's FID / KID / precision-recall of ``images`` against the cached reference features, computed
    with its formulas on the same features in the same batch shapes, so bitwise its numbers; the reference's FID
    statistics and neighbourhood radii are computed once per process (keyed by the checked file's sha256). None
    when the cache has no entry for the reference (the caller then goes through torch-fidelity, which fills it)."""
    from threadpoolctl import threadpool_limits
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    layers = {FEATURE_EXTRACTORS_REGISTRY[name].get_default_feature_layer_for_metric(m) for m in wanted}
    found = _read_feature_cache_checked(npz, key)
    if len(layers) != 1 or found is None or next(iter(layers)) not in found[0]:
        return None
    with threadpool_limits(1, user_api="blas"):  # see the note above _REFERENCE_MEMO
        return _metrics_from_cache(found, next(iter(layers)), name, images, wanted, **settings)


def _metrics_from_cache(
    found, layer, name, images, wanted, *, batch_size, kid_subsets, kid_subset_size, prc_neighborhood, seed
) -> dict:
    from torch_fidelity.helpers import get_kwarg
    from torch_fidelity.metric_fid import fid_statistics_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric

    arrays, digest = found
    reference = torch.from_numpy(arrays[layer])
    features = _sample_features(_feature_extractor(name, layer), images, batch_size)
    raw: dict[str, float] = {}
    if "fid" in wanted:
        ref_stats = _memo((digest, layer, "fid"), lambda: feature_statistics(reference))
        raw.update(fid_statistics_to_metric(feature_statistics(features), ref_stats, False))
    if "kid" in wanted:
        raw.update(
            kid_features_to_metric(
                features,
                reference,
                kid_subsets=kid_subsets,
                kid_subset_size=kid_subset_size,
                rng_seed=seed,
                verbose=False,
            )
        )
    if "prc" in wanted:
        batch = get_kwarg("prc_batch_size", {})
        ref_radii = _memo(
            (digest, layer, "prc", prc_neighborhood, batch),
            lambda: _kth_neighbour_radii(reference, prc_neighborhood, batch),
        )
        recall = _share_inside(reference, features, _kth_neighbour_radii(features, prc_neighborhood, batch), batch)
        precision = _share_inside(features, reference, ref_radii, batch)
        raw.update(
            {
                "precision": precision,
                "recall": recall,
                "f_score": 2 * precision * recall / max(1e-5, precision + recall),
            }
        )
    return raw


class TooFewImages(ValueError):
    """A metric asked of fewer images than it needs."""


def _check_enough(wanted: Sequence[str], n: int, n_ref: int, prc_neighborhood: int) -> None:
    """A one-line error when a metric cannot be computed from this many images (instead of NaN or a traceback):
    FID needs a covariance (2 images a side), KID subsets of at least 2, precision/recall more images a side than
    its neighbourhood size."""
    need = {"fid": 2, "kid": 2, "prc": prc_neighborhood + 1}
    for metric in wanted:
        for side, count in (("samples", n), ("reference", n_ref)):
            if count < need[metric]:
                raise TooFewImages(
                    f"{side}: {count} image(s) are too few for {metric}; allowed: at least {need[metric]} "
                    "(give more images, or leave this metric out with --metrics)"
                )


def compute_metrics(
    samples: torch.Tensor | np.ndarray,
    reference: str | torch.Tensor | np.ndarray = "test",
    metrics: Sequence[str] = METRICS,
    *,
    reference_size: int | None = None,
    feature_extractor: str = FMNIST,
    weights: str | os.PathLike | None = None,
    cache_root: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 500,
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    prc_neighborhood: int = 3,
    seed: int = 2020,
    verbose: bool = False,
    via_torch_fidelity: bool = False,
) -> dict[str, float]:
    """FID / KID / precision-recall of ``samples`` against ``reference`` (see the module docstring).

    ``metrics``: any of ``"fid"``, ``"kid"``, ``"prc"``. ``weights``: the feature network's weights file
    (default: the committed one) or, for Inception, torch-fidelity's Inception weights. KID uses
    ``kid_subsets`` random subsets of ``min(kid_subset_size, N, N_ref)`` drawn with ``seed``; the same
    inputs and seed give the same numbers. ``cache_root`` overrides the cache root.

    With the domain feature network on the CPU and the reference's features in the cache, the metrics are
    computed in this process from torch-fidelity's formulas on the same features (bitwise its numbers; the
    reference's statistics and precision/recall radii once per process); otherwise, or with
    ``via_torch_fidelity``, through ``torch_fidelity.calculate_metrics``.
    """
    wanted = tuple(dict.fromkeys(metrics))
    bad = [m for m in wanted if m not in METRICS]
    if bad or not wanted:
        raise ValueError(f"metrics must be a non-empty subset of {METRICS}, got {tuple(metrics)}")
    images = as_uint8_images(samples)
    name, extra, channels, weights_key = _extractor(feature_extractor, weights)
    ref_dataset, ref_key = _reference(reference, reference_size, channels)
    cuda = torch.device(device).type == "cuda"
    root = Path(cache_root) if cache_root is not None else cache_dir()
    key = f"repro-{ref_key}-w{weights_key}"
    _check_enough(wanted, len(images), len(ref_dataset), prc_neighborhood)
    kid_subset_size = min(kid_subset_size, len(images), len(ref_dataset))
    raw = None
    if feature_extractor == FMNIST and not cuda and not via_torch_fidelity:
        raw = _metrics_in_process(
            root / "fidelity" / f"{key}.npz",
            key,
            name,
            images,
            wanted,
            batch_size=batch_size,
            kid_subsets=kid_subsets,
            kid_subset_size=kid_subset_size,
            prc_neighborhood=prc_neighborhood,
            seed=seed,
        )
    if raw is None:
        raw = _fidelity_with_cache(
            root / "fidelity",
            key,
            name,
            input1=ImageDataset(images, channels),
            input2=ref_dataset,
            fid="fid" in wanted,
            kid="kid" in wanted,
            prc="prc" in wanted,
            feature_extractor=name,
            cuda=cuda,
            batch_size=batch_size,
            kid_subsets=kid_subsets,
            kid_subset_size=kid_subset_size,
            prc_neighborhood=prc_neighborhood,
            rng_seed=seed,
            save_cpu_ram=True,  # no DataLoader worker processes: the images are already in memory
            verbose=verbose,
            **extra,
        )
    out = {_KEYS[k]: float(v) for k, v in raw.items() if k in _KEYS}
    out["num_samples"] = len(images)
    out["num_reference"] = len(ref_dataset)
    return out


def block_fids(samples: torch.Tensor | np.ndarray, blocks: int, **kwargs) -> list[float]:
    """FID of each of ``blocks`` disjoint, contiguous blocks of ``samples`` (``len // blocks`` each, the rest
    unused), against the same reference; ``kwargs`` go to :func:`compute_metrics`. Contiguous blocks keep the
    class balance of samples generated with labels ``i % num_classes`` when the block size is a multiple of it."""
    if not isinstance(blocks, int) or isinstance(blocks, bool) or blocks < 2:
        raise ValueError(f"blocks={blocks!r} is not allowed; must be an integer >= 2")
    size = len(samples) // blocks
    if size < 2:
        raise ValueError(f"blocks={blocks} leaves {size} sample(s) a block from {len(samples)}; need >= 2")
    return [
        compute_metrics(samples[b * size : (b + 1) * size], metrics=("fid",), **kwargs)["fid"] for b in range(blocks)
    ]


def fid_sd_from_blocks(values: Sequence[float]) -> float:
    """The sd of the FID of all the blocks' samples together, from the blocks' FIDs: ``sd(blocks) / sqrt(B)``.

    It takes the FID's sampling variance as inversely proportional to the sample count (the blocks have ``1/B``
    of the samples each), the leading-order behaviour of the estimator; the blocks' FIDs are also biased upwards
    by their smaller size, which does not enter the sd.
    """
    if len(values) < 2:
        raise ValueError(f"an sd needs at least 2 block FIDs, got {len(values)}")
    return float(np.std(np.asarray(values, dtype=float), ddof=1) / math.sqrt(len(values)))


def feature_statistics(features: torch.Tensor) -> dict[str, np.ndarray]:
    """Mean and covariance of ``(N, D)`` features, as torch-fidelity computes them for FID."""
    from torch_fidelity.metric_fid import fid_features_to_statistics

    return fid_features_to_statistics(features.detach().cpu())


def frechet_distance(stats1: dict[str, np.ndarray], stats2: dict[str, np.ndarray]) -> float:
    """torch-fidelity's Frechet distance between two ``{"mu", "sigma"}`` Gaussians (the FID formula)."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    return float(fid_statistics_to_metric(stats1, stats2, False)[KEY_METRIC_FID])


@torch.no_grad()
def extract_features(samples: torch.Tensor | np.ndarray, weights: str | os.PathLike | None = None) -> torch.Tensor:
    """Penultimate features ``(N, 128)`` of the feature network, computed as the torch-fidelity path does."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    extractor_cls = FEATURE_EXTRACTORS_REGISTRY[featurenet.register(weights)]
    extractor = extractor_cls("features", ["penultimate"])
    images = as_uint8_images(samples)
    return torch.cat([extractor(images[i : i + 1000])[0] for i in range(0, len(images), 1000)])


def corrupt(images: torch.Tensor, kind: str, strength: float, *, seed: int = 0) -> torch.Tensor:
    """A degraded copy of uint8 images, for sanity curves of the metrics.

    ``"noise"``: add Gaussian noise of standard deviation ``strength`` in the ``[-1, 1]`` scale (seeded);
    ``"blur"``: Gaussian blur of standard deviation ``strength`` pixels (kernel ``2 * ceil(3 * strength) + 1``).
    """
    import torchvision.transforms.functional as TF

    x = to_float(as_uint8_images(images))
    if kind == "noise":
        g = torch.Generator().manual_seed(seed)
        return to_uint8(x + strength * torch.randn(x.shape, generator=g))
    if kind == "blur":
        k = 2 * math.ceil(3 * strength) + 1
        return to_uint8(TF.gaussian_blur(x, [k, k], [strength, strength]))
    raise ValueError(f"kind must be 'noise' or 'blur', got {kind!r}")


CURVES = {"noise": (0.05, 0.1, 0.15, 0.2, 0.4), "blur": (0.5, 1.0, 1.5, 2.0)}


def reference_report(
    sizes: Sequence[int] = (500, 1000, 5000, 10_000), curve_size: int = 10_000, weights: str | None = None
) -> dict:
    """Reference values that make a run's numbers readable.

    ``floor``: metrics of ``n`` real training images against the whole test split, what a perfect
    generator would score with ``n`` samples (FID's small-sample bias included). ``noise`` / ``blur``:
    FID of the first ``curve_size`` training images, degraded (see :func:`corrupt`), against the same
    images clean.
    """
    weights_path = Path(weights) if weights is not None else featurenet.default_weights_path()
    record = json.loads(featurenet.record_path(weights_path).read_text())
    train = load("train").images
    report: dict = {
        "feature_net": {"sha256": record["sha256"], "test_accuracy": record["test_accuracy"]},
        "units": "features scaled to unit RMS over training images; FID in those units squared",
        "floor": {},
    }
    with tempfile.TemporaryDirectory() as cache:
        for n in sizes:
            result = compute_metrics(train[:n], "test", weights=weights_path, cache_root=cache)
            report["floor"][str(n)] = {k: round(v, 6) for k, v in result.items() if not k.startswith("num_")}
        clean = train[:curve_size]

        def degraded_fid(kind: str, strength: float) -> float:
            result = compute_metrics(
                corrupt(clean, kind, strength), clean, ("fid",), weights=weights_path, cache_root=cache
            )
            return round(result["fid"], 6)

        for kind, strengths in CURVES.items():
            report[kind] = {str(s): degraded_fid(kind, s) for s in strengths}
        report["curve_size"] = curve_size
    return report


VALUE_RANGES = {"-1,1": (-1.0, 1.0), "0,1": (0.0, 1.0), "0,255": (0.0, 255.0)}


def checked_samples(array: np.ndarray, where: str, value_range: str | None) -> torch.Tensor:
    """An array of samples read from a file, as uint8: uint8 as it is; floats only with a declared
    ``value_range`` (``"-1,1"``, ``"0,1"`` or ``"0,255"``) that holds every value. Nothing is guessed or
    clamped: floats in [0, 1] read as [-1, 1] would score as different images."""
    if array.dtype == np.uint8:
        if value_range not in (None, "0,255"):
            raise ValueError(f"{where}: uint8 samples are in [0, 255]; --range={value_range} does not apply")
        return as_uint8_images(array)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            f"{where}: dtype {array.dtype} is not allowed; samples are uint8 in [0, 255] or floats with --range"
        )
    if value_range is None:
        raise ValueError(
            f"{where}: float samples need their value range declared: --range=-1,1, --range=0,1 or --range=0,255 "
            f"(these lie in [{float(np.nanmin(array)) if array.size else 0:.4g}, "
            f"{float(np.nanmax(array)) if array.size else 0:.4g}])"
        )
    if value_range not in VALUE_RANGES:
        raise ValueError(f"{where}: --range {value_range!r} is not allowed; allowed: {', '.join(VALUE_RANGES)}")
    if array.size == 0:
        raise ValueError(f"{where}: holds no samples (shape {array.shape})")
    finite = np.isfinite(array)
    if not finite.all():
        raise ValueError(f"{where}: {int((~finite).sum())} values are NaN or infinite")
    lo, hi = VALUE_RANGES[value_range]
    tol = 1e-6 * (hi - lo)
    amin, amax = float(array.min()), float(array.max())
    if amin < lo - tol or amax > hi + tol:
        raise ValueError(f"{where}: values lie in [{amin:.4g}, {amax:.4g}], outside the declared --range={value_range}")
    x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    return as_uint8_images((x - lo) * (2.0 / (hi - lo)) - 1.0)


def _read_array(path: Path, reader) -> Any:
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty")
    try:
        return reader()
    except (ValueError, OSError, EOFError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{path}: not a readable {path.suffix} array file ({type(e).__name__}: {e})") from None


def load_samples(path: str | os.PathLike, *, recursive: bool = False, value_range: str | None = None) -> torch.Tensor:
    """Samples from a folder of images (png/jpg, read as grey) or a ``.npy`` / ``.npz`` array, as uint8.

    An ``.npz`` must hold one array, or one named ``samples``. Float arrays need ``value_range`` (see
    :func:`checked_samples`); errors name the file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder of samples")
    if path.is_dir():
        pattern = "**/*" if recursive else "*"
        files = sorted(p for p in path.glob(pattern) if p.suffix.lower() in (".png", ".jpg", ".jpeg") and p.is_file())
        if not files:
            raise FileNotFoundError(f"no .png/.jpg images in {path}" + ("" if recursive else " (try --recursive)"))
        images = read_image_folder(path, files)
        return _with_file(path, lambda: as_uint8_images(images))
    if path.suffix == ".npy":
        array = _read_array(path, lambda: np.load(path, allow_pickle=False))
        return _with_file(path, lambda: checked_samples(array, str(path), value_range))
    if path.suffix == ".npz":

        def read_npz():
            with np.load(path, allow_pickle=False) as z:
                names = list(z.keys())
                key = next((k for k in ("samples", "arr_0") if k in names), names[0] if len(names) == 1 else None)
                if key is None:
                    raise ValueError(f"holds arrays {names}; name the samples array 'samples' (or arr_0, as ADM)")
                return z[key]

        array = _read_array(path, read_npz)
        return _with_file(path, lambda: checked_samples(array, str(path), value_range))
    raise ValueError(f"samples must be a folder of images, a .npy or a .npz file, got {path}")


def read_image_folder(path: Path, files: Sequence[Path]) -> np.ndarray:
    """Image files as one uint8 array: ``(N, H, W)`` when every image is grey (an RGB file whose three channels
    are equal counts as grey), else ``(N, H, W, 3)``. Nothing is converted silently: RGB stays RGB."""
    from PIL import Image

    arrays = []
    for f in files:
        try:
            with Image.open(f) as im:
                arrays.append(np.asarray(im.convert("RGB")))
        except (OSError, ValueError) as e:
            raise ValueError(f"{f}: not a readable image ({type(e).__name__})") from None
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"images in {path} differ in size: {sorted(shapes)}")
    stacked = np.stack(arrays)
    grey = bool((stacked[..., :1] == stacked).all())
    return np.ascontiguousarray(stacked[..., 0]) if grey else stacked


def _with_file(path: Path, convert) -> torch.Tensor:
    """``convert()``, with an error naming ``path`` when the array is not usable as samples."""
    try:
        return convert()
    except ValueError as e:
        msg = str(e)
        raise ValueError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None


def adm_metrics(
    samples: Path,
    reference: Path,
    *,
    metrics: Sequence[str] | None = None,
    weights: Path | None = None,
    device: str = "cpu",
    batch_size: int = 100,
    recursive: bool = False,
) -> dict:
    """ADM's metrics (see :mod:`repro.metrics.adm`) of ``samples`` (a folder of images, read as they are, or an
    ADM batch) against the reference batch ``reference``, with the samples' provenance where they carry one."""
    from . import adm

    samples = Path(samples)
    if samples.is_dir():  # a folder of images: read as they are (RGB stays RGB) into a temporary ADM batch
        pattern = "**/*" if recursive else "*"
        files = sorted(
            p for p in samples.glob(pattern) if p.suffix.lower() in (".png", ".jpg", ".jpeg") and p.is_file()
        )
        if not files:
            raise FileNotFoundError(f"no .png/.jpg images in {samples}")
        images = read_image_folder(samples, files)
        with tempfile.TemporaryDirectory(prefix="repro-adm-") as tmp:
            batch = Path(tmp) / "samples.npz"
            np.savez(batch, arr_0=images if images.ndim == 4 else images[..., None])
            result = adm.evaluate(
                batch,
                reference,
                weights=weights,
                metrics=metrics or adm.METRICS,
                device=device,
                batch_size=batch_size,
            )
        result["samples_sha256"] = None  # a folder, not one file
        return result
    if not samples.exists():
        raise FileNotFoundError(f"{samples}: no such file or folder of samples")
    result = adm.evaluate(
        samples,
        reference,
        weights=weights,
        metrics=metrics or adm.METRICS,
        device=device,
        batch_size=batch_size,
    )
    if samples.suffix == ".npz":
        with np.load(samples, allow_pickle=False) as z:
            if "provenance" in z.files:
                result["sample_provenance"] = json.loads(str(z["provenance"]))
    return result


if __name__ == "__main__":  # `python -m repro.metrics.fid ARGS` is `repro reference ARGS`
    from repro.cli import run_as_module

    run_as_module("reference")
