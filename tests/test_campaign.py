"""The campaign machinery: extra paired seeds, sample quality on a sparser schedule than the validation loss,
the final sample grid, prefix re-checks of golden runs, and the DVC runner that runs a campaign in pieces."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from standins import fashion_run

from repro.config import ConfigError, RunConfig, check_params, load_params, runs_of
from repro.experiments.campaign import DIVERGED, Stage, parse_stage_name, pending, plan_fits, run_campaign, seed_major


def _params_with(extra) -> dict:
    params = load_params()
    params["scales"]["micro"]["extra_seeds"] = extra
    return params


def test_extra_seeds_add_runs_of_some_methods_and_are_checked():
    params = _params_with({"methods": ["dit", "tread"], "seeds": [7, 9]})
    runs = runs_of(params, "micro")
    base = [(m, s) for m in params["scales"]["micro"]["methods"] for s in params["scales"]["micro"]["seeds"]]
    assert runs == base + [("dit", 7), ("dit", 9), ("tread", 7), ("tread", 9)]
    bad = {
        "seeds": ({"methods": ["dit"], "seeds": [params["scales"]["micro"]["seeds"][0]]}, "already in"),
        "methods": ({"methods": ["sit-tread"], "seeds": [7]}, "the scale's methods"),
        "keys": ({"methods": ["dit"]}, "exactly the keys methods and seeds"),
        "negative": ({"methods": ["dit"], "seeds": [-1]}, "distinct non-negative"),
    }
    for extra, message in bad.values():
        with pytest.raises(ConfigError, match=message):
            check_params(_params_with(extra))


def _fashion_run(tmp_path, **eval_overrides) -> RunConfig:
    return fashion_run(train=dict(steps=8, ckpt_every=4), eval=eval_overrides)


def test_sample_every_must_be_a_multiple_of_eval_every(tmp_path):
    with pytest.raises(
        ConfigError, match="eval.sample_every: 3 is not allowed; must be a multiple of train.eval_every=2"
    ):
        _fashion_run(tmp_path, sample_every=3)
    with pytest.raises(ConfigError, match="eval.sample_every"):
        _fashion_run(tmp_path, sample_every=0)


@pytest.mark.usefixtures("fashion_mnist_data")
def test_sample_quality_on_its_own_schedule_and_a_grid_of_the_final_samples(tmp_path, monkeypatch):
    """Validation loss at every evaluation, FID only every sample_every steps and at the last one; the last
    evaluation's samples are written as a grid with a column per class, and --grid copies it."""
    from repro.cli import main
    from repro.experiments.train import train
    from repro.metrics import fid

    calls = []

    def fake(samples, reference="test", metrics=fid.METRICS, **kwargs):
        calls.append(len(samples))
        return {"fid": 5.0 + float(samples.float().mean())}

    monkeypatch.setattr(fid, "compute_metrics", fake)
    cfg = _fashion_run(tmp_path, sample_every=6)
    curve = train(cfg, tmp_path / "run", device="cpu", quiet=True)
    steps = [p["step"] for p in curve["points"]]
    assert steps == [2, 4, 6, 8] and all("val_loss" in p for p in curve["points"])
    assert [p["step"] for p in curve["points"] if "fid" in p] == [6, 8] and calls == [20, 20]
    # the FID's noise at a sample count, from independent sample sets of the final checkpoint
    from repro.experiments.fidnoise import fid_noise

    calls.clear()
    noise = fid_noise(tmp_path / "run", None, num=8, sets=2)
    assert calls == [8, 4, 4, 2, 2, 2, 2] * 2 and noise["step"] == 8
    assert {k: v["n"] for k, v in noise["by_sample_count"].items()} == {"8": 2, "4": 4, "2": 8}
    assert noise["by_sample_count"]["8"]["sd"] > 0  # independent noise seeds: different sets, different FIDs

    from PIL import Image

    grid = Image.open(tmp_path / "run" / "samples.png")
    assert grid.size == (10 * 34 + 2, 2 * 34 + 2)  # 20 samples, 10 a row (a column per class), 2-pixel padding

    # the command: --grid copies the finished run's grid, --curve written last
    params = {
        "methods": {"dit": {"objective": {"name": "ddpm"}}},
        "scales": {"t": {k: v for k, v in cfg.to_dict().items() if k in ("model", "data", "train", "eval")}},
    }
    params["scales"]["t"]["model"] = {
        k: params["scales"]["t"]["model"][k]
        for k in ("input_size", "patch_size", "in_channels", "hidden_size", "depth", "num_heads", "num_classes")
    }
    params["scales"]["t"]["train"] = {k: v for k, v in params["scales"]["t"]["train"].items() if k != "step_scale"}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(params))
    out, png, cj = tmp_path / "cli", tmp_path / "g" / "dit-s0.png", tmp_path / "g" / "dit-s0.json"
    args = ["train", "--params", str(path), "--scale", "t", "--method", "dit", "--out", str(out), "--quiet"]
    assert main([*args, "--device", "cpu", "--grid", str(png), "--curve", str(cj)]) == 0
    assert png.read_bytes() == (out / "samples.png").read_bytes() and json.loads(cj.read_text())["complete"]


