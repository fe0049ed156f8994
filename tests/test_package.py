"""The wheel carries what the commands need at run time: installed outside the source tree, they work."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _build_wheel(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "repro", src / "repro", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            dist,
            src,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    (wheel,) = dist.glob("repro-*.whl")
    return wheel


@pytest.mark.slow
def test_the_wheel_holds_the_feature_network_weights_and_their_record(tmp_path):
    from repro.metrics.featurenet import DEFAULT_DIR, RECORD_NAME, WEIGHTS_NAME

    wheel = _build_wheel(tmp_path)
    rel = DEFAULT_DIR.relative_to(ROOT).as_posix()
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert f"{rel}/{WEIGHTS_NAME}" in names and f"{rel}/{RECORD_NAME}" in names
        assert z.read(f"{rel}/{WEIGHTS_NAME}") == (DEFAULT_DIR / WEIGHTS_NAME).read_bytes()


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist_data")
def test_installed_wheel_evaluates_samples_and_lists_claims_outside_the_repo(tmp_path):
    """A fresh venv outside the repo; its dependencies come from this environment through a .pth file."""
    wheel = _build_wheel(tmp_path)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True
    ).stdout.strip()
    # a plain path line: this environment's packages become importable, its .pth files (the editable
    # install of the source tree among them) are not run
    (Path(purelib) / "deps-from-project.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # without PYTHONPATH: a source tree on it (with its repro.egg-info) would make pip call the wheel installed
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "REPRO_FEATURENET")}
    r = subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run(
        [python, "-c", "import repro; print(repro.__file__)"], cwd=work, env=env, capture_output=True, text=True
    )
    assert Path(where.stdout.strip()).is_relative_to(env_dir), where.stdout + where.stderr
    rng = np.random.default_rng(0)
    np.savez(work / "tiny.npz", samples=rng.integers(0, 256, (20, 1, 32, 32), dtype=np.uint8))
    repro = env_dir / "bin" / "repro"
    r = subprocess.run(
        [repro, "evaluate", "tiny.npz", "--metrics", "fid", "--reference-size", "100", "--json", "m.json"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert np.isfinite(json.loads((work / "m.json").read_text())["fid"])
    r = subprocess.run([repro, "claims", "--help"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "specs" in r.stdout, r.stderr
    r = subprocess.run([repro, "--version"], cwd=work, env=env, capture_output=True, text=True, timeout=60)
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert r.stdout.strip() == f"repro {declared}", r.stdout
