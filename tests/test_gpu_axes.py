"""The GPU call's long-horizon and token-axis parts (repro/experiments/gpu/axes.py): their scales (17.5x the core
budget; 256 tokens at equal MACs), their plan from counted FLOPs and the measured step, their sizing within the time
left (and skipping), and the CPU dry run end to end, landed in a temporary goldens folder where the ladder and the
ledger read it. Nothing here needs a GPU."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from repro.build import resolve
from repro.commands import gpu as gpu_cli
from repro.config import load_params
from repro.experiments import gpu
from repro.experiments.gpu import axes as gpu_axes
from repro.experiments.gpu.land import land_parts
from repro.models import train_step_macs


@pytest.fixture
def isolated_env(monkeypatch, tmp_path):
    """The campaign may change sys.path, PYTHONPATH and REPRO_DATA_DIR; give each back afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path / "cache"))
    yield
    from repro.data import fashion_mnist

    fashion_mnist.clear_cache()


@pytest.mark.slow
def test_the_long_scale_is_dit_at_17_5x_the_core_budget_with_tread_edm_at_equal_macs():
    params = load_params()
    core = resolve(params, gpu_axes.CORE_SCALE, "dit", 0)
    long = {c.method: c for c in gpu_axes.part_configs(params, "long", False, seeds=[0])}
    assert set(long) == {"dit", "tread-edm"}
    dit, tread = long["dit"], long["tread-edm"]
    assert dit.train.steps == 52500 == gpu_axes.LONG_FACTOR * core.train.steps
    micro_long = resolve(params, "micro-long", "dit", 0)  # the CPU's long horizon: the same model, data, optimiser
    assert dit.model == micro_long.model and dit.data == micro_long.data and dit.objective == micro_long.objective
    for key in ("batch_size", "lr", "betas", "ema_decay", "eval_every"):
        assert getattr(dit.train, key) == getattr(micro_long.train, key), key
    assert dit.eval.sample_at[: len(micro_long.eval.sample_at)] == micro_long.eval.sample_at
    assert dit.eval.sample_at[-1] == dit.train.steps and 3000 in dit.eval.sample_at
    # TREAD's recipe gets DiT's whole budget in MACs (its cap when trained to target): that of 52,500 steps of its
    # own dense model, which differs from DiT's by the learned variance's output channels (0.1%)
    own_dense = dit.train.steps * train_step_macs(tread.model.replace(routes=()), 64)
    tread_macs = tread.train.steps * train_step_macs(tread.model, 64)
    assert tread_macs == pytest.approx(own_dense, rel=1 / dit.train.steps)
    assert tread_macs == pytest.approx(dit.train.steps * train_step_macs(dit.model, 64), rel=2e-3)
    assert tread.objective["name"] == "edm" and [(r.start, r.end) for r in tread.model.routes] == [(2, 8)]
    dry = gpu_axes.part_configs(params, "long", True)
    assert {c.train.steps for c in dry if c.method == "dit"} == {gpu_axes.LONG_FACTOR * gpu_axes.DRY_CORE_STEPS}


@pytest.mark.slow
def test_the_token_axis_is_patch_2_on_32x32_that_is_256_tokens_at_equal_macs():
    params = load_params()
    runs = {c.method: c for c in gpu_axes.part_configs(params, "tokens", False)}
    micro = resolve(params, "micro", "dit", 0)
    assert set(runs) == {"dit", "tread"}
    for c in runs.values():
        assert (c.model.patch_size, c.model.input_size) == (2, 32) and gpu_axes.tokens_of(c.model) == 256
        assert c.model.replace(patch_size=4, routes=()) == micro.model  # only the patch differs from micro's model
    assert gpu_axes.tokens_of(micro.model) == 64
    dit, tread = runs["dit"], runs["tread"]
    assert dit.train.steps == micro.train.steps  # at most the core budget, the 64-token pair's length
    macs = {m: c.train.steps * train_step_macs(c.model, c.train.batch_size) for m, c in runs.items()}
    assert macs["tread"] == pytest.approx(macs["dit"], rel=1 / dit.train.steps)
    assert tread.train.steps > dit.train.steps
    # a shortened length keeps the MACs equal: both come from one dense length
    short = {c.method: c for c in gpu_axes.part_configs(params, "tokens", False, steps=1500)}
    assert short["dit"].train.steps == 1500
    assert short["tread"].train.steps == round(1500 * tread.train.step_scale)
    for c in gpu_axes.part_configs(params, "tokens", True):  # the dry run keeps the 256 tokens
        assert gpu_axes.tokens_of(c.model) == 256