def test_a_prefix_of_a_run_reproduces_the_golden_prefix(tmp_path, tiny_params):
    """--points N trains to the golden's N-th evaluation and compares those points: equal when nothing
    changed, a failure when a golden value is off, and runs without a golden are reported, not trained."""
    from repro.experiments.rerun import rerun

    _, path = tiny_params(steps=6, seeds=(0, 1))
    gold = tmp_path / "gold"
    full = rerun("tiny", tmp_path / "full", gold, str(path), device="cpu", seeds=[0])
    assert set(full) == {"tiny-dit-s0", "tiny-sit-s0"} and {r["status"] for r in full.values()} == {"new"}
    prefix = rerun("tiny", tmp_path / "pre", gold, str(path), device="cpu", points=2)
    assert {k: r["status"] for k, r in prefix.items()} == {
        "tiny-dit-s0": "pass",
        "tiny-sit-s0": "pass",
        "tiny-dit-s1": "no golden",
        "tiny-sit-s1": "no golden",
    }
    pre = json.loads((tmp_path / "pre" / "curves" / "dit-s0.json").read_text())
    assert [p["step"] for p in pre["points"]] == [2, 4]  # trained 4 of the 6 steps
    g = json.loads((gold / "dit-s0.json").read_text())
    g["points"][1]["val_loss"] *= 1.5
    (gold / "dit-s0.json").write_text(json.dumps(g))
    again = rerun(
        "tiny", tmp_path / "pre2", gold, str(path), device="cpu", points=2, seeds=[0], rel_tol=1e-3, abs_tol=0
    )
    assert again["tiny-dit-s0"]["status"] == "fail" and "step 4: val_loss" in again["tiny-dit-s0"]["problems"][0]
    g["points"][1]["val_loss"] /= 1.5
    g["points"][2]["val_loss"] *= 1.5  # outside the prefix: not compared
    (gold / "dit-s0.json").write_text(json.dumps(g))
    assert (
        rerun("tiny", tmp_path / "pre3", gold, str(path), device="cpu", points=2, seeds=[0])["tiny-dit-s0"]["status"]
        == "pass"
    )
    with pytest.raises(ConfigError, match="--seeds: 5 is not a seed of scale tiny"):
        rerun("tiny", tmp_path / "x", gold, str(path), device="cpu", seeds=[5])


def test_stage_names_and_the_seed_major_order():
    assert parse_stage_name("train@stochastic-depth-12") == ("stochastic-depth", 12)
    assert parse_stage_name("train-extra@dit-3") == ("dit", 3)
    assert parse_stage_name("train@tread-rate-0.75-1") == ("tread-rate-0.75", 1)  # a rate in the name
    with pytest.raises(ValueError, match="not a matrix stage name"):
        parse_stage_name("speedup")
    stages = [Stage(f"train@{m}-{s}", m, s, "") for m in ("sit", "dit", "tread") for s in (1, 0)]
    order = [(s.method, s.seed) for s in seed_major(stages, ["dit", "tread", "sit"])]
    assert order == [("dit", 0), ("tread", 0), ("sit", 0), ("dit", 1), ("tread", 1), ("sit", 1)]
    assert plan_fits(100.0, 3000.0, 1.0) and not plan_fits(1000.0, 3000.0, 1.0) and plan_fits(1e9, 1e9, None)
    assert plan_fits(3599.0, 0.0, 1.0) and not plan_fits(3600.0, 0.0, 1.0)  # no estimate yet: start if time is left


