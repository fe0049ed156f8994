"""``repro sample``: a checkpoint's EMA samples as an .npz that ``repro evaluate`` reads, and a PNG grid."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from repro.cli import main
from repro.config import load_params, resolve
from repro.metrics.grid import grid_array, save_grid, to_uint8
from repro.models import DiT
from repro.objectives import make_objective

ROOT = Path(__file__).resolve().parents[1]


def _fake_run(tmp_path: Path, method: str = "sit") -> tuple[Path, DiT, DiT]:
    """A run directory as training leaves it: config.json and checkpoints/last.pt with distinct EMA weights."""
    cfg = resolve(load_params(ROOT / "params.yaml"), "smoke", method, 0)
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


def test_grid_places_every_image_and_pads():
    imgs = torch.linspace(-1, 1, 5 * 4 * 3).reshape(5, 1, 4, 3)
    g = grid_array(imgs, nrow=2, padding=1)
    assert g.shape == (1 + 3 * (4 + 1), 1 + 2 * (3 + 1))
    u = to_uint8(imgs)
    assert np.array_equal(g[1:5, 1:4], u[0, 0]) and np.array_equal(g[1:5, 5:8], u[1, 0])
    assert np.array_equal(g[11:15, 1:4], u[4, 0])
    assert (g[11:15, 5:8] == 255).all()  # the empty cell stays padding
    rgb = grid_array(np.zeros((2, 3, 4, 4), np.uint8))
    assert rgb.shape == (2 + 1 * 6, 2 + 2 * 6, 3)
    with pytest.raises(ValueError, match="4 channels"):
        grid_array(torch.zeros(2, 4, 4, 4))


def test_save_grid_writes_a_png(tmp_path):
    from PIL import Image

    path = save_grid(torch.zeros(4, 1, 8, 8), tmp_path / "g.png", nrow=2)
    with Image.open(path) as im:
        assert im.size == (2 + 2 * 10, 2 + 2 * 10) and im.mode == "L"


def test_sample_writes_the_ema_samples_of_the_run_and_evaluate_reads_them(tmp_path, capsys):
    run, model, ema = _fake_run(tmp_path)
    out = tmp_path / "s.npz"
    assert main(["sample", str(run), "--num", "6", "--seed", "3", "--steps", "2", "--out", str(out)]) == 0
    with np.load(out, allow_pickle=False) as z:
        samples, labels, prov = z["samples"], z["labels"], json.loads(str(z["provenance"]))
    assert samples.shape == (6, 1, 32, 32) and samples.dtype == np.uint8
    assert labels.tolist() == [i % 10 for i in range(6)]
    assert prov["weights"] == "ema" and prov["step"] == 12 and prov["seed"] == 3 and prov["steps"] == 2
    # the same computation by hand, with the EMA weights: equal; with the raw weights: not
    cfg = json.loads((run / "config.json").read_text())
    objective = make_objective(**cfg["objective"])
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(6, 1, 32, 32, generator=g)
    by_hand = objective.sample(
        ema.eval(), noise, torch.arange(6) % 10, steps=2, generator=torch.Generator().manual_seed(4)
    )
    assert np.array_equal(samples, to_uint8(by_hand))
    raw = objective.sample(
        model.eval(), noise, torch.arange(6) % 10, steps=2, generator=torch.Generator().manual_seed(4)
    )
    assert not np.array_equal(samples, to_uint8(raw))
    assert out.with_suffix(".png").exists()
    # same seed, same bytes of samples; another seed, other samples
    again = tmp_path / "again.npz"
    assert main(["sample", str(run / "checkpoints" / "last.pt"), "--num", "6", "--seed", "3", "--steps", "2",
                 "--out", str(again), "--grid", "0"]) == 0  # fmt: skip
    with np.load(again) as z:
        assert np.array_equal(z["samples"], samples)
    assert not again.with_suffix(".png").exists()
    other = tmp_path / "other.npz"
    assert main(["sample", str(run), "--num", "6", "--seed", "4", "--steps", "2", "--out", str(other)]) == 0
    with np.load(other) as z:
        assert not np.array_equal(z["samples"], samples)

    from repro.metrics.fid import load_samples

    loaded = load_samples(out)
    assert tuple(loaded.shape) == (6, 1, 32, 32) and np.array_equal(loaded.numpy(), samples)


def test_sample_refuses_bad_sources_in_one_line(tmp_path, capsys):
    run, _, _ = _fake_run(tmp_path)
    assert main(["sample", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["sample", str(run), "--out", str(tmp_path / "x.png")]) == 2
    assert ".npz" in capsys.readouterr().err
    lone = tmp_path / "lone.pt"
    lone.write_bytes((run / "checkpoints" / "last.pt").read_bytes())
    assert main(["sample", str(lone), "--out", str(tmp_path / "x.npz")]) == 2
    assert "--config" in capsys.readouterr().err
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    rc = main(
        ["sample", str(tmp_path / "bad.pt"), "--config", str(run / "config.json"), "--out", str(tmp_path / "x.npz")]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "cannot be read" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist_data")
def test_evaluate_scores_the_samples(tmp_path):
    run, _, _ = _fake_run(tmp_path)
    out = tmp_path / "s.npz"
    assert main(["sample", str(run), "--num", "20", "--steps", "2", "--out", str(out), "--grid", "0"]) == 0
    report = tmp_path / "m.json"
    assert main(["evaluate", str(out), "--metrics", "fid", "--reference-size", "200", "--json", str(report)]) == 0
    fid = json.loads(report.read_text())["fid"]
    assert np.isfinite(fid) and fid > 0