def test_a_runs_estimate_is_its_counted_flops_or_its_measured_step():
    params = load_params()
    tp = gpu.Throughput(gpu.H200_BF16_TFLOPS, 0.3)
    s0, s1 = (gpu_axes.part_configs(params, "long", False, seeds=[s])[0] for s in (0, 1))
    planned = gpu_axes.run_estimate(s0, tp)
    assert planned["train_flops"] == 2 * 52500 * train_step_macs(s0.model, 64)
    assert planned["train_s"] == pytest.approx(planned["train_flops"] / (gpu.H200_BF16_TFLOPS * 0.3e12))
    assert planned["evaluations"] == 52500 // 250 and planned["sampled_evaluations"] == len(s0.eval.sample_at)
    assert planned["extra_fid_evaluations"] == 3  # DiT's 250-step sampler at 3,000, 18,000 and the end, seed 0 only
    assert gpu_axes.run_estimate(s1, tp)["extra_fid_evaluations"] == 0
    measured = gpu_axes.run_estimate(s0, tp, step_s=0.004)
    assert measured["train_s"] == pytest.approx(52500 * 0.004) and measured["measured_step_s"] == 0.004
    # evaluation at no less than a third of the measured step per forward call, plus the per-evaluation overhead
    calls = 210 * 8 + 14 * 2 * 20 + 3 * 2 * 250
    assert measured["eval_s"] >= calls * 0.004 / 3 + 17 * tp.eval_overhead_s - 1e-9
    assert measured["eval_s"] > planned["eval_s"]


def test_the_long_part_takes_seed_pairs_in_order_while_they_fit():
    r = gpu_axes.size_long([100.0, 80.0, 80.0], left_s=200.0, margin=1.0)
    assert r["seed_pairs"] == 2 and r["estimate_s"] == 180.0 and "skip" not in r
    assert gpu_axes.size_long([100.0, 80.0, 80.0], left_s=200.0, margin=1.15)["seed_pairs"] == 1
    assert gpu_axes.size_long([100.0, 80.0, 80.0], left_s=1e9)["seed_pairs"] == 3
    none = gpu_axes.size_long([100.0, 80.0], left_s=99.0, margin=1.0)
    assert none["seed_pairs"] == 0 and "100 s" in none["skip"] and "99 s left" in none["skip"]


def test_the_token_axis_is_as_long_as_fits_in_whole_evaluations_else_skipped():
    def estimate(steps):
        return 0.1 * steps

    full = gpu_axes.size_tokens(estimate, 3000, 500, left_s=1e6, margin=1.0)
    assert full["dense_steps"] == 3000 and full["shortened"] is False
    short = gpu_axes.size_tokens(estimate, 3000, 500, left_s=240.0, margin=1.0)
    assert short["dense_steps"] == 2000 and short["shortened"] is True and short["estimate_s"] == 200.0
    skip = gpu_axes.size_tokens(estimate, 3000, 500, left_s=149.0, margin=1.0)
    assert skip["dense_steps"] == 0 and "1500 dense steps" in skip["skip"]


