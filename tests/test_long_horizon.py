"""The long horizon's machinery: FID on a log-spaced grid, a second sampler's FID, runs trained to target, the
targets themselves, a campaign whose runs outlast a piece, the ladder's early rungs and its plot."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from standins import fashion_run

from repro.build import resolve
from repro.config import ConfigError, load_params
from repro.evidence.speedup import compare, published_tread_ladder, speedup_report, train_targets
from repro.experiments.campaign import keep_paused_states, pending, run_campaign

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake_fid(monkeypatch):
    """FID faked as a function of the sampling steps and the samples: calls recorded as (samples, steps)."""
    from repro.experiments import evaluation
    from repro.metrics import fid

    calls, steps_seen = [], []
    original = evaluation.generate

    def generate(model, objective, cfg, device, num=None, steps=None):
        steps_seen.append(steps or cfg.eval.sample_steps)
        return original(model, objective, cfg, device, num, steps)

    def fake(samples, reference="test", metrics=fid.METRICS, **kwargs):
        calls.append(steps_seen[-1])
        return {"fid": 100.0 - 10.0 * len(calls)}  # falls with every evaluation

    monkeypatch.setattr(evaluation, "generate", generate)
    monkeypatch.setattr(fid, "compute_metrics", fake)
    return calls


def test_fid_on_a_log_spaced_grid_and_a_second_samplers_fid_for_the_listed_seeds(tmp_path, fake_fid):
    from repro.experiments.train import train

    extra = {"sample_steps": {"ddpm": 7, "edm": 3}, "at": [4], "seeds": [0]}
    cfg = fashion_run(eval={"sample_at": [4, 6, 10], "extra_fid": extra})
    curve = train(cfg, tmp_path / "run", device="cpu", quiet=True)
    points = {p["step"]: p for p in curve["points"]}
    assert sorted(points) == [2, 4, 6, 8, 10, 12]  # the validation loss at every evaluation
    assert [s for s, p in points.items() if "fid" in p] == [4, 6, 10, 12]  # FID on the grid and at the end
    assert [s for s, p in points.items() if "fid@7" in p] == [4, 12]  # DDPM's extra sampler: at 4 and the end
    assert fake_fid == [2, 7, 2, 2, 2, 7]  # the scale's 2 steps, the extra 7 where listed
    other_seed = fashion_run(eval={"sample_at": [4], "extra_fid": {**extra, "seeds": [1]}})
    curve = train(other_seed, tmp_path / "run1", device="cpu", quiet=True)
    assert not any("fid@7" in p for p in curve["points"])


@pytest.mark.parametrize(
    "section,change,message",
    [
        ("eval", {"sample_at": [3]}, "eval.sample_at: 3 is not allowed; must be a multiple of train.eval_every=2"),
        ("eval", {"sample_at": [4, 2]}, "a non-empty, increasing list"),
        ("eval", {"sample_at": [4], "sample_every": 4}, "at most one of sample_every and sample_at"),
        ("eval", {"extra_fid": {"sample_steps": {"ddpm": 5}}}, "exactly sample_steps, at and seeds"),
        ("eval", {"extra_fid": {"sample_steps": {"ddpm": 0}, "at": [], "seeds": []}}, "extra_fid.sample_steps.ddpm"),
        ("eval", {"extra_fid": {"sample_steps": {"ddpm": 5}, "at": ["x"], "seeds": []}}, "extra_fid.at"),
        ("train", {"to_target": "targets.yaml"}, "train.to_target"),
        ("train", {"target_patience": 0}, "train.target_patience"),
    ],
)
def test_bad_long_horizon_settings_name_the_field(section, change, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        fashion_run(**{section: change})


def write_targets(path, **values):
    path.write_text(json.dumps({"baseline": "dit", "objective": "ddpm", **values}))
    return path


def test_a_run_trained_to_target_stops_at_the_second_evaluation_in_a_row_that_reaches_it(tmp_path, fake_fid):
    from repro.experiments.train import train

    # the fake FID falls 100 -> 90 -> 80 -> ...: the target 85 is reached at the 2nd and 3rd sampled evaluations
    targets = write_targets(tmp_path / "targets.json", fid=85.0, val_loss=1e9)
    cfg = fashion_run(train={"to_target": str(targets)}, eval={"sample_at": [2, 4, 6, 8]})
    curve = train(cfg, tmp_path / "run", device="cpu", quiet=True)
    assert [p["step"] for p in curve["points"]] == [2, 4, 6] and curve["complete"]
    assert curve["targets"] == {"fid": 85.0, "val_loss": 1e9, "objective": "ddpm", "file": str(targets)}
    assert (tmp_path / "run" / "samples.png").exists()  # the last evaluation's grid, as for a run that ends
    import torch

    ck = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert ck["step"] == 6  # the stop is checkpointed: a resumed run is complete, never trained further
    fresh = fashion_run(train={"to_target": str(targets)}, eval={"sample_at": [2, 4, 6, 8]})  # as a new process has
    again = train(fresh, tmp_path / "run", device="cpu", quiet=True)
    assert [p["step"] for p in again["points"]] == [2, 4, 6]
    # on the same objective a validation-loss target too must be reached: never here, so it trains to the end
    fake_fid.clear()  # the fake FID starts at 90 again
    strict = write_targets(tmp_path / "strict.json", fid=85.0, val_loss=1e-9)
    cfg = fashion_run(train={"to_target": str(strict)}, eval={"sample_at": [2, 4, 6, 8]})
    curve = train(cfg, tmp_path / "run2", device="cpu", quiet=True)
    assert curve["points"][-1]["step"] == 12
    # another objective's loss is not comparable: only the FID target applies
    fake_fid.clear()
    other = write_targets(tmp_path / "other.json", fid=85.0, val_loss=1e-9, objective="edm")
    cfg = fashion_run(train={"to_target": str(other)}, eval={"sample_at": [2, 4, 6, 8]})
    assert train(cfg, tmp_path / "run3", device="cpu", quiet=True)["points"][-1]["step"] == 6


@pytest.mark.parametrize(
    "content,message",
    [
        ("{", "cannot be read as JSON"),
        ('{"fid": -1}', "fid=-1 is not allowed"),
        ('{"fid": "low"}', "fid='low' is not allowed"),
        ('{"fid": 3, "val_loss": 0}', "val_loss=0 is not allowed"),
        ('{"fid": 3, "val_loss": 0.1}', "needs the 'objective'"),
    ],
)
def test_a_broken_targets_file_is_refused_before_training(tmp_path, content, message, capsys):
    from repro.cli import main
    from repro.experiments.train import load_targets

    path = tmp_path / "targets.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_targets(path)
    args = ["train", "--scale", "smoke", "--method", "dit", "--out", str(tmp_path / "r"), "--to-target", str(path)]
    assert main(args) == 2
    assert str(path) in capsys.readouterr().err and not (tmp_path / "r").exists()


def _curve(run_id, method, seed, values):
    points = [
        {"step": 100 * (i + 1), "macs": 1e9 * (i + 1), "fid": v, "val_loss": v / 100} for i, v in enumerate(values)
    ]
    return {"run_id": run_id, "method": method, "seed": seed, "scale": "t", "points": points}


def test_targets_are_the_least_good_baseline_seeds_final_values(tmp_path):
    curves = [_curve("d0", "dit", 0, [50, 30, 20]), _curve("d1", "dit", 1, [52, 31, 22])]
    doc = train_targets(curves, "ddpm")
    assert doc["fid"] == 22 and doc["val_loss"] == pytest.approx(0.22) and doc["objective"] == "ddpm"
    assert doc["runs"] == ["d0", "d1"]
    with pytest.raises(ValueError, match="one baseline method"):
        train_targets([*curves, _curve("t0", "tread", 0, [40, 20, 10])], "ddpm")


def test_the_long_scale_repeats_the_core_runs_first_steps():
    """The same model, data, optimiser, EMA and seeds as micro: a DiT long run's first 3,000 steps are the core
    run's (same data order and noise); only the length and the evaluation schedule differ."""
    params = load_params()
    core, long = resolve(params, "micro", "dit", 1), resolve(params, "micro-long", "dit", 1)
    assert long.model == core.model and long.objective == core.objective and long.data == core.data
    for key in ("batch_size", "lr", "betas", "weight_decay", "ema_decay", "grad_accum", "threads", "precision"):
        assert getattr(long.train, key) == getattr(core.train, key), key
    assert long.train.steps == 6 * core.train.steps
    assert 3000 in long.eval.sample_at and long.eval.sample_at[-1] == long.train.steps
    routed = resolve(params, "micro-long", "tread-edm", 0)
    assert routed.train.steps == round(18000 * routed.train.step_scale)  # DiT's whole budget in MACs


