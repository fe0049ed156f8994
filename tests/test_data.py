"""Fashion-MNIST loading (location order, checksums, layout, shuffling) and the SD-VAE latent shards."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from repro.cli import main
from repro.data import fashion_mnist as fm
from repro.data import latents as lt

REAL = fm.DEBIAN_DIR  # the installed files (tests may point the module elsewhere)
needs_data = pytest.mark.skipif(bool(fm._missing(REAL)), reason=f"Fashion-MNIST not installed in {REAL}")


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``directory`` with its size and modification time."""
    return {
        str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file() or p.is_symlink()
    }


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No data anywhere unless a test puts it there; downloads fail loudly unless a test mocks them."""
    monkeypatch.delenv("REPRO_DATA_DIR", raising=False)
    monkeypatch.delenv("REPRO_OFFLINE", raising=False)
    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "no-debian")

    def no_network(*args, **kwargs):
        raise AssertionError("the network must not be used here")

    monkeypatch.setattr(fm.urllib.request, "urlopen", no_network)
    fm.clear_cache()
    yield tmp_path
    fm.clear_cache()


def copy_data(dest: Path, *, link_train: bool = True) -> Path:
    """The four files in ``dest``: the small test files copied, the large train files symlinked."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in fm.ALL_FILES:
        src = REAL / f"{name}.gz"
        if link_train and name.startswith("train-"):
            (dest / src.name).symlink_to(src)
        else:
            shutil.copy(src, dest / src.name)
    return dest


# --- layout, labels, range ---------------------------------------------------------------------------------


@needs_data
def test_splits_have_the_documented_layout():
    test, train = fm.load("test"), fm.load("train")
    assert test.images.shape == (10_000, 1, 32, 32) and test.images.dtype == torch.uint8
    assert train.images.shape == (60_000, 1, 32, 32) and train.labels.shape == (60_000,)
    assert test.labels.dtype == torch.int64
    # 1,000 test and 6,000 train images per class
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    # the 2-pixel padding is black, the 28x28 interior is the original image
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert int(test.images[:, 0, border].max()) == 0
    assert int(test.images.max()) == 255
    x = test.float_images(slice(0, 500))
    assert x.dtype == torch.float32 and float(x.min()) == -1.0 and float(x.max()) <= 1.0
    # the first test image is an ankle boot (label 9), as in the official files
    assert int(test.labels[0]) == 9 and fm.CLASSES[9] == "Ankle boot"


@needs_data
def test_split_is_loaded_once():
    assert fm.load("test") is fm.load("test")


@needs_data
def test_padding_matches_raw_idx_pixels():
    raw = gzip.decompress((REAL / "t10k-images-idx3-ubyte.gz").read_bytes())
    first = np.frombuffer(raw, dtype=np.uint8, offset=16, count=28 * 28).reshape(28, 28)
    assert torch.equal(fm.load("test").images[0, 0, 2:30, 2:30], torch.from_numpy(first.copy()))


@given(st.lists(st.integers(0, 255), min_size=1, max_size=64))
def test_uint8_float_roundtrip(values):
    x = torch.tensor(values, dtype=torch.uint8)
    f = fm.to_float(x)
    assert float(f.min()) >= -1.0 and float(f.max()) <= 1.0
    assert torch.equal(fm.to_uint8(f), x)


def test_to_uint8_clamps_and_rounds():
    assert fm.to_uint8(torch.tensor([-3.0, -1.0, 0.0, 1.0, 5.0])).tolist() == [0, 0, 128, 255, 255]


# --- deterministic shuffling -------------------------------------------------------------------------------