def test_time_is_shared_so_the_long_part_keeps_its_room():
    order = ["tokens", "long"]
    assert gpu_axes.share_time(order, {"tokens": 100.0, "long": 200.0}, 400.0) == {"tokens": 200.0, "long": 0.0}
    tight = gpu_axes.share_time(order, {"tokens": 100.0, "long": 200.0}, 250.0)  # each fits alone, not both
    assert tight["long"] == 0.0 and "the long part keeps its room" in tight["tokens"]
    # a part that cannot fit even alone reserves nothing and skips itself later, with its own reason
    assert gpu_axes.share_time(order, {"tokens": 100.0, "long": 900.0}, 400.0) == {"tokens": 0.0, "long": 0.0}
    assert gpu_axes.share_time(order, {"tokens": 500.0, "long": 200.0}, 400.0) == {"tokens": 200.0, "long": 0.0}
    assert gpu_axes.share_time(["long"], {"long": 200.0}, 400.0) == {"long": 0.0}
    # no time left at all (a budget already spent): nothing fits, nothing is reserved, each part skips itself
    assert gpu_axes.share_time(order, {"tokens": 100.0, "long": 200.0}, -10.0) == {"tokens": 0.0, "long": 0.0}


class FakeTrain:
    """Stands in for repro.experiments.train.train: the measurement's log says ``step_s`` per step; a run's curve falls
    with every evaluation. Records what each call was asked (the configuration and its cap)."""

    def __init__(self, step_s: float):
        self.step_s, self.calls = step_s, []

    def __call__(self, cfg, run_dir, device=None, resume=True, command=None, on_eval=None, quiet=False):
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.calls.append((cfg.run_id, cfg.train.steps, cfg.train.max_seconds, cfg.train.to_target))
        if cfg.train.steps == 10**7:  # measure_step
            lines = [{"step": 10, "seconds": 1.0}, {"step": 20, "seconds": 1.0 + 10 * self.step_s}]
            (run_dir / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
            return {}
        evals = [s for s in range(1, cfg.train.steps + 1) if cfg.train.is_eval_step(s)]
        points = [{"step": s, "images": 8 * s, "macs": 1e6 * s, "seconds": 0.1 * s, "fid": 100.0 - i - cfg.seed,
                   "val_loss": 1.0 - 0.01 * i} for i, s in enumerate(evals)]  # fmt: skip
        curve = {"run_id": cfg.run_id, "method": cfg.method, "seed": cfg.seed, "scale": cfg.scale, "complete": True,
                 "points": points}  # fmt: skip
        if on_eval:
            on_eval(curve)
        return curve


def test_parts_that_do_not_fit_are_skipped_with_their_reason(tmp_path, capsys):
    fake = FakeTrain(step_s=10.0)  # 35 dense steps of 10 s: the dry long part needs minutes, the budget is 30 s
    camp = gpu.Campaign(tmp_path, 30.0, "test")
    tp = gpu.Throughput(gpu.CPU_ASSUMED_TFLOPS, 0.3, eval_overhead_s=0.3)
    gpu_axes.run_parts(camp, ["tokens", "long"], load_params(), True, "cpu", tp, tmp_path / "w", 0.1, train_fn=fake)
    assert len(fake.calls) == 4 and all(c[1] == 10**7 for c in fake.calls)  # measured, never run
    skipped = {p["part"]: p["reason"] for p in camp.record["parts"] if p["status"] == "skipped"}
    assert set(skipped) == {"tokens (gpu-tokens)", "long (gpu-long)"}
    assert "left" in skipped["long (gpu-long)"] and "s left" in skipped["tokens (gpu-tokens)"]
    for part in ("long", "tokens"):
        bundle = json.loads((tmp_path / f"{part}.json").read_text())
        assert bundle["status"] == "skipped" and bundle["runs"] == {} and bundle["sizing"]["skip"]
    assert bundle["sizing"]["measured_step_s"] == {"dit": pytest.approx(10.0), "tread": pytest.approx(10.0)}
    cuda = gpu_axes.part_provenance({"precision": "bf16"}, gpu_axes.part_configs(load_params(), "long", False), "cuda")
    assert cuda["precision"] == "fp32" and cuda["tf32"] is True and cuda["seed"] == [0, 1, 2]  # not the small runs'
    assert "skipped" in capsys.readouterr().out


def test_the_long_part_runs_the_pairs_that_fit_and_the_others_to_dits_targets(tmp_path):
    fake = FakeTrain(step_s=0.5)
    params = load_params()
    tp = gpu.Throughput(gpu.CPU_ASSUMED_TFLOPS, 0.3, eval_overhead_s=0.3)
    cfgs = gpu_axes.part_configs(params, "long", True)
    pair = [sum(gpu_axes.run_estimate(c, tp, 0.5)["estimate_s"] for c in cfgs if c.seed == s) for s in (0, 1)]
    reserve = 10.0
    budget = reserve + gpu_axes.MARGIN * (pair[0] + 0.5 * pair[1])  # room for the first pair, not the second
    camp = gpu.Campaign(tmp_path, budget, "test")
    gpu_axes.run_parts(camp, ["long"], params, True, "cpu", tp, tmp_path / "w", 0.1, reserve, train_fn=fake)
    runs = [c for c in fake.calls if c[1] != 10**7]
    assert [c[0] for c in runs] == ["gpu-long-dit-s0", "gpu-long-tread-edm-s0"]  # DiT first, then to its targets
    assert all(c[2] is not None and 0 < c[2] <= budget for c in runs)  # each capped by the time left
    bundle = json.loads((tmp_path / "long.json").read_text())
    assert bundle["sizing"]["seed_pairs"] == 1 and bundle["sizing"]["of"] == 2
    dit_final = bundle["runs"]["gpu-long-dit-s0"]["curve"]["points"][-1]
    assert bundle["targets"]["fid"] == dit_final["fid"] and bundle["targets"]["objective"] == "ddpm"
    assert runs[0][3] is None and json.loads(Path(runs[1][3]).read_text())["fid"] == dit_final["fid"]
    assert bundle["status"] == "done" and all(r["status"] == "done" for r in bundle["runs"].values())


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist_data")
def test_dry_run_of_both_parts_lands_where_the_ladder_and_the_ledger_read(tmp_path, isolated_env):
    out, work = tmp_path / "out", tmp_path / "work"
    argv = ["campaign", "--out", str(out), "--work", str(work), "--wheels", str(tmp_path / "no-wheels"),
            "--dry-run", "--parts", "long", "tokens"]  # fmt: skip
    rc = gpu_cli.main(argv)
    record = json.loads((out / "campaign.json").read_text())
    assert rc == 0, record
    assert record["status"] == "done" and record["parts_asked"] == ["long", "tokens"]
    files = ["campaign.json", "log.txt", "long.json", "plan.json", "tokens.json"]  # within the 8 files a call returns
    assert sorted(p.name for p in out.iterdir()) == files

    # the plan: every run of both parts from counted FLOPs at the stated rate; the small runs and benches not asked
    plan = json.loads((out / "plan.json").read_text())
    rows = {r["part"]: r for r in plan["parts"]}
    long_runs = [f"long gpu-long-{m}-s{s}" for m in ("dit", "tread-edm") for s in (0, 1)]
    assert set(rows) == {*long_runs, "tokens gpu-tokens-dit-s0", "tokens gpu-tokens-tread-s0"}
    for r in rows.values():
        assert r["train_flops"] == 2 * r["steps"] * r["train_step_macs"]
        assert r["train_s"] == pytest.approx(r["train_flops"] / (plan["assumptions"]["train_tflops"] * 1e12))
    assert rows["long gpu-long-dit-s0"]["steps"] == 35 and rows["tokens gpu-tokens-dit-s0"]["tokens"] == 256

    # each part measured its own step, was sized on it, and ran whole
    measured = {p["part"]: p for p in record["parts"] if p["part"].startswith("measure")}
    assert set(measured) == {"measure long", "measure tokens"}
    assert all(v > 0 for p in measured.values() for v in p["step_s"].values())
    ran = [p for p in record["parts"] if p["part"].startswith(("long gpu-", "tokens gpu-"))]
    assert len(ran) == 6 and all(p["status"] == "done" and p["estimate_s"] > 0 and p["seconds"] > 0 for p in ran)
    long, tokens = (json.loads((out / f"{p}.json").read_text()) for p in ("long", "tokens"))
    assert long["sizing"]["seed_pairs"] == 2 and tokens["sizing"]["dense_steps"] == 8
    assert long["provenance"]["dry_run"] is True and long["provenance"]["seed"] == [0, 1]
    assert tokens["provenance"]["precision"] == "fp32" and tokens["provenance"]["seed"] == [0]
    for key in ("command", "git_commit", "torch", "device", "precision", "seed"):
        assert key in long["provenance"], key
    dits = [r["curve"] for r in long["runs"].values() if r["curve"]["method"] == "dit"]
    assert all(c["points"][-1]["step"] == 35 for c in dits)
    assert long["targets"]["fid"] == max(c["points"][-1]["fid"] for c in dits)  # the least good DiT seed's
    for r in long["runs"].values():
        if r["config"]["method"] == "tread-edm":
            assert r["config"]["train"]["to_target"] and r["curve"]["targets"]["fid"] == long["targets"]["fid"]
    t = {r["curve"]["method"]: r["curve"] for r in tokens["runs"].values()}
    assert t["tread"]["points"][-1]["macs"] == pytest.approx(t["dit"]["points"][-1]["macs"], rel=1 / 8)

    # a dry run never lands as goldens; landed elsewhere, it is where the ladder and the ledger read a scale's files
    assert gpu_cli.main(["land", str(out), "--goldens", str(tmp_path / "refused")]) == 2
    assert not (tmp_path / "refused").exists()
    goldens = tmp_path / "goldens"
    with pytest.raises(ValueError, match="only a GPU campaign's parts"):
        land_parts(out, goldens / "small")
    assert not goldens.exists()
    reference = gpu.REPO_ROOT / "goldens" / "micro" / "reference.json"
    land_parts(out, goldens / "small", reference=reference, allow_cpu=True)
    from repro.evidence.goldens import first_scale
    from repro.experiments.rerun import curves_by_run

    landed = curves_by_run(goldens / "small" / "long" / "runs")
    assert set(landed) == {"gpu-long-dit-s0", "gpu-long-dit-s1", "gpu-long-tread-edm-s0", "gpu-long-tread-edm-s1"}
    assert set(curves_by_run(goldens / "small" / "tokens" / "runs")) == {"gpu-tokens-dit-s0", "gpu-tokens-tread-s0"}
    assert not (goldens / "small" / "runs").exists()  # apart from the small campaign's own runs
    for part, method in (("long", "tread-edm"), ("tokens", "tread")):
        scale, path = first_scale(goldens, ["micro", "small"], f"speedup-{part}.json")
        report = json.loads(path.read_text())
        assert scale == "small" and report["baseline"] == "dit" and report["scale"] == f"gpu-{part}"
        assert "ladder" in report["unit_results"][method]
    assert json.loads((goldens / "small" / "long" / "targets.json").read_text()) == long["targets"]


def _bundle(part: str, runs: dict, targets=None) -> dict:
    prov = {"dry_run": False, "device": "NVIDIA H100 80GB HBM3"}
    return {"part": part, "scale": gpu_axes.SCALES[part], "provenance": prov, "status": "done",
            "sizing": {}, "targets": targets, "runs": runs}  # fmt: skip


def _curve(scale, method, seed, fids):
    points = [{"step": 100 * (i + 1), "images": 6400 * (i + 1), "macs": 1e9 * (i + 1), "seconds": float(i + 1),
               "fid": f, "val_loss": f / 100} for i, f in enumerate(fids)]  # fmt: skip
    return {"run_id": f"{scale}-{method}-s{seed}", "method": method, "seed": seed, "scale": scale, "complete": True,
            "points": points}  # fmt: skip


def test_land_puts_a_gpu_calls_parts_beside_the_small_campaign_never_over_it(tmp_path):
    out, goldens = tmp_path / "out", tmp_path / "goldens" / "small"
    out.mkdir()
    prov = {"dry_run": False, "cuda": "13.0", "device": "NVIDIA H100 80GB HBM3"}
    (out / "campaign.json").write_text(json.dumps({"provenance": prov, "parts": []}))
    (out / "plan.json").write_text("{}")
    runs = {f"gpu-tokens-{m}-s0": {"config": {}, "status": "done", "curve": _curve("gpu-tokens", m, 0, f)}
            for m, f in (("dit", [60, 40, 30, 25]), ("tread", [55, 35, 27, 22]))}  # fmt: skip
    (out / "tokens.json").write_text(json.dumps(_bundle("tokens", runs)))
    goldens.mkdir(parents=True)
    (goldens / "campaign.json").write_text('{"the small campaign": true}')
    written = {p.relative_to(goldens).as_posix() for p in gpu.land(out, goldens)}
    assert written == {"tokens/runs/dit-s0.json", "tokens/runs/tread-s0.json", "tokens/part.json",
                       "tokens/campaign.json", "tokens/plan.json", "speedup-tokens.json"}  # fmt: skip
    assert json.loads((goldens / "campaign.json").read_text()) == {"the small campaign": True}
    report = json.loads((goldens / "speedup-tokens.json").read_text())
    assert report["scale"] == "gpu-tokens" and report["unit_results"]["tread"]["final"]["macs"]["reached"]
    assert "curve" not in json.dumps(json.loads((goldens / "tokens" / "part.json").read_text())["runs"])

    # a curve of another scale in a bundle, or a broken one, is refused before anything is written
    other = tmp_path / "other"
    other.mkdir()
    (other / "campaign.json").write_text(json.dumps({"provenance": prov, "parts": []}))
    bad = {"gpu-long-dit-s0": {"status": "done", "curve": _curve("micro-long", "dit", 0, [50, 40])}}
    (other / "long.json").write_text(json.dumps(_bundle("long", bad)))
    with pytest.raises(ValueError, match="micro-long"):
        gpu.land(other, tmp_path / "g2")
    broken = {"gpu-long-dit-s0": {"status": "done", "curve": {"run_id": "x"}}}
    (other / "long.json").write_text(json.dumps(_bundle("long", broken)))
    with pytest.raises(ValueError, match="gpu-long-dit-s0"):
        gpu.land(other, tmp_path / "g2")
    assert not (tmp_path / "g2").exists()

    # a cut run lands (its evidence) but stays out of the ladder
    cut = {**runs, "gpu-tokens-tread-s0": {**runs["gpu-tokens-tread-s0"], "status": "cut"}}
    (out / "tokens.json").write_text(json.dumps(_bundle("tokens", cut)))
    (goldens / "speedup-tokens.json").unlink()
    gpu.land(out, goldens)
    assert (goldens / "tokens" / "runs" / "tread-s0.json").exists() and not (goldens / "speedup-tokens.json").exists()


def test_parts_and_probe_seconds_are_checked(tmp_path, capsys):
    with pytest.raises(SystemExit):
        gpu_cli.main(["campaign", "--out", str(tmp_path), "--parts", "long", "tokenz"])
    assert "tokenz" in capsys.readouterr().err
    assert gpu_cli.main(["campaign", "--out", str(tmp_path), "--parts", "long", "--probe-s", "0"]) == 2
    assert "--probe-s: 0.0" in capsys.readouterr().err


def test_a_step_measured_on_a_busy_machine_reads_the_runs_last_point(tmp_path):
    """A machine too busy to write a log line within the probe's seconds: the step is read from the point the run
    made when its time was up; a run without a single step is an error that says so."""
    cfg = gpu_axes.part_configs(load_params(), "long", True)[0]

    def busy(c, work, **kw):
        Path(work).mkdir(parents=True, exist_ok=True)
        (Path(work) / "metrics.jsonl").write_text("")
        return {"points": [{"step": 4, "seconds": 2.0, "val_loss": 1.0}]}

    assert gpu_axes.measure_step(cfg, "cpu", 0.5, tmp_path / "a", train_fn=busy)["step_s"] == pytest.approx(0.5)

    def stuck(c, work, **kw):
        Path(work).mkdir(parents=True, exist_ok=True)
        (Path(work) / "metrics.jsonl").write_text("")
        return {"points": []}

    with pytest.raises(RuntimeError, match="not one step in 0.5 s"):
        gpu_axes.measure_step(cfg, "cpu", 0.5, tmp_path / "b", train_fn=stuck)
