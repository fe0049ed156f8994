"""A small Fashion-MNIST classifier whose penultimate layer is the feature space of FID, KID and precision/recall.

Inception-v3 features mean little on 32x32 grey clothing and its weights cannot be fetched offline, so
the metrics here use a classifier trained on the domain itself. It is trained deterministically on the
CPU (fixed seed, fixed batch order, deterministic kernels) and its weights ship inside the package,
``repro/weights/`` (package data, so an installed ``repro`` finds them without the source tree), next to a
JSON record of their sha256, test accuracy and how they were made. Loading checks the sha256 against that
record.

Conventions:

- network input: float ``(N, 1, 32, 32)`` in ``[-1, 1]`` (see :mod:`repro.data.fashion_mnist`);
- feature ``"penultimate"``: the 128-d ReLU output before the classifier layer, times a fixed scale that
  makes its root-mean-square 1 over training images (used for FID/KID/PRC; FID is therefore in units of
  that scale squared); feature ``"logits"``: the 10 class logits;
- as a torch-fidelity feature extractor it takes what torch-fidelity hands over, uint8 ``(N, C, H, W)``
  in ``[0, 255]`` with ``C`` 1 or 3 (3 equal channels when images were read as RGB: their mean is used)
  and ``H = W`` 32 or 28 (28 is padded like the data).

Retrain with ``python -m repro.metrics.featurenet --out repro/weights`` (about 4 minutes on 2 idle cores). On
the CPU that made the shipped file the result is bitwise that file; on another CPU of the same kind it need not
be (a retrain on a later machine gave test accuracy 0.9258 against the shipped 0.9239), and other weights move
every FID, so the shipped weights are the instrument (DVC's ``featurenet`` stage is frozen).
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_fidelity.feature_extractor_base import FeatureExtractorBase

from repro.data.fashion_mnist import iterate_batches, load, to_float
from repro.io import atomic_torch_save, atomic_write_text
from repro.provenance import sha256_file
from repro.runtime import cpu_setup

DEFAULT_DIR = Path(__file__).resolve().parents[1] / "weights"  # package data: repro/weights/
WEIGHTS_NAME = "featurenet.pt"
RECORD_NAME = "featurenet.json"
FEATURES = ("penultimate", "logits")
NAME_PREFIX = "repro-fmnist-"
SCALE_IMAGES = 10_000  # training images that set the feature scale


class WeightsMismatchError(ValueError):
    """A feature-network weights file differs from the one its record (or the caller) pins."""


class FeatureNet(nn.Module):
    """conv(16) x2 -> pool -> conv(32) x2 -> pool -> conv(64) -> pool -> linear 1024->128 -> ReLU -> linear 128->10.

    Each conv is 3x3 (padding 1, no bias) -> BatchNorm -> ReLU; pools are 2x2 max. Input ``(N, 1, 32, 32)`` in
    ``[-1, 1]``. Used in eval mode only once trained (BatchNorm then applies its running statistics).
    :meth:`features` multiplies the penultimate activations by the buffer ``feature_scale``, set after
    training so that the features' root-mean-square over training images is 1; the classifier head sees
    them unscaled.
    """

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64), feature_dim: int = 128, num_classes: int = 10):
        super().__init__()
        self.widths = tuple(int(w) for w in widths)
        self.feature_dim = int(feature_dim)
        a, b, c = self.widths

        def conv(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.body = nn.Sequential(
            *conv(1, a), *conv(a, a), nn.MaxPool2d(2),
            *conv(a, b), *conv(b, b), nn.MaxPool2d(2),
            *conv(b, c), nn.MaxPool2d(2),
            nn.Flatten(),
        )  # fmt: skip
        self.fc = nn.Linear(c * 4 * 4, self.feature_dim)
        self.head = nn.Linear(self.feature_dim, num_classes)
        self.register_buffer("feature_scale", torch.ones(()))

    def config(self) -> dict:
        return {"widths": list(self.widths), "feature_dim": self.feature_dim, "num_classes": self.head.out_features}

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """The unscaled penultimate (``feature_dim``-d, post-ReLU) activations of float images in ``[-1, 1]``."""
        return F.relu(self.fc(self.body(x)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The metric features: penultimate activations times ``feature_scale``."""
        return self.penultimate(x) * self.feature_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.penultimate(x))