def test_a_ladder_rung_met_at_the_first_evaluation_is_a_bound():
    # the method's seeds met the target at their first evaluation (cost 100): their true cost is at most that
    r = compare([300.0, 320.0, 310.0], [1000.0] * 3, [100.0, 100.0, 100.0], method_final=[1000.0] * 3,
                baseline_first=[100.0] * 3, method_first=[100.0] * 3)  # fmt: skip
    assert r["ratio_is"] == "lower bound" and r["ci_low"] is None
    assert r["p_value_lt_k"]["1.0"] is None and r["p_value_ge_k"]["1.0"] is not None  # it can only speak for
    assert "met at the first evaluation by 3 of 3 seeds" in r["status"]


def test_the_published_ladder_is_the_audits_hours_ratios():
    audit = json.loads((ROOT / "goldens" / "audit.json").read_text())["speedups"]
    expected = [
        audit["tread_14x"]["anchor_400k"]["hours_ratio"],
        audit["tread_14x"]["anchor_2352k"]["hours_ratio"],
        audit["tread_37x"]["hours_ratio"],
    ]
    ladder = published_tread_ladder()
    assert [x for x, _ in ladder] == pytest.approx([1.0, 2352 / 400, 7000 / 400])
    assert [y for _, y in ladder] == pytest.approx(expected)


