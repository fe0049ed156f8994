"""FID/KID/precision-recall through torch-fidelity with the Fashion-MNIST feature network.

The corruption-curve tests print their values (run with ``-s`` to see them).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from threadpoolctl import threadpool_limits

from repro import cli
from repro.data import fashion_mnist as fm
from repro.data import to_float
from repro.metrics import featurenet as fn
from repro.metrics import fid

needs_data = pytest.mark.skipif(bool(fm._missing(fm.DEBIAN_DIR)), reason="Fashion-MNIST is not installed")
N = 2000  # images per set in the FID tests: enough for stable numbers, cheap on 2 cores
M = 1000  # images per set in the corruption curves


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("metrics-cache")


@pytest.fixture(scope="module")
def train_images():
    return fm.load("train").images[:N]


@pytest.fixture(scope="module")
def test_images():
    return fm.load("test").images[:N]


def fid_of(samples, reference, cache, **kwargs):
    return fid.compute_metrics(samples, reference, ("fid",), cache_root=cache, **kwargs)["fid"]


# --- the Frechet formula ------------------------------------------------------------------------------------


@given(
    st.integers(1, 12).flatmap(
        lambda d: st.tuples(
            *[st.lists(st.floats(-5, 5), min_size=d, max_size=d)] * 2,
            *[st.lists(st.floats(0.01, 20), min_size=d, max_size=d)] * 2,
        )
    )
)
def test_fid_of_diagonal_gaussians_matches_closed_form(params):
    mu1, mu2, var1, var2 = (np.array(p, dtype=np.float64) for p in params)
    stats1 = {"mu": mu1, "sigma": np.diag(var1)}
    stats2 = {"mu": mu2, "sigma": np.diag(var2)}
    # diagonal covariances commute: tr sqrt(S1 S2) = sum sqrt(v1 v2), so FID = |dmu|^2 + sum (sqrt v1 - sqrt v2)^2
    expected = float(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2))
    assert fid.frechet_distance(stats1, stats2) == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_fid_of_sampled_gaussian_features_matches_scipy_and_truth():
    rng = np.random.default_rng(0)
    d, n = 6, 40_000
    a = rng.normal(size=(d, d))
    cov1 = a @ a.T / d + 0.1 * np.eye(d)
    mu1, mu2, var2 = rng.normal(size=d), rng.normal(size=d), rng.uniform(0.2, 2.0, size=d)
    f1 = rng.multivariate_normal(mu1, cov1, size=n)
    f2 = rng.multivariate_normal(mu2, np.diag(var2), size=n)
    s1, s2 = fid.feature_statistics(torch.from_numpy(f1)), fid.feature_statistics(torch.from_numpy(f2))
    np.testing.assert_allclose(s1["mu"], f1.mean(0))
    np.testing.assert_allclose(s1["sigma"], np.cov(f1, rowvar=False))

    def frechet(m1, c1, m2, c2):
        return float(np.sum((m1 - m2) ** 2) + np.trace(c1 + c2 - 2 * scipy.linalg.sqrtm(c1 @ c2).real))

    got = fid.frechet_distance(s1, s2)
    assert got == pytest.approx(frechet(f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False)))
    assert got == pytest.approx(frechet(mu1, cov1, mu2, np.diag(var2)), rel=0.03)
    assert fid.frechet_distance(s2, s1) == pytest.approx(got, rel=1e-9)
    assert fid.frechet_distance(s1, s1) == pytest.approx(0.0, abs=1e-9)


# --- the feature network -------------------------------------------------------------------------------------


def test_committed_weights_match_their_record():
    record = json.loads(fn.record_path(fn.default_weights_path()).read_text())
    assert record["sha256"] == fn.sha256_file(fn.default_weights_path())
    assert record["test_accuracy"] >= 0.90
    assert fn.default_weights_path().stat().st_size < 2_000_000
    for key in ("command", "git_commit", "torch", "device", "seed"):
        assert key in record


@needs_data
def test_loaded_net_classifies_and_features_have_unit_scale(test_images):
    net = fn.load_feature_net()
    test = fm.load("test")
    assert fn.accuracy(net, test_images, test.labels[:N]) >= 0.88  # the record's figure is on all 10,000
    with torch.no_grad():
        rms = float(net.features(to_float(test_images)).pow(2).mean().sqrt())
    assert 0.8 < rms < 1.25  # the scale was set to make it 1 on training images


def test_weights_checksum_mismatch_is_caught(tmp_path):
    src = fn.default_weights_path()
    shutil.copy(src, tmp_path / "featurenet.pt")
    shutil.copy(fn.record_path(src), tmp_path / "featurenet.json")
    fn.load_feature_net(tmp_path / "featurenet.pt")  # intact copy loads
    blob = bytearray((tmp_path / "featurenet.pt").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (tmp_path / "featurenet.pt").write_bytes(bytes(blob))
    with pytest.raises(fn.WeightsMismatchError, match="expected " + fn.recorded_sha256(src)):
        fn.load_feature_net(tmp_path / "featurenet.pt")
    with pytest.raises(fn.WeightsMismatchError):
        fn.register(tmp_path / "featurenet.pt")
    with pytest.raises(fn.WeightsMismatchError, match="expected 00"):
        fn.load_feature_net(src, expected_sha256="00" * 32)
    (tmp_path / "featurenet.json").unlink()
    with pytest.raises(fn.WeightsMismatchError, match="no record"):
        fn.load_feature_net(tmp_path / "featurenet.pt")


def test_save_is_atomic_and_roundtrips(tmp_path):
    torch.manual_seed(1)
    net = fn.FeatureNet().eval()
    record = fn.save_feature_net(net, tmp_path, {"seed": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["featurenet.json", "featurenet.pt"]
    loaded = fn.load_feature_net(tmp_path / "featurenet.pt")
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    assert torch.equal(loaded(x), net(x)) and record["sha256"] == fn.sha256_file(tmp_path / "featurenet.pt")


def test_extractor_accepts_grey_rgb_and_28px():
    name = fn.register()
    assert name == fn.register() and name.startswith("repro-fmnist-")
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    extractor = FEATURE_EXTRACTORS_REGISTRY[name](name, ["penultimate", "logits"])
    g = torch.Generator().manual_seed(0)
    x28 = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8, generator=g)
    x32 = torch.nn.functional.pad(x28, (2, 2, 2, 2))
    feats, logits = extractor(x32)
    assert feats.shape == (5, 128) and logits.shape == (5, 10)
    assert torch.equal(extractor(x28)[0], feats)
    assert torch.equal(extractor(x32.expand(-1, 3, -1, -1))[0], feats)
    torch.testing.assert_close(feats, extractor.net.features(to_float(x32)))
    assert torch.equal(fid.extract_features(x32), feats)
    with pytest.raises(ValueError, match="uint8"):
        extractor(to_float(x32))
    with pytest.raises(ValueError, match="32x32"):
        extractor(torch.zeros(1, 1, 30, 30, dtype=torch.uint8))


def test_sample_conversion():
    x = torch.randint(0, 256, (3, 1, 32, 32), dtype=torch.uint8)
    assert torch.equal(fid.as_uint8_images(x), x)
    assert torch.equal(fid.as_uint8_images(to_float(x)), x)
    assert torch.equal(fid.as_uint8_images(x[:, 0].numpy()), x)
    assert torch.equal(fid.as_uint8_images(x.permute(0, 2, 3, 1).numpy()), x)
    assert torch.equal(fid.as_uint8_images(x[:, :, 2:30, 2:30])[:, :, 2:30, 2:30], x[:, :, 2:30, 2:30])
    for bad in (torch.zeros(2, 3, 32, 32), torch.zeros(2, 1, 16, 16), torch.zeros(0, 1, 32, 32)):
        with pytest.raises(ValueError, match="shape"):
            fid.as_uint8_images(bad)
    with pytest.raises(ValueError, match="dtype"):
        fid.as_uint8_images(torch.zeros(2, 1, 32, 32, dtype=torch.int32))


# --- FID on real data ----------------------------------------------------------------------------------------


@needs_data
def test_set_against_itself_is_zero(test_images, cache):
    out = fid.compute_metrics(
        test_images, "test", reference_size=N, cache_root=cache, kid_subsets=2, kid_subset_size=N
    )  # KID's subsets are then the whole set on both sides, so only the unbiased estimator's O(1/N) term is left
    assert abs(out["fid"]) < 1e-3 and abs(out["kid"]) < 1e-2
    assert out["precision"] == 1.0 and out["recall"] == 1.0
    assert out["num_samples"] == N and out["num_reference"] == N


@needs_data
def test_symmetric_and_rerun_identical(train_images, test_images, cache):
    a, b = train_images[:500], test_images[:500]
    assert fid_of(a, b, cache) == pytest.approx(fid_of(b, a, cache), rel=1e-5)
    kwargs = dict(reference_size=N, cache_root=cache, kid_subsets=10, kid_subset_size=500)
    first = fid.compute_metrics(a, "test", **kwargs)
    again = fid.compute_metrics(a, "test", **kwargs)
    assert first == again  # the second call reads the reference from the cache: bitwise the same
    assert fid.compute_metrics(to_float(a), "test", **kwargs) == first


@needs_data
def test_reference_cache_is_keyed_by_data_and_weights(train_images, cache, tmp_path):
    fid_of(train_images[:500], "test", cache, reference_size=N)
    names = [p.name for p in (cache / "fidelity").iterdir()]
    data_key = fm.PAYLOAD_SHA256["t10k-images-idx3-ubyte"][:12]
    weights_key = fn.sha256_file(fn.default_weights_path())[:12]
    assert any(data_key in n and weights_key in n and f"-n{N}-" in n for n in names)
    # other weights: another cache entry and another number
    torch.manual_seed(3)
    fn.save_feature_net(fn.FeatureNet(), tmp_path, {"seed": 3})
    other = fid_of(train_images[:500], "test", cache, reference_size=N, weights=tmp_path / "featurenet.pt")
    assert len(list((cache / "fidelity").iterdir())) > len(names)
    assert other != fid_of(train_images[:500], "test", cache, reference_size=N)


@needs_data
def test_train_vs_test_is_small_and_corruption_grows_monotonically(train_images, test_images, cache):
    clean = fid_of(train_images, test_images, cache)
    curves = {"noise": (0.05, 0.15, 0.4), "blur": (0.5, 1.0, 2.0)}
    report = {"train_vs_test": round(clean, 3)}
    base = train_images[:M]
    for kind, strengths in curves.items():
        values = [fid_of(fid.corrupt(base, kind, s), base, cache) for s in strengths]
        report[kind] = {s: round(v, 3) for s, v in zip(strengths, values)}
        assert all(a < b for a, b in zip(values, values[1:])), (kind, values)
        assert clean < values[0], (kind, values, clean)  # even the mildest corruption is farther than the test split
    print(f"\nFID (train vs test: {N} vs {N} images; corruptions: {M} vs the same {M} clean):", json.dumps(report))
    assert clean < 1.0


@needs_data
@pytest.mark.slow
def test_the_sanity_gate_is_not_laxer_than_the_runs_own_fid_protocol(report_measured, cache):
    """The gate's rung (goldens/micro/reference.json: 10,000 blurred training images against the same images clean)
    under the protocol of a micro run's FID instead: ``eval.num_samples`` images against the whole test split. Fewer
    images and another reference both raise the FID, so the committed rung should not be above the matched one."""
    from pathlib import Path

    from repro.build import resolve
    from repro.config import load_params

    root = Path(__file__).resolve().parents[1]
    rung = json.loads((root / "goldens" / "micro" / "reference.json").read_text())["blur"]["1.0"]
    n = resolve(load_params(root / "params.yaml"), "micro", "dit", 0).eval.num_samples
    train = fm.load("train").images
    blocks = [fid_of(fid.corrupt(train[b * n : (b + 1) * n], "blur", 1.0), "test", cache) for b in range(4)]
    mean, sem = float(np.mean(blocks)), float(np.std(blocks, ddof=1) / np.sqrt(len(blocks)))
    report_measured(
        "sanity gate (blur 1.0)",
        f"committed rung {rung:.2f}; matched protocol ({n} blurred training images vs the test "
        f"split, 4 disjoint blocks) {mean:.2f} +/- {sem:.2f} (sem)",
    )
    assert rung <= mean + 2 * sem, (rung, blocks)


def test_corruptions_are_seeded_and_checked():
    x = torch.randint(0, 256, (4, 1, 32, 32), dtype=torch.uint8)
    assert torch.equal(fid.corrupt(x, "noise", 0.0), x) and torch.equal(
        fid.corrupt(x, "noise", 0.2), fid.corrupt(x, "noise", 0.2)
    )
    assert not torch.equal(fid.corrupt(x, "noise", 0.2), fid.corrupt(x, "noise", 0.2, seed=1))
    flat = torch.full((1, 1, 32, 32), 77, dtype=torch.uint8)
    assert torch.equal(
        fid.corrupt(flat, "blur", 1.5)[..., 8:24, 8:24], flat[..., 8:24, 8:24]
    )  # a flat image stays flat
    with pytest.raises(ValueError, match="kind"):
        fid.corrupt(x, "jpeg", 1.0)


@needs_data
def test_reference_report_command(monkeypatch, tmp_path):
    calls = []

    def fake(samples, reference="test", metrics=fid.METRICS, **kwargs):
        calls.append((len(samples), reference if isinstance(reference, str) else len(reference), tuple(metrics)))
        return {"fid": float(len(calls)), "kid": 0.0, "num_samples": len(samples), "num_reference": 1}

    monkeypatch.setattr(fid, "compute_metrics", fake)
    out = tmp_path / "ref" / "reference.json"
    # `python -m repro.metrics.fid --reference-report PATH` (dvc.yaml's former command) is `repro reference`
    argv = ["--reference-report", str(out), "--sizes", "50", "100", "--curve-size", "30"]
    assert cli.main(["reference", *argv]) == 0
    report = json.loads(out.read_text())
    assert list(report["floor"]) == ["50", "100"] and "num_samples" not in report["floor"]["50"]
    assert list(report["noise"]) == [str(s) for s in fid.CURVES["noise"]] and report["curve_size"] == 30
    assert report["feature_net"]["sha256"] == fn.sha256_file(fn.default_weights_path())
    assert calls[0] == (50, "test", fid.METRICS) and calls[-1] == (30, 30, ("fid",))


# --- the Inception path and the CLI ---------------------------------------------------------------------------


def test_inception_path_plumbing(monkeypatch, tmp_path):
    import torch_fidelity
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    assert fid.INCEPTION in FEATURE_EXTRACTORS_REGISTRY
    seen = {}

    def fake_calculate_metrics(**kwargs):
        seen.update(kwargs)
        return {"frechet_inception_distance": 1.5, "precision": 0.5, "recall": 0.25, "f_score": 0.3}

    monkeypatch.setattr(torch_fidelity, "calculate_metrics", fake_calculate_metrics)
    weights = tmp_path / fid.INCEPTION_FILE
    torch.save({"stand-in": torch.zeros(2)}, weights)  # a weights-only file in place of the Inception weights
    samples = torch.randint(0, 256, (8, 1, 32, 32), dtype=torch.uint8)
    out = fid.compute_metrics(
        samples, samples, ("fid", "prc"), feature_extractor=fid.INCEPTION, weights=weights, cache_root=tmp_path
    )
    assert out["fid"] == 1.5 and out["recall"] == 0.25 and out["num_samples"] == 8
    assert seen["feature_extractor"] == fid.INCEPTION and seen["feature_extractor_weights_path"] == str(weights)
    assert seen["fid"] and seen["prc"] and not seen["kid"] and seen["cuda"] is False
    item = seen["input1"][0]
    assert item.shape == (3, 32, 32) and item.dtype == torch.uint8 and torch.equal(item[0], samples[0, 0])
    assert fn.sha256_file(weights)[:12] in seen["input2_cache_name"]
    with pytest.raises(FileNotFoundError, match="not found"):
        fid.compute_metrics(samples, samples, feature_extractor=fid.INCEPTION, weights=tmp_path / "nope.pth")
    monkeypatch.setenv("REPRO_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=fid.INCEPTION_FILE):
        fid.compute_metrics(samples, samples, feature_extractor=fid.INCEPTION)
    with pytest.raises(ValueError, match="feature_extractor"):
        fid.compute_metrics(samples, samples, feature_extractor="vgg")
    with pytest.raises(ValueError, match="metrics"):
        fid.compute_metrics(samples, samples, ("fid", "isc"))


@needs_data
def test_evaluate_command_on_pngs_and_arrays(test_images, tmp_path, capsys):
    samples = test_images[:200]
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, image in enumerate(samples):
        Image.fromarray(image[0].numpy()).save(folder / f"{i:04d}.png")
    np.save(tmp_path / "samples.npy", to_float(samples).numpy())
    np.savez(tmp_path / "samples.npz", samples=samples.numpy())
    common = ["--reference-size", "500", "--metrics", "fid,kid", "--cache-dir", str(tmp_path / "cache")]
    results = []
    for source, extra in (
        (folder, []),
        (tmp_path / "samples.npy", ["--range=-1,1"]),
        (tmp_path / "samples.npz", []),
    ):
        out = tmp_path / f"{source.name}.json"
        assert cli.main(["evaluate", str(source), *common, *extra, "--json", str(out)]) == 0
        results.append(json.loads(out.read_text()))
    assert results[0]["fid"] == results[1]["fid"] == results[2]["fid"] > 0
    assert results[0]["num_samples"] == 200 and results[0]["reference"] == "test" and "kid" in results[0]
    assert "precision" not in results[0]
    capsys.readouterr()
    assert cli.main(["evaluate", str(tmp_path / "missing"), *common]) == 2
    assert "missing: no such file or folder of samples" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# FID sd from disjoint sample blocks
# ------------------------------------------------------------------------------------------


def test_block_fids_use_disjoint_contiguous_blocks(monkeypatch):
    seen = []

    def fake(samples, metrics=fid.METRICS, **kwargs):
        seen.append((samples.clone(), tuple(metrics), kwargs))
        return {"fid": float(samples.float().mean())}

    monkeypatch.setattr(fid, "compute_metrics", fake)
    samples = torch.arange(10, dtype=torch.float32).reshape(10, 1, 1, 1)
    values = fid.block_fids(samples, 3, reference="test", device="cpu")
    assert [s.flatten().tolist() for s, _, _ in seen] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]  # the 10th is unused
    assert all(m == ("fid",) and kw == {"reference": "test", "device": "cpu"} for _, m, kw in seen)
    assert values == [1.0, 4.0, 7.0]
    with pytest.raises(ValueError, match="blocks=1"):
        fid.block_fids(samples, 1)
    with pytest.raises(ValueError, match="blocks=6 leaves 1 sample"):
        fid.block_fids(samples, 6)


def test_fid_sd_from_blocks_scales_the_block_spread_to_all_samples():
    assert fid.fid_sd_from_blocks([1.0, 4.0, 7.0]) == pytest.approx(3.0 / 3**0.5)
    rng = np.random.default_rng(0)
    # FIDs of blocks whose variance is B times that of the whole: the estimate recovers the whole's sd
    est = [fid.fid_sd_from_blocks(list(rng.normal(30.0, 0.8 * 2.0, 4))) for _ in range(4000)]
    assert np.mean(np.square(est)) == pytest.approx(0.8**2, rel=0.05)
    with pytest.raises(ValueError, match="at least 2"):
        fid.fid_sd_from_blocks([3.0])


# --- the in-process path against torch-fidelity's ----------------------------------------------------------------


@needs_data
@pytest.mark.parametrize("metrics", [("fid", "kid", "prc"), ("fid",), ("prc",)])
def test_in_process_metrics_are_bitwise_torch_fidelitys(train_images, cache, metrics):
    """The in-process path (reference features from the cache, the reference's statistics and radii once per
    process, numpy's BLAS on one thread) gives exactly torch-fidelity's numbers, for good and bad samples."""
    kwargs = dict(reference_size=600, cache_root=cache, kid_subsets=5, kid_subset_size=100, batch_size=64)
    fid._REFERENCE_MEMO.clear()
    good, bad = train_images[:150], fid.corrupt(train_images[150:300], "noise", 0.4)
    for samples in (good, bad, good):  # the third call reads the memo filled by the first two
        # the same BLAS thread count as the in-process path: with two threads a BLAS may sum KID's kernel matrices
        # in another order (seen on a 2-core AMD EPYC: KID differing in the 7th digit)
        with threadpool_limits(1, user_api="blas"):
            reference = fid.compute_metrics(samples, "test", metrics, via_torch_fidelity=True, **kwargs)
        assert fid.compute_metrics(samples, "test", metrics, **kwargs) == reference
    assert len(fid._REFERENCE_MEMO) == ("fid" in metrics) + ("prc" in metrics)


@needs_data
def test_in_process_path_is_taken_only_with_a_checked_cache_entry(train_images, tmp_path, monkeypatch):
    calls = []
    real = fid._fidelity_with_cache
    monkeypatch.setattr(fid, "_fidelity_with_cache", lambda *a, **k: calls.append(1) or real(*a, **k))
    kwargs = dict(reference_size=200, cache_root=tmp_path, kid_subsets=2, kid_subset_size=50)
    first = fid.compute_metrics(train_images[:60], "test", **kwargs)
    assert len(calls) == 1  # nothing cached yet: torch-fidelity extracts the reference and fills the cache
    assert fid.compute_metrics(train_images[:60], "test", **kwargs) == first
    assert len(calls) == 1  # then the in-process path
    entry = next((tmp_path / "fidelity").glob("*.npz"))
    entry.write_bytes(entry.read_bytes()[:-10])  # a damaged entry is not trusted
    assert fid.compute_metrics(train_images[:60], "test", **kwargs) == first
    assert len(calls) == 2
