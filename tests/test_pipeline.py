"""The smoke scale end to end: params.yaml -> three methods trained -> curves -> speedup report -> plot.

Real Fashion-MNIST, real FID (the committed feature network), a few steps: it checks that the pieces
fit, not what they find.
"""

from __future__ import annotations

import json

import pytest

from repro.build import resolve
from repro.cli import main
from repro.config import load_params, runs_of
from repro.experiments.rerun import compare_folders
from repro.experiments.train import train
from repro.io import atomic_write_json


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist_data")
def test_smoke_scale_end_to_end(tmp_path):
    params = load_params()
    curves = tmp_path / "curves"
    for method, seed in runs_of(params, "smoke"):
        cfg = resolve(params, "smoke", method, seed)
        curve = train(cfg, tmp_path / cfg.run_id, quiet=True)
        assert curve["complete"] and all(p["fid"] > 0 for p in curve["points"])
        atomic_write_json(curves / f"{method}-s{seed}.json", curve)
    methods = {m for m, _ in runs_of(params, "smoke")}
    assert {"dit", "tread", "sit"} <= methods

    out, png = tmp_path / "speedup.json", tmp_path / "fid.png"
    assert main(["speedup", "--curves", str(curves / "*.json"), "--out", str(out), "--plot", str(png)]) == 0
    report = json.loads(out.read_text())
    assert report["baseline"] == "dit"
    targets = report["targets"]
    assert {"final", "third", "final-mean", "common", "ladder"} == set(targets)
    # the ladder has one rung per DiT evaluation (the baseline's mean value there); the common target is per method
    dit_steps = [p["step"] for p in json.loads((curves / "dit-s0.json").read_text())["points"]]
    assert sorted(int(step) for step in targets["ladder"]) == sorted(dit_steps)
    assert set(targets["common"]) == methods - {"dit"}
    assert set(report["unit_results"]) == methods - {"dit"}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # TREAD got the dense model's MAC budget in more, cheaper steps
    tread, dit = (json.loads((curves / f"{m}-s0.json").read_text())["points"][-1] for m in ("tread", "dit"))
    assert tread["step"] > dit["step"]
    assert tread["macs"] == pytest.approx(dit["macs"], rel=0.1)

    # DiT trained again from its config reproduces its curve (what `repro rerun` checks against a golden), and the
    # check tells curves apart: SiT's curve (the same evaluation steps, other values) under DiT's run id fails it
    dit_cfg = resolve(params, "smoke", "dit", 0)
    again = tmp_path / "again"
    atomic_write_json(again / "dit-s0.json", train(dit_cfg, tmp_path / "dit-again", quiet=True, resume=False))
    report = compare_folders(again, curves)
    assert report[dit_cfg.run_id]["status"] == "pass" and report[dit_cfg.run_id]["problems"] == []
    gap = report[dit_cfg.run_id]["gap"]  # same seed, same CPU: every value bitwise equal
    assert gap["compared"] == gap["equal"] > 0 and gap["rel"] == gap["used"] == 0
    assert {r["status"] for run_id, r in report.items() if run_id != dit_cfg.run_id} == {"missing"}
    impostor = tmp_path / "impostor"
    sit = json.loads((curves / "sit-s0.json").read_text())
    dit_points = json.loads((curves / "dit-s0.json").read_text())["points"]
    assert [p["step"] for p in sit["points"]] == [p["step"] for p in dit_points]
    atomic_write_json(impostor / "dit-s0.json", {**sit, "run_id": dit_cfg.run_id, "method": "dit"})
    assert compare_folders(impostor, curves)[dit_cfg.run_id]["status"] == "fail"