def test_the_ladder_plot_is_written(tmp_path):
    base = [_curve(f"d{s}", "dit", s, [60 - s, 40, 30, 25, 22, 20]) for s in range(2)]
    meth = [_curve(f"m{s}", "tread", s, [50 - s, 32, 26, 22, 20, 19]) for s in range(2)]
    rep = speedup_report(base + meth, units=("macs",), growth_pairs=[("200", "final")])
    from repro.evidence.speedup import plot_ladder

    out = plot_ladder(rep, tmp_path / "ladder.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(rep["growth"]["tread"]) == {"200:final"} and math.isfinite(
        rep["growth"]["tread"]["200:final"]["macs"]["ratio"]
    )


# ------------------------------------------------------------------------------------------------------------------
# The campaign: runs longer than a piece, stages that wait, one scale's stages


def _project(tmp_path, stages: dict, params: dict) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    for command in (("git", "init", "-q"), ("dvc", "init", "-q")):
        subprocess.run(command, cwd=root, check=True, capture_output=True, text=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    return root


# a "run": counts to 40 in tenths of a second, resuming from its progress file; SIGTERM saves and exits 75
LONG_RUN = (
    "import os, signal, sys, time; name = sys.argv[1]; p = 'progress-' + name\n"
    "n = int(open(p).read()) if os.path.exists(p) else 0\n"
    "def stop(*a):\n    open(p, 'w').write(str(n)); sys.exit(75)\n"
    "signal.signal(signal.SIGTERM, stop)\n"
    "while n < 40:\n    time.sleep(0.1); n += 1\n"
    "open('out-' + name + '.txt', 'w').write(str(n))\n"
)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("dvc") is None or shutil.which("git") is None, reason="needs dvc and git")
def test_a_run_longer_than_a_piece_is_stopped_and_resumed_by_the_next(tmp_path):
    script = tmp_path / "long_run.py"
    script.write_text(LONG_RUN)
    run = f"{sys.executable} {script}"
    stages = {
        "train-long": {
            "matrix": {"method": ["a"], "seed": [0]},
            "cmd": f"{run} ${{item.method}} --scale long",  # resumes: no --no-resume
            "outs": [{"out-${item.method}.txt": {"cache": False}}],
        },
        "targets-x": {
            "cmd": f"{sys.executable} -c \"open('targets.json','w').write('{{}}')\"",
            "deps": ["out-a.txt"],
            "outs": [{"targets.json": {"cache": False}}],
        },  # fmt: skip
        "train-long-to-target": {
            "matrix": {"method": ["b"], "seed": [0]},
            "cmd": f"{run} ${{item.method}} --scale long",
            "deps": ["targets.json"],
            "outs": [{"out-${item.method}.txt": {"cache": False}}],
        },
        "train": {
            "matrix": {"method": ["c"], "seed": [0]},
            "cmd": f"{run} ${{item.method}} --scale other --no-resume",
            "outs": [{"out-${item.method}.txt": {"cache": False}}],
        },
    }
    root = _project(tmp_path, stages, {"x": 1})
    assert {s.name for s in pending(root, scale="long")} == {"train-long@a-0", "train-long-to-target@b-0"}
    assert {s.name for s in pending(root, scale="other")} == {"train@c-0"}
    logs: list[str] = []
    first = run_campaign(root, ["a", "b"], jobs=2, hours=1.0 / 3600, log=logs.append, scale="long")  # 1 s piece
    assert first["train-long@a-0"].startswith("paused after")
    assert first["train-long-to-target@b-0"] == "waiting for targets.json"
    progress = int((root / "progress-a").read_text())
    assert 0 < progress < 40 and not (root / "out-a.txt").exists()
    assert any("SIGTERM to train-long@a-0" in line for line in logs)
    second = run_campaign(root, ["a", "b"], jobs=2, hours=None, log=logs.append, scale="long")
    assert second["train-long@a-0"] == "done" and (root / "out-a.txt").read_text() == "40"
    assert any("resum" in line or "start train-long@a-0" in line for line in logs)
    # a's curve was what the targets are made of: the campaign made them when a ended and started b in that piece
    assert (root / "targets.json").exists() and second["train-long-to-target@b-0"] == "done"
    made = next(i for i, line in enumerate(logs) if line.startswith("dvc repro --single-item targets-x"))
    assert made > next(i for i, line in enumerate(logs) if line.startswith("done  train-long@a-0"))
    assert pending(root, scale="long") == []  # dvc.lock marks both done


