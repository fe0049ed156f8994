"""`repro bench` prints per-method numbers with their units; timings are printed, never asserted."""

from __future__ import annotations

import json

import pytest

from repro.bench import method_config, run_bench
from repro.cli import main


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
