"""Paper scale: an ImageFolder of ImageNet encoded once into SD-VAE latents, stored in shards that training reads.

The pipeline, as in DiT's and TREAD's setups:

1. images are read as RGB by ``torchvision.datasets.ImageFolder`` (class index = position of the folder
   name in sorted order);
2. each image is center-cropped to ``image_size`` (256) the ADM way (:func:`center_crop`), scaled to
   ``[-1, 1]`` and, optionally, also encoded mirrored (``hflip``: doubles the data, so the random flips DiT
   trains with need no augmentation at training time);
3. ``diffusers.AutoencoderKL`` (the SD-VAE, ``stabilityai/sd-vae-ft-ema`` or ``-mse``), loaded from a
   local directory, or from the hub when the machine is online, encodes it; the latent is a sample of
   the posterior drawn from a generator seeded per shard (``posterior="sample"``, DiT's choice) or its mean
   (``"mean"``), times ``scale`` (0.18215): 256x256x3 -> 4x32x32;
4. ``val_per_class`` images of every class are held out of training: ``val.pt``, in round-robin class order,
   is what the validation loss is measured on;
5. latents go to ``shard-00000.pt``, ... (``{"latents": (n, 4, h, w), "labels": int64 (n,)}``, read with
   ``torch.load(weights_only=True)``), and ``manifest.json`` (written last) lists the shards and the
   validation file with their sha256, the classes and every setting above. The manifest's own sha256
   (:func:`manifest_sha256`) identifies the latent set in a run's provenance.

Every file is written to a temporary name and renamed into place, and an interrupted encoding resumes at its
first unfinished shard (``progress.json``).
"""

from __future__ import annotations

import bisect
import json
import math
import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from repro.io import atomic_torch_save, atomic_write_text
from repro.provenance import sha256_file