@given(st.integers(1, 300), st.integers(1, 64), st.integers(0, 2**31 - 1), st.booleans())
def test_batches_are_a_seeded_permutation(n, batch_size, seed, drop_last):
    a = list(fm.iterate_batches(n, batch_size, seed=seed, drop_last=drop_last))
    b = list(fm.iterate_batches(n, batch_size, seed=seed, drop_last=drop_last))
    assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))
    seen = torch.cat(a) if a else torch.empty(0, dtype=torch.int64)
    assert len(set(seen.tolist())) == len(seen)  # no repeats
    if drop_last:
        assert all(len(x) == batch_size for x in a) and len(seen) == n - n % batch_size
    else:
        assert sorted(seen.tolist()) == list(range(n))


def test_seeds_and_generators_change_the_order():
    first = torch.cat(list(fm.iterate_batches(1000, 100, seed=0)))
    assert not torch.equal(first, torch.cat(list(fm.iterate_batches(1000, 100, seed=1))))
    assert torch.equal(
        first, torch.cat(list(fm.iterate_batches(1000, 100, generator=torch.Generator().manual_seed(0))))
    )
    g = torch.Generator().manual_seed(0)
    epoch1 = torch.cat(list(fm.iterate_batches(1000, 100, generator=g)))
    epoch2 = torch.cat(list(fm.iterate_batches(1000, 100, generator=g)))
    assert torch.equal(epoch1, first) and not torch.equal(epoch1, epoch2)
    assert torch.equal(torch.cat(list(fm.iterate_batches(10, 3, shuffle=False, drop_last=False))), torch.arange(10))
    with pytest.raises(ValueError, match="exactly one"):
        next(fm.iterate_batches(10, 3))


@needs_data
def test_dataset_batches_are_deterministic():
    test = fm.load("test")
    (x1, y1), (x2, y2) = next(test.batches(32, seed=7)), next(test.batches(32, seed=7))
    assert x1.shape == (32, 1, 32, 32) and x1.dtype == torch.float32 and torch.equal(x1, x2) and torch.equal(y1, y2)
    index = next(fm.iterate_batches(len(test), 32, seed=7))
    assert torch.equal(y1, test.labels[index])


# --- where the data comes from, and what happens when it is missing or damaged ------------------------------


@needs_data
def test_repro_data_dir_comes_first(isolated, monkeypatch):
    data = copy_data(isolated / "mine")
    monkeypatch.setenv("REPRO_DATA_DIR", str(data))
    assert fm.find_data_dir() == data
    assert fm.load("test").source == data.resolve()


@needs_data
def test_uncompressed_files_are_accepted(isolated, monkeypatch):
    data = copy_data(isolated / "raw")
    for name in fm.FILES["test"]:
        gz = data / f"{name}.gz"
        (data / name).write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    monkeypatch.setenv("REPRO_DATA_DIR", str(data))
    assert len(fm.load("test")) == 10_000


