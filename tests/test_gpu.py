"""The GPU campaign's CPU dry run end to end (wheel folder, carried data, plan, runs, bench, record), its
budget (a deadline polled between parts), and the pieces it is built from. Nothing here needs a GPU or a package
registry."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from repro.commands import gpu as gpu_cli
from repro.config import load_params
from repro.experiments import gpu
from repro.experiments.gpu import wheels as gpu_wheels
from repro.experiments.rerun import curves_by_run

PROBE = "repro_dryrun_probe"


def make_wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """A minimal valid pure-Python wheel holding one module that records it was imported from the wheel."""
    folder.mkdir(parents=True, exist_ok=True)
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": b"FROM_WHEEL = True\n",
        f"{dist}/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
            + "".join(f"Requires-Dist: {r}\n" for r in requires)
        ).encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }

    def digest(data: bytes) -> str:
        return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

    record = "".join(f"{n},{digest(d)},{len(d)}\n" for n, d in files.items()) + f"{dist}/RECORD,,\n"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for n, d in files.items():
            z.writestr(n, d)
        z.writestr(f"{dist}/RECORD", record)
    return path


def write_manifest(folder: Path, wheels: list[tuple[Path, str]], data: list[dict] | None = None) -> None:
    rows = [
        {"name": p.name.split("-")[0], "version": p.name.split("-")[1], "module": module, "file": p.name,
         "bytes": p.stat().st_size, "sha256": gpu_wheels.sha256_file(p), "requires": gpu.wheel_requirements(p)}
        for p, module in wheels
    ]  # fmt: skip
    (folder / gpu.MANIFEST).write_text(json.dumps({"wheels": rows, "data": data or []}))


@pytest.fixture
def isolated_env(monkeypatch, tmp_path):
    """The campaign changes sys.path, PYTHONPATH and REPRO_DATA_DIR; give each back afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("REPRO_DATA_DIR", "unset-below")
    monkeypatch.delenv("REPRO_DATA_DIR")
    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path / "cache"))
    yield
    from repro.data import fashion_mnist

    fashion_mnist.clear_cache()


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist_data")
def test_dry_run_installs_from_the_wheel_folder_and_writes_every_output(tmp_path, isolated_env):
    wheels = tmp_path / "wheels"
    write_manifest(wheels, [(make_wheel(wheels, PROBE, "0.1"), PROBE)], gpu.copy_data(wheels / gpu.DATA_SUBDIR))
    out, work = tmp_path / "out", tmp_path / "work"
    rc = gpu_cli.main(["campaign", "--out", str(out), "--work", str(work), "--wheels", str(wheels), "--dry-run"])
    record = json.loads((out / "campaign.json").read_text())
    assert rc == 0, record
    assert record["status"] == "done" and record["not_done"] == []

    # the probe was not importable, so it was installed, offline, from the folder; the data is the carried copy
    install = record["parts"][0]
    assert install["part"] == "install" and [w["name"] for w in install["installed"]] == [PROBE]
    assert (work / "site" / PROBE / "__init__.py").is_file()
    assert install["data_dir"] == str(wheels / gpu.DATA_SUBDIR)
    assert __import__(PROBE).FROM_WHEEL

    # the plan: FLOPs = 2 x counted MACs; time = FLOPs / (assumed rate); TREAD gets the dense run's MACs
    plan = json.loads((out / "plan.json").read_text())
    a = plan["assumptions"]
    runs = {p["part"]: p for p in plan["parts"] if p["part"].startswith("train")}
    benches = {p["part"]: p for p in plan["parts"] if p["part"].startswith("bench")}
    assert set(runs) == {"train small-dit-s0", "train small-tread-s0", "train small-sit-s0"}
    assert set(benches) == {f"bench {m}" for m in gpu.BENCH_MODELS}
    for r in runs.values():
        assert r["train_flops"] == 2 * r["steps"] * r["train_step_macs"]
        assert r["train_s"] == pytest.approx(r["train_flops"] / (a["train_tflops"] * 1e12))
    dit, tread = runs["train small-dit-s0"], runs["train small-tread-s0"]
    assert tread["steps"] > dit["steps"]
    assert tread["train_flops"] == pytest.approx(dit["train_flops"], rel=1 / dit["steps"])
    assert plan["total_estimate_s"] == pytest.approx(sum(p["estimate_s"] for p in plan["parts"]))

    # curves: one per run, loadable by the checked loader, every planned evaluation with FID and validation loss
    curves = curves_by_run(out / "curves")
    assert set(curves) == {"small-dit-s0", "small-tread-s0", "small-sit-s0"}
    for run_id, c in curves.items():
        assert len(c["points"]) == runs[f"train {run_id}"]["evaluations"] >= 2
        assert all(math.isfinite(p["fid"]) and math.isfinite(p["val_loss"]) for p in c["points"])
        assert c["points"][-1]["step"] == runs[f"train {run_id}"]["steps"]
    assert curves["small-tread-s0"]["points"][-1]["macs"] == pytest.approx(
        curves["small-dit-s0"]["points"][-1]["macs"], rel=1 / dit["steps"]
    )
    assert set(record["runs"]) == set(curves) and all(record["runs"][r] for r in curves)  # training logs

    # bench: every model, DiT and TREAD, measured step ratio next to the MAC ratio; the deeper route saves more
    bench = json.loads((out / "bench.json").read_text())["models"]
    assert set(bench) == set(gpu.BENCH_MODELS)
    for rep in bench.values():
        assert rep["batch"] == 4 and set(rep["methods"]) == set(gpu.BENCH_METHODS)
        assert rep["methods"]["tread"]["measured_speedup_vs_dit"] > 0
    ratio = {m: bench[m]["methods"]["tread"]["mac_ratio_vs_dit"] for m in bench}
    assert 1 < ratio["DiT-B/2"] < ratio["DiT-XL/2"]

    prov = record["provenance"]
    for key in ("command", "git_commit", "source_sha256", "torch", "cuda", "device", "precision", "seed"):
        assert key in prov
    assert prov["dry_run"] is True and prov["precision"] == "fp32"
    assert "plan on cpu" in (out / "log.txt").read_text()
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == sorted(
        ["bench.json", "campaign.json", "plan.json", "log.txt", "dit-s0.json", "tread-s0.json", "sit-s0.json"]
    )  # within the 8 files that come back from one call

    # a dry run never lands as goldens
    assert gpu_cli.main(["land", str(out), "--goldens", str(tmp_path / "goldens")]) == 2
    assert not (tmp_path / "goldens").exists()


