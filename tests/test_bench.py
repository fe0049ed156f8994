"""`repro bench` prints per-method numbers with their units; timings are printed, never asserted."""

from __future__ import annotations

import json

import pytest
import torch

from repro.cli import main
from repro.experiments.bench import method_config, run_bench


def test_bench_reports_every_method_with_units():
    rep = run_bench(
        "DiT-S/8",
        batch=2,
        steps=1,
        warmup=0,
        device="cpu",
        precision="bf16",
        input_size=16,
        in_channels=1,
        num_classes=10,
        hidden_size=48,
        num_heads=2,
        depth=8,
    )
    assert rep["precision"] == "fp32"  # no bf16 autocast on CPU
    assert set(rep["methods"]) == {"dit", "tread", "stochastic-depth"}
    for r in rep["methods"].values():
        assert r["ms_per_step"] > 0 and r["images_per_s"] > 0 and r["macs_per_step"] > 0
        assert r["mfu"] is None  # no peak FLOP/s is known for a CPU
    assert rep["methods"]["dit"]["mac_ratio_vs_dit"] == 1.0
    assert rep["methods"]["tread"]["mac_ratio_vs_dit"] > 1.0
    assert "MACs" in rep["units"]["macs_per_step"] or "multiply" in rep["units"]["macs_per_step"]


@pytest.mark.slow
def test_bench_command_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(
        [
            "bench",
            "--model",
            "DiT-S/8",
            "--input-size",
            "16",
            "--in-channels",
            "1",
            "--num-classes",
            "10",
            "--batch",
            "2",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--device",
            "cpu",
            "--methods",
            "dit",
            "tread",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "ms/step" in text and "MAC ratio" in text
    assert set(json.loads(out.read_text())["methods"]) == {"dit", "tread"}
    assert main(["bench", "--batch", "0"]) == 2
    assert main(["bench", "--threads", "0"]) == 2  # refused, not silently torch's default


def test_method_configs_follow_the_paper_rule():
    route = method_config("DiT-B/2", "tread").routes[0]
    assert (route.start, route.end, route.rate) == (2, 8, 0.5)
    sd = method_config("DiT-XL/2", "stochastic-depth").stochastic_depth
    assert (sd.start, sd.end, sd.prob) == (2, 24, 0.5)


def test_bench_of_a_scale_times_its_training_settings_and_says_how_it_was_made(monkeypatch):
    from repro.build import resolve
    from repro.config import load_params
    from repro.experiments import bench
    from repro.runtime import device_name

    seen = []

    def fake_step(cfg, batch, steps, warmup, dev, precision, **kw):
        seen.append(kw["train"])
        return 0.01, 1.0

    monkeypatch.setattr(bench, "bench_method", fake_step)
    monkeypatch.setattr(bench, "matmul_rate", lambda *a, **k: 1e9)
    rep = bench.run_bench("DiT-S/2", 7, 1, 0, "cpu", "fp32", ["dit", "tread-edm"], scale="micro", input_size=99)
    want = resolve(load_params(), "micro", "dit", 0).train
    assert len(seen) == 2  # both methods timed, each with the scale's training settings
    for train in seen:
        assert train.ema_decay == want.ema_decay and train.grad_clip == want.grad_clip  # the scale's, not constants
    assert rep["batch"] == want.batch_size and rep["overrides"] == {}  # the command line's size does not apply
    assert set(rep["methods"]) == {"dit", "tread-edm"}
    prov = rep["provenance"]
    assert prov["device"] == rep["device"] == device_name(torch.device("cpu"))
    assert prov["compiled"] is False and prov["git_commit"] and prov["command"]


def test_bench_refuses_a_method_whose_regularizer_it_would_not_time():
    from repro.experiments.bench import run_bench

    with pytest.raises(ValueError, match=r"--methods: 'dit-sra'.*regularizer"):
        run_bench("DiT-S/2", 2, 1, 0, "cpu", "fp32", ["dit-sra"], scale="micro")
