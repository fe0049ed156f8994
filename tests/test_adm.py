"""ADM's sample-quality metrics (FID, sFID, Inception Score, precision/recall) on torch-fidelity's Inception, against
an ADM reference batch; with a random-weights Inception of the right architecture as the stand-in."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from standins import random_inception_weights

from repro.cli import main
from repro.metrics import adm


@pytest.fixture(scope="module")
def inception(tmp_path_factory):
    return random_inception_weights(tmp_path_factory.mktemp("inception") / "inception-random.pth")


def _images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tint = rng.integers(0, 256, (n, 1, 1, 3))
    return ((rng.integers(0, 256, (n, size, size, 3)) + tint) // 2).astype(np.uint8)


def test_npz_arrays_stream_in_slices_and_refuse_objects(tmp_path):
    a = np.arange(7 * 2 * 3 * 3, dtype=np.uint8).reshape(7, 2, 3, 3)
    np.savez(tmp_path / "a.npz", arr_0=a, arr_1=np.arange(7))
    arrays = adm.npz_arrays(tmp_path / "a.npz")
    assert arrays["arr_0"].shape == (7, 2, 3, 3) and arrays["arr_1"].dtype == np.int64
    parts = list(arrays["arr_0"].batches(3))
    assert [len(p) for p in parts] == [3, 3, 1] and np.array_equal(np.concatenate(parts), a)
    assert np.array_equal(next(arrays["arr_0"].batches(2, start=4)), a[4:6])
    np.savez(tmp_path / "o.npz", arr_0=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="Python objects"):
        adm.npz_arrays(tmp_path / "o.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.npz: not a readable"):
        adm.npz_arrays(tmp_path / "bad.npz")


def test_inception_score_is_adms_formula():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(12, 5)) * 3
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    by_hand = []
    for part in (p[:5], p[5:10], p[10:]):  # ADM: splits of split_size, exp(mean KL), averaged over splits
        kl = part * (np.log(part) - np.log(part.mean(0, keepdims=True)))
        by_hand.append(math.exp(kl.sum(1).mean()))
    assert adm.inception_score(logits, split_size=5) == pytest.approx(np.mean(by_hand), rel=1e-12)
    assert adm.inception_score(np.zeros((4, 5))) == pytest.approx(1.0)  # one class distribution for all: IS 1


def test_features_are_the_pool_spatial_and_logit_layers(inception):
    feats = adm.InceptionFeatures(inception).of_batches([_images(3), _images(2, size=48, seed=1)])
    assert feats[adm.POOL].shape == (5, 2048) and feats[adm.LOGITS].shape == (5, 1008)
    assert feats[adm.SPATIAL].shape == (5, 17 * 17 * 7)  # mixed_6/conv, its first 7 channels, as ADM's sFID
    grey = adm.as_nchw(_images(2)[..., :1])  # a grey image is fed as 3 equal channels
    assert grey.shape == (2, 3, 32, 32) and torch.equal(grey[:, 0], grey[:, 2])


@pytest.mark.slow
def test_a_reference_batch_against_itself_and_against_other_images(tmp_path, inception):
    real, other = _images(12), _images(12, seed=5)
    ref = adm.write_reference(real, tmp_path / "ref.npz", weights=inception, batch_size=5)
    with np.load(ref) as z:
        assert sorted(z.files) == ["arr_0", "mu", "mu_s", "sigma", "sigma_s"] and z["sigma"].shape == (2048, 2048)
    np.savez(tmp_path / "same.npz", arr_0=real)
    np.savez(tmp_path / "other.npz", arr_0=other)
    same = adm.evaluate(tmp_path / "same.npz", ref, weights=inception, batch_size=7)
    diff = adm.evaluate(tmp_path / "other.npz", ref, weights=inception, batch_size=7)
    assert abs(same["fid"]) < 1e-4 * diff["fid"] and abs(same["sfid"]) < 1e-4 * diff["sfid"]  # float rounding
    assert same["precision"] == same["recall"] == 1.0
    assert diff["fid"] > 0 and diff["sfid"] > 0 and diff["inception_score"] >= 1.0
    assert same["reference"]["sha256"] and same["reference"]["images"] == 12 and same["num_samples"] == 12
    assert same["fid_reference"] == "stored statistics"
    # statistics only (as the whole-training-set statistics of ADM's batches): FID yes, precision/recall need images
    with np.load(ref) as z:
        np.savez(tmp_path / "stats.npz", mu=z["mu"], sigma=z["sigma"])
    only = adm.evaluate(tmp_path / "other.npz", tmp_path / "stats.npz", weights=inception, metrics=("fid",))
    assert only["fid"] == pytest.approx(diff["fid"], rel=1e-9)
    with pytest.raises(ValueError, match="precision/recall need the reference's arr_0"):
        adm.evaluate(tmp_path / "other.npz", tmp_path / "stats.npz", weights=inception, metrics=("prc",))
    # images only: statistics computed from them, the same numbers
    np.savez(tmp_path / "images.npz", arr_0=real)
    from_images = adm.evaluate(tmp_path / "other.npz", tmp_path / "images.npz", weights=inception, metrics=("fid",))
    assert from_images["fid"] == pytest.approx(diff["fid"], rel=1e-6) and "12 images" in from_images["fid_reference"]


@pytest.mark.slow
def test_evaluate_command_reads_rgb_at_any_size_against_an_adm_batch(tmp_path, capsys, inception):
    real = _images(8, size=40)
    ref = adm.write_reference(real, tmp_path / "VIRTUAL_tiny.npz", weights=inception)
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, image in enumerate(_images(8, size=40, seed=3)):
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    np.savez(tmp_path / "s.npz", arr_0=_images(8, size=40, seed=3), arr_1=np.arange(8))
    out = tmp_path / "r.json"
    assert main(["evaluate", str(tmp_path / "s.npz"), "--reference", str(ref), "--weights", str(inception),
                 "--json", str(out)]) == 0  # fmt: skip
    result = json.loads(out.read_text())
    assert {"fid", "sfid", "inception_score", "precision", "recall"} <= set(result)
    assert result["reference"]["file"] == "VIRTUAL_tiny.npz" and result["image_shape"] == [40, 40, 3]
    assert main(["evaluate", str(folder), "--reference", str(ref), "--weights", str(inception), "--metrics", "fid",
                 "--json", str(tmp_path / "f.json")]) == 0  # fmt: skip
    assert json.loads((tmp_path / "f.json").read_text())["fid"] == pytest.approx(result["fid"], rel=1e-9)
    capsys.readouterr()
    # RGB images against a Fashion-MNIST split: a clear error (before: read as grey without a word)
    assert main(["evaluate", str(folder), "--reference", "test"]) == 2
    err = capsys.readouterr().err
    assert "grey images" in err and "ADM reference batch" in err and len(err.strip().splitlines()) == 1
    # an abbreviation is refused: under torchrun it could be torchrun's
    with pytest.raises(SystemExit):
        main(["evaluate", str(folder), "--ref", str(ref)])