@torch.no_grad()
def calibrate_feature_scale(net: FeatureNet, images: torch.Tensor, batch_size: int = 1000) -> float:
    """Set ``net.feature_scale`` to 1 / RMS of the penultimate activations over uint8 ``images``; returns it."""
    net.eval()
    total, count = 0.0, 0
    for start in range(0, len(images), batch_size):
        h = net.penultimate(to_float(images[start : start + batch_size])).double()
        total += float(h.pow(2).sum())
        count += h.numel()
    scale = 1.0 / math.sqrt(total / count)
    net.feature_scale.fill_(scale)
    return scale


def default_weights_path() -> Path:
    """``$REPRO_FEATURENET`` if set, else the weights shipped in the package (``repro/weights/featurenet.pt``)."""
    env = os.environ.get("REPRO_FEATURENET")
    return Path(env).expanduser() if env else DEFAULT_DIR / WEIGHTS_NAME


def record_path(weights_path: str | os.PathLike) -> Path:
    """The JSON record that sits next to a weights file (``x.pt`` -> ``x.json``)."""
    return Path(weights_path).with_suffix(".json")


def recorded_sha256(weights_path: str | os.PathLike) -> str:
    """The sha256 that the record next to ``weights_path`` pins."""
    record = record_path(weights_path)
    try:
        return str(json.loads(record.read_text())["sha256"])
    except FileNotFoundError as exc:
        raise WeightsMismatchError(
            f"no record {record} next to {weights_path}: cannot check the weights. Pass expected_sha256= or "
            "retrain with `python -m repro.metrics.featurenet --out DIR`, which writes both."
        ) from exc
    except (KeyError, ValueError) as exc:
        raise WeightsMismatchError(f"{record} has no valid 'sha256' field ({exc})") from exc


def load_feature_net(path: str | os.PathLike | None = None, *, expected_sha256: str | None = None) -> FeatureNet:
    """Load the feature network in eval mode, after checking the file's sha256.

    ``expected_sha256`` defaults to the one recorded in the JSON next to the weights. A mismatch raises
    :class:`WeightsMismatchError` naming both hashes.
    """
    path = Path(path) if path is not None else default_weights_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"feature-network weights {path} not found; retrain with `python -m repro.metrics.featurenet --out "
            f"{path.parent}` or set REPRO_FEATURENET to a weights file"
        )
    want = expected_sha256 if expected_sha256 is not None else recorded_sha256(path)
    got = sha256_file(path)
    if got != want:
        raise WeightsMismatchError(
            f"feature-network weights {path} have sha256 {got}, expected {want}. The file is damaged or was "
            "replaced without updating its record; restore it or retrain."
        )
    payload = torch.load(path, map_location="cpu", weights_only=True)
    net = FeatureNet(**payload["config"])
    net.load_state_dict(payload["state_dict"])
    return net.eval().requires_grad_(False)


def save_feature_net(net: FeatureNet, directory: str | os.PathLike, info: dict) -> dict:
    """Write ``featurenet.pt`` and ``featurenet.json`` into ``directory`` atomically; returns the record."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / WEIGHTS_NAME
    state = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    atomic_torch_save({"config": net.config(), "state_dict": state}, weights)
    record = {"file": WEIGHTS_NAME, "sha256": sha256_file(weights), "bytes": weights.stat().st_size, **info}
    atomic_write_text(directory / RECORD_NAME, json.dumps(record, indent=2, sort_keys=False) + "\n")
    return record


@torch.no_grad()
def accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``net`` on uint8 images ``(N, 1, 32, 32)``."""
    net.eval()
    correct = 0
    for start in range(0, len(labels), batch_size):
        logits = net(to_float(images[start : start + batch_size]))
        correct += int((logits.argmax(1) == labels[start : start + batch_size]).sum())
    return correct / len(labels)


