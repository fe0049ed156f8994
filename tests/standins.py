"""Tiny stand-ins for the paper scale's inputs, none of which can be downloaded here: an SD-VAE-shaped autoencoder
(4 latent channels, 8x downsampling, random weights), an ImageFolder of random RGB images, and a weights file of
torch-fidelity's TF-2015 Inception architecture with random weights; and a trained run's directory without the
training (``fake_run``)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from PIL import Image


def tiny_vae8(seed: int = 0, channels=(8, 8, 8, 8)):
    """An ``AutoencoderKL`` with the SD-VAE's interface: 3 -> 4 channels, 8x downsampling (4 levels)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=channels,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    ).eval()


def save_vae(folder: Path, seed: int = 0, channels=(8, 8, 8, 8)) -> Path:
    tiny_vae8(seed, channels).save_pretrained(folder)
    return folder


def image_folder(root: Path, classes: int = 3, per_class: int = 10, size: int = 40, seed: int = 0) -> Path:
    """``root/class{k}/{i}.png``: random RGB images, a little larger than 32 so the center crop has work to do."""
    rng = np.random.default_rng(seed)
    for k in range(classes):
        (root / f"class{k}").mkdir(parents=True, exist_ok=True)
        tint = rng.integers(0, 256, 3)
        for i in range(per_class):
            array = (rng.integers(0, 256, (size, size + 4 * (i % 3), 3)) // 2 + tint // 2).astype(np.uint8)
            Image.fromarray(array).save(root / f"class{k}" / f"{i:03d}.png")
    return root


def random_inception_weights(path: Path, seed: int = 0) -> Path:
    """A state dict of torch-fidelity's ``inception-v3-compat`` network (the architecture of
    ``weights-inception-2015-12-05-6726825d.pth``) with random He-initialised weights, so features vary."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    with (
        mock.patch.object(fe, "load_state_dict_from_url", lambda *a, **k: None),
        mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None),
    ):
        torch.manual_seed(seed)
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, std=m.in_features**-0.5)
    torch.save(net.state_dict(), path)
    return path


def fake_run(tmp_path: Path, method: str = "sit"):
    """``(run directory, model, ema)``: a smoke-scale run of ``method`` as training leaves it, config.json and
    checkpoints/last.pt (step 12) with non-zero gates and head and EMA weights distinct from the model's."""
    from repro.build import resolve
    from repro.config import load_params
    from repro.models import DiT

    cfg = resolve(load_params(Path(__file__).resolve().parents[1] / "params.yaml"), "smoke", method, 0)
    torch.manual_seed(0)
    model = DiT(cfg.model)
    with torch.no_grad():  # non-zero gates and head, so that the weights matter
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ema = copy.deepcopy(model)
    with torch.no_grad():
        for p in ema.parameters():
            p.mul_(0.5)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    torch.save(
        {"config": model.config.to_dict(), "model": model.state_dict(), "ema": ema.state_dict(), "step": 12},
        run / "checkpoints" / "last.pt",
    )
    return run, model, ema


def fashion_run(**changes):
    """A tiny Fashion-MNIST DiT run (12 steps, metrics every 2; the tests fake or run them); ``changes``:
    ``{"train": {...}, "eval": {...}}``."""
    d = {
        "run_id": "t-dit-s0",
        "scale": "t",
        "method": "dit",
        "seed": 0,
        "model": dict(input_size=32, patch_size=8, in_channels=1, hidden_size=16, depth=2, num_heads=2, num_classes=10),
        "objective": {"name": "ddpm"},
        "data": {"name": "fashion-mnist", "subset": 64},
        "train": dict(steps=12, batch_size=8, lr=1e-3, ema_decay=0.9, eval_every=2, ckpt_every=2, log_every=2),
        "eval": dict(metrics=["fid"], num_samples=20, sample_steps=2, batch_size=20, val_size=8, val_points=2),
    }
    for section, values in changes.items():
        d[section].update(values)
    from repro.build import from_dict

    return from_dict(d)
