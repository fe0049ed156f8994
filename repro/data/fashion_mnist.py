"""Fashion-MNIST, offline first: found on disk, checked byte for byte, held in memory as uint8.

Where the four IDX files are looked for, in order:

1. ``$REPRO_DATA_DIR`` when it is set. It is then the only place looked at: a missing or damaged file
   there is an error, never a silent fallback to another copy.
2. ``/usr/share/datasets/fashion-mnist/`` (Debian's package ``dataset-fashion-mnist``).
3. ``<cache dir>/fashion-mnist/`` (see :func:`cache_dir`), filled by the official download when the
   machine is online and downloading is allowed (``download=True``, or ``REPRO_OFFLINE`` unset).

Each file may be gzip-compressed (``name.gz``) or raw (``name``). What is checked is the sha256 of the
decompressed IDX payload, so Debian's recompressed archives and the official ones are both accepted
(their gzip bytes differ, their content does not).

Conventions of the arrays handed out:

- images: ``torch.uint8`` of shape ``(N, 1, 32, 32)``; the 28x28 originals padded with 2 pixels of 0
  (black background) on every side;
- labels: ``torch.int64`` of shape ``(N,)`` in ``0..9`` (names in :data:`CLASSES`);
- float images are ``x / 127.5 - 1`` in ``[-1, 1]`` (:func:`to_float`); :func:`to_uint8` inverts it
  with rounding and clamping.

A split is read once per process and cached; the cached tensors are shared, do not modify them in
place.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SPLITS = ("train", "test")
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
IMAGE_SIZE = 32
PAD = (IMAGE_SIZE - 28) // 2

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
ALL_FILES = FILES["train"] + FILES["test"]

#: sha256 and length of the decompressed IDX payloads; identical in Debian's and the official archives.
PAYLOAD_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
PAYLOAD_BYTES = {
    "train-images-idx3-ubyte": 47_040_016,
    "train-labels-idx1-ubyte": 60_008,
    "t10k-images-idx3-ubyte": 7_840_016,
    "t10k-labels-idx1-ubyte": 10_008,
}
#: md5 of the gzip archives as distributed officially and by Debian (informational; the payload check decides).
ARCHIVE_MD5 = {
    "official": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    "debian": {
        "train-images-idx3-ubyte.gz": "cf8536b0aa1a6ac5fa3f23001093305c",
        "train-labels-idx1-ubyte.gz": "10bea18fdb374794d4bb42e356e600c9",
        "t10k-images-idx3-ubyte.gz": "f78720b4224f21cce2f2ccf2d7a94c9a",
        "t10k-labels-idx1-ubyte.gz": "0d30e22e447f3c33dab9ed536400ac01",
    },
}

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
DOWNLOAD_TIMEOUT_S = 30.0

HOW_TO_GET = (
    "Get Fashion-MNIST in one of these ways:\n"
    "  - sudo apt-get install dataset-fashion-mnist   (puts the four files in /usr/share/datasets/fashion-mnist/)\n"
    "  - set REPRO_DATA_DIR to a directory holding the four official files "
    + ", ".join(f"{n}.gz" for n in ALL_FILES)
    + " (gzip-compressed or not)\n"
    "  - be online with REPRO_OFFLINE unset: the official files are then downloaded to "
    "$REPRO_CACHE_DIR/fashion-mnist (default ~/.cache/repro/fashion-mnist)"
)


class DataNotFoundError(FileNotFoundError):
    """The Fashion-MNIST files are not where they were looked for; the message says how to get them."""


class DataCorruptError(ValueError):
    """A Fashion-MNIST file exists but its content is not the expected IDX payload."""


def cache_dir() -> Path:
    """Root of the project's caches: ``$REPRO_CACHE_DIR``, else ``$XDG_CACHE_HOME/repro``, else ``~/.cache/repro``."""
    if os.environ.get("REPRO_CACHE_DIR"):
        return Path(os.environ["REPRO_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "repro"


def _offline() -> bool:
    return os.environ.get("REPRO_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def _file_in(directory: Path, name: str) -> Path | None:
    for candidate in (directory / f"{name}.gz", directory / name):
        if candidate.is_file():
            return candidate
    return None


def _missing(directory: Path) -> list[str]:
    return [name for name in ALL_FILES if _file_in(directory, name) is None]


def find_data_dir(*, download: bool | None = None) -> Path:
    """The directory the data is read from (see the module docstring for the order).

    ``download``: ``None`` downloads only when ``REPRO_OFFLINE`` is unset; ``False`` never downloads.
    Raises :class:`DataNotFoundError` naming the missing files and how to get them.
    """
    env = os.environ.get("REPRO_DATA_DIR")
    if env:
        directory = Path(env).expanduser()
        missing = _missing(directory)
        if missing:
            raise DataNotFoundError(
                f"REPRO_DATA_DIR={directory} lacks "
                + ", ".join(f"{directory / m}[.gz]" for m in missing)
                + ".\n"
                + HOW_TO_GET
            )
        return directory
    for directory in (DEBIAN_DIR, cache_dir() / "fashion-mnist"):
        if not _missing(directory):
            return directory
    if download is None:
        download = not _offline()
    if download:
        return download_official(cache_dir() / "fashion-mnist")
    raise DataNotFoundError(
        f"Fashion-MNIST not found: REPRO_DATA_DIR is unset, {DEBIAN_DIR} and {cache_dir() / 'fashion-mnist'} "
        "lack the files, and downloading is off.\n" + HOW_TO_GET
    )


def download_official(target: Path, *, mirrors: tuple[str, ...] = MIRRORS) -> Path:
    """Download the four official archives into ``target``, verify their payloads, then move them in.

    Files are written to a temporary directory first; ``target`` only receives files that passed the
    check, each by an atomic rename. On any failure nothing in ``target`` changes.
    """
    target.mkdir(parents=True, exist_ok=True)
    errors = []
    with tempfile.TemporaryDirectory(dir=target, prefix=".download-") as tmp:
        fetched = []
        for name in ALL_FILES:
            if _file_in(target, name) is not None:
                continue
            dest = Path(tmp) / f"{name}.gz"
            for mirror in mirrors:
                url = f"{mirror}{name}.gz"
                try:
                    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(dest, "wb") as f:
                        shutil.copyfileobj(response, f)
                    break
                except (urllib.error.URLError, OSError, TimeoutError) as exc:
                    errors.append(f"{url}: {exc}")
            else:
                raise DataNotFoundError(
                    "Fashion-MNIST is not on this machine and the download failed:\n  "
                    + "\n  ".join(errors)
                    + "\n"
                    + HOW_TO_GET
                )
            read_payload(dest, name)  # raises DataCorruptError before anything is moved
            fetched.append(dest)
        for dest in fetched:
            os.replace(dest, target / dest.name)
    return target


def read_payload(path: Path, name: str) -> bytes:
    """The decompressed bytes of ``path``, checked against the pinned length and sha256 of ``name``."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataNotFoundError(f"cannot read {path}: {exc}.\n{HOW_TO_GET}") from exc
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataCorruptError(
                f"{path} is not a valid gzip file ({exc}); expected the gzip-compressed IDX file {name} "
                f"({PAYLOAD_BYTES[name]} bytes decompressed). Replace it (apt-get install --reinstall "
                "dataset-fashion-mnist, or the official file)."
            ) from exc
    digest = hashlib.sha256(raw).hexdigest()
    if len(raw) != PAYLOAD_BYTES[name] or digest != PAYLOAD_SHA256[name]:
        raise DataCorruptError(
            f"{path} does not hold the expected IDX payload {name}: got {len(raw)} bytes with sha256 {digest}, "
            f"expected {PAYLOAD_BYTES[name]} bytes with sha256 {PAYLOAD_SHA256[name]}. Replace it "
            "(apt-get install --reinstall dataset-fashion-mnist, or the official file)."
        )
    return raw


def _parse_idx(raw: bytes, *, images: bool) -> np.ndarray:
    """IDX: big-endian magic 0x0803 (uint8 3-D) for images, 0x0801 (uint8 1-D) for labels."""
    ndim = 3 if images else 1
    header = 4 + 4 * ndim
    magic = int.from_bytes(raw[:4], "big")
    assert magic == 0x0800 + ndim, f"bad IDX magic {magic:#x}"  # unreachable after the checksum
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


@dataclass(frozen=True)
class FashionMNIST:
    """One split in memory. ``images``: uint8 ``(N, 1, 32, 32)``; ``labels``: int64 ``(N,)``."""

    split: str
    images: torch.Tensor
    labels: torch.Tensor
    source: Path

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def sha256(self) -> str:
        """The pinned payload hash of this split's image file (identifies the data in cache keys)."""
        return PAYLOAD_SHA256[FILES[self.split][0]]

    def float_images(self, index: torch.Tensor | slice | None = None) -> torch.Tensor:
        """Images (all, or ``images[index]``) as float32 in ``[-1, 1]``."""
        return to_float(self.images if index is None else self.images[index])

    def batches(
        self,
        batch_size: int,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        shuffle: bool = True,
        drop_last: bool = True,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass over the split as ``(float images in [-1, 1], labels)`` batches; see :func:`iterate_batches`."""
        for index in iterate_batches(
            len(self), batch_size, seed=seed, generator=generator, shuffle=shuffle, drop_last=drop_last
        ):
            yield self.float_images(index), self.labels[index]


def iterate_batches(
    n: int,
    batch_size: int,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    shuffle: bool = True,
    drop_last: bool = True,
) -> Iterator[torch.Tensor]:
    """Index batches for one pass over ``n`` items.

    The order is a ``torch.randperm`` drawn from ``generator`` (advanced, so successive passes differ)
    or from a fresh generator seeded with ``seed``; the same seed gives the same order on every machine.
    Exactly one of ``seed`` and ``generator`` is required when ``shuffle`` is true.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if shuffle:
        if (seed is None) == (generator is None):
            raise ValueError("shuffling needs exactly one of seed= or generator=")
        if generator is None:
            generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(n, generator=generator)
    else:
        order = torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield order[start : start + batch_size]


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 in ``[0, 255]`` -> float32 in ``[-1, 1]`` (``x / 127.5 - 1``)."""
    return images.to(torch.float32) / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float in ``[-1, 1]`` -> uint8, rounding to nearest and clamping values outside the range."""
    return ((images.detach().to(torch.float32) + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


@functools.lru_cache(maxsize=4)
def _load(split: str, directory: str) -> FashionMNIST:
    image_name, label_name = FILES[split]
    root = Path(directory)
    raw_images = read_payload(_file_in(root, image_name) or root / f"{image_name}.gz", image_name)
    raw_labels = read_payload(_file_in(root, label_name) or root / f"{label_name}.gz", label_name)
    images = torch.from_numpy(_parse_idx(raw_images, images=True).copy())
    labels = torch.from_numpy(_parse_idx(raw_labels, images=False).astype(np.int64))
    padded = torch.zeros((images.shape[0], 1, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8)
    padded[:, 0, PAD : PAD + 28, PAD : PAD + 28] = images
    return FashionMNIST(split=split, images=padded, labels=labels, source=root)


def load(split: str = "train", *, download: bool | None = None) -> FashionMNIST:
    """Load (once per process and directory) a split, ``"train"`` (60,000) or ``"test"`` (10,000)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return _load(split, str(find_data_dir(download=download).resolve()))


def clear_cache() -> None:
    """Forget the splits held in memory."""
    _load.cache_clear()


def manifest() -> dict:
    """What the loaded data is, independent of where it was found: payload hashes, sizes, labels, layout."""
    splits = {}
    for split in SPLITS:
        data = load(split)
        splits[split] = {
            "images": len(data),
            "files": list(FILES[split]),
            "label_counts": torch.bincount(data.labels, minlength=len(CLASSES)).tolist(),
        }
    return {
        "dataset": "Fashion-MNIST",
        "layout": "uint8 (N, 1, 32, 32): the 28x28 images padded by 2 black pixels; float = x / 127.5 - 1",
        "classes": list(CLASSES),
        "splits": splits,
        "payload_sha256": PAYLOAD_SHA256,
        "payload_bytes": PAYLOAD_BYTES,
    }


if __name__ == "__main__":  # `python -m repro.data.fashion_mnist ARGS` is `repro data fashion-mnist ARGS`
    from repro.cli import run_as_module

    run_as_module("data", "fashion-mnist")