# ------------------------------------------------------------------------------------------------------------------
# Records of paused runs: what a lost piece leaves in git, and the check that a re-made run repeats it

CMD = "repro train --scale t --method dit --seed 0 --out runs/t/dit-s0 --curve goldens/t/runs/dit-s0.json"


def _points(steps, shift=0.0):
    return [{"step": s, "val_loss": 1.0 / (s + 1) + shift, "fid": 100.0 / (s + 1)} for s in steps]


def test_a_paused_run_leaves_a_record_of_its_checkpoint_and_later_curves_are_held_against_it(tmp_path):
    import hashlib

    import torch

    from repro.experiments import pieces

    ckpt = tmp_path / "runs" / "t" / "dit-s0" / "checkpoints" / "last.pt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"step": 7, "seconds": 3.5, "points": json.dumps(_points([0, 2, 4, 6])), "model": {}}, ckpt)
    path = pieces.write_record(tmp_path, "train-long@dit-0", CMD)
    assert path == tmp_path / "goldens" / "t" / "pieces" / "dit-s0-at-7.json"
    record = json.loads(path.read_text())
    assert record["step"] == 7 and record["seconds"] == 3.5 and record["event"] == "paused"
    assert record["points"] == _points([0, 2, 4, 6]) and record["command"] == CMD
    assert record["checkpoint_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert set(record["machine"]) == {"cpu_model", "boot_id", "torch"}
    assert [p for p, _ in pieces.records_of(tmp_path, CMD)] == [path]
    # the same run re-made: equal at the common steps; another run: not; a step only one side has is not compared
    same = pieces.compare_points(record["points"], _points([0, 2, 4, 6, 8]))
    assert same["common_steps"] == 4 and same["up_to"] == 6 and same["val_loss"]["bitwise"]
    assert same["fid"] == {"compared": 4, "bitwise": True, "max_rel_diff": 0.0}
    other = pieces.compare_points(record["points"], _points([2, 6, 10], shift=1e-3))
    assert other["common_steps"] == 2 and not other["val_loss"]["bitwise"] and other["fid"]["bitwise"]
    assert other["val_loss"]["max_rel_diff"] == pytest.approx(1e-3 / (1 / 7 + 1e-3))
    lines = pieces.check_repeats(tmp_path, CMD, _points([0, 2]))
    assert lines == ["dit-s0-at-7.json: 2 common steps up to 2: val_loss bitwise at 2, fid bitwise at 2"]
    assert pieces.check_repeats(tmp_path, CMD, _points([1]))[0].endswith("no common step yet")
    assert pieces.check_repeats(tmp_path, CMD, _points([0]), skip=path) == []
    # another pause at the same step (a lost machine's run re-made and paused there again) keeps the first record
    torch.save({"step": 7, "seconds": 9.0, "points": json.dumps(_points([0, 2, 4, 6])), "model": {}}, ckpt)
    again = pieces.write_record(tmp_path, "train-long@dit-0", CMD)
    assert again.name == "dit-s0-at-7-2.json" and json.loads(path.read_text())["seconds"] == 3.5
    assert pieces.write_record(tmp_path, "train-long@dit-0", CMD) == again  # the same checkpoint: the same record
    assert [p for p, _ in pieces.records_of(tmp_path, CMD)] == [path, again]
    # a command that is not a run (no --out and --curve), or no checkpoint: no record
    assert pieces.write_record(tmp_path, "x", "python other.py") is None
    ckpt.unlink()
    assert pieces.write_record(tmp_path, "train-long@dit-0", CMD) is None


# a "run" with a checkpoint like repro train's: a point every other tick to 30 ticks; SIGTERM saves and exits 75
RECORDED_RUN = (
    "import json, os, signal, sys, time; out, curve = sys.argv[1], sys.argv[2]; stopped = []\n"
    "signal.signal(signal.SIGTERM, lambda *a: stopped.append(1))  # first: torch's import takes seconds\n"
    "ck = os.path.join(out, 'checkpoints', 'last.pt')\n"
    "if os.path.exists(ck):\n"
    "    import torch; state = torch.load(ck)\n"
    "else:\n"
    "    state = {'step': 0, 'seconds': 0.0, 'points': '[]'}\n"
    "n, points = state['step'], json.loads(state['points'])\n"
    "while n < 30 and not stopped:\n"
    "    time.sleep(0.1); n += 1\n"
    "    if n % 2 == 0: points.append({'step': n, 'val_loss': 1 / n, 'fid': 50 / n})\n"
    "if stopped:\n"
    "    import torch; os.makedirs(os.path.dirname(ck), exist_ok=True)\n"
    "    torch.save({'step': n, 'seconds': n / 10, 'points': json.dumps(points)}, ck); sys.exit(75)\n"
    "os.makedirs(os.path.dirname(curve), exist_ok=True)\n"
    "json.dump({'points': points, 'complete': True}, open(curve, 'w'))\n"
)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("dvc") is None or shutil.which("git") is None, reason="needs dvc and git")
def test_a_run_restarted_on_a_fresh_machine_is_checked_against_the_record_of_its_lost_piece(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_RESUME_STORE", str(tmp_path / "store"))
    script = tmp_path / "recorded_run.py"
    script.write_text(RECORDED_RUN)
    curve = "goldens/long/runs/a-s0.json"
    stages = {
        "train-long": {
            "matrix": {"method": ["a"], "seed": [0]},
            "cmd": f"{sys.executable} {script} runs/long/a-s0 {curve} --scale long --out runs/long/a-s0"
            f" --curve {curve}",
            "outs": [{curve: {"cache": False}}],
        }
    }
    root = _project(tmp_path, stages, {"x": 1})
    logs: list[str] = []
    first = run_campaign(root, ["a"], jobs=1, hours=1.5 / 3600, log=logs.append, scale="long")
    assert first["train-long@a-0"].startswith("paused after")
    records = sorted((root / "goldens" / "long" / "pieces").glob("a-s0-at-*.json"))
    assert len(records) == 1
    paused = json.loads(records[0].read_text())
    assert 0 < paused["step"] < 30 and paused["points"] and paused["stage"] == "train-long@a-0"
    assert any(line.startswith("recorded train-long@a-0 at its checkpoint") for line in logs)
    kept = root / "goldens" / "resume" / "long" / "a-s0.xz"
    # seconds of training: the machine's store only, not git (--commit-states-after, 30 minutes by default)
    assert not kept.exists() and (tmp_path / "store" / "long" / "a-s0" / "checkpoints" / "last.pt").is_file()
    assert any("only: 0 minutes of training since its committed state" in line for line in logs), logs
    assert keep_paused_states(root, "long", logs.append) == 1 and kept.is_file()  # `repro campaign --keep-states`
    # the next piece on a fresh machine whose state was lost too: the run starts over, and pauses again
    for lost in (root / "runs" / "long", tmp_path / "store"):
        shutil.rmtree(lost)
    kept.unlink()
    logs.clear()
    again = run_campaign(root, ["a"], jobs=1, hours=1.5 / 3600, log=logs.append, scale="long", min_commit_seconds=0)
    assert again["train-long@a-0"].startswith("paused after")
    assert any("no checkpoint in runs/long/a-s0 although earlier pieces paused it" in line for line in logs)
    recorded = [line for line in logs if line.startswith("recorded train-long@a-0")]
    repeats = [line for line in logs if line.strip().startswith("repeats")]
    if not recorded[0].endswith(records[0].name):  # paused at another step: its points held against the first's
        assert len(repeats) == 1 and records[0].name in repeats[0] and "val_loss bitwise" in repeats[0]
    # (at the same step the re-made checkpoint is the first one byte for byte: the same record)
    # then a fresh machine with the state committed by that piece: the run resumes where it paused, and ends
    step = json.loads((root / "goldens" / "resume" / "long" / "a-s0.json").read_text())["step"]
    shutil.rmtree(root / "runs" / "long")
    shutil.rmtree(tmp_path / "store")
    logs.clear()
    last = run_campaign(root, ["a"], jobs=1, hours=None, log=logs.append, scale="long")
    assert last["train-long@a-0"] == "done"
    assert any(f"restored its checkpoint at step {step} from git" in line for line in logs), "\n".join(logs)
    assert not any("starts over" in line for line in logs)
    assert not kept.exists() and not (root / "goldens" / "resume" / "long" / "a-s0.json").exists()  # done: dropped


# ------------------------------------------------------------------------------------------------------------------
# Resume states: a paused run resumes on the same machine with its work tree laid anew, or on a fresh machine


def _paused_run(root, step=7, seconds=1.0):
    import torch

    run = root / "runs" / "t" / "dit-s0"
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text('{"seed": 0}\n')
    (run / "metrics.jsonl").write_text('{"step": 5, "loss": 0.5}\n')
    weights = torch.arange(1000, dtype=torch.float32) / 7.0 + step
    torch.save({"step": step, "seconds": seconds, "points": json.dumps(_points([0, 2])), "w": weights},
               run / "checkpoints" / "last.pt")  # fmt: skip
    return run


def test_a_paused_runs_state_is_kept_outside_the_tree_and_in_git_and_restored_byte_for_byte(tmp_path):
    from repro.experiments import pieces, resume

    root, store = tmp_path / "proj", tmp_path / "store"
    run = _paused_run(root)
    wrote = {name: (run / name).read_bytes() for name in resume.FILES}
    assert resume.restore(root, CMD, store=store) is None  # a checkpoint in place: nothing to do
    pieces.write_record(root, "train-long@dit-0", CMD)
    manifest = resume.save(root, CMD, store=store)
    archive, listed = root / "goldens" / "resume" / "t" / "dit-s0.xz", root / "goldens" / "resume" / "t" / "dit-s0.json"
    assert manifest["step"] == 7 and json.loads(listed.read_text()) == manifest
    assert manifest["archive_bytes"] == archive.stat().st_size < len(wrote[resume.CHECKPOINT])
    assert (store / "t" / "dit-s0" / "state.json").is_file()

    def restored_from(store_dir):
        shutil.rmtree(root / "runs")  # the work tree laid anew
        got = resume.restore(root, CMD, store=store_dir, warn=warnings.append)
        assert {name: (run / name).read_bytes() for name in resume.FILES} == wrote  # byte for byte
        return got

    warnings: list[str] = []
    same_machine = restored_from(store)
    assert (same_machine.step, same_machine.committed, same_machine.source) == (7, False, store / "t" / "dit-s0")
    fresh_machine = restored_from(tmp_path / "empty-store")
    assert (fresh_machine.step, fresh_machine.committed, fresh_machine.source) == (7, True, archive)
    assert warnings == []
    # a damaged archive is said and not used; a state no pause record names is not used; the run starts over
    shutil.rmtree(root / "runs")
    archive.write_bytes(archive.read_bytes()[:-10])
    assert resume.restore(root, CMD, store=tmp_path / "empty-store", warn=warnings.append) is None
    assert len(warnings) == 1 and "dit-s0.xz: its sha256 differs from its manifest's" in warnings[0]
    for record in (root / "goldens" / "t" / "pieces").glob("*.json"):
        record.unlink()
    assert resume.restore(root, CMD, store=store, warn=warnings.append) is None
    assert "not one a committed pause record of this run names" in warnings[-1]
    # the run is done: both states go
    assert set(resume.drop(root, CMD, store=store)) == {archive, listed, store / "t" / "dit-s0"}
    assert not archive.exists() and not (store / "t").joinpath("dit-s0").exists()


def test_git_keeps_a_state_only_after_enough_training_since_the_committed_one(tmp_path, monkeypatch):
    from repro.experiments import campaign, pieces, resume

    root, store = tmp_path / "proj", tmp_path / "store"
    monkeypatch.setenv("REPRO_RESUME_STORE", str(store))
    archive, listed = root / "goldens" / "resume" / "t" / "dit-s0.xz", root / "goldens" / "resume" / "t" / "dit-s0.json"
    logs: list[str] = []
    _paused_run(root, step=7, seconds=600.0)  # ten minutes, none committed: the store only
    pieces.write_record(root, "train-long@dit-0", CMD)
    assert campaign.save_state(root, "train-long@dit-0", CMD, logs.append, min_commit_seconds=1800.0)
    assert not archive.exists() and json.loads((store / "t" / "dit-s0" / "state.json").read_text())["step"] == 7
    assert f"in {store / 't' / 'dit-s0'} only: 10 minutes of training since its committed state" in logs[-1]
    _paused_run(root, step=40, seconds=2400.0)  # forty minutes: into git, with its training clock
    pieces.write_record(root, "train-long@dit-0", CMD)
    manifest = resume.save(root, CMD, store=store, min_commit_seconds=1800.0)
    assert archive.is_file() and json.loads(listed.read_text()) == manifest
    assert (manifest["step"], manifest["seconds"]) == (40, 2400.0) and "trained_since_committed" not in manifest
    _paused_run(root, step=45, seconds=2700.0)  # five more minutes: git keeps step 40, the store has step 45
    pieces.write_record(root, "train-long@dit-0", CMD)
    later = resume.save(root, CMD, store=store, min_commit_seconds=1800.0)
    assert later["trained_since_committed"] == 300.0 and json.loads(listed.read_text())["step"] == 40
    shutil.rmtree(root / "runs")
    assert resume.restore(root, CMD, store=store).step == 45  # this machine: the newer state
    shutil.rmtree(root / "runs")
    fresh = resume.restore(root, CMD, store=tmp_path / "empty-store")
    assert (fresh.step, fresh.committed) == (40, True)  # a fresh machine: git's, five minutes older
    assert resume.trained_since_committed(root, CMD, 2700.0) == 300.0
    # a run that started over behind its committed state (which it could not use): all its training counts, so a
    # piece that pauses it commits its state, as a fresh machine needs
    assert resume.trained_since_committed(root, CMD, 900.0) == 900.0
    # likewise when the archive is gone, or the manifest predates the training clock
    manifest_text = listed.read_text()
    listed.write_text(json.dumps({k: v for k, v in json.loads(manifest_text).items() if k != "seconds"}))
    assert resume.trained_since_committed(root, CMD, 2700.0) == 2700.0
    listed.write_text(manifest_text)
    archive.unlink()
    assert resume.trained_since_committed(root, CMD, 2700.0) == 2700.0


def test_the_newest_recorded_state_wins_and_a_manifest_that_lies_about_a_file_is_refused(tmp_path):
    from repro.experiments import pieces, resume

    root, store = tmp_path / "proj", tmp_path / "store"
    _paused_run(root, step=7)
    pieces.write_record(root, "train-long@dit-0", CMD)
    resume.save(root, CMD, store=store)  # step 7: in git and in the store
    _paused_run(root, step=9)
    pieces.write_record(root, "train-long@dit-0", CMD)
    resume.save(root, CMD, store=store, commit=False)  # step 9: in the store only
    shutil.rmtree(root / "runs")
    assert resume.restore(root, CMD, store=store).step == 9  # the newer one, from the store
    shutil.rmtree(root / "runs")
    state = store / "t" / "dit-s0" / "state.json"
    manifest = json.loads(state.read_text())
    manifest["files"]["metrics.jsonl"]["sha256"] = "0" * 64
    state.write_text(json.dumps(manifest))
    warnings: list[str] = []
    got = resume.restore(root, CMD, store=store, warn=warnings.append)
    assert got.step == 7 and got.committed  # the store's damaged state skipped, git's older one used
    assert "metrics.jsonl's sha256 differs from its manifest's" in warnings[0]
    # a manifest cut short (a write interrupted by a full disk) is said, not fatal: git's state is used
    shutil.rmtree(root / "runs")
    state.write_text(state.read_text()[:40])
    warnings.clear()
    got = resume.restore(root, CMD, store=store, warn=warnings.append)
    assert got.step == 7 and got.committed
    assert len(warnings) == 1 and str(state) in warnings[0] and "unreadable" in warnings[0]


@given(st.binary(max_size=64))
def test_regrouping_a_checkpoints_bytes_by_word_position_is_undone_exactly(data):
    from repro.experiments.resume import transpose4, untranspose4

    assert untranspose4(transpose4(data)) == data
    assert len(transpose4(data)) == len(data)
