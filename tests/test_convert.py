"""diffusers interop that survives ``save_pretrained`` / ``from_pretrained``."""

from __future__ import annotations

import json

import pytest
import torch

from repro.models import DiT, DiTConfig
from repro.models.convert import FREQ_SHIFT_KEY, from_diffusers, load_diffusers, save_diffusers, to_diffusers


def _tiny_model(seed: int = 0) -> DiT:
    cfg = DiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=3, num_heads=2, num_classes=10)
    model = DiT(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return model.eval()


def _inputs(cfg: DiTConfig):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g)
    return x, torch.tensor([3.0, 500.0, 999.0]), torch.tensor([0, 4, 9])


def test_save_pretrained_and_from_pretrained_keep_the_outputs_exactly(tmp_path):
    model = _tiny_model()
    x, t, y = _inputs(model.config)
    dm = to_diffusers(model)
    before = dm(x, timestep=t, class_labels=y).sample
    save_diffusers(model, tmp_path / "dit")
    assert json.loads((tmp_path / "dit" / "config.json").read_text())[FREQ_SHIFT_KEY] == 0.0
    loaded = load_diffusers(tmp_path / "dit")
    after = loaded(x, timestep=t, class_labels=y).sample
    assert torch.equal(after, before)  # the same weights and frequencies: bitwise
    torch.testing.assert_close(after, model(x, t, y), atol=1e-4, rtol=1e-4)  # DiT itself, to float rounding
    back = from_diffusers(loaded)
    assert back.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), model.state_dict().values()))
    assert torch.equal(back(x, t, y), model(x, t, y))


def test_plain_from_pretrained_loses_the_fix_and_is_refused_with_the_reason(tmp_path):
    from diffusers import DiTTransformer2DModel

    model = _tiny_model(1)
    save_diffusers(model, tmp_path / "dit")
    plain = DiTTransformer2DModel.from_pretrained(tmp_path / "dit").eval()
    x, t, y = _inputs(model.config)
    gap = (plain(x, timestep=t, class_labels=y).sample - model(x, t, y)).abs().max()
    assert gap > 1e-3  # diffusers' own frequencies compute another function
    with pytest.raises(ValueError, match="downscale_freq_shift.*load_diffusers"):
        from_diffusers(plain)
    mismatched = from_diffusers(plain, allow_frequency_mismatch=True)
    assert all(torch.equal(a, b) for a, b in zip(mismatched.state_dict().values(), model.state_dict().values()))