def test_missing_data_says_how_to_get_it_and_touches_nothing(isolated, monkeypatch):
    empty = isolated / "empty"
    empty.mkdir()
    (empty / "unrelated.txt").write_text("keep")
    before = snapshot(isolated)
    monkeypatch.setenv("REPRO_DATA_DIR", str(empty))
    with pytest.raises(fm.DataNotFoundError) as err:
        fm.load("test")
    msg = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in msg and "REPRO_DATA_DIR" in msg
    assert all(name in msg for name in fm.ALL_FILES)
    monkeypatch.delenv("REPRO_DATA_DIR")
    with pytest.raises(fm.DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        fm.load("test", download=False)
    monkeypatch.setenv("REPRO_OFFLINE", "1")
    with pytest.raises(fm.DataNotFoundError, match="downloading is off"):
        fm.load("test")  # no network call: urlopen would fail the test
    assert snapshot(isolated) == before


@needs_data
@pytest.mark.parametrize("damage", ["truncated-gzip", "changed-byte", "wrong-file"])
def test_corrupt_file_is_named_and_nothing_is_touched(isolated, monkeypatch, damage):
    data = copy_data(isolated / "data")
    target = data / "t10k-images-idx3-ubyte.gz"
    if damage == "truncated-gzip":
        target.write_bytes(target.read_bytes()[:5000])
    elif damage == "changed-byte":
        raw = bytearray(gzip.decompress(target.read_bytes()))
        raw[5000] ^= 1
        target.write_bytes(gzip.compress(bytes(raw), compresslevel=1))
    else:
        shutil.copy(data / "t10k-labels-idx1-ubyte.gz", target)
    before = snapshot(isolated)
    monkeypatch.setenv("REPRO_DATA_DIR", str(data))
    with pytest.raises(fm.DataCorruptError) as err:
        fm.load("test")
    msg = str(err.value)
    assert str(target) in msg and "t10k-images-idx3-ubyte" in msg
    if damage != "truncated-gzip":
        assert fm.PAYLOAD_SHA256["t10k-images-idx3-ubyte"] in msg and "7840016 bytes" in msg
    assert snapshot(isolated) == before
    assert fm.load("train").images.shape[0] == 60_000  # the undamaged split still loads


def _fake_urlopen(served: dict[str, bytes], calls: list[str]):
    def urlopen(url, timeout=None):
        calls.append(url)
        name = url.rsplit("/", 1)[1]
        if name not in served:
            raise urllib.error.URLError("unreachable")
        return io.BytesIO(served[name])

    return urlopen


@needs_data
def test_official_download_path(isolated, monkeypatch):
    served = {f"{n}.gz": (REAL / f"{n}.gz").read_bytes() for n in fm.ALL_FILES}
    calls: list[str] = []
    monkeypatch.setattr(fm.urllib.request, "urlopen", _fake_urlopen(served, calls))
    test = fm.load("test")
    target = isolated / "cache" / "fashion-mnist"
    assert test.source == target.resolve() and len(test) == 10_000
    assert sorted(calls) == sorted(f"{fm.MIRRORS[0]}{n}.gz" for n in fm.ALL_FILES)
    assert sorted(p.name for p in target.iterdir()) == sorted(f"{n}.gz" for n in fm.ALL_FILES)
    calls.clear()
    fm.clear_cache()
    fm.load("test")
    assert calls == []  # found in the cache the second time


@needs_data
def test_failed_or_corrupt_download_leaves_nothing(isolated, monkeypatch):
    served = {f"{n}.gz": (REAL / f"{n}.gz").read_bytes() for n in fm.FILES["test"]}
    calls: list[str] = []
    monkeypatch.setattr(fm.urllib.request, "urlopen", _fake_urlopen(served, calls))
    with pytest.raises(fm.DataNotFoundError, match="download failed"):
        fm.load("test")
    target = isolated / "cache" / "fashion-mnist"
    assert list(target.iterdir()) == []
    served = {f"{n}.gz": gzip.compress(b"not the data") for n in fm.ALL_FILES}
    monkeypatch.setattr(fm.urllib.request, "urlopen", _fake_urlopen(served, calls))
    with pytest.raises(fm.DataCorruptError, match="train-images-idx3-ubyte"):
        fm.load("test")
    assert list(target.iterdir()) == []


# --- paper scale: ImageFolder -> center crop -> SD-VAE latents -> shards -----------------------------------


def tiny_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=16,
    ).eval()


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    sizes = {"cat": [(40, 50), (70, 33)], "dog": [(64, 64), (16, 20), (90, 45)]}
    for cls, shapes in sizes.items():
        (tmp_path / "images" / cls).mkdir(parents=True)
        for i, (w, h) in enumerate(shapes):
            array = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(array).save(tmp_path / "images" / cls / f"{i}.png")
    return tmp_path / "images"


def test_center_crop_is_square_and_central():
    image = Image.fromarray(np.arange(300 * 100, dtype=np.uint32).reshape(100, 300).astype(np.uint8))
    assert lt.center_crop(image, 16).size == (16, 16)
    assert lt.center_crop(Image.new("RGB", (1000, 600)), 256).size == (256, 256)
    # a 2:1 image scaled to height 8 keeps its middle: 16 wide, so columns 4..11 survive
    stripes = np.zeros((8, 16), dtype=np.uint8)
    stripes[:, 4:12] = 255
    assert np.asarray(lt.center_crop(Image.fromarray(stripes), 8)).min() == 255


