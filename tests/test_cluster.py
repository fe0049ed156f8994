"""Cluster life: preemption signals checkpoint at a step boundary, ranks agree on one shared run directory and one
resume step before any step, and the SLURM recipe."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from repro.build import from_dict
from repro.cli import main
from repro.config import RunConfig
from repro.experiments.train import EXIT_PREEMPTED, EvalHook, agree_on_step, train


def tiny_run(**train_overrides) -> RunConfig:
    return from_dict(
        {
            "run_id": "test-dit-s0",
            "scale": "smoke",
            "method": "dit",
            "seed": 0,
            "model": dict(
                input_size=8, patch_size=4, in_channels=1, hidden_size=16, depth=2, num_heads=2, num_classes=4
            ),
            "objective": {"name": "ddpm"},
            "data": {"name": "synthetic", "subset": 64},
            "train": {
                **dict(steps=6, batch_size=8, lr=1e-3, ema_decay=0.9, eval_every=3, ckpt_every=6, log_every=1),
                **train_overrides,
            },
            "eval": dict(metrics=[], val_size=8, val_points=2),
        }
    )


def _state(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)


def _points(curve):
    return [{k: v for k, v in p.items() if k != "seconds"} for p in curve["points"]]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_a_stop_signal_checkpoints_at_the_next_step_boundary_and_resumes_bitwise(tmp_path, sig):
    whole = train(tiny_run(), tmp_path / "whole", quiet=True)
    fired = []

    def preempt(curve):  # the signal lands during the evaluation at step 3
        if not fired:
            fired.append(len(curve["points"]))
            os.kill(os.getpid(), sig)

    cut = train(tiny_run(), tmp_path / "cut", quiet=True, on_eval=preempt)
    assert cut["stopped_by"] == sig.name and cut["stopped_at"] == 3 and not cut["complete"]
    assert _state(tmp_path / "cut")["step"] == 3  # ckpt_every is 6: before, the preempted job lost its 3 steps
    assert not (tmp_path / "cut" / "curve.json").exists()
    assert signal.getsignal(sig) in (signal.SIG_DFL, signal.default_int_handler)  # the handler is gone again
    done = train(tiny_run(), tmp_path / "cut", quiet=True)
    assert done["complete"] and _points(done) == _points(whole)
    a, b = _state(tmp_path / "cut"), _state(tmp_path / "whole")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])


def test_the_train_command_exits_75_after_a_signal_with_its_checkpoint(tmp_path, tiny_params, monkeypatch, capsys):
    _, params = tiny_params(steps=4)
    real = EvalHook.__call__

    def evaluate_then_preempt(self, run):
        real(self, run)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(EvalHook, "__call__", evaluate_then_preempt)
    out = tmp_path / "run"
    argv = ["train", "--params", str(params), "--scale", "tiny", "--method", "dit", "--out", str(out), "--quiet"]
    assert main(argv) == EXIT_PREEMPTED == 75
    err = capsys.readouterr().err
    assert "stopped by SIGTERM after step 2" in err and "run the same command to resume" in err
    assert _state(out)["step"] == 2 and not (out / "curve.json").exists()
    monkeypatch.setattr(EvalHook, "__call__", real)
    assert main(argv) == 0 and json.loads((out / "curve.json").read_text())["complete"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_env(rank: int, world: int, port: int) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)


def _own_directory_worker(rank: int, world: int, port: int, root: str):
    import torch.distributed as dist

    _rank_env(rank, world, port)
    try:
        train(tiny_run(), f"{root}/node{rank}", device="cpu", quiet=True)  # each "node" its own directory
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.slow
def test_ranks_that_do_not_share_the_run_directory_stop_before_any_step(tmp_path):
    with pytest.raises(mp.ProcessRaisedException, match="do not see rank 0's run directory.*shared file system"):
        mp.start_processes(_own_directory_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    for node in ("node0", "node1"):
        assert not (tmp_path / node / "checkpoints").exists() and not (tmp_path / node / "curve.json").exists()


def _step_worker(rank: int, world: int, port: int, root: str):
    import torch.distributed as dist

    _rank_env(rank, world, port)
    dist.init_process_group("gloo")
    try:
        agree_on_step(root, 40 if rank == 0 else 0, rank, world)  # node 0 resumed at step 40, node 1 at 0
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ranks_that_would_resume_from_different_steps_are_one_clear_error(tmp_path):
    with pytest.raises(
        mp.ProcessRaisedException, match=r"read different checkpoints \(step 0: ranks 1; step 40: ranks 0\)"
    ):
        mp.start_processes(_step_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, start_method="spawn")


def test_the_slurm_script_is_valid_bash_and_carries_the_recipe(tmp_path, capsys):
    script = tmp_path / "paper-dit.sbatch"
    assert main(["slurm", "--method", "dit", "--nodes", "4", "--partition", "gpu", "--write", str(script)]) == 0
    text = script.read_text()
    subprocess.run(["bash", "-n", str(script)], check=True)
    for needed in (
        "#SBATCH --nodes=4",
        "#SBATCH --requeue",
        "#SBATCH --signal=B:USR1@600",
        "#SBATCH --partition=gpu",
        "--rdzv-backend c10d",
        '--rdzv-endpoint "$HEAD:29500"',
        "--signals-to-handle SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1",
        "--shutdown-timeout 480",
        "scontrol requeue",
        '--scale paper --method dit --seed 0 --out "$RUN"',
    ):
        assert needed in text, needed
    capsys.readouterr()
    assert main(["slurm", "--method", "dit", "--grace", "60", "--shutdown-timeout", "120"]) == 2
    assert "must be shorter than --grace" in capsys.readouterr().err


def _fake_slurm(bin_dir, state):
    """srun, scontrol and scancel as shell scripts: one node (this machine), the step's pid kept in ``state``."""
    bin_dir.mkdir()
    scripts = {
        "srun": f'while [[ "$1" == --* ]]; do shift; done\necho $$ > {state}/step.pid\nexec "$@"\n',
        "scontrol": f'case "$1" in show) echo 127.0.0.1 ;; requeue) echo "$2" >> {state}/requeued ;; esac\n',
        "scancel": f'[[ "$1" == --signal=TERM ]] && echo "$2" >> {state}/cancelled\n'
        f"kill -TERM $(cat {state}/step.pid)\n",
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text("#!/bin/bash\n" + body)
        (bin_dir / name).chmod(0o755)


@pytest.mark.slow
def test_the_slurm_script_checkpoints_and_requeues_before_the_time_limit(tmp_path):
    """The generated script under a stand-in SLURM (one node, 2 CPU ranks): USR1 before the time limit makes every
    rank checkpoint at a step boundary and the job requeue itself; the requeued job resumes and finishes."""
    import sys
    import time

    import yaml

    from repro.experiments.cluster import render

    params = {
        "methods": {"dit": {"objective": {"name": "ddpm"}, "model": {"learn_sigma": True}}},
        "scales": {
            "paper": {
                "model": dict(
                    input_size=8, patch_size=4, in_channels=1, hidden_size=16, depth=2, num_heads=2, num_classes=4
                ),  # fmt: skip
                "data": {"name": "synthetic", "subset": 64},
                "train": dict(
                    steps=400,
                    batch_size=8,
                    lr=1e-3,
                    ema_decay=0.9,
                    eval_every=200,
                    ckpt_every=400,
                    log_every=5,
                    threads=1,
                ),  # fmt: skip
                "eval": {"metrics": [], "val_size": 8, "val_points": 2},
            }
        },
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    state = tmp_path / "slurm"
    state.mkdir()
    _fake_slurm(tmp_path / "bin", state)
    script = tmp_path / "job.sbatch"
    script.write_text(
        render(
            method="dit",
            params=str(tmp_path / "params.yaml"),
            run_dir=str(tmp_path / "run"),
            nodes=1,
            gpus_per_node=2,
            port=_free_port(),
            workdir=str(tmp_path),
            python=f"{sys.executable} ",
            grace=60,
            shutdown_timeout=30,
        )  # fmt: skip
    )
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242",
           "SLURM_JOB_NODELIST": "node1", "SLURM_NNODES": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}  # fmt: skip
    job = subprocess.Popen(["bash", str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = tmp_path / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 180
    while job.poll() is None and time.monotonic() < deadline:
        if log.exists() and any(json.loads(line)["step"] >= 20 for line in log.read_text().splitlines() if line):
            break
        time.sleep(0.05)
    assert job.poll() is None, job.stdout.read()
    job.send_signal(signal.SIGUSR1)  # what --signal=B:USR1@GRACE sends to the batch script
    out, _ = job.communicate(timeout=120)
    assert job.returncode == 0, out
    assert (state / "cancelled").read_text().split() == ["4242.0"] and (state / "requeued").read_text().split() == [
        "4242"
    ]
    step = _state(tmp_path / "run")["step"]
    assert 20 <= step < 400 and "stopped by SIGTERM" in out
    # the requeued job runs the same script: it resumes and finishes
    again = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads((tmp_path / "run" / "curve.json").read_text())["complete"]