@pytest.mark.slow
def test_a_cut_campaign_still_records_what_it_did(tmp_path, isolated_env):
    out = tmp_path / "out"
    options = gpu.CampaignOptions(
        out, budget_s=0.05, train_budget_s=0.05, wheels=None, work=tmp_path / "w", dry_run=True
    )
    rc = gpu.run_gpu_campaign(options)
    record = json.loads((out / "campaign.json").read_text())
    assert rc == 1 and record["status"] == "cut"
    done = [p["part"] for p in record["parts"] if p["status"] == "done"]
    assert len(done) < 2 + 3 + len(gpu.BENCH_MODELS)  # install, plan, three runs, the benches
    # the deadline is polled between parts: a part is done, or skipped for lack of budget; never cut, failed or
    # left running
    assert all(
        p["status"] == "done" or (p["status"] == "skipped" and "budget" in p["reason"]) for p in record["parts"]
    ), record["parts"]
    assert "ran out" in (out / "log.txt").read_text()


class FakeClock:
    """A monotonic clock that moves only when a stand-in says its work took time."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_part_that_would_not_fit_is_skipped_with_its_reason(tmp_path):
    clock = FakeClock()
    camp = gpu.Campaign(tmp_path, 100.0, "test", clock)
    assert camp.fits("a", 50.0) and camp.ran_out_s is None
    clock.now += 70.0
    assert not camp.fits("b", 50.0) and camp.ran_out_s == 70.0  # 30 s left: not started
    assert camp.fits("c", 10.0)  # a shorter part still fits
    clock.now += 40.0
    assert not camp.fits("d")  # past the deadline nothing starts
    record = json.loads((tmp_path / "campaign.json").read_text())
    assert record["ran_out_s"] == 70.0
    assert [(p["part"], p["reason"]) for p in record["parts"]] == [
        ("b", "30 s of the budget left, about 50 s needed"),
        ("d", "the campaign's budget of 100 s ran out after 110.0 s"),
    ]


def test_a_budget_running_out_mid_campaign_stops_between_parts_with_what_finished_written(
    tmp_path, isolated_env, monkeypatch
):
    clock, trained = FakeClock(), []

    def train(cfg, run_dir, device=None, resume=False, command=None, on_eval=None, quiet=False):
        trained.append(cfg.run_id)
        clock.now += 60.0  # each run takes 60 s of the campaign's 100 s
        points = [{"step": s, "fid": 50.0 - s, "val_loss": 1.0 / s} for s in range(2, cfg.train.steps + 1, 2)]
        curve = {"run_id": cfg.run_id, "method": cfg.method, "seed": cfg.seed, "points": points}
        on_eval(curve)
        return curve

    def bench(*args, **kwargs):
        raise AssertionError("no bench fits after the deadline")

    monkeypatch.setattr("repro.experiments.train.train", train)
    monkeypatch.setattr("repro.experiments.bench.run_bench", bench)
    out = tmp_path / "out"
    options = gpu.CampaignOptions(out, budget_s=100, train_budget_s=100, wheels=None, work=tmp_path / "w", dry_run=True)
    rc = gpu.run_gpu_campaign(options, clock=clock)

    record = json.loads((out / "campaign.json").read_text())
    assert rc == 1 and record["status"] == "cut" and record["ran_out_s"] == 120.0
    status = {p["part"]: p["status"] for p in record["parts"]}
    # two runs started before the deadline and finished (the second past it); nothing started after it
    assert trained == ["small-dit-s0", "small-tread-s0"]
    assert status == {
        "install": "done",
        "plan": "done",
        "train small-dit-s0": "done",
        "train small-tread-s0": "done",
        "train small-sit-s0": "skipped",
        **{f"bench {m}": "skipped" for m in gpu.BENCH_MODELS},
    }
    reasons = [p["reason"] for p in record["parts"] if p["status"] == "skipped"]
    assert all("budget of 100 s ran out after 120.0 s" in r for r in reasons), reasons
    assert record["not_done"] == ["train small-sit-s0", *(f"bench {m}" for m in gpu.BENCH_MODELS)]
    # what finished is written: the plan, the two curves; no bench report, no curve of the run never started
    assert (out / "plan.json").is_file() and not (out / "bench.json").exists()
    curves = sorted(p.name for p in (out / "curves").iterdir())
    assert curves == ["dit-s0.json", "tread-s0.json"]
    assert json.loads((out / "curves" / "dit-s0.json").read_text())["points"][-1]["step"] == 6
    assert "ran out at 120.0 s" in (out / "log.txt").read_text()


def test_install_refuses_a_wheel_whose_hash_differs(tmp_path):
    wheels = tmp_path / "wheels"
    path = make_wheel(wheels, "repro_probe_bad_hash", "0.1")
    write_manifest(wheels, [(path, "repro_probe_bad_hash")])
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ValueError, match="sha256"):
        gpu.install_missing(wheels, tmp_path / "site")
    with pytest.raises(FileNotFoundError, match="pack"):
        gpu.install_missing(tmp_path / "empty", tmp_path / "site")


def test_wheel_requirements_leave_out_extras_and_other_pythons(tmp_path):
    path = make_wheel(
        tmp_path,
        "probe",
        "1.0",
        requires=("zipp>=3.20", 'lazy-importer>=0.1; python_version < "3.15"', 'pytest; extra == "test"',
                  'tomli; python_version < "3.11"', "Huggingface_Hub<3.0,>=1.32.0"),
    )  # fmt: skip
    assert gpu.wheel_requirements(path) == ["zipp", "lazy-importer", "huggingface-hub"]


def test_pinned_wheels_need_nothing_the_image_lacks():
    # each pin's own requirements (read from its wheel by `pack`) are checked there; here the pins themselves
    # must not shadow what the image brings, and must each name the module the campaign imports
    assert not {gpu_wheels._normalize(n) for n in gpu.PINS} & gpu_wheels.IMAGE_HAS
    assert {"diffusers", "torch_fidelity"} <= {module for _, module in gpu.PINS.values()}


def test_largest_batch_halves_on_out_of_memory():
    calls = []

    def fake(model, batch, *args, **kwargs):
        calls.append(batch)
        if batch > 64:
            raise torch.cuda.OutOfMemoryError("fake")
        return {"batch": batch, "methods": {}}

    rep = gpu.bench_largest_batch("DiT-XL/2", 256, 1, 0, "cpu", "bf16", {}, run=fake)
    assert rep["batch"] == 64 and rep["out_of_memory_at"] == [256, 128] and calls == [256, 128, 64]


@pytest.mark.slow
def test_small_scale_fits_seven_minutes_at_the_stated_throughput():
    tp = gpu.Throughput(gpu.H200_BF16_TFLOPS, 0.30)
    configs = gpu.small_configs(load_params(), dry_run=False)
    assert {c.method for c in configs} == {"dit", "tread", "sit"} and len({c.seed for c in configs}) == 1
    plans = [gpu.run_plan(c, tp) for c in configs]
    assert sum(p["estimate_s"] for p in plans) <= 420
    assert all(p["evaluations"] >= 5 for p in plans)
    tread = next(c for c in configs if c.method == "tread").model.routes
    assert [(r.start, r.end, r.rate) for r in tread] == [(2, 8, 0.5)]
    assert all(c.model.patch_size == 2 and c.model.input_size == 32 for c in configs)  # 256 tokens


def test_campaign_rejects_bad_budgets(tmp_path, capsys):
    assert gpu_cli.main(["campaign", "--out", str(tmp_path), "--budget-s", "0"]) == 2
    assert "--budget-s: 0.0" in capsys.readouterr().err
    assert gpu_cli.main(["campaign", "--out", str(tmp_path), "--mfu", "1.5"]) == 2
    assert gpu_cli.main(["campaign", "--out", str(tmp_path), "--budget-s", "100", "--train-budget-s", "200"]) == 2


def test_land_copies_a_gpu_campaign_into_the_goldens_layout(tmp_path):
    out, goldens = tmp_path / "out", tmp_path / "goldens" / "small"
    (out / "curves").mkdir(parents=True)
    prov = {"dry_run": False, "cuda": "13.0", "device": "NVIDIA H200"}
    (out / "campaign.json").write_text(json.dumps({"provenance": prov, "parts": []}))
    (out / "bench.json").write_text("{}")
    curve = {"run_id": "small-dit-s0", "method": "dit", "seed": 0, "points": [{"step": 1, "fid": 9.0}]}
    (out / "curves" / "dit-s0.json").write_text(json.dumps(curve))
    written = gpu.land(out, goldens)
    assert sorted(p.relative_to(goldens).as_posix() for p in written) == [
        "bench.json",
        "campaign.json",
        "runs/dit-s0.json",
    ]
    assert json.loads((goldens / "runs" / "dit-s0.json").read_text()) == curve

    (out / "curves" / "bad.json").write_text(json.dumps({"run_id": "x"}))  # not a curve: nothing more is written
    (goldens / "runs" / "dit-s0.json").unlink()
    with pytest.raises(ValueError, match="no field"):
        gpu.land(out, goldens)
    assert not (goldens / "runs" / "dit-s0.json").exists()

    (out / "campaign.json").write_text(json.dumps({"provenance": {**prov, "cuda": None, "device": "cpu (x86_64)"}}))
    with pytest.raises(ValueError, match="only a GPU campaign"):
        gpu.land(out, goldens)


def test_repro_gpu_registers_the_same_commands_and_the_library_has_no_argparse(tmp_path, capsys):
    import argparse
    import ast

    parser = argparse.ArgumentParser(prog="repro")
    sub = parser.add_subparsers(dest="command", required=True)
    gpu_cli.register(sub)
    args = parser.parse_args(["gpu", "land", str(tmp_path), "--goldens", str(tmp_path / "g")])
    assert args.command == "gpu" and args.func is gpu_cli.run  # the subcommand's name does not overwrite it
    assert args.func(args) == 2 and "has no campaign.json" in capsys.readouterr().err
    standalone = gpu_cli.build_parser().parse_args(["campaign", "--out", str(tmp_path)])
    registered = parser.parse_args(["gpu", "campaign", "--out", str(tmp_path)])
    same = {k: v for k, v in vars(registered).items() if k not in ("command", "gpu_command", "func", "invoked_as")}
    assert same == {k: v for k, v in vars(standalone).items() if k not in ("command", "invoked_as")}

    for path in (gpu.REPO_ROOT / "repro" / "experiments" / "gpu").glob("*.py"):
        if path.name == "__main__.py":  # the command line: the parser of repro.commands.gpu, run
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n == "argparse" or "commands" in n for n in names), (path.name, names)

    import subprocess  # and python -m repro.experiments.gpu runs that parser

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(gpu.REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "repro.experiments.gpu", "land", str(tmp_path)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: land: ") and "has no campaign.json" in proc.stderr
