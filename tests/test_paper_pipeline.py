"""The paper scale's pieces with tiny stand-ins: encoding (held-out validation set, resumable), latent training's
validation batch and provenance, sampling through the VAE, and the official DiT checkpoints."""

from __future__ import annotations

import argparse
import json
import warnings

import numpy as np
import pytest
import torch
import yaml
from standins import image_folder, save_vae

from repro.cli import main
from repro.data import latents as lt


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper")
    images = image_folder(root / "images", classes=3, per_class=6, size=36)
    vae = save_vae(root / "vae")
    manifest = lt.encode_image_folder(
        images, root / "latents", lt.load_vae(vae), image_size=32, batch_size=4, shard_size=6, hflip=True,
        val_per_class=2, vae_source=str(vae),
    )  # fmt: skip
    return root, manifest


def test_held_out_validation_is_class_balanced_and_never_trained_on(encoded):
    root, manifest = encoded
    assert manifest["validation"]["count"] == 6 and manifest["validation"]["label_counts"] == [2, 2, 2]
    assert manifest["count"] == 2 * (18 - 6) and manifest["hflip"] is True  # the 12 others, each with its mirror
    shards = lt.LatentShards(root / "latents")
    x, y = shards.validation()
    assert y.tolist() == [0, 1, 2, 0, 1, 2]  # round-robin: every prefix is class-balanced
    assert shards.validation(3)[1].tolist() == [0, 1, 2]
    train = torch.stack([shards[i][0] for i in range(len(shards))])
    assert not any(torch.isclose(train, v).flatten(1).all(1).any() for v in x)  # no held-out latent is trained on
    with pytest.raises(ValueError, match="eval.val_size: 7 is not allowed; must be <= 6"):
        shards.validation(7)
    assert manifest["vae"]["source"].endswith("vae") and len(lt.manifest_sha256(root / "latents")) == 64


def test_an_interrupted_encoding_resumes_and_ends_bitwise_equal(encoded, tmp_path, monkeypatch):
    root, manifest = encoded
    vae = lt.load_vae(root / "vae")
    kwargs = dict(image_size=32, batch_size=4, shard_size=6, hflip=True, val_per_class=2, vae_source=str(root / "vae"))
    calls = {"n": 0}
    real = lt._encode

    def dies_after_two(*args, **kw):
        calls["n"] += 1
        if calls["n"] > 2:  # the validation set and one shard done, then the job is killed
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(lt, "_encode", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        lt.encode_image_folder(root / "images", tmp_path / "lat", vae, **kwargs)
    progress = json.loads((tmp_path / "lat" / "progress.json").read_text())
    assert len(progress["shards"]) == 1 and not (tmp_path / "lat" / "manifest.json").exists()
    monkeypatch.setattr(lt, "_encode", real)
    said = []
    again = lt.encode_image_folder(root / "images", tmp_path / "lat", vae, say=said.append, **kwargs)
    assert "resuming after 1 shard(s)" in said[0]
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in manifest["shards"]]
    assert again["validation"]["sha256"] == manifest["validation"]["sha256"]
    assert lt.encode_image_folder(root / "images", tmp_path / "lat", vae, **kwargs)["count"] == again["count"]
    with pytest.raises(ValueError, match="other settings"):
        lt.encode_image_folder(root / "images", tmp_path / "lat", vae, **{**kwargs, "hflip": False})


