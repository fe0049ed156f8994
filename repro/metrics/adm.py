"""Sample quality as the field reports it for ImageNet: ADM's evaluator, on torch-fidelity's Inception.

DiT, SiT and TREAD score their FID-50K with the evaluator of ADM (openai/guided-diffusion,
``evaluations/evaluator.py``): 50,000 samples as one ``.npz`` whose ``arr_0`` is ``(N, H, W, 3)`` uint8,
against a *reference batch* such as ``VIRTUAL_imagenet256_labeled.npz``, which holds 10,000 images
(``arr_0``) and the statistics of the whole training set (``mu``/``sigma`` of the pool features,
``mu_s``/``sigma_s`` of the spatial ones). This module computes the same quantities with the same
definitions, from the TF-2015 Inception network as torch-fidelity ports it (``inception-v3-compat``,
the weights file ``weights-inception-2015-12-05-6726825d.pth``; images resized to 299x299 inside the
network the way TensorFlow 1 did):

- ``fid``: Frechet distance between the samples' 2,048-d pool features (``pool_3``) and the reference's
  ``mu``/``sigma`` (or, when the batch stores none, those of its images);
- ``sfid``: the same on spatial features, the first 7 channels of ``mixed_6/conv`` (Mixed_6d's 1x1 branch,
  17x17x7 = 2,023 values, flattened height, width, channel as TensorFlow lays them out), against
  ``mu_s``/``sigma_s``;
- ``inception_score``: ``exp`` of the mean KL divergence between each sample's class distribution (softmax of
  the 1,008 logits without bias) and their mean, over consecutive splits of 5,000, averaged;
- ``precision``/``recall``: the k = 3 nearest-neighbour manifolds (Kynkaenniemi et al.) of the reference images'
  and the samples' pool features: the share of samples inside the reference manifold, and of reference images
  inside the samples'.

Files are streamed: an ``arr_0`` of 50,000 images (9.8 GB at 256x256) is read a batch at a time from the
``.npz``, never whole. Nothing is unpickled (``allow_pickle=False``), and an Inception weights file must load
weights-only before torch-fidelity, which unpickles it fully, gets it (see :mod:`repro.metrics.fid`).
``python -m repro.metrics.adm reference IMAGE_DIR OUT.npz`` writes a reference batch in ADM's layout from an
ImageFolder (center-cropped the ADM way), for data sets without a published one.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

POOL, SPATIAL, LOGITS = "pool", "spatial", "logits"
METRICS = ("fid", "sfid", "is", "prc")
SPATIAL_CHANNELS = 7  # ADM keeps the first 7 of mixed_6/conv's 192 channels: 17 x 17 x 7 = 2,023 features
IS_SPLIT = 5000  # ADM's Inception Score split size
PRC_NEIGHBOURS = 3
ADM_REFERENCE = "VIRTUAL_imagenet256_labeled.npz"


# ------------------------------------------------------------------------------------------
# Reading .npz arrays a batch at a time
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NpzArray:
    """One array of an ``.npz`` (or a ``.npy``), read in slices without loading it whole."""

    path: Path
    key: str
    shape: tuple[int, ...]
    dtype: np.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def batches(self, size: int, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        """Consecutive slices ``[i, i + size)`` of rows ``start..stop``."""
        stop = len(self) if stop is None else min(stop, len(self))
        row = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        with _open_member(self.path, self.key) as f:
            _read_header(f)
            _skip(f, start * row)
            for i in range(start, stop, size):
                n = min(size, stop - i)
                data = f.read(n * row)
                if len(data) != n * row:
                    raise ValueError(f"{self.path}: {self.key} is truncated at row {i}")
                yield np.frombuffer(data, dtype=self.dtype).reshape(n, *self.shape[1:])

    def read(self) -> np.ndarray:
        return np.concatenate(list(self.batches(max(1, len(self))))) if len(self) else np.empty(self.shape, self.dtype)


def _skip(f, nbytes: int) -> None:
    while nbytes > 0:
        chunk = f.read(min(nbytes, 1 << 24))
        if not chunk:
            break
        nbytes -= len(chunk)


class _open_member:
    """The raw ``.npy`` stream of ``key`` in an ``.npz`` (or the ``.npy`` file itself)."""

    def __init__(self, path: Path, key: str):
        self.path, self.key, self._zip, self._f = Path(path), key, None, None

    def __enter__(self):
        if self.path.suffix == ".npy":
            self._f = open(self.path, "rb")  # noqa: SIM115 - closed in __exit__
            return self._f
        self._zip = zipfile.ZipFile(self.path)
        self._f = self._zip.open(f"{self.key}.npy")
        return self._f

    def __exit__(self, *exc) -> None:
        for thing in (self._f, self._zip):
            if thing is not None:
                thing.close()


def _read_header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(f)
    if dtype.hasobject:
        raise ValueError("holds Python objects; allowed: plain numeric arrays")
    return shape, fortran, dtype


def npz_arrays(path: str | os.PathLike) -> dict[str, NpzArray]:
    """Every array of an ``.npz`` (or the one of a ``.npy``) by name, read lazily; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        if path.suffix == ".npy":
            names = ["arr_0"]
        else:
            with zipfile.ZipFile(path) as z:
                names = [n[: -len(".npy")] for n in z.namelist() if n.endswith(".npy")]
        out = {}
        for name in names:
            with _open_member(path, name) as f:
                shape, fortran, dtype = _read_header(f)
            if fortran and len(shape) > 1:
                raise ValueError(f"{name} is stored in Fortran order; allowed: C order")
            out[name] = NpzArray(path, name, tuple(shape), dtype)
    except (zipfile.BadZipFile, ValueError, OSError, KeyError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{path}: not a readable .npz/.npy of plain arrays ({' '.join(str(e).split())})") from None
    return out


def image_array(arrays: dict[str, NpzArray], where: str) -> NpzArray:
    """The images of a sample or reference batch: ``arr_0`` (ADM) or ``samples``, uint8 with 1 or 3 channels."""
    key = "arr_0" if "arr_0" in arrays else "samples" if "samples" in arrays else None
    if key is None:
        raise ValueError(f"{where}: holds {sorted(arrays)}; allowed: images under arr_0 (ADM's layout) or samples")
    a = arrays[key]
    if a.dtype != np.uint8:
        raise ValueError(f"{where}: {key} is {a.dtype}; allowed: uint8 images in [0, 255] (ADM's layout)")
    if len(a.shape) != 4 or not (a.shape[-1] in (1, 3) or a.shape[1] in (1, 3)) or a.shape[0] < 1 or min(a.shape) < 1:
        raise ValueError(f"{where}: {key} has shape {a.shape}; allowed: (N, H, W, 3) uint8 (or N x 3 x H x W)")
    return a


def as_nchw(batch: np.ndarray) -> torch.Tensor:
    """uint8 images NHWC (ADM) or NCHW, grey or RGB, as a uint8 ``(N, 3, H, W)`` tensor."""
    x = torch.from_numpy(np.array(batch))  # a copy: batches read from a file are read-only
    if x.shape[-1] in (1, 3):  # NHWC, ADM's layout (an NCHW image 3 or 1 pixel wide is not an image)
        x = x.permute(0, 3, 1, 2)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.contiguous()


# ------------------------------------------------------------------------------------------
# Features
# ------------------------------------------------------------------------------------------


class InceptionFeatures:
    """torch-fidelity's TF-2015 Inception: pool (2,048), spatial (mixed_6/conv, 7 channels) and logits (1,008)."""

    def __init__(self, weights: str | os.PathLike | None, device: str | torch.device = "cpu"):
        from torch_fidelity.utils import create_feature_extractor

        from .fid import INCEPTION, _extractor

        name, extra, _, self.weights_key = _extractor(INCEPTION, weights)  # weights checked weights-only first
        self.device = torch.device(device)
        self.net = create_feature_extractor(
            name, ["2048", "logits_unbiased"], cuda=self.device.type == "cuda", verbose=False, **extra
        )
        self.weights = None if weights is None else str(weights)
        self._spatial: list[torch.Tensor] = []
        self.net.Mixed_6d.branch1x1.register_forward_hook(lambda _m, _i, out: self._spatial.append(out))

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        self._spatial.clear()
        pool, logits = self.net(images.to(self.device))
        spatial = self._spatial.pop()[:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).flatten(1)  # TF's NHWC order
        return {
            POOL: pool.float().cpu().numpy(),
            SPATIAL: spatial.float().cpu().numpy(),
            LOGITS: logits.float().cpu().numpy(),
        }

    def of_batches(self, batches) -> dict[str, np.ndarray]:
        parts: dict[str, list[np.ndarray]] = {POOL: [], SPATIAL: [], LOGITS: []}
        for batch in batches:
            for k, v in self(as_nchw(batch)).items():
                parts[k].append(v)
        return {k: np.concatenate(v) for k, v in parts.items()}


def statistics(features: np.ndarray) -> dict[str, np.ndarray]:
    """``mu`` and ``sigma`` (``np.cov``, rows are samples) in float64, as ADM computes them."""
    features = np.asarray(features, dtype=np.float64)
    return {"mu": features.mean(axis=0), "sigma": np.cov(features, rowvar=False)}


def frechet(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    from .fid import frechet_distance

    cast = {k: np.asarray(v, dtype=np.float64) for k, v in a.items()}
    return frechet_distance(cast, {k: np.asarray(v, dtype=np.float64) for k, v in b.items()})


def inception_score(logits: np.ndarray, split_size: int = IS_SPLIT) -> float:
    """ADM's Inception Score: softmax of the logits, ``exp(mean KL(p(y|x) || p(y)))`` per split, averaged."""
    logits = np.asarray(logits, dtype=np.float64)
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    scores = []
    for i in range(0, len(p), split_size):
        part = p[i : i + split_size]
        kl = part * (np.log(part + 1e-300) - np.log(part.mean(axis=0, keepdims=True) + 1e-300))
        scores.append(math.exp(float(kl.sum(axis=1).mean())))
    return float(np.mean(scores))


def precision_recall(reference: np.ndarray, samples: np.ndarray, k: int = PRC_NEIGHBOURS) -> tuple[float, float]:
    """Kynkaenniemi et al.'s precision and recall with ``k``-th neighbour radii, as ADM's ``ManifoldEstimator``."""
    from .fid import _kth_neighbour_radii, _share_inside

    ref, smp = torch.from_numpy(np.asarray(reference, np.float32)), torch.from_numpy(np.asarray(samples, np.float32))
    batch = 10_000
    ref_radii = _kth_neighbour_radii(ref, k, batch)
    smp_radii = _kth_neighbour_radii(smp, k, batch)
    return _share_inside(smp, ref, ref_radii, batch), _share_inside(ref, smp, smp_radii, batch)


# ------------------------------------------------------------------------------------------
# A reference batch and the evaluation
# ------------------------------------------------------------------------------------------


@dataclass
class Reference:
    path: Path
    sha256: str
    images: NpzArray | None
    stats: dict[str, dict[str, np.ndarray]]  # POOL / SPATIAL -> {"mu", "sigma"}, as stored

    def describe(self) -> dict[str, Any]:
        return {
            "file": self.path.name,
            "sha256": self.sha256,
            "images": None if self.images is None else len(self.images),
            "stored_statistics": sorted(self.stats),
        }


def read_reference(path: str | os.PathLike) -> Reference:
    """An ADM reference batch: ``arr_0`` images and/or stored ``mu``/``sigma`` (and ``mu_s``/``sigma_s``)."""
    from ..provenance import sha256_file

    path = Path(path)
    arrays = npz_arrays(path)
    stats: dict[str, dict[str, np.ndarray]] = {}
    for layer, (mu, sigma) in {POOL: ("mu", "sigma"), SPATIAL: ("mu_s", "sigma_s")}.items():
        if mu in arrays and sigma in arrays:
            m, s = arrays[mu].read().astype(np.float64), arrays[sigma].read().astype(np.float64)
            if m.ndim != 1 or s.shape != (len(m), len(m)):
                raise ValueError(f"{path}: {mu} {m.shape} and {sigma} {s.shape} are not a mean and its covariance")
            stats[layer] = {"mu": m, "sigma": s}
    images = image_array(arrays, str(path)) if ("arr_0" in arrays or "samples" in arrays) else None
    if images is None and POOL not in stats:
        raise ValueError(f"{path}: holds {sorted(arrays)}; a reference batch needs arr_0 images or mu and sigma")
    return Reference(path, sha256_file(path), images, stats)


def evaluate(
    samples: str | os.PathLike,
    reference: str | os.PathLike,
    *,
    weights: str | os.PathLike | None = None,
    metrics: Sequence[str] = METRICS,
    device: str | torch.device = "cpu",
    batch_size: int = 100,
    split_size: int = IS_SPLIT,
) -> dict[str, Any]:
    """ADM's metrics of a sample batch against a reference batch (see the module docstring)."""
    from ..provenance import sha256_file

    wanted = tuple(dict.fromkeys(metrics))
    if not wanted or any(m not in METRICS for m in wanted):
        raise ValueError(f"metrics: {list(metrics)}; allowed: a non-empty subset of {', '.join(METRICS)}")
    samples = Path(samples)
    sample_images = image_array(npz_arrays(samples), str(samples))
    if len(sample_images) < 2:
        raise ValueError(f"{samples}: {len(sample_images)} sample(s); a covariance needs at least 2")
    ref = read_reference(reference)
    if "prc" in wanted and ref.images is None:
        raise ValueError(f"{ref.path}: precision/recall need the reference's arr_0 images; it holds statistics only")
    net = InceptionFeatures(weights, device)
    feats = net.of_batches(sample_images.batches(batch_size))
    ref_feats = None
    missing = [
        layer for metric, layer in (("fid", POOL), ("sfid", SPATIAL)) if metric in wanted and layer not in ref.stats
    ]
    need_ref = ref.images is not None and ("prc" in wanted or bool(missing))
    if need_ref:
        ref_feats = net.of_batches(ref.images.batches(batch_size))
    out: dict[str, Any] = {}
    for metric, layer in (("fid", POOL), ("sfid", SPATIAL)):
        if metric not in wanted:
            continue
        if layer in ref.stats:
            ref_stats, source = ref.stats[layer], "stored statistics"
        elif ref_feats is not None:
            ref_stats, source = statistics(ref_feats[layer]), f"its {len(ref.images)} images"
        else:
            raise ValueError(f"{ref.path}: {metric} needs the reference's statistics or its images")
        out[metric] = frechet(statistics(feats[layer]), ref_stats)
        out[f"{metric}_reference"] = source
    if "is" in wanted:
        out["inception_score"] = inception_score(feats[LOGITS], split_size)
    if "prc" in wanted:
        out["precision"], out["recall"] = precision_recall(ref_feats[POOL], feats[POOL])
    weights_sha = sha256_file(weights) if weights is not None else None
    return {
        **out,
        "num_samples": len(sample_images),
        "image_shape": list(sample_images.shape[1:]),
        "samples_sha256": sha256_file(samples),
        "reference": ref.describe(),
        "feature_extractor": "inception-v3-compat (torch-fidelity, TF-2015 Inception)",
        "inception_weights_sha256": weights_sha,
        "evaluator": "ADM (openai/guided-diffusion evaluations/evaluator.py) definitions",
    }


def write_reference(
    images: np.ndarray | NpzArray, out: str | os.PathLike, *, weights=None, device="cpu", batch_size=100
) -> Path:
    """A reference batch in ADM's layout: ``arr_0`` (the images, NHWC uint8) and the statistics of their pool
    (``mu``, ``sigma``) and spatial (``mu_s``, ``sigma_s``) features."""
    from ..io import atomic_path

    batches = images.batches(batch_size) if isinstance(images, NpzArray) else _slices(images, batch_size)
    feats = InceptionFeatures(weights, device).of_batches(batches)
    pool, spatial = statistics(feats[POOL]), statistics(feats[SPATIAL])
    array = images.read() if isinstance(images, NpzArray) else np.asarray(images)
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.savez(
            f,
            arr_0=array,
            mu=pool["mu"],
            sigma=pool["sigma"],
            mu_s=spatial["mu"],
            sigma_s=spatial["sigma"],
        )
    return Path(out)


def _slices(array: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for i in range(0, len(array), size):
        yield array[i : i + size]


def image_folder_array(root: str | os.PathLike, image_size: int, limit: int | None = None) -> np.ndarray:
    """The images of an ImageFolder (sorted classes, sorted files), center-cropped the ADM way, as NHWC uint8."""
    from torchvision.datasets import ImageFolder

    from ..data.latents import center_crop

    folder = ImageFolder(str(root))
    paths = [p for p, _ in folder.samples][:limit]
    out = np.empty((len(paths), image_size, image_size, 3), dtype=np.uint8)
    for i, p in enumerate(paths):
        with open(p, "rb") as f:
            from PIL import Image

            out[i] = np.asarray(center_crop(Image.open(f).convert("RGB"), image_size))
    return out


if __name__ == "__main__":  # `python -m repro.metrics.adm ARGS` is `repro adm ARGS`
    from repro.cli import run_as_module

    run_as_module("adm")
