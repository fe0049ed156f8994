"""``repro sample``: a checkpoint's EMA samples as an .npz that ``repro evaluate`` reads, and a PNG grid."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from standins import fake_run

from repro.cli import main
from repro.metrics.grid import grid_array, save_grid, to_uint8
from repro.objectives import make_objective


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
    from repro.experiments.sample import batch_seed, noise_seed

    run, model, ema = fake_run(tmp_path)
    out = tmp_path / "s.npz"
    assert main(["sample", str(run), "--num-samples", "6", "--seed", "3", "--steps", "2", "--out", str(out)]) == 0
    with np.load(out, allow_pickle=False) as z:
        samples, labels, prov = z["arr_0"], z["arr_1"], json.loads(str(z["provenance"]))
    assert samples.shape == (6, 32, 32, 1) and samples.dtype == np.uint8  # ADM's layout: N x H x W x C
    assert labels.tolist() == [i % 10 for i in range(6)]
    assert prov["weights"] == "ema" and prov["step"] == 12 and prov["seed"] == 3 and prov["sampler"]["steps"] == 2
    assert prov["world_size"] == 1 and len(prov["checkpoint_sha256"]) == 64
    # the same computation by hand, with the EMA weights: equal; with the raw weights: not
    cfg = json.loads((run / "config.json").read_text())
    objective = make_objective(**cfg["objective"])
    noise = torch.stack([torch.randn(1, 32, 32, generator=torch.Generator().manual_seed(noise_seed(3, i))) for i in
                         range(6)])  # fmt: skip
    by_hand = objective.sample(
        ema.eval(), noise, torch.arange(6) % 10, steps=2, generator=torch.Generator().manual_seed(batch_seed(3, 0))
    )
    assert np.array_equal(samples, to_uint8(by_hand).transpose(0, 2, 3, 1))
    raw = objective.sample(
        model.eval(), noise, torch.arange(6) % 10, steps=2, generator=torch.Generator().manual_seed(batch_seed(3, 0))
    )
    assert not np.array_equal(samples, to_uint8(raw).transpose(0, 2, 3, 1))
    assert out.with_suffix(".png").exists() and not out.with_name("s.npz.parts").exists()
    # same seed, same bytes of samples; another seed, other samples
    again = tmp_path / "again.npz"
    assert main(["sample", str(run / "checkpoints" / "last.pt"), "--num-samples", "6", "--seed", "3", "--steps", "2",
                 "--out", str(again), "--grid", "0"]) == 0  # fmt: skip
    with np.load(again) as z:
        assert np.array_equal(z["arr_0"], samples)
    assert not again.with_suffix(".png").exists()
    other = tmp_path / "other.npz"
    assert main(["sample", str(run), "--num-samples", "6", "--seed", "4", "--steps", "2", "--out", str(other)]) == 0
    with np.load(other) as z:
        assert not np.array_equal(z["arr_0"], samples)
    # a sample's noise does not depend on the batch it is drawn in (a deterministic sampler gives the same sample)
    split = tmp_path / "split.npz"
    assert main(["sample", str(run), "--num-samples", "6", "--seed", "3", "--steps", "2", "--out", str(split),
                 "--batch-size", "4", "--grid", "0"]) == 0  # fmt: skip
    with np.load(split) as z:
        assert z["arr_0"].shape == samples.shape and json.loads(str(z["provenance"]))["batch_size"] == 4

    from repro.metrics.fid import load_samples

    loaded = load_samples(out)
    assert tuple(loaded.shape) == (6, 1, 32, 32) and np.array_equal(loaded.numpy(), samples.transpose(0, 3, 1, 2))


def test_sample_writes_into_the_run_directory_by_default(tmp_path, monkeypatch, capsys):
    run, _, _ = fake_run(tmp_path)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert main(["sample", str(run), "--num-samples", "2", "--steps", "1", "--grid", "0"]) == 0
    assert list(cwd.iterdir()) == []  # before: samples.npz in the current directory
    assert [p.name for p in (run / "samples").iterdir()] == ["last-ema-1steps-cfg1-n2-seed0.npz"]


def test_sample_refuses_abbreviations_and_keeps_clear_of_torchrun_options(capsys):
    from torch.distributed.run import get_args_parser

    from repro.cli import build_parser

    torchrun = [o for a in get_args_parser()._actions for o in a.option_strings if o.startswith("--")]
    for command in ("sample", "evaluate", "train"):
        sub = build_parser(command)._subparsers._group_actions[0].choices[command]
        ours = [o for a in sub._actions for o in a.option_strings if o.startswith("--") and o != "--help"]
        # torchrun parses the whole command line first: an option of ours that is a prefix of one of its own is an
        # "ambiguous option" error there (before: --num could match --numa-binding)
        clash = sorted(o for o in ours for t in torchrun if t.startswith(o))
        assert not clash, (command, clash)
    with pytest.raises(SystemExit) as exit_:
        main(["sample", "run", "--num", "3"])
    assert exit_.value.code == 2 and "unrecognized arguments: --num" in capsys.readouterr().err


def test_sample_refuses_bad_sources_in_one_line(tmp_path, capsys):
    run, _, _ = fake_run(tmp_path)
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
    run, _, _ = fake_run(tmp_path)
    out = tmp_path / "s.npz"
    assert main(["sample", str(run), "--num-samples", "20", "--steps", "2", "--out", str(out), "--grid", "0"]) == 0
    report = tmp_path / "m.json"
    assert main(["evaluate", str(out), "--metrics", "fid", "--reference-size", "200", "--json", str(report)]) == 0
    fid = json.loads(report.read_text())["fid"]
    assert np.isfinite(fid) and fid > 0


def test_an_interrupted_sampling_keeps_its_finished_batches_and_refuses_another_plan(tmp_path, monkeypatch, capsys):
    from repro.experiments import sample

    run, _, _ = fake_run(tmp_path)
    out = tmp_path / "s.npz"
    argv = ["sample", str(run), "--num-samples", "5", "--batch-size", "2", "--steps", "1", "--out", str(out)]
    real_assemble, real_draw = sample.assemble, sample.draw_batch

    def killed(*args, **kwargs):  # every batch is drawn, then the job is preempted before the .npz is written
        raise KeyboardInterrupt

    monkeypatch.setattr(sample, "assemble", killed)
    with pytest.raises(KeyboardInterrupt):
        main(argv)
    parts = tmp_path / "s.npz.parts"
    assert sorted(p.name for p in parts.iterdir()) == ["batch-000000.npz", "batch-000001.npz", "batch-000002.npz",
                                                       "plan.json"]  # fmt: skip
    drawn = []
    monkeypatch.setattr(sample, "assemble", real_assemble)
    monkeypatch.setattr(sample, "draw_batch", lambda *a, **k: drawn.append(a) or real_draw(*a, **k))
    (parts / "batch-000001.npz").write_bytes(b"torn")  # a batch damaged by the kill is drawn again
    assert main(argv) == 0 and len(drawn) == 1 and not parts.exists()
    fresh = tmp_path / "fresh.npz"
    assert main([*argv[:-1], str(fresh)]) == 0
    with np.load(out) as a, np.load(fresh) as b:
        assert np.array_equal(a["arr_0"], b["arr_0"]) and np.array_equal(a["arr_1"], b["arr_1"])
    # the parts of another sampling (another seed) under the same --out are refused, not mixed in
    parts.mkdir()
    (parts / "plan.json").write_text(json.dumps({"seed": 7}))
    capsys.readouterr()
    assert main(argv) == 2
    assert "holds the batches of another sampling" in capsys.readouterr().err
