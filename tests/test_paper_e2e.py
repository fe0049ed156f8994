"""The paper scale end to end with tiny stand-ins, on 2 gloo ranks under torchrun (c10d rendezvous):
ImageFolder -> latents -> train -> preempted by SIGTERM and resumed -> distributed sampling -> VAE decode -> FID
against an ADM reference batch -> repro land -> repro claims gives a paper-scale verdict with the provenance;
and a hand-typed golden (or a validation-loss report) decides nothing."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from standins import image_folder, random_inception_weights, save_vae

from repro.cli import main

ROOT = Path(__file__).resolve().parents[1]
STEPS = 300


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{_free_port()}", "--rdzv-id", "e2e",
        "-m", "repro.cli", *args,
    ]  # fmt: skip


def _run(cmd: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _params(work: Path) -> Path:
    params = {
        "methods": {
            "dit": {"objective": {"name": "ddpm"}, "model": {"learn_sigma": True}},
            "tread": {"objective": {"name": "ddpm"}, "model": {"learn_sigma": True, "routes": "tread"}},
        },
        "scales": {
            "paper": {  # the paper scale's shape (latents, equal steps, kept checkpoints), at a toy's size
                "methods": ["dit", "tread"],
                "seeds": [0],
                "model": dict(
                    input_size=4, patch_size=2, in_channels=4, hidden_size=32, depth=8, num_heads=2, num_classes=3
                ),
                "data": {"name": "latents", "path": str(work / "latents")},
                "train": dict(
                    steps=STEPS,
                    batch_size=8,
                    lr=1e-3,
                    ema_decay=0.9,
                    eval_every=100,
                    ckpt_every=100,
                    log_every=5,
                    keep_checkpoints=True,
                    threads=1,
                ),  # fmt: skip
                "eval": {"metrics": [], "val_size": 6, "val_points": 2, "sample_steps": 4, "batch_size": 8},
            }
        },
    }
    path = work / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _logged_step(run: Path) -> int:
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return 0
    return max((json.loads(line)["step"] for line in lines if line.strip()), default=0)


def _train_preempted_then_resumed(work: Path, params: Path, run: Path) -> dict:
    args = ["train", "--params", str(params), "--scale", "paper", "--method", "dit", "--out", str(run), "--quiet"]
    proc = subprocess.Popen(
        _torchrun(*args), cwd=work, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 240
    while _logged_step(run) < 20 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"training ended before it could be preempted:\n{proc.stdout.read()[-3000:]}"
    proc.send_signal(signal.SIGTERM)  # as SLURM preempts: torchrun forwards SIGTERM to its workers
    out, _ = proc.communicate(timeout=120)
    assert "stopped by SIGTERM" in out, out[-3000:]
    stopped = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"]
    assert 20 <= stopped < STEPS and not (run / "curve.json").exists()
    _run(_torchrun(*args), work)  # the same command resumes from the checkpoint
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == STEPS  # the log resumed where the checkpoint was
    return {"stopped_at": stopped}


@pytest.mark.slow
def test_paper_scale_end_to_end_on_two_ranks(tmp_path, capsys, monkeypatch):
    t0 = time.perf_counter()
    work = tmp_path
    images = image_folder(work / "imagenet" / "train", classes=3, per_class=8, size=36)
    vae = save_vae(work / "sd-vae")
    inception = random_inception_weights(work / "weights-inception-random.pth")

    # 1. ImageFolder -> SD-VAE latents with mirrors and a held-out validation set (the README's command)
    _run([sys.executable, "-m", "repro.data.latents", str(images), str(work / "latents"), "--vae", str(vae),
          "--image-size", "32", "--hflip", "--val-per-class", "2", "--shard-size", "8", "--num-workers", "0",
          "--device", "cpu"], work)  # fmt: skip
    manifest = json.loads((work / "latents" / "manifest.json").read_text())
    assert manifest["hflip"] and manifest["validation"]["label_counts"] == [2, 2, 2] and manifest["count"] == 36

    # 2. train DiT on 2 ranks, preempted by SIGTERM and resumed; TREAD uninterrupted
    params = _params(work)
    dit, tread = work / "runs" / "paper" / "dit-s0", work / "runs" / "paper" / "tread-s0"
    cut = _train_preempted_then_resumed(work, params, dit)
    _run(_torchrun("train", "--params", str(params), "--scale", "paper", "--method", "tread", "--out", str(tread),
                   "--quiet"), work)  # fmt: skip
    for run in (dit, tread):
        curve = json.loads((run / "curve.json").read_text())
        assert curve["complete"] and curve["provenance"]["world_size"] == 2
        assert curve["provenance"]["latents"]["manifest_sha256"]

    # 3. distributed sampling of the last checkpoint, decoded through the VAE into one ADM batch
    name = f"step{STEPS:07d}-ema-4steps-cfg1-n12-seed0.npz"
    for run in (dit, tread):
        _run(_torchrun("sample", str(run / "checkpoints" / f"step{STEPS:07d}.pt"), "--num-samples", "12",
                       "--batch-size", "4", "--grid", "0"), work)  # fmt: skip
        with np.load(run / "samples" / name) as z:
            assert z["arr_0"].shape == (12, 32, 32, 3) and z["arr_1"].tolist() == [i % 3 for i in range(12)]
            assert json.loads(str(z["provenance"]))["world_size"] == 2
    # the first evaluation's checkpoints too (one process: a speedup needs the curve's early FID)
    for run in (dit, tread):
        assert main(["sample", str(run / "checkpoints" / "step0000100.pt"), "--num-samples", "12", "--batch-size", "4",
                     "--grid", "0"]) == 0  # fmt: skip
    # the set does not depend on the world size: one process draws the same batch
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # the ranks' one thread: the same forward path
    one = work / "one.npz"
    assert main(["sample", str(dit / "checkpoints" / f"step{STEPS:07d}.pt"), "--num-samples", "12", "--batch-size",
                 "4", "--out", str(one), "--grid", "0"]) == 0  # fmt: skip
    monkeypatch.undo()
    with np.load(one) as a, np.load(dit / "samples" / name) as b:
        assert np.array_equal(a["arr_0"], b["arr_0"])

    # 4. FID (and sFID, IS, precision/recall) against an ADM-layout reference batch of the real images
    reference = work / "VIRTUAL_tiny_labeled.npz"
    _run([sys.executable, "-m", "repro.metrics.adm", "reference", str(images), str(reference), "--image-size", "32",
          "--weights", str(inception), "--device", "cpu"], work)  # fmt: skip
    for samples in sorted((work / "runs" / "paper").glob("*/samples/*-seed0.npz")):
        assert main(["evaluate", str(samples), "--reference", str(reference), "--weights", str(inception),
                     "--json", str(samples.with_suffix(".json"))]) == 0  # fmt: skip

    # 5. land: goldens/paper/ with provenance; repro speedup works on the landed curves
    goldens = work / "goldens"
    assert main(["land", str(dit), str(tread), "--goldens", str(goldens)]) == 0
    landed = json.loads((goldens / "paper" / "runs" / "paper-dit-s0.json").read_text())["provenance_of_landing"]
    assert landed["command"] == f"repro land {dit} {tread} --goldens {goldens}"  # not pytest's own arguments
    final = json.loads((goldens / "paper" / "final.json").read_text())
    record = final["dit"]["records"]["unguided_fid"][0]
    assert final["dit"]["unguided_fid"] == record["fid"] and record["num_samples"] == 12
    assert record["sampling"]["world_size"] == 2 and record["training"]["world_size"] == 2
    assert record["reference"]["file"] == reference.name and record["samples_verified"] is True
    assert main(["speedup", "--curves", str(goldens / "paper" / "runs" / "*.json"), "--metric", "fid", "--out",
                 str(work / "speedup.json")]) == 0  # fmt: skip
    capsys.readouterr()

    # 6. the ledger: 12 CPU samples are not FID-50K on GPUs, so no verdict ...
    specs = ["--specs", str(ROOT / "specs"), "--goldens", str(goldens), "--reports", str(work / "reports")]
    only = ["--only", "dit-xl2-curve", "tread-final", "tread-table2", "--skip-pytest"]
    main(["claims", *specs, *only])
    text = capsys.readouterr().out
    assert "FID from 12 samples; the claim needs FID-50K (50,000 samples)" in text
    assert "ran on cpu" in text and "confirmed" not in text and "refuted" not in text
    # ... and with the stand-ins' sample count and device allowed (this process only), a paper-scale verdict that
    # carries the provenance and says it is one data point
    from repro.evidence import paper

    monkeypatch.setattr(paper, "FID_SAMPLES", 12)
    monkeypatch.setattr(paper, "REQUIRE_CUDA", False)
    main(["claims", *specs, *only])
    text = capsys.readouterr().out
    rows = [line for line in text.splitlines() if line.startswith(("dit-xl2-curve ", "tread-final "))]
    assert len(rows) == 2 and all(" at paper" in line for line in rows), text
    assert "dit-xl2-curve: decided by 1 seed (seed 0): one data point" in text
    assert "world size 2 (torch" in text and "latent set" in text and reference.name in text
    with capsys.disabled():
        print("\n".join(line for line in text.splitlines() if line.startswith(("dit-xl2-curve", "  dit-xl2-curve"))))

    # 7. a hand-typed golden and a validation-loss report decide nothing (the ledger's own requirements again)
    monkeypatch.undo()
    typed = work / "typed"
    (typed / "paper").mkdir(parents=True)
    (typed / "paper" / "final.json").write_text(
        json.dumps({"dit": {"unguided_fid": 9.5}, "tread": {"unguided_fid": 3.0}})
    )
    main(["claims", "--specs", str(ROOT / "specs"), "--goldens", str(typed), "--reports", str(work / "r2"), *only])
    text = capsys.readouterr().out
    assert text.count("check failed") >= 2 and "not written by `repro land`" in text
    speedup = json.loads((goldens / "paper" / "speedup.json").read_text())
    speedup["metric"] = "val_loss"
    speedup = paper.seal(speedup)  # even re-sealed, a validation-loss speedup is not FID-50K
    (typed / "paper" / "speedup.json").write_text(json.dumps(speedup))
    main(["claims", "--specs", str(ROOT / "specs"), "--goldens", str(typed), "--reports", str(work / "r3"),
          "--only", "tread-table2", "--skip-pytest"])  # fmt: skip
    assert "a speedup on 'val_loss'; the claim needs FID-50K" in capsys.readouterr().out
    edited = json.loads((goldens / "paper" / "final.json").read_text())
    edited["dit"]["unguided_fid"] = 2.0  # a number changed by hand
    (typed / "paper" / "final.json").write_text(json.dumps(edited))
    main(["claims", "--specs", str(ROOT / "specs"), "--goldens", str(typed), "--reports", str(work / "r4"),
          "--only", "dit-xl2-curve", "--skip-pytest"])  # fmt: skip
    assert "edited after `repro land` wrote it" in capsys.readouterr().out
    print(f"end to end: {time.perf_counter() - t0:.0f} s (preempted at step {cut['stopped_at']} of {STEPS})")