@pytest.fixture
def dvc_and_git(monkeypatch):
    """``dvc`` and ``git`` on PATH for the runner's subprocesses. ``dvc`` is found on PATH or beside the running
    interpreter (the environment's bin folder, which is not on PATH when pytest is started by its full path); the
    test skips only when neither has it."""
    bin_dir = Path(sys.executable).parent  # not resolved: a virtual environment's python is a link to the base one
    if shutil.which("dvc") is None and shutil.which("dvc", path=str(bin_dir)) is not None:
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    if shutil.which("dvc") is None or shutil.which("git") is None:
        pytest.skip(f"needs dvc (on PATH or in {bin_dir}) and git")


def _scratch_dvc_project(tmp_path, params: dict, cmd: str, out: str) -> Path:
    """A git + DVC project under ``tmp_path`` with ``params`` and one matrix stage ``train`` over
    ``params["m"]``'s methods and ``params["seeds"]``, running ``cmd`` with the uncached output ``out``."""
    root = tmp_path / "proj"
    root.mkdir()
    for command in (("git", "init", "-q"), ("dvc", "init", "-q")):
        subprocess.run(command, cwd=root, check=True, capture_output=True, text=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    stage = {
        "matrix": {"method": list(params["m"]), "seed": "${seeds}"},
        "cmd": cmd,
        "params": ["m.${item.method}"],
        "outs": [{out: {"cache": False}}],
    }
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train": stage}}))
    return root


@pytest.mark.slow
@pytest.mark.usefixtures("dvc_and_git")
def test_the_runner_runs_pending_stages_side_by_side_and_marks_them_done(tmp_path):
    """In a scratch DVC project: the pending matrix stages run (two at a time), each is recorded in dvc.lock,
    a second piece finds nothing to do, a changed parameter makes exactly the runs that read it pending, and
    a piece too short for another run stops between runs."""
    work = f"{sys.executable} -c \"import sys, time; time.sleep(1); open(sys.argv[1], 'w').write(sys.argv[2])\""
    root = _scratch_dvc_project(
        tmp_path,
        {"m": {"a": {"k": 1}, "b": {"k": 2}}, "seeds": [0, 1]},
        f"{work} out-${{item.method}}-${{item.seed}}.txt ${{item.method}}${{item.seed}}",
        "out-${item.method}-${item.seed}.txt",
    )
    logs: list[str] = []
    result = run_campaign(root, ["a", "b"], jobs=2, hours=None, log=logs.append)
    assert result == {f"train@{m}-{s}": "done" for m in "ab" for s in (0, 1)}
    assert logs[1].startswith("start train@a-0") and logs[2].startswith("start train@b-0")  # seed-major, 2 at once
    assert (root / "out-b-1.txt").read_text() == "b1"
    assert run_campaign(root, ["a", "b"], jobs=2, hours=None, log=logs.append) == {}
    fresh = tmp_path / "clone"  # what a clone gets: the committed files, no DVC cache
    shutil.copytree(root, fresh, ignore=shutil.ignore_patterns("cache", "tmp"))
    assert not (fresh / ".dvc" / "cache").exists() and pending(fresh) == []
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["m"]["b"]["k"] = 3
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    assert run_campaign(root, ["a", "b"], 1, None, dry_run=True, log=logs.append) == {
        "train@b-0": "not started",
        "train@b-1": "not started",
    }
    cut = run_campaign(root, ["a", "b"], jobs=1, hours=1.5 / 3600, log=logs.append)  # no time for a second run
    assert cut == {"train@b-0": "done", "train@b-1": "not started"}
    assert run_campaign(root, ["a", "b"], 1, None, dry_run=True, log=logs.append) == {"train@b-1": "not started"}
    assert len(run_campaign(root, ["a", "b"], 1, None, dry_run=True, log=logs.append, everything=True)) == 4
    only_b = run_campaign(root, ["a", "b"], 1, None, dry_run=True, log=logs.append, everything=True, only=["b"])
    assert only_b == {"train@b-0": "not started", "train@b-1": "not started"}  # the other method's stages wait
    assert logs[-2] == "2 training stage(s) of other methods left for later (--methods)"


@pytest.mark.slow
@pytest.mark.usefixtures("dvc_and_git")
def test_a_diverged_run_is_recorded_and_not_rerun_by_the_next_piece(tmp_path):
    """A run that exits 3 (diverged) leaves a committed record with its log's tail; the next piece skips it
    (and says so) while a run that failed otherwise is retried; deleting the record, or ``everything``, retries,
    and a retried run that ends well drops the record."""
    # a: writes its output; b: "diverges" (prints, exits 3) until a file "fixed" exists; c: crashes (exit 1)
    work = (
        f"{sys.executable} -c \"import sys; m = sys.argv[1]; print('step 7: loss nan', m); "
        "import os; fixed = os.path.exists('fixed'); "
        "sys.exit(3 if m == 'b' and not fixed else 1 if m == 'c' else open('out-' + m + '.txt', 'w').write(m) * 0)\""
    )
    root = _scratch_dvc_project(
        tmp_path, {"m": {"a": {}, "b": {}, "c": {}}, "seeds": [0]}, f"{work} ${{item.method}}", "out-${item.method}.txt"
    )
    logs: list[str] = []
    first = run_campaign(root, ["a", "b", "c"], jobs=2, hours=None, log=logs.append)
    assert first["train@a-0"] == "done" and first["train@c-0"] == "failed (rc 1)"
    assert first["train@b-0"].startswith("failed (rc 3: diverged")
    record = root / DIVERGED / "train@b-0.json"
    saved = json.loads(record.read_text())
    assert saved["stage"] == "train@b-0" and saved["exit_status"] == 3 and saved["command"].endswith(" b")
    assert saved["log_tail"] == ["step 7: loss nan b"]
    assert any(line.startswith("DIVERGED train@b-0") for line in logs)
    second = run_campaign(root, ["a", "b", "c"], jobs=2, hours=None, log=logs.append, dry_run=True)
    assert second == {"train@b-0": "diverged earlier (skipped)", "train@c-0": "not started"}
    assert "diverged in an earlier piece and are skipped: train@b-0" in logs[-1]
    assert run_campaign(root, ["a", "b", "c"], 1, None, dry_run=True, log=logs.append, everything=True) == {
        f"train@{m}-0": "not started" for m in "abc"
    }
    record.unlink()
    assert run_campaign(root, ["a", "b", "c"], 1, None, dry_run=True, log=logs.append)["train@b-0"] == "not started"
    record.write_text(json.dumps(saved))
    (root / "fixed").write_text("")  # after a fix, --all reruns it; a run that ends well drops its record
    assert run_campaign(root, ["b"], 1, None, log=logs.append, everything=True, only=["b"]) == {"train@b-0": "done"}
    assert not record.exists() and (root / "out-b.txt").read_text() == "b"


@pytest.mark.slow
def test_campaign_methods_must_be_the_scales(capsys):
    from repro.cli import main

    assert main(["campaign", "--scale", "micro", "--methods", "dit", "ditt", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "--methods: 'ditt' is not a method of scale micro; allowed: dit, tread" in err
    assert main(["campaign", "--scale", "micro", "--commit-states-after", "-5", "--dry-run"]) == 2
    assert "--commit-states-after: -5.0 is not allowed; must be >= 0 minutes" in capsys.readouterr().err


def test_ladder_grids_put_one_class_in_each_column():
    from repro.metrics.ladder import class_columns

    labels = torch.tensor([3, 1, 0, 2, 1, 0, 3, 2, 2, 0, 1, 3])
    images = torch.arange(len(labels)).float()  # an image is its index
    picked = class_columns(images, labels, per_class=2, classes=4)
    # row-major grid of 4 columns: column c holds class c
    assert [int(labels[int(i)]) for i in picked] == [0, 1, 2, 3, 0, 1, 2, 3]
    with pytest.raises(ValueError, match="fewer than 4 images"):
        class_columns(images, labels, per_class=4, classes=4)


def test_side_by_side_jobs_are_resolved_and_checked(monkeypatch):
    import argparse

    from repro.cli import jobs_arg
    from repro.runtime import side_by_side

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert side_by_side("auto", [1, 1], "micro") == 4 and side_by_side("auto", [2, 1], "micro") == 2
    assert side_by_side("auto", [1, None], "micro") == 1  # a run with torch's default threads takes every CPU
    assert side_by_side(3, [1], "micro") == 3 and side_by_side(2, [None], "micro", cpu=False) == 2
    with pytest.raises(ConfigError, match="--jobs: 2 needs scales.micro.train.threads set"):
        side_by_side(2, [1, None], "micro")
    with pytest.raises(ConfigError, match="--jobs: 0 is not allowed"):
        side_by_side(0, [1], "micro")
    for bad in ("0", "two", "-1"):
        with pytest.raises(argparse.ArgumentTypeError, match="positive integer or auto"):
            jobs_arg(bad)


# ------------------------------------------------------------------------------------------
# The pipeline's comparisons (dvc.yaml against params.yaml)
# ------------------------------------------------------------------------------------------


def _stages() -> dict:
    """dvc.yaml's stages, a ``foreach`` over a mapping expanded here by hand (``<group>@<key>``, ``${key}`` and
    ``${item.<field>}`` substituted), independently of DVC's own expansion; matrix stages are left as written."""
    import re
    from pathlib import Path

    raw = yaml.safe_load((Path(__file__).resolve().parent.parent / "dvc.yaml").read_text())["stages"]
    stages = {}
    for name, stage in raw.items():
        if "foreach" not in stage:
            stages[name] = stage
            continue
        for key, item in stage["foreach"].items():

            def fill(v, key=key, item=item):
                if isinstance(v, str):
                    v = v.replace("${key}", key)
                    return re.sub(r"\$\{item\.(\w+)\}", lambda m: str(item[m[1]]), v)
                if isinstance(v, list):
                    return [fill(x) for x in v]
                if isinstance(v, dict):
                    return {fill(k): fill(x) for k, x in v.items()}
                return v

            stages[f"{name}@{key}"] = fill(stage["do"])
    return stages


def _speedup_args(cmd: str) -> tuple[list[str], str, str]:
    """(--curves patterns, --baseline, --metric) of a `repro speedup` command."""
    import shlex

    argv = shlex.split(cmd)
    curves = []
    for a in argv[argv.index("--curves") + 1 :]:
        if a.startswith("--"):
            break
        curves.append(a)
    baseline = argv[argv.index("--baseline") + 1] if "--baseline" in argv else "dit"
    metric = argv[argv.index("--metric") + 1] if "--metric" in argv else "fid"
    return curves, baseline, metric


def test_each_validation_loss_comparison_reads_one_objective_and_misses_none_of_it():
    """The validation loss is the objective's own loss: a comparison on it may only read runs trained with the
    baseline's objective (the globs must not pick up dit-edm-* next to dit-*), and every method of the scale
    that shares an objective with another is in the comparison of that objective."""
    import fnmatch
    import os

    params = load_params()
    methods = params["scales"]["micro"]["methods"]
    objective = {m: params["methods"][m]["objective"]["name"] for m in methods}
    covered: dict[str, set[str]] = {}
    for name, stage in _stages().items():
        if not str(stage.get("cmd", "")).startswith("repro speedup"):
            continue
        curves, baseline, metric = _speedup_args(stage["cmd"])
        matched = {
            m
            for m in methods
            for seed in (0, 1)
            if any(fnmatch.fnmatchcase(f"{m}-s{seed}.json", os.path.basename(c)) for c in curves)
        }
        assert baseline in matched, name
        if metric == "val_loss":
            assert {objective[m] for m in matched} == {objective[baseline]}, (name, matched)
            covered.setdefault(objective[baseline], set()).update(matched)
    for obj in set(objective.values()):
        same = {m for m in methods if objective[m] == obj}
        if len(same) > 1:
            assert covered.get(obj) == same, (obj, covered.get(obj), same)


@pytest.mark.parametrize("scale", ["micro", "micro-long"])
def test_the_campaign_reruns_every_stage_that_reads_the_curves_in_dependency_order(scale):
    """The campaign derives the stages to re-run from the pipeline DVC expands; here the same set is found from
    dvc.yaml read by hand, and the order checked against each stage's inputs."""
    from pathlib import Path

    from repro.experiments.campaign import downstream_stages

    downstream = [name for name, _ in downstream_stages(Path(__file__).resolve().parent.parent, scale)]
    stages = _stages()
    outs = {
        next(iter(o)) if isinstance(o, dict) else o: name
        for name, s in stages.items()
        for o in [*s.get("outs", []), *s.get("metrics", []), *s.get("plots", [])]
    }
    runs = f"goldens/{scale}/runs"
    readers = {
        n
        for n, s in stages.items()
        if "matrix" not in s
        and any(runs == d or runs.startswith(d + "/") or d.startswith(runs + "/") for d in s.get("deps", []))
    }
    more = True
    while more:  # and the stages that read what those write (not the training stages: they run in the campaign)
        more = False
        for n, s in stages.items():
            if n in readers or "matrix" in s:
                continue
            deps = s.get("deps", [])
            if any(
                outs.get(d) in readers or any(o.startswith(d + "/") for o in outs if outs[o] in readers) for d in deps
            ):
                readers.add(n)
                more = True
    assert set(downstream) == readers
    assert downstream[-2:] == ["claims", "summary"]  # the ledger after every report, the summary after the ledger
    if scale == "micro":
        assert sum(n.startswith("reports@") for n in downstream) == 6  # the six micro reports
    for i, n in enumerate(downstream):
        for d in stages[n].get("deps", []):
            if outs.get(d) in readers:
                assert downstream.index(outs[d]) < i, (n, d)


def test_a_failed_downstream_stage_stops_only_the_stages_that_read_it(tmp_path, monkeypatch):
    """At a piece's end one report failing must not leave the others (and the ledger of what did not fail) un-made:
    the stages that read its outputs, directly or through another, are skipped, the rest run, and the failure is
    raised at the end with what was skipped."""
    import repro.experiments.campaign as campaign

    (tmp_path / "goldens/m/runs").mkdir(parents=True)
    for made in ("a.json", "b.json", "c.json", "claims.json"):  # every input exists: only the failure skips
        (tmp_path / made).write_text("{}")
    pipeline = [  # (name, deps, outs): b fails; c reads b; claims reads a and c; other reads a only
        ("a", ("goldens/m/runs",), ("a.json",)),
        ("b", ("goldens/m/runs",), ("b.json",)),
        ("c", ("b.json",), ("c.json",)),
        ("other", ("a.json",), ("other.json",)),
        ("claims", ("a.json", "c.json"), ("claims.json",)),
    ]
    monkeypatch.setattr(campaign, "_other_stages", lambda root: pipeline)
    ran, fails = [], {"b"}

    def repro_single(root, name, capture=False):
        ran.append(name)
        return (2 if name in fails else 0), []

    monkeypatch.setattr(campaign, "_repro_single", repro_single)
    lines = []
    with pytest.raises(RuntimeError, match=r"failed for b \(2\); skipped after them: c, claims"):
        campaign.run_downstream(tmp_path, "m", log=lines.append)
    assert ran == ["a", "b", "other"]
    assert any(line.startswith("skip claims: it reads what a failed stage writes (c.json)") for line in lines)
    ran.clear()
    fails.clear()
    campaign.run_downstream(tmp_path, "m", log=lines.append)  # nothing fails: all five, in dependency order
    assert ran == ["a", "b", "c", "other", "claims"]


@pytest.mark.slow
def test_a_piece_whose_only_news_is_a_diverged_run_still_remakes_the_ledger(monkeypatch, capsys):
    """The claims stage reads the diverged records, so a piece that records one re-runs the downstream stages."""
    import repro.experiments.campaign as campaign
    from repro.cli import main

    assert str(DIVERGED) in _stages()["claims"]["deps"]
    calls = []
    monkeypatch.setattr(campaign, "run_downstream", lambda root, stages=(): calls.append(root))
    for result, remade in (
        ({"train@dit-0": "failed (rc 3: diverged, recorded in goldens/diverged/train@dit-0.json)"}, 1),
        ({"train@dit-0": "diverged earlier (skipped)", "train@tread-0": "not started"}, 0),
    ):
        monkeypatch.setattr(campaign, "run_campaign", lambda *a, result=result, **k: result)
        main(["campaign", "--scale", "micro"])
        assert len(calls) == remade, (result, calls)
        calls.clear()
    assert "record the piece" in capsys.readouterr().out


def test_the_ledger_reads_the_divergence_records_the_campaign_writes(tmp_path):
    """Writer (the campaign) and reader (the ledger) share the folder and the stage/scale patterns: a record the
    campaign writes for a real training stage names that run as diverged, at its scale only, and is not broken."""
    from repro.evidence.goldens import broken_diverged_records, diverged_runs
    from repro.experiments.campaign import record_divergence

    cmd = "repro train --scale micro --method tread-edm --seed 2 --no-resume --out runs/micro/tread-edm-s2"
    path = record_divergence(tmp_path, Stage("train@tread-edm-2", "tread-edm", 2, cmd), 3, 90.0, ["loss nan"])
    assert path == tmp_path / DIVERGED / "train@tread-edm-2.json"
    goldens = tmp_path / DIVERGED.parent
    assert broken_diverged_records(goldens) == []
    assert diverged_runs(goldens, "micro", {"tread-edm"}) == ["tread-edm-s2"]
    assert diverged_runs(goldens, "micro-long", set()) == [] and diverged_runs(goldens, "micro", {"dit"}) == []