def _params(tmp_path, latents, **train) -> str:
    params = {
        "methods": {"dit": {"objective": {"name": "ddpm"}, "model": {"learn_sigma": True}}},
        "scales": {
            "tiny-paper": {
                "methods": ["dit"],
                "seeds": [0],
                "model": dict(
                    input_size=4, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2, num_classes=3
                ),
                "data": {"name": "latents", "path": str(latents)},
                "train": dict(
                    steps=4,
                    batch_size=4,
                    lr=1e-3,
                    ema_decay=0.9,
                    eval_every=2,
                    ckpt_every=2,
                    log_every=2,
                    threads=1,
                    **train,
                ),
                "eval": {"metrics": [], "val_size": 6, "val_points": 2, "sample_steps": 2, "batch_size": 8},
            }
        },
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return str(path)


@pytest.fixture(scope="module")
def latent_run(encoded):
    root, _ = encoded
    params = _params(root, root / "latents")
    run = root / "run"
    assert main(["train", "--params", params, "--scale", "tiny-paper", "--method", "dit", "--out", str(run),
                 "--quiet"]) == 0  # fmt: skip
    return root, run


def test_latent_training_records_its_latent_set_and_validates_on_the_held_out_set(latent_run):
    root, run = latent_run
    curve = json.loads((run / "curve.json").read_text())
    assert curve["provenance"]["latents"]["manifest_sha256"] == lt.manifest_sha256(root / "latents")
    assert all(np.isfinite(p["val_loss"]) for p in curve["points"]) and curve["train_size"] == 24


def test_latent_samples_are_decoded_through_the_runs_vae(latent_run, tmp_path, capsys):
    from repro.experiments.sample import Decoder

    root, run = latent_run
    assert main(["sample", str(run), "--num-samples", "5", "--batch-size", "3", "--steps", "2"]) == 0
    out = run / "samples" / "last-ema-2steps-cfg1-n5-seed0.npz"
    with np.load(out) as z:
        images, labels, prov = z["arr_0"], z["arr_1"], json.loads(str(z["provenance"]))
    assert images.shape == (5, 32, 32, 3) and images.dtype == np.uint8  # RGB through the VAE (before: clamped latents)
    assert labels.tolist() == [0, 1, 2, 0, 1]
    assert prov["decoder"]["kind"] == "sd-vae" and prov["decoder"]["latents_manifest_sha256"]
    with np.load(out.with_name(out.name[: -len(".npz")] + ".latents.npz")) as z:
        latents = torch.from_numpy(z["latents"])
    assert latents.shape == (5, 4, 4, 4) and latents.abs().max() > 1.0  # raw latents, not clamped to [-1, 1]
    cfg = json.loads((run / "config.json").read_text())
    decoder = Decoder(cfg, True, None, torch.device("cpu"))
    assert np.array_equal(decoder(latents), images)  # DiT's decode: vae.decode(z / 0.18215), 127.5 x + 128
    # another VAE than the one that encoded the latents is refused
    save_vae(tmp_path / "other", seed=1, channels=(8, 8, 8, 16))
    capsys.readouterr()
    assert main(["sample", str(run), "--num-samples", "2", "--vae", str(tmp_path / "other")]) == 2
    assert "differs from the VAE that encoded" in capsys.readouterr().err


def _tiny_sizes(monkeypatch):
    from repro.models import dit

    monkeypatch.setitem(dit.SIZES, "T", dict(depth=2, hidden_size=32, num_heads=2))


def test_official_checkpoints_load_weights_only_and_sample(latent_run, tmp_path, monkeypatch, capsys):
    from repro.models import DiT
    from repro.models.convert import load_official_checkpoint
    from repro.models.dit import config_for

    root, _ = latent_run
    _tiny_sizes(monkeypatch)
    model = DiT(config_for("DiT-T/2", input_size=4, num_classes=3))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    release = tmp_path / "DiT-T-2-32x32.pt"
    torch.save(model.state_dict(), release)  # the released files: the EMA state dict itself
    cfg, sd, info = load_official_checkpoint(release)
    assert info["layout"] == "dit-release" and cfg.depth == 2 and cfg.num_classes == 3 and cfg.learn_sigma
    # DiT's train.py: {"model", "ema", "opt", "args"} with an argparse.Namespace (before: UnpicklingError)
    ckpt = tmp_path / "0000004.pt"
    args = argparse.Namespace(model="DiT-T/2", image_size=32, num_classes=3, global_batch_size=256)
    torch.save({"model": model.state_dict(), "ema": model.state_dict(), "opt": {}, "args": args}, ckpt)
    cfg2, _, info2 = load_official_checkpoint(ckpt)
    assert info2["layout"] == "dit-train" and info2["args"]["model"] == "DiT-T/2" and cfg2 == cfg
    assert main(["sample", str(ckpt), "--vae", str(root / "vae"), "--num-samples", "2", "--steps", "2",
                 "--grid", "0"]) == 0  # fmt: skip
    out = tmp_path / "samples" / "0000004-ema-2steps-cfg1-n2-seed0.npz"
    with np.load(out) as z:
        prov = json.loads(str(z["provenance"]))
        assert z["arr_0"].shape == (2, 32, 32, 3)
    assert prov["step"] == 4 and prov["official_checkpoint"]["layout"] == "dit-train"
    assert prov["sampler"]["objective"]["name"] == "ddpm"
    # other layouts get a message that says what the file is
    torch.save({"something": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a checkpoint of repro train, a released DiT file or a DiT train.py"):
        load_official_checkpoint(tmp_path / "other.pt")
    (tmp_path / "diffusers").mkdir()
    (tmp_path / "diffusers" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="diffusers folder"):
        load_official_checkpoint(tmp_path / "diffusers")
    capsys.readouterr()
    assert main(["sample", str(tmp_path / "other.pt"), "--num-samples", "1"]) == 2
    assert "not a checkpoint of repro train" in capsys.readouterr().err


def test_a_plain_diffusers_folder_warns_with_the_size_of_its_error(tmp_path):
    from diffusers import DiTTransformer2DModel

    from repro.models import DiT, DiTConfig
    from repro.models.convert import FREQ_SHIFT_KEY, load_diffusers, save_diffusers

    model = DiT(DiTConfig(input_size=8, patch_size=2, hidden_size=32, depth=2, num_heads=2, num_classes=10))
    save_diffusers(model, tmp_path / "fixed")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_diffusers(tmp_path / "fixed")  # the record is there: no warning
    DiTTransformer2DModel.from_pretrained(tmp_path / "fixed").save_pretrained(tmp_path / "plain")
    config = json.loads((tmp_path / "plain" / "config.json").read_text())
    del config[FREQ_SHIFT_KEY]  # as a folder from the hub (facebook/DiT-XL-2-256) holds it
    (tmp_path / "plain" / "config.json").write_text(json.dumps(config))
    with pytest.warns(UserWarning, match=r"differs from DiT's by up to [0-9.e-]+ .*of it\)"):
        load_diffusers(tmp_path / "plain")