def train_feature_net(
    *,
    seed: int = 0,
    epochs: int = 3,
    batch_size: int = 128,
    lr: float = 2e-3,
    train_limit: int | None = None,
    log: Callable[[str], None] | None = print,
) -> tuple[FeatureNet, dict]:
    """Train the classifier on the Fashion-MNIST train split; same seed and threads on one CPU give the same bits.

    Adam with a cosine-decayed learning rate, cross-entropy, no augmentation. ``train_limit`` trains on
    the first images only (for quick checks). Returns the net (eval mode) and a dict of facts about the run.
    """
    cpu_setup()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        train, test = load("train"), load("test")
        images, labels = train.images, train.labels
        if train_limit is not None:
            images, labels = images[:train_limit], labels[:train_limit]
        torch.manual_seed(seed)
        net = FeatureNet()
        order = torch.Generator().manual_seed(seed)
        steps_per_epoch = len(labels) // batch_size
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
        start = time.perf_counter()
        for epoch in range(epochs):
            net.train()
            total = 0.0
            for index in iterate_batches(len(labels), batch_size, generator=order):
                loss = F.cross_entropy(net(to_float(images[index])), labels[index])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach())
            if log:
                log(f"epoch {epoch + 1}/{epochs}: mean loss {total / steps_per_epoch:.4f} "
                    f"({time.perf_counter() - start:.0f} s)")  # fmt: skip
        seconds = time.perf_counter() - start
        net.eval().requires_grad_(False)
        scale = calibrate_feature_scale(net, images[:SCALE_IMAGES])
        test_acc = accuracy(net, test.images, test.labels)
        if log:
            log(f"test accuracy {test_acc:.4f}")
        info = {
            "test_accuracy": round(test_acc, 6),
            "train_seconds": round(seconds, 1),
            "seed": seed,
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "optimizer": "Adam, cosine decay to 0, cross-entropy, no augmentation",
            "train_images": int(len(labels)),
            "architecture": net.config(),
            "feature_scale": scale,
            "feature_scale_from": f"first {min(SCALE_IMAGES, len(labels))} training images",
            "torch": torch.__version__,
            "device": f"cpu ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads",
            "deterministic_algorithms": True,
        }
        return net, info
    finally:
        torch.use_deterministic_algorithms(was_deterministic)


class FashionFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity adapter of :class:`FeatureNet`; one subclass per weights file, made by :func:`register`.

    Takes uint8 ``(N, C, H, W)`` in ``[0, 255]``, ``C`` in {1, 3}, ``H = W`` in {28, 32}; returns the requested
    features in the order asked for.
    """

    weights_path: ClassVar[Path]
    weights_sha256: ClassVar[str]

    def __init__(self, name: str, features_list: list[str], **kwargs):
        super().__init__(name, features_list)
        self.net = load_feature_net(self.weights_path, expected_sha256=self.weights_sha256)

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return FEATURES

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return {"isc": "logits", "fid": "penultimate", "kid": "penultimate", "prc": "penultimate"}[metric]

    @staticmethod
    def can_be_compiled() -> bool:
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> torch.Tensor:
        return torch.zeros(1, 1, 32, 32, dtype=torch.uint8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] not in (1, 3) or x.shape[2] != x.shape[3]:
            raise ValueError(f"expected uint8 images (N, 1 or 3, H, H), got {x.dtype} {tuple(x.shape)}")
        x = x.to(torch.float32).mean(dim=1, keepdim=True) / 127.5 - 1.0
        if x.shape[-1] == 28:
            x = F.pad(x, (2, 2, 2, 2), value=-1.0)
        elif x.shape[-1] != 32:
            raise ValueError(f"expected 32x32 (or 28x28) images, got {tuple(x.shape[-2:])}")
        h = self.net.penultimate(x)
        out = {"penultimate": h * self.net.feature_scale, "logits": self.net.head(h)}
        return tuple(out[name] for name in self.features_list)


def register(weights_path: str | os.PathLike | None = None, *, expected_sha256: str | None = None) -> str:
    """Register a weights file with torch-fidelity; returns the extractor name, ``repro-fmnist-<sha256[:12]>``.

    The name carries the weights' hash, so torch-fidelity's feature and statistics caches never mix
    results of different weights. Registering the same file again returns the same name.
    """
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    path = Path(weights_path) if weights_path is not None else default_weights_path()
    want = expected_sha256 if expected_sha256 is not None else recorded_sha256(path)
    got = sha256_file(path)
    if got != want:
        raise WeightsMismatchError(f"feature-network weights {path} have sha256 {got}, expected {want}")
    name = NAME_PREFIX + got[:12]
    if name not in FEATURE_EXTRACTORS_REGISTRY:
        cls = type(
            f"FashionFeatureExtractor_{got[:12]}",
            (FashionFeatureExtractor,),
            {"weights_path": path.resolve(), "weights_sha256": got},
        )
        register_feature_extractor(name, cls)
    return name


if __name__ == "__main__":  # `python -m repro.metrics.featurenet ARGS` is `repro featurenet ARGS`
    from repro.cli import run_as_module

    run_as_module("featurenet")
