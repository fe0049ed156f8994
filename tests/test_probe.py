"""``repro probe``: each block's output of a run's EMA on a training-like batch, summarised as the dispersive loss
sees it; checked against the model's own ``features`` on the same draws."""

from __future__ import annotations

import json
import math

import pytest
import torch
from standins import fake_run

from repro.cli import main
from repro.data import fashion_mnist
from repro.objectives import make_objective


@pytest.mark.usefixtures("fashion_mnist_data")
def test_probe_reports_each_blocks_output_of_the_ema_on_the_training_draws(tmp_path, capsys):
    run, _, ema = fake_run(tmp_path, "dit")
    ema.eval()
    objective = make_objective(**json.loads((run / "config.json").read_text())["objective"])
    assert main(["probe", str(run), "--batch", "6", "--seed", "3", "--json", str(tmp_path / "p.json")]) == 0
    report = json.loads((tmp_path / "p.json").read_text())
    assert report["step"] == 12 and report["floor"] == pytest.approx(-math.log(6))
    assert [b["block"] for b in report["blocks"]] == list(range(ema.config.depth))
    rows = capsys.readouterr().out.splitlines()[2:]  # the heading, the column names, then one row per block
    assert [int(r.split()[0]) for r in rows] == list(range(ema.config.depth))

    # the same batch, drawn here by hand: images chosen by the seed, then DDPM's t and noise from the same generator
    test = fashion_mnist.load("test")
    g = torch.Generator().manual_seed(3)
    idx = torch.randperm(len(test.labels), generator=g)[:6]
    x0, y = fashion_mnist.to_float(test.images[idx]), test.labels[idx]
    t = torch.randint(0, objective.num_timesteps, (6,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    xt = objective.q_sample(x0, t, noise)
    with torch.no_grad():
        for b in (0, ema.config.depth - 1):
            z = ema.features(xt, t, y, b).flatten(1)
            got = report["blocks"][b]
            assert got["rms"] == pytest.approx(z.pow(2).mean().sqrt().item(), rel=1e-5)
            pairs = [((z[i] - z[j]) ** 2).mean().item() for i in range(6) for j in range(6) if i != j]
            assert got["mean_sq_dist"] == pytest.approx(sum(pairs) / len(pairs), rel=1e-4)
            assert report["floor"] <= got["dispersive"] <= 0


def test_probe_refuses_a_batch_of_one_and_names_the_field(tmp_path, capsys):
    run, _, _ = fake_run(tmp_path, "dit")
    assert main(["probe", str(run), "--batch", "1"]) == 2
    err = capsys.readouterr().err
    assert "batch" in err and "1" in err