SD_VAE_SCALE = 0.18215
MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """Resize so the short side is ``size`` (halving with a box filter first while it is >= 2 x ``size``,
    then bicubic), and cut the central ``size`` x ``size`` square."""
    while min(image.size) >= 2 * size:
        image = image.resize(tuple(s // 2 for s in image.size), resample=Image.BOX)
    scale = size / min(image.size)
    image = image.resize(tuple(round(s * scale) for s in image.size), resample=Image.BICUBIC)
    left = (image.size[0] - size) // 2
    top = (image.size[1] - size) // 2
    return image.crop((left, top, left + size, top + size))


def image_folder(root: str | os.PathLike, image_size: int = 256):
    """``torchvision.datasets.ImageFolder`` yielding float ``(3, size, size)`` in ``[-1, 1]`` and class indices."""
    from torchvision.datasets import ImageFolder

    def transform(image: Image.Image) -> torch.Tensor:
        array = np.asarray(center_crop(image.convert("RGB"), image_size), dtype=np.uint8)
        return torch.from_numpy(array.copy()).permute(2, 0, 1).to(torch.float32) / 127.5 - 1.0

    return ImageFolder(str(root), transform=transform)


def load_vae(source: str | os.PathLike, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """``AutoencoderKL`` from a local directory (``save_pretrained`` layout) or, when online, a hub repo id."""
    from diffusers import AutoencoderKL

    path = Path(source).expanduser()
    try:
        if path.is_dir():
            vae = AutoencoderKL.from_pretrained(str(path), local_files_only=True)
        else:
            vae = AutoencoderKL.from_pretrained(str(source))
    except (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        # RuntimeError: weights that do not fit the config; UnpicklingError: a weights file holding more than tensors
        raise FileNotFoundError(
            f"cannot load the VAE from {source!r}: {exc}\nGive a local directory holding config.json and the "
            "weights (AutoencoderKL.save_pretrained layout), or a hub id such as stabilityai/sd-vae-ft-ema "
            "on a machine that is online."
        ) from exc
    return vae.to(device=device, dtype=dtype).eval().requires_grad_(False)


VALIDATION = "val.pt"
PROGRESS = "progress.json"
SEED_STRIDE = 1_000_003


def held_out(targets: list[int], per_class: int, seed: int) -> list[int]:
    """``per_class`` items of every class, chosen by a seeded permutation within the class, in round-robin class
    order (class 0's first, class 1's first, ..., class 0's second, ...), so that any prefix is class-balanced."""
    if per_class < 0:
        raise ValueError(f"val_per_class must be >= 0, got {per_class}")
    by_class: dict[int, list[int]] = {}
    for i, c in enumerate(targets):
        by_class.setdefault(int(c), []).append(i)
    g = torch.Generator().manual_seed(seed)
    picks = {}
    for c in sorted(by_class):
        items = by_class[c]
        if per_class > len(items) - 1:
            raise ValueError(
                f"val_per_class: {per_class} would hold out every image of class {c} ({len(items)} images); at most "
                f"{len(items) - 1}"
            )
        order = torch.randperm(len(items), generator=g).tolist()
        picks[c] = [items[k] for k in order[:per_class]]
    return [picks[c][r] for r in range(per_class) for c in sorted(picks)]


def _image_list_sha256(dataset) -> str:
    """sha256 of the ImageFolder's sorted relative file names and classes (the images' identity, cheaply)."""
    import hashlib

    root = Path(dataset.root)
    h = hashlib.sha256()
    for path, target in dataset.samples:
        h.update(f"{Path(path).relative_to(root)}\t{target}\n".encode())
    return h.hexdigest()


@torch.no_grad()
def _encode(vae, dataset, indices: list[int], *, batch_size, hflip, posterior, scale, dtype, generator, num_workers):
    """Latents and labels of ``dataset[indices]`` (each followed by its mirror image with ``hflip``)."""
    param = next(vae.parameters())
    subset = torch.utils.data.Subset(dataset, indices)
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    zs, ys = [], []
    for images, labels in loader:
        if hflip:
            images = torch.stack([images, images.flip(-1)], dim=1).flatten(0, 1)
            labels = labels.repeat_interleave(2)
        dist = vae.encode(images.to(device=param.device, dtype=param.dtype)).latent_dist
        z = dist.sample(generator=generator) if posterior == "sample" else dist.mode()
        zs.append((z * scale).to(device="cpu", dtype=dtype))
        ys.append(labels.to(torch.int64))
    return torch.cat(zs), torch.cat(ys)


@torch.no_grad()
def encode_image_folder(
    image_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    vae,
    *,
    image_size: int = 256,
    batch_size: int = 32,
    shard_size: int = 10_000,
    scale: float = SD_VAE_SCALE,
    posterior: str = "sample",
    hflip: bool = False,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    vae_source: str = "",
    num_workers: int = 0,
    val_per_class: int = 0,
    say=None,
) -> dict:
    """Encode every image of ``image_dir`` (an ImageFolder) into latent shards under ``out_dir``; returns the manifest.

    ``vae`` is an ``AutoencoderKL`` (see :func:`load_vae`) on the device to encode on. With ``val_per_class`` that
    many images of every class are held out (chosen by a permutation seeded by ``seed``), encoded once (no mirror)
    into ``val.pt`` in round-robin class order, and never written to the training shards: the validation loss is
    then measured on images the model does not train on, every class equally. The training images keep the
    ImageFolder order (sorted classes, then sorted files); with ``hflip`` each is followed by its mirror image.

    Shard ``k`` holds the training images ``k * n .. (k + 1) * n - 1`` (``n = shard_size``, halved with ``hflip``)
    and draws its posterior samples from a generator seeded by ``(seed, k)``, so shards are independent: an
    interrupted encoding re-run with the same arguments keeps the shards it finished (``progress.json`` lists them
    with their sha256, checked) and encodes the rest. Same inputs, seed and device give the same latents.
    """
    if posterior not in ("sample", "mean"):
        raise ValueError(f"posterior must be 'sample' or 'mean', got {posterior!r}")
    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"shard_size and batch_size must be >= 1, got {shard_size} and {batch_size}")
    if hflip and shard_size % 2:
        raise ValueError(
            f"shard_size must be even with hflip (an image and its mirror share a shard), got {shard_size}"
        )
    say = say or (lambda text: None)
    dataset = image_folder(image_dir, image_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    param = next(vae.parameters())
    settings = {
        "format": FORMAT_VERSION,
        "images_sha256": _image_list_sha256(dataset),
        "image_size": image_size,
        "scale": scale,
        "posterior": posterior,
        "hflip": hflip,
        "seed": seed,
        "dtype": str(dtype).removeprefix("torch."),
        "shard_size": shard_size,
        "val_per_class": val_per_class,
        "vae": {"source": vae_source, "config": {k: _jsonable(v) for k, v in dict(vae.config).items()}},
    }
    manifest_path = out / MANIFEST
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if {k: manifest.get(k) for k in settings} == json.loads(json.dumps(settings)):
            say(f"{out}: already encoded ({manifest['count']} latents)")
            return manifest
        raise ValueError(f"{out}: holds latents encoded with other settings or images; give another output folder")
    progress_path = out / PROGRESS
    progress = {"settings": settings, "validation": None, "shards": []}
    if progress_path.is_file():
        old = json.loads(progress_path.read_text())
        if old.get("settings") != json.loads(json.dumps(settings)):
            raise ValueError(
                f"{progress_path}: an interrupted encoding with other settings or images; give another output folder "
                "or remove it"
            )
        kept = []
        for entry in old.get("shards", []):
            if (out / entry["file"]).is_file() and sha256_file(out / entry["file"]) == entry["sha256"]:
                kept.append(entry)
            else:
                break  # shards are written in order: keep the intact prefix
        progress["shards"] = kept
        v = old.get("validation")
        if v and (out / v["file"]).is_file() and sha256_file(out / v["file"]) == v["sha256"]:
            progress["validation"] = v
        say(f"{out}: resuming after {len(kept)} shard(s)")

    def save_progress():
        atomic_write_text(progress_path, json.dumps(progress, indent=2) + "\n")

    encode = dict(
        batch_size=batch_size, hflip=False, posterior=posterior, scale=scale, dtype=dtype, num_workers=num_workers
    )
    val_items = held_out(dataset.targets, val_per_class, seed) if val_per_class else []
    if val_items and progress["validation"] is None:
        generator = torch.Generator(device=param.device).manual_seed(seed * SEED_STRIDE + SEED_STRIDE - 1)
        z, y = _encode(vae, dataset, val_items, generator=generator, **encode)
        atomic_torch_save({"latents": z.clone(), "labels": y.clone()}, out / VALIDATION)
        progress["validation"] = {
            "file": VALIDATION,
            "count": len(y),
            "per_class": val_per_class,
            "sha256": sha256_file(out / VALIDATION),
            "label_counts": torch.bincount(y, minlength=len(dataset.classes)).tolist(),
        }
        save_progress()
    held = set(val_items)
    train_items = [i for i in range(len(dataset)) if i not in held]
    per_shard = shard_size // (2 if hflip else 1)
    shards = progress["shards"]
    latent_shape: list[int] = list(shards[0]["latent_shape"]) if shards else []
    encode["hflip"] = hflip
    for k in range(len(shards), math.ceil(len(train_items) / per_shard)):
        items = train_items[k * per_shard : (k + 1) * per_shard]
        generator = torch.Generator(device=param.device).manual_seed(seed * SEED_STRIDE + k)
        z, y = _encode(vae, dataset, items, generator=generator, **encode)
        latent_shape = list(z.shape[1:])
        name = f"shard-{k:05d}.pt"
        atomic_torch_save({"latents": z.clone(), "labels": y.clone()}, out / name)
        shards.append({"file": name, "count": len(y), "sha256": sha256_file(out / name), "latent_shape": latent_shape})
        save_progress()
        say(f"{out}: shard {k + 1} of {math.ceil(len(train_items) / per_shard)}")

    manifest = {
        **settings,
        "count": sum(s["count"] for s in shards),
        "latent_shape": latent_shape,
        "classes": list(dataset.classes),
        "validation": progress["validation"],
        "shards": [{k: v for k, v in s.items() if k != "latent_shape"} for s in shards],
    }
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
    progress_path.unlink(missing_ok=True)
    return manifest


def manifest_sha256(directory: str | os.PathLike) -> str:
    """The latent set's identity: the sha256 of its ``manifest.json``, which lists every shard's sha256 and every
    setting of the encoding (a run's provenance records it)."""
    return sha256_file(Path(directory) / MANIFEST)


def _jsonable(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def _load_shard(path: Path, mmap: bool = False) -> dict[str, torch.Tensor]:
    """A shard (or ``val.pt``) unpickled weights-only: a file that is not one (truncated, planted code, another
    layout) is a one-line ``ValueError`` naming it, never a traceback and never code run."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # UnpicklingError (a pickle with code), RuntimeError, EOFError, ...
        raise ValueError(
            f"{path}: not a readable latent shard ({type(e).__name__}): truncated, corrupt, or holding more than "
            "tensors; re-encode it"
        ) from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), torch.Tensor) for k in ("latents", "labels")):
        raise ValueError(f"{path}: holds no 'latents' and 'labels' tensors; re-encode it")
    return data


class LatentShards(torch.utils.data.Dataset):
    """Reads the shards written by :func:`encode_image_folder`: item ``i`` is ``(latent (4, h, w), label)``.

    One shard is held in memory at a time, so access in shard order (as :meth:`batches` does) is cheap.
    With ``verify`` each shard's sha256 is checked against the manifest when it is first read.
    """

    def __init__(self, directory: str | os.PathLike, *, verify: bool = True):
        self.directory = Path(directory)
        manifest_path = self.directory / MANIFEST
        if not manifest_path.is_file():
            raise FileNotFoundError(
                f"{manifest_path} not found: encode the images first (python -m repro.data.latents)"
            )
        self.manifest = json.loads(manifest_path.read_text())
        if self.manifest.get("format") != FORMAT_VERSION:
            raise ValueError(f"{manifest_path}: format {self.manifest.get('format')}, expected {FORMAT_VERSION}")
        self.verify = verify
        self.offsets = np.cumsum([0] + [s["count"] for s in self.manifest["shards"]]).tolist()
        self._cached: tuple[int, dict] | None = None
        self._verified: set[int] = set()

    def __len__(self) -> int:
        return self.offsets[-1]

    @property
    def classes(self) -> list[str]:
        return self.manifest["classes"]

    def shard(self, k: int) -> dict[str, torch.Tensor]:
        """Shard ``k`` as ``{"latents", "labels"}``."""
        if self._cached is not None and self._cached[0] == k:
            return self._cached[1]
        data = self.load(k)
        self._cached = (k, data)
        return data

    def load(self, k: int, mmap: bool = False) -> dict[str, torch.Tensor]:
        """Read shard ``k`` (memory-mapped when ``mmap``), its hash checked once and its count always."""
        entry = self.manifest["shards"][k]
        path = self.directory / entry["file"]
        if self.verify and k not in self._verified:
            digest = sha256_file(path)
            if digest != entry["sha256"]:
                raise ValueError(f"{path} has sha256 {digest}, the manifest says {entry['sha256']}: re-encode it")
            self._verified.add(k)
        data = _load_shard(path, mmap)
        if len(data["labels"]) != entry["count"]:
            raise ValueError(f"{path} holds {len(data['labels'])} latents, the manifest says {entry['count']}")
        return data

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = bisect.bisect_right(self.offsets, i) - 1
        data = self.shard(k)
        j = i - self.offsets[k]
        return data["latents"][j], data["labels"][j]

    def validation(self, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The held-out validation latents (``val.pt``, never in a training shard; round-robin class order, so the
        first ``size`` are class-balanced) as float32, and their labels; its sha256 is checked."""
        entry = self.manifest.get("validation")
        if not entry:
            raise ValueError(
                f"{self.directory / MANIFEST}: the latents have no held-out validation set (encoded without "
                "--val-per-class); re-encode with --val-per-class N so that the validation loss is measured on images "
                "the model does not train on"
            )
        path = self.directory / entry["file"]
        if self.verify:
            digest = sha256_file(path)
            if digest != entry["sha256"]:
                raise ValueError(f"{path} has sha256 {digest}, the manifest says {entry['sha256']}: re-encode it")
        data = _load_shard(path)
        n = len(data["labels"]) if size is None else size
        if n > len(data["labels"]):
            raise ValueError(
                f"eval.val_size: {n} is not allowed; must be <= {len(data['labels'])}, the held-out validation latents "
                f"in {self.directory} ({entry.get('per_class')} per class)"
            )
        return data["latents"][:n].float(), data["labels"][:n].long()

    def mapped(self) -> MappedLatents:
        """Every shard memory-mapped as one indexable array (see :class:`MappedLatents`)."""
        return MappedLatents(self)

    def batches(
        self, batch_size: int, *, seed: int, drop_last: bool = True
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass: shards in a seeded random order, each shard's items in a seeded random order.

        A batch never spans two shards (the tail of each shard shorter than ``batch_size`` is dropped
        when ``drop_last``), which keeps one shard in memory at a time.
        """
        generator = torch.Generator().manual_seed(seed)
        for k in torch.randperm(len(self.manifest["shards"]), generator=generator).tolist():
            data = self.shard(k)
            order = torch.randperm(len(data["labels"]), generator=generator)
            stop = len(order) - len(order) % batch_size if drop_last else len(order)
            for start in range(0, stop, batch_size):
                index = order[start : start + batch_size]
                yield data["latents"][index], data["labels"][index]


class MappedLatents:
    """All shards of a :class:`LatentShards` as one array, memory-mapped (``torch.load(mmap=True)``).

    Nothing is read at construction but the labels (8 bytes an item) and, with ``verify``, each file once
    for its sha256; indexing reads the pages of the items asked for and returns them as float32. Every
    DDP rank maps the same files, so the operating system's page cache holds one copy for all ranks, and a
    rank that takes only its slice of each global batch reads only that slice. ``[:n]`` keeps the first
    ``n`` items, still mapped; any other index or slice gathers the items into memory.
    """

    def __init__(self, shards: LatentShards, limit: int | None = None):
        self.shards = shards
        self._parts: list[torch.Tensor] = []
        labels = []
        for k in range(len(shards.manifest["shards"])):
            data = shards.load(k, mmap=True)
            self._parts.append(data["latents"])
            labels.append(data["labels"].long())
        self.offsets = torch.tensor(shards.offsets, dtype=torch.long)
        self.labels = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)
        self.limit = len(self.labels) if limit is None else min(limit, len(self.labels))
        self.labels = self.labels[: self.limit]

    def __len__(self) -> int:
        return self.limit

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.limit, *self._parts[0].shape[1:]) if self._parts else (0,)

    def __getitem__(self, index) -> torch.Tensor | MappedLatents:
        if isinstance(index, slice):
            start, stop, step = index.indices(self.limit)
            if start == 0 and step == 1:
                view = MappedLatents.__new__(MappedLatents)
                view.__dict__.update(self.__dict__)
                view.limit, view.labels = stop, self.labels[:stop]
                return view
            index = torch.arange(start, stop, step)
        index = torch.as_tensor(index, dtype=torch.long)
        flat = index.reshape(-1)
        if flat.numel() and (flat.min() < 0 or flat.max() >= self.limit):
            raise IndexError(f"index out of range for {self.limit} latents")
        out = torch.empty((flat.numel(), *self._parts[0].shape[1:]), dtype=torch.float32)
        shard_of = torch.searchsorted(self.offsets, flat, right=True) - 1
        for k in shard_of.unique().tolist():
            where = (shard_of == k).nonzero().squeeze(1)
            out[where] = self._parts[k][flat[where] - self.offsets[k]].float()
        return out.reshape(*index.shape, *out.shape[1:])


if __name__ == "__main__":  # `python -m repro.data.latents ARGS` is `repro data latents ARGS`
    from repro.cli import run_as_module

    run_as_module("data", "latents")