def test_latent_shards_roundtrip(image_folder, tmp_path):
    vae = tiny_vae()
    vae.save_pretrained(tmp_path / "vae")
    loaded = lt.load_vae(tmp_path / "vae")
    manifest = lt.encode_image_folder(
        image_folder, tmp_path / "out", loaded, image_size=16, batch_size=2, shard_size=3, posterior="mean"
    )
    assert manifest["count"] == 5 and [s["count"] for s in manifest["shards"]] == [3, 2]
    assert manifest["latent_shape"] == [4, 8, 8] and manifest["classes"] == ["cat", "dog"]
    assert manifest["scale"] == 0.18215
    shards = lt.LatentShards(tmp_path / "out")
    assert len(shards) == 5 and [int(shards[i][1]) for i in range(5)] == [0, 0, 1, 1, 1]
    # the stored latent is the posterior mean of the center-cropped image, times 0.18215
    folder = lt.image_folder(image_folder, 16)
    x, y = folder[3]
    with torch.no_grad():
        expected = vae.encode(x[None]).latent_dist.mode()[0] * 0.18215
    torch.testing.assert_close(shards[3][0], expected, rtol=1e-5, atol=1e-6)
    assert int(y) == 1
    # batches: shard-local, seeded
    a = [yb.tolist() for _, yb in shards.batches(2, seed=0)]
    b = [yb.tolist() for _, yb in shards.batches(2, seed=0)]
    assert a == b and [len(v) for v in a] == [2, 2]  # a batch stays in one shard: 3 -> one batch, 2 -> one batch
    # a damaged shard is caught
    (tmp_path / "out" / "shard-00001.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="sha256"):
        lt.LatentShards(tmp_path / "out")[4]


def test_sampled_latents_are_seeded_and_flip_doubles(image_folder, tmp_path):
    vae = tiny_vae()
    kwargs = dict(image_size=16, batch_size=4, shard_size=100, posterior="sample", hflip=True)
    m1 = lt.encode_image_folder(image_folder, tmp_path / "a", vae, seed=3, **kwargs)
    m2 = lt.encode_image_folder(image_folder, tmp_path / "b", vae, seed=3, **kwargs)
    lt.encode_image_folder(image_folder, tmp_path / "c", vae, seed=4, **kwargs)
    assert m1["count"] == 10 and m1["hflip"] is True
    z1, z2, z3 = (torch.load(tmp_path / d / "shard-00000.pt", weights_only=True) for d in "abc")
    assert torch.equal(z1["latents"], z2["latents"]) and not torch.equal(z1["latents"], z3["latents"])
    assert z1["labels"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    assert m1["shards"][0]["sha256"] == m2["shards"][0]["sha256"]
    assert not [p for p in os.listdir(tmp_path / "a") if p.endswith(".tmp")]
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["seed"] == 3


def test_vae_that_is_not_there_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="cannot load the VAE"):
        lt.load_vae(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="encode the images first"):
        lt.LatentShards(tmp_path / "empty")


@needs_data
def test_manifest_command(tmp_path, capsys):
    out = tmp_path / "goldens" / "fashion-mnist.json"
    assert main(["data", "fashion-mnist", "--manifest", str(out)]) == 0
    first = out.read_text()
    manifest = json.loads(first)
    assert manifest["splits"]["test"]["label_counts"] == [1000] * 10
    assert manifest["payload_sha256"] == fm.PAYLOAD_SHA256
    assert str(REAL) not in first  # describes the data, not the machine it was found on
    assert main(["data", "fashion-mnist", "--manifest", str(out)]) == 0 and out.read_text() == first


def test_manifest_command_without_data(isolated, capsys):
    assert main(["data", "fashion-mnist", "--no-download"]) == 1
    assert "apt-get install dataset-fashion-mnist" in capsys.readouterr().err
