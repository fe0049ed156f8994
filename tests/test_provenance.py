"""The shared record of how a result was made, the file hash, and the CPU set-up of entry points."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from repro import provenance as P
from repro.runtime import cpu_model_from, cpu_setup, device_name

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("size", [0, 1, (1 << 20) - 1, 1 << 20, (1 << 20) * 2 + 17])
def test_sha256_file_matches_hashlib_over_the_whole_file(tmp_path, size):
    # sizes around the 1 MiB read chunk: an empty file, a partial chunk, exact chunks, a tail
    data = os.urandom(size)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert P.sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert P.sha256_file(str(path)) == P.sha256_file(path)


def test_every_module_hashes_files_the_same_way(tmp_path):
    from repro.experiments.gpu import wheels
    from repro.metrics import featurenet

    path = tmp_path / "w.pt"
    path.write_bytes(b"weights")
    want = hashlib.sha256(b"weights").hexdigest()
    assert featurenet.sha256_file(path) == wheels.sha256_file(path) == want


def test_shared_fields_then_the_callers(monkeypatch):
    monkeypatch.setattr(P, "git_commit", lambda paths: "abc" if tuple(paths) == ("repro",) else None)
    record = P.provenance("repro train", device="cpu (test)", seed=3, precision="fp32", world_size=2)
    assert record == {
        "command": "repro train",
        "git_commit": "abc",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": "cpu (test)",
        "precision": "fp32",
        "seed": 3,
        "world_size": 2,
    }
    assert list(record)[-1] == "world_size"  # the caller's fields come last
    bare = P.provenance("repro audit", device="meta", commit_paths=(".",))
    assert "seed" not in bare and "precision" not in bare and bare["git_commit"] is None


def test_empty_command_records_this_process(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/usr/bin/repro", "train", "--scale", "smoke"])
    assert P.provenance(None, device="cpu")["command"] == "repro train --scale smoke"


def test_run_provenance_states_what_applies_on_the_device():
    cfg = SimpleNamespace(seed=7, train=SimpleNamespace(precision="bf16", tf32=True))
    record = P.run_provenance(cfg, torch.device("cpu"), 1, "repro train")
    # bf16 autocast and TF32 are CUDA settings: a CPU run computes in fp32
    assert record["precision"] == "fp32" and record["tf32"] is False
    assert record["seed"] == 7 and record["world_size"] == 1
    assert record["device"] == device_name(torch.device("cpu"))


def test_cpu_model_names_the_generation_where_the_kernel_gives_it():
    # a virtual machine's "AMD EPYC" spans generations: family/model/stepping tell them apart
    two = (
        "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\n"
        "stepping\t: 1\n\nprocessor\t: 1\ncpu family\t: 25\nmodel\t\t: 1\nmodel name\t: other\n"
    )
    assert cpu_model_from(two) == "AMD EPYC (cpu family 26, model 2, stepping 1)"
    assert cpu_model_from("\nprocessor : 0\nmodel name : Intel Xeon\n") == "Intel Xeon"  # no ids: the name alone
    assert cpu_model_from("processor : 0\nModel : Raspberry Pi 4\n") == "Raspberry Pi 4"  # ARM names it "Model"
    assert cpu_model_from("processor : 0\nBogoMIPS : 50.00\n") is None


def test_a_training_run_records_its_cpu_and_whether_it_was_compiled(tmp_path):
    from repro.build import resolve
    from repro.config import load_params
    from repro.experiments.train import train

    cfg = resolve(load_params(), "smoke", "dit", 0)
    cfg = cfg.with_train(steps=2, eval_every=2, ckpt_every=2)
    result = train(cfg, tmp_path / "run", quiet=True)
    prov = result["provenance"]
    assert prov["compiled"] is False
    assert prov["device"] == device_name(torch.device("cpu"))


def test_git_commit_is_head_with_a_dirty_mark():
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    commit = P.git_commit()
    assert commit.removesuffix("+dirty") == head.stdout.strip()


def test_git_commit_outside_a_checkout_reads_the_environment(monkeypatch):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(P.subprocess, "run", no_git)
    monkeypatch.setenv("REPRO_GIT_COMMIT", "feedbeef")
    assert P.git_commit() == "feedbeef"
    monkeypatch.delenv("REPRO_GIT_COMMIT")
    assert P.git_commit() is None


def test_provenance_module_does_not_import_torch():
    code = "import sys, repro.provenance; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cpu_setup_flushes_denormals_and_sets_threads():
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush denormals")
    threads = torch.get_num_threads()
    try:
        torch.set_flush_denormal(False)
        tiny = torch.tensor([1e-40], dtype=torch.float32)
        assert (tiny * 1.0).item() != 0.0  # a denormal survives without the flush
        cpu_setup("cuda")  # not a CPU: nothing changes
        assert (tiny * 1.0).item() != 0.0
        cpu_setup(torch.device("cpu"), threads=1)
        assert (tiny * 1.0).item() == 0.0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_flush_denormal(True)
        torch.set_num_threads(threads)
