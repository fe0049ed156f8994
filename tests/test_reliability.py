"""The bad-input catalogue: configurations, flags, run directories, checkpoints, curves, specs and sample files
that cannot give a trustworthy result. Each case states its exact outcome (the exit code and the dotted field
or file the one-line error names, or the documented behaviour) and checks that nothing already written changed.

Each case's ``before`` says what the input did before the checks existed: ``silent`` (a wrong result and exit 0),
``traceback`` (a Python exception, at once or only at step 1 or the first evaluation), ``weak`` (an error that did not
name the field or file) or ``error`` (already a clear error, kept as a regression case).
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from repro.cli import main

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())

TINY = {
    "methods": {
        "dit": {"objective": {"name": "ddpm"}, "model": {"learn_sigma": True}},
        "sit": {"objective": {"name": "interpolant"}, "model": {"learn_sigma": False}},
    },
    "scales": {
        "tiny": {
            "methods": ["dit", "sit"],
            "seeds": [0],
            "model": {
                "input_size": 8,
                "patch_size": 4,
                "in_channels": 1,
                "hidden_size": 16,
                "depth": 2,
                "num_heads": 2,
                "num_classes": 2,
            },
            "data": {"name": "synthetic", "subset": 32},
            "train": {
                "steps": 4,
                "batch_size": 4,
                "lr": 1.0e-3,
                "ema_decay": 0.9,
                "eval_every": 2,
                "ckpt_every": 2,
                "log_every": 1,
            },
            "eval": {"metrics": [], "val_size": 4, "val_points": 2, "num_samples": 4, "batch_size": 4},
        }
    },
}


def tree_hash(path: Path) -> str:
    """A hash of every file name and content under ``path`` (or of the file ``path``)."""
    h = hashlib.sha256()
    if path.is_file():
        h.update(path.read_bytes())
    elif path.is_dir():
        for p in sorted(path.rglob("*")):
            h.update(str(p.relative_to(path)).encode())
            if p.is_file():
                h.update(p.read_bytes())
    return h.hexdigest()


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def assert_one_line_error(err: str, *names: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert " error: " in lines[0]
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def existing_run_dir(tmp_path: Path) -> Path:
    """A run directory with files that a failing command must leave as they are."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text('{"sentinel": 1}\n')
    (out / "notes.txt").write_text("kept\n")
    return out


# ---------------------------------------------------------------------------------------------------------------------
# params.yaml: every section and key known, typed, range-checked, attributed to its dotted field


def _smoke(p):
    return p["scales"]["smoke"]


def _rename(d, old, new):
    d[new] = d.pop(old)


def _set(path: str, value):
    def mutate(p):
        *parents, last = path.split(".")
        d = p
        for key in parents:
            d = d[key]
        d[last] = value

    return mutate


BAD_PARAMS = [
    # (case, mutation, method, names in the error, before)
    ("misspelt-train-section", lambda p: _rename(_smoke(p), "train", "trian"), "dit", ["scales.smoke.trian"], "silent"),
    ("misspelt-eval-section", lambda p: _rename(_smoke(p), "eval", "evl"), "dit", ["scales.smoke.evl"], "silent"),
    (
        "misspelt-model-in-method",
        lambda p: _rename(p["methods"]["tread"], "model", "modle"),
        "tread",
        ["methods.tread.modle"],
        "silent",
    ),
    (
        "misspelt-objective",
        lambda p: _rename(p["methods"]["dit"], "objective", "objectve"),
        "dit",
        ["methods.dit.objectve"],
        "traceback",
    ),
    ("empty-objective", _set("methods.dit.objective", {}), "dit", ["methods.dit.objective"], "traceback"),
    (
        "unknown-objective",
        _set("methods.dit.objective.name", "dpm"),
        "dit",
        ["methods.dit.objective.name"],
        "traceback",
    ),
    (
        "objective-setting-type",
        _set("methods.dit.objective.num_timesteps", "1000"),
        "dit",
        ["methods.dit.objective.num_timesteps"],
        "traceback",
    ),
    ("ema-decay-one", _set("scales.smoke.train.ema_decay", 1.0), "dit", ["scales.smoke.train.ema_decay"], "silent"),
    ("threads-string", _set("scales.smoke.train.threads", "no"), "dit", ["scales.smoke.train.threads"], "silent"),
    ("tf32-string", _set("scales.smoke.train.tf32", "no"), "dit", ["scales.smoke.train.tf32"], "silent"),
    (
        "keep-checkpoints-string",
        _set("scales.smoke.train.keep_checkpoints", "no"),
        "dit",
        ["scales.smoke.train.keep_checkpoints"],
        "silent",
    ),
    ("steps-zero", _set("scales.smoke.train.steps", 0), "dit", ["scales.smoke.train.steps"], "traceback"),
    ("lr-string", _set("scales.smoke.train.lr", "3e-4"), "dit", ["scales.smoke.train.lr"], "traceback"),
    ("lr-nan", _set("scales.smoke.train.lr", float("nan")), "dit", ["scales.smoke.train.lr"], "silent"),
    ("betas-strings", _set("scales.smoke.train.betas", ["a", "b"]), "dit", ["scales.smoke.train.betas"], "traceback"),
    (
        "step-scale-set-by-hand",
        _set("scales.smoke.train.step_scale", 2.0),
        "dit",
        ["scales.smoke.train.step_scale"],
        "silent",
    ),
    ("subset-over-data", _set("scales.smoke.data.subset", 70000), "dit", ["scales.smoke.data.subset"], "silent"),
    ("val-size-over-data", _set("scales.smoke.eval.val_size", 20000), "dit", ["scales.smoke.eval.val_size"], "silent"),
    (
        "reference-size-over-split",
        _set("scales.smoke.eval.reference_size", 20000),
        "dit",
        ["scales.smoke.eval.reference_size"],
        "traceback",
    ),
    (
        "reference-unknown",
        _set("scales.smoke.eval.reference", "val"),
        "dit",
        ["scales.smoke.eval.reference"],
        "traceback",
    ),
    (
        "metrics-duplicate",
        _set("scales.smoke.eval.metrics", ["fid", "fid"]),
        "dit",
        ["scales.smoke.eval.metrics"],
        "silent",
    ),
    (
        "num-classes-vs-data",
        _set("scales.smoke.model.num_classes", 5),
        "dit",
        ["scales.smoke.model.num_classes"],
        "traceback",
    ),
    (
        "in-channels-vs-data",
        _set("scales.smoke.model.in_channels", 3),
        "dit",
        ["scales.smoke.model.in_channels"],
        "traceback",
    ),
    (
        "input-size-vs-data",
        _set("scales.smoke.model.input_size", 16),
        "dit",
        ["scales.smoke.model.input_size"],
        "traceback",
    ),
    (
        "scale-model-typo",
        _set("scales.smoke.model.hiden_size", 32),
        "dit",
        ["scales.smoke.model.hiden_size"],
        "traceback",
    ),
    (
        "scale-model-bad-value",
        _set("scales.smoke.model.hidden_size", 30),
        "dit",
        ["scales.smoke.model.hidden_size"],
        "traceback",
    ),
    (
        "routes-typo",
        _set("methods.tread.model.routes", "tred"),
        "tread",
        ["methods.tread.model.routes", "tread"],
        "traceback",
    ),
    (
        "stochastic-depth-typo",
        _set("methods.stochastic-depth.model.stochastic_depth", "treed"),
        "stochastic-depth",
        ["methods.stochastic-depth.model.stochastic_depth"],
        "traceback",
    ),
    (
        "learn-sigma-string",
        _set("methods.dit.model.learn_sigma", "yes"),
        "dit",
        ["methods.dit.model.learn_sigma"],
        "traceback",
    ),
    (
        "learn-sigma-vs-objective",
        _set("methods.sit.model.learn_sigma", True),
        "sit",
        ["methods.sit.model.learn_sigma"],
        "traceback",
    ),
    ("unknown-top-section", _set("sclaes", {}), "dit", ["params.sclaes"], "silent"),
    (
        "scale-lists-unknown-method",
        _set("scales.smoke.methods", ["dit", "ditt"]),
        "dit",
        ["scales.smoke.methods"],
        "silent",
    ),
    ("scale-seeds-duplicate", _set("scales.smoke.seeds", [0, 0]), "dit", ["scales.smoke.seeds"], "silent"),
    ("data-name-unknown", _set("scales.smoke.data.name", "cifar"), "dit", ["scales.smoke.data.name"], "traceback"),
]


@pytest.mark.parametrize("mutate,method,names,before", [c[1:] for c in BAD_PARAMS], ids=[c[0] for c in BAD_PARAMS])
def test_bad_params_fail_before_anything_runs(tmp_path, capsys, mutate, method, names, before):
    params = copy.deepcopy(PARAMS)
    mutate(params)
    path = write_yaml(tmp_path / "params.yaml", params)
    out = existing_run_dir(tmp_path)
    written = tree_hash(out)
    rc, _, err = run_cli(capsys, "train", "--params", path, "--scale", "smoke", "--method", method, "--out", out)
    assert rc == 2
    assert_one_line_error(err, *names)
    assert tree_hash(out) == written


YAML_TEXT = [
    # (case, text, names in the error, before)
    (
        "duplicate-method",
        "methods:\n  dit: {objective: {name: ddpm}}\n  dit: {objective: {name: edm}}\nscales: {}\n",
        ["params.yaml", "line 3", "'dit'"],
        "silent",
    ),
    (
        "duplicate-train-key",
        "methods:\n  dit: {objective: {name: ddpm}}\nscales:\n  smoke:\n    train: {steps: 2, steps: 3}\n",
        ["params.yaml", "'steps'"],
        "silent",
    ),
    ("not-yaml", "methods: [unclosed\n", ["params.yaml", "not valid YAML"], "traceback"),
    ("not-a-mapping", "- a\n- b\n", ["params.yaml", "scales"], "traceback"),
    ("empty-file", "", ["params.yaml"], "traceback"),
]


@pytest.mark.parametrize("text,names,before", [c[1:] for c in YAML_TEXT], ids=[c[0] for c in YAML_TEXT])
def test_unreadable_params_files(tmp_path, capsys, text, names, before):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    rc, _, err = run_cli(
        capsys, "train", "--params", path, "--scale", "smoke", "--method", "dit", "--out", tmp_path / "o"
    )
    assert rc == 2
    assert_one_line_error(err, *names)
    assert not (tmp_path / "o").exists()


def test_a_scale_may_have_any_name(tmp_path):
    from repro.build import resolve
    from repro.config import load_params

    params = copy.deepcopy(PARAMS)
    params["scales"]["laptop"] = params["scales"]["smoke"]
    cfg = resolve(load_params(write_yaml(tmp_path / "params.yaml", params)), "laptop", "tread", 0)
    assert cfg.run_id == "laptop-tread-s0" and cfg.model.routes


BAD_FLAGS = [
    # (case, extra arguments, names in the error, before)
    ("steps-zero", ["--steps", "0"], ["--steps"], "traceback"),
    ("steps-negative", ["--steps", "-3"], ["--steps"], "traceback"),
    ("seed-negative", ["--seed", "-1"], ["--seed"], "traceback"),
    ("scale-typo", ["--scale", "smok"], ["--scale", "smoke"], "traceback"),
    ("method-typo", ["--method", "ditt"], ["--method", "dit"], "traceback"),
    ("params-missing", ["--params", "nope.yaml"], ["nope.yaml"], "traceback"),
    ("device-typo", ["--device", "cpuu"], ["--device", "cpuu"], "traceback"),
]


@pytest.mark.parametrize("extra,names,before", [c[1:] for c in BAD_FLAGS], ids=[c[0] for c in BAD_FLAGS])
def test_bad_train_flags(tmp_path, capsys, extra, names, before):
    out = existing_run_dir(tmp_path)
    written = tree_hash(out)
    argv = {"--scale": "smoke", "--method": "dit", "--out": str(out)}
    argv.update(dict(zip(extra[::2], extra[1::2])))
    rc, _, err = run_cli(capsys, "train", *[x for kv in argv.items() for x in kv])
    assert rc == 2
    assert_one_line_error(err, *names)
    assert tree_hash(out) == written


def test_cuda_device_without_cuda(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    rc, _, err = run_cli(capsys, "train", "--scale", "smoke", "--method", "dit", "--device", "cuda", "--out", tmp_path)
    assert rc == 2
    assert_one_line_error(err, "--device", "CUDA is not available")


@pytest.mark.slow
def test_errors_exit_2_without_traceback_and_debug_shows_it(tmp_path):
    params = copy.deepcopy(PARAMS)
    _rename(_smoke(params), "train", "trian")
    path = write_yaml(tmp_path / "params.yaml", params)
    argv = [sys.executable, "-m", "repro.cli"]
    args = ["train", "--params", str(path), "--scale", "smoke", "--method", "dit", "--out", str(tmp_path / "o")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    plain = subprocess.run(argv + args, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert plain.stderr.strip() == (
        "repro train: error: scales.smoke.trian: unknown section; "
        "allowed: methods, seeds, extra_seeds, model, data, train, eval"
    )
    from repro.config import ConfigError

    with pytest.raises(ConfigError, match="scales.smoke.trian"):  # --debug: the exception itself, traceback and all
        main(["--debug", *args])
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------------------------------
# Run directories: one configuration, one writer, finished runs left alone


@pytest.fixture
def tiny_params(tmp_path) -> Path:
    return write_yaml(tmp_path / "tiny.yaml", TINY)


def train_tiny(capsys, params: Path, out: Path, *extra: str, method: str = "dit") -> tuple[int, str, str]:
    return run_cli(capsys, "train", "--params", params, "--scale", "tiny", "--method", method, "--out", out, *extra)


def test_resume_refuses_another_configuration(tmp_path, capsys, tiny_params):
    out = tmp_path / "run"
    rc, _, _ = train_tiny(capsys, tiny_params, out, "--steps", "2")
    assert rc == 0
    written = tree_hash(out)
    other = copy.deepcopy(TINY)
    other["scales"]["tiny"]["train"]["lr"] = 2.0e-3
    cases = [
        (("--steps", "2"), "sit", tiny_params, ["method", "'dit' stored", "'sit' requested"]),  # before: silent
        (("--steps", "3"), "dit", tiny_params, ["train.steps", "2 stored", "3 requested"]),  # before: silent
        (("--steps", "2"), "dit", write_yaml(tmp_path / "other.yaml", other), ["train.lr"]),  # before: silent
        (("--steps", "2", "--seed", "1"), "dit", tiny_params, ["seed", "run_id"]),  # before: silent
    ]
    for extra, method, params, names in cases:
        rc, _, err = train_tiny(capsys, params, out, *extra, method=method)
        assert rc == 2
        assert_one_line_error(err, str(out), "another configuration", *names)
        assert tree_hash(out) == written


def test_a_finished_run_is_never_changed_by_a_rerun(tmp_path, capsys, tiny_params):
    out = tmp_path / "run"
    assert train_tiny(capsys, tiny_params, out)[0] == 0
    written = tree_hash(out)
    rc, stdout, _ = train_tiny(capsys, tiny_params, out)
    assert rc == 0 and "already complete" in stdout
    assert tree_hash(out) == written


def test_a_run_stopped_by_its_time_budget_stays_finished(tmp_path, capsys):
    timed = copy.deepcopy(TINY)
    timed["scales"]["tiny"]["train"]["max_seconds"] = 1.0e-9  # stops after the first step
    params = write_yaml(tmp_path / "timed.yaml", timed)
    out = tmp_path / "run"
    assert train_tiny(capsys, params, out)[0] == 0
    curve = json.loads((out / "curve.json").read_text())
    assert curve["complete"] and [p["step"] for p in curve["points"]] == [1]
    written = tree_hash(out)
    for _ in range(2):  # before: each re-run trained one more step
        rc, stdout, _ = train_tiny(capsys, params, out)
        assert rc == 0 and "already complete" in stdout
    assert tree_hash(out) == written


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path, capsys, tiny_params):
    from repro.experiments.rundir import RunLock

    out = tmp_path / "run"
    with RunLock(out):  # another open file description: flock conflicts as with another process
        rc, _, err = train_tiny(capsys, tiny_params, out)
    assert rc == 2  # before: silent (two processes wrote one directory)
    assert_one_line_error(err, str(out), f"pid {os.getpid()}")
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


def test_the_lock_is_held_by_a_process_not_a_file(tmp_path):
    from repro.experiments.rundir import LOCK_FILE, RunLock

    out = tmp_path / "run"
    with RunLock(out):
        fd = os.open(out / LOCK_FILE, os.O_RDWR)
        with pytest.raises(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
    with RunLock(out):  # released on exit; a stale lock file does not block
        pass


def test_resume_reports_its_step_cleans_leftovers_and_logs_each_step_once(tmp_path, capsys):
    from repro.build import resolve
    from repro.config import load_params
    from repro.experiments.train import train

    params = load_params(write_yaml(tmp_path / "tiny.yaml", TINY))
    cfg = resolve(params, "tiny", "dit", 0)
    out = tmp_path / "run"
    train(cfg, out, quiet=True, stop_after=3)  # checkpoint at step 2, step 3 logged: a crash after step 3
    stale = out / "checkpoints" / ".last.pt.abcd1234.tmp"  # what a write killed mid-way leaves
    stale.write_bytes(b"partial")
    rc, stdout, _ = train_tiny(capsys, tmp_path / "tiny.yaml", out)
    assert rc == 0
    assert "resuming from step 2 of 4" in stdout  # before: nothing said
    assert not stale.exists()  # before: left for ever
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # before: [1, 2, 3, 3, 4]


def _checkpoint_cases():
    def truncate(p: Path):
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])

    def empty(p: Path):
        p.write_bytes(b"")

    def missing_step(p: Path):
        import torch

        ck = torch.load(p, weights_only=True)
        del ck["step"]
        torch.save(ck, p)

    def not_weights_only(p: Path):
        import pickle

        p.write_bytes(pickle.dumps({"model": object}))

    return [
        ("truncated", truncate, ["last.pt", "not a readable checkpoint"], "traceback"),
        ("empty", empty, ["last.pt", "empty"], "traceback"),
        ("missing-step", missing_step, ["last.pt", "'step'"], "traceback"),
        ("pickle-with-code", not_weights_only, ["last.pt", "not a readable checkpoint"], "traceback"),
    ]


CHECKPOINTS = _checkpoint_cases()


@pytest.mark.parametrize("damage,names,before", [c[1:] for c in CHECKPOINTS], ids=[c[0] for c in CHECKPOINTS])
def test_damaged_checkpoints_name_the_file(tmp_path, capsys, tiny_params, damage, names, before):
    from repro.build import resolve
    from repro.config import load_params
    from repro.experiments.train import train

    out = tmp_path / "run"
    train(resolve(load_params(tiny_params), "tiny", "dit", 0), out, quiet=True, stop_after=2)
    damage(out / "checkpoints" / "last.pt")
    written = tree_hash(out)
    rc, _, err = train_tiny(capsys, tiny_params, out)
    assert rc == 2
    line = assert_one_line_error(err, *names)
    assert "weights_only" not in line
    assert tree_hash(out) == written


def test_a_checkpoint_without_its_config_is_not_resumed(tmp_path, capsys, tiny_params):
    from repro.build import resolve
    from repro.config import load_params
    from repro.experiments.train import train

    out = tmp_path / "run"
    train(resolve(load_params(tiny_params), "tiny", "dit", 0), out, quiet=True, stop_after=2)
    (out / "config.json").unlink()
    written = tree_hash(out)
    rc, _, err = train_tiny(capsys, tiny_params, out)
    assert rc == 2  # before: silent (resumed whatever the checkpoint held)
    assert_one_line_error(err, "no config.json", "--no-resume")
    assert tree_hash(out) == written


def test_no_resume_starts_over_without_leftovers(tmp_path, capsys, tiny_params):
    out = tmp_path / "run"
    assert train_tiny(capsys, tiny_params, out, "--steps", "2")[0] == 0
    assert train_tiny(capsys, tiny_params, out, "--no-resume", method="sit")[0] == 0
    cfg = json.loads((out / "config.json").read_text())
    curve = json.loads((out / "curve.json").read_text())
    assert cfg["method"] == curve["method"] == "sit" and curve["complete"]
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


# ---------------------------------------------------------------------------------------------------------------------
# Readers: curves (compare, speedup), specs, sample files

# Real curves (made by runs of the retired 240-step micro scale), so the readers meet what runs write
CURVES = ROOT / "tests" / "data" / "curves"


def copy_curves(folder: Path, names=("dit-s0", "dit-s1", "tread-s0", "tread-s1")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / f"{name}.json").write_text((CURVES / f"{name}.json").read_text())
    return folder


def edit_curve(path: Path, edit) -> None:
    curve = json.loads(path.read_text())
    edit(curve)
    path.write_text(json.dumps(curve))


def _nan_fid(c):
    c["points"][-1]["fid"] = float("nan")


def _inf_val_loss(c):
    c["points"][0]["val_loss"] = float("inf")


def _text_fid(c):
    c["points"][0]["fid"] = "62.6"


@pytest.mark.parametrize(
    "edit,before",
    [(_nan_fid, "silent"), (_inf_val_loss, "silent"), (_text_fid, "traceback")],
    ids=["nan-fid", "inf-val-loss", "fid-as-text"],
)
def test_compare_fails_a_non_finite_or_non_numeric_rerun(tmp_path, capsys, edit, before):
    new, golden = copy_curves(tmp_path / "new", ["dit-s0"]), copy_curves(tmp_path / "golden", ["dit-s0"])
    edit_curve(new / "dit-s0.json", edit)
    rc, out, err = run_cli(capsys, "compare", new, golden)
    assert rc == 1 and "FAIL" in out and "PASS" not in out  # before: PASS for NaN
    assert "not a finite number" in out and "Traceback" not in err


def test_compare_refuses_two_curves_with_one_run_id(tmp_path, capsys):
    new, golden = copy_curves(tmp_path / "new", ["dit-s0"]), copy_curves(tmp_path / "golden", ["dit-s0"])
    (new / "copy.json").write_text((new / "dit-s0.json").read_text())
    rc, _, err = run_cli(capsys, "compare", new, golden)
    assert rc == 2  # before: silent (the later file won)
    assert_one_line_error(err, "micro-dit-s0", "copy.json", "dit-s0.json")


def test_compare_of_a_missing_folder_names_it(tmp_path, capsys):
    golden = copy_curves(tmp_path / "golden", ["dit-s0"])
    rc, _, err = run_cli(capsys, "compare", tmp_path / "nope", golden)
    assert rc == 2  # before: silent ("missing" for every run, as if nothing had been re-run)
    assert_one_line_error(err, "nope", "not a folder")


def _incomplete(c):
    c["complete"] = False


def _seed_as_text(c):
    c["seed"] = "0"


def _seed_negative(c):
    c["seed"] = -1


def _points_empty(c):
    c["points"] = []


SPEEDUP_CURVES = [
    # (case, file to edit, edit, names in the error, before)
    (
        "incomplete-curve",
        "tread-s1.json",
        _incomplete,
        ["tread-s1.json", "complete=false", "--include-incomplete"],
        "silent",
    ),
    ("seed-0-and-text-0", "dit-s1.json", _seed_as_text, ["seed=0", "appears twice"], "silent"),
    ("seed-negative", "dit-s1.json", _seed_negative, ["dit-s1.json", "seed=-1"], "silent"),
    ("nan-fid", "tread-s0.json", _nan_fid, ["tread-s0.json", "points[3].fid"], "weak"),
    ("no-points", "tread-s0.json", _points_empty, ["tread-s0.json", "points"], "weak"),
]


@pytest.mark.parametrize("name,edit,names,before", [c[1:] for c in SPEEDUP_CURVES], ids=[c[0] for c in SPEEDUP_CURVES])
def test_speedup_rejects_curves_it_cannot_trust(tmp_path, capsys, name, edit, names, before):
    curves = copy_curves(tmp_path / "curves")
    if edit is _seed_as_text:  # "0" next to the real seed 0 of dit-s0: one seed, given twice
        edit_curve(curves / name, lambda c: c.update(seed="0"))
    else:
        edit_curve(curves / name, edit)
    out = tmp_path / "report.json"
    out.write_text("previous report\n")
    rc, _, err = run_cli(capsys, "speedup", "--curves", f"{curves}/*.json", "--out", out)
    assert rc == 2
    assert_one_line_error(err, *names)
    assert out.read_text() == "previous report\n"


def test_speedup_includes_incomplete_curves_only_when_asked(tmp_path, capsys):
    curves = copy_curves(tmp_path / "curves")
    edit_curve(curves / "tread-s1.json", _incomplete)
    out = tmp_path / "report.json"
    argv = ["speedup", "--curves", f"{curves}/*.json", "--out", out, "--units", "macs"]
    rc, _, _ = run_cli(capsys, *argv, "--include-incomplete")
    assert rc == 0 and "micro-tread-s1" in json.loads(out.read_text())["run_ids"]


SPEEDUP_FLAGS = [
    # (case, extra arguments, names in the error, before)
    ("k-zero", ["--k", "0"], ["ks=[0.0]"], "error"),
    ("train-size-zero", ["--train-size", "0"], ["train_size=0"], "error"),
    ("out-is-a-directory", ["--out", "{tmp}"], ["--out", "is a directory"], "traceback"),
    ("plot-under-a-file", ["--plot", "{tmp}/report.json/plot.png"], ["--plot", "not a directory"], "traceback"),
]


@pytest.mark.parametrize("extra,names,before", [c[1:] for c in SPEEDUP_FLAGS], ids=[c[0] for c in SPEEDUP_FLAGS])
def test_speedup_flags_are_checked_before_anything_is_written(tmp_path, capsys, extra, names, before):
    curves = copy_curves(tmp_path / "curves")
    out = tmp_path / "report.json"
    out.write_text("previous report\n")
    argv = {"--curves": f"{curves}/*.json", "--out": str(out)}
    argv.update({k: v.format(tmp=tmp_path) for k, v in zip(extra[::2], extra[1::2])})
    rc, _, err = run_cli(capsys, "speedup", *[x for kv in argv.items() for x in kv])
    assert rc == 2
    assert_one_line_error(err, *names)
    assert out.read_text() == "previous report\n"


def test_a_spec_saved_as_yml_is_an_error_not_dropped(tmp_path):
    from repro.evidence import SpecError, load_specs

    specs = tmp_path / "specs"
    specs.mkdir()
    for p in sorted((ROOT / "specs").glob("*.yaml"))[:2]:
        (specs / p.name).write_text(p.read_text())
    first = sorted((ROOT / "specs").glob("*.yaml"))[2]
    (specs / f"{first.stem}.yml").write_text(first.read_text())
    with pytest.raises(SpecError, match=rf"{first.stem}\.yml: specs are read from <id>\.yaml"):
        load_specs(specs)  # before: silent (the claim vanished from the ledger)


def test_a_spec_with_a_duplicate_key_is_an_error(tmp_path):
    from repro.evidence import SpecError, load_spec

    source = sorted((ROOT / "specs").glob("*.yaml"))[0]
    text = source.read_text()
    path = tmp_path / source.name
    path.write_text(text + "\nclaim: a second claim\n")
    with pytest.raises(SpecError, match="'claim' is given twice"):
        load_spec(path)  # before: silent (the later claim replaced the first)


def _samples(tmp_path: Path, name: str, array) -> Path:
    import numpy as np

    path = tmp_path / name
    np.save(path, array)
    return path


def _sample_cases():
    import numpy as np

    rng = np.random.default_rng(0)
    unit = rng.random((8, 1, 32, 32), dtype=np.float32)  # floats in [0, 1]
    with_nan = unit * 2 - 1
    with_nan[0, 0, 0, 0] = np.nan
    return [
        # (case, file name, array or raw bytes, extra flags, names in the error, before)
        ("float-without-range", "s.npy", unit, [], ["s.npy", "--range=0,1"], "silent"),
        ("floats-outside-range", "s.npy", unit * 255, ["--range=-1,1"], ["s.npy", "outside the declared"], "silent"),
        ("nan-values", "s.npy", with_nan, ["--range=-1,1"], ["s.npy", "NaN"], "silent"),
        ("empty-file", "s.npy", b"", [], ["s.npy", "empty"], "traceback"),
        ("not-an-array", "s.npy", b"not numpy", [], ["s.npy", "not a readable .npy"], "traceback"),
        ("wrong-shape", "s.npy", np.zeros((8, 3, 32, 32), np.uint8), [], ["s.npy", "shape (8, 3, 32, 32)"], "weak"),
        ("zero-samples", "s.npy", np.zeros((0, 1, 32, 32), np.uint8), [], ["s.npy", "N >= 1"], "weak"),
        ("int64-dtype", "s.npy", np.zeros((8, 1, 32, 32), np.int64), [], ["s.npy", "dtype int64"], "weak"),
        (
            "uint8-with-range",
            "s.npy",
            np.zeros((8, 1, 32, 32), np.uint8),
            ["--range=0,1"],
            ["s.npy", "uint8"],
            "silent",
        ),
    ]


SAMPLES = _sample_cases()


@pytest.mark.parametrize("name,content,extra,names,before", [c[1:] for c in SAMPLES], ids=[c[0] for c in SAMPLES])
def test_evaluate_rejects_samples_it_would_read_wrongly(tmp_path, capsys, name, content, extra, names, before):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        _samples(tmp_path, name, content)
    report = tmp_path / "result.json"
    report.write_text("previous\n")
    rc, _, err = run_cli(capsys, "evaluate", path, *extra, "--json", report, "--cache-dir", tmp_path / "cache")
    assert rc == 2
    assert_one_line_error(err, *names)
    assert report.read_text() == "previous\n"


def test_declared_ranges_read_the_same_images(tmp_path):
    import numpy as np

    from repro.metrics.fid import load_samples

    images = np.random.default_rng(1).integers(0, 256, (6, 1, 32, 32), dtype=np.uint8)
    as_uint8 = load_samples(_samples(tmp_path, "u.npy", images))
    for name, array, declared in (
        ("a.npy", images.astype(np.float32) / 127.5 - 1, "-1,1"),
        ("b.npy", images.astype(np.float32) / 255, "0,1"),
        ("c.npy", images.astype(np.float64), "0,255"),
    ):
        assert np.array_equal(load_samples(_samples(tmp_path, name, array), value_range=declared), as_uint8), name


# ---------------------------------------------------------------------------------------------------------------------
# Caches and weights that torch-fidelity would unpickle


class _Planted:
    """A pickle that creates ``marker`` when it is unpickled: what an attacker could leave in a cache folder."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _needs_data():
    from repro.data import fashion_mnist

    try:
        fashion_mnist.find_data_dir(download=False)
    except Exception:
        pytest.skip("Fashion-MNIST is not installed")


def test_the_reference_cache_holds_no_pickle_and_planted_ones_never_run(tmp_path):
    import pickle

    import numpy as np
    import torch

    from repro.metrics import fid

    _needs_data()
    samples = torch.randint(0, 256, (40, 1, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    cache = tmp_path / "cache"
    first = fid.compute_metrics(samples, "test", ("fid", "kid"), reference_size=60, cache_root=cache, kid_subsets=2)
    folder = cache / "fidelity"
    files = sorted(p.suffix for p in folder.iterdir())
    assert files == [".json", ".npz"]  # before: torch-fidelity's .pt pickles
    entry = next(folder.glob("*.npz"))
    with np.load(entry, allow_pickle=False) as z:
        assert all(z[k].dtype == np.float32 and z[k].shape[0] == 60 for k in z.files)
    # plant pickles under every name torch-fidelity would look for, in the folder the project points at
    marker = tmp_path / "ran"
    for layer in ("penultimate", "logits"):
        for kind in ("features-", "stat-fid-"):
            name = f"{entry.stem}-{fid.featurenet.register(None)}-{kind}{layer}.pt"
            (folder / name).write_bytes(pickle.dumps(_Planted(marker)))
    again = fid.compute_metrics(samples, "test", ("fid", "kid"), reference_size=60, cache_root=cache, kid_subsets=2)
    assert not marker.exists()  # before: the planted pickle ran
    assert again == first  # the .npz cache gives bitwise the same numbers
    # a tampered entry is not trusted: recomputed, the same numbers again
    raw = bytearray(entry.read_bytes())
    raw[-200] ^= 0xFF
    entry.write_bytes(bytes(raw))
    assert (
        fid.compute_metrics(samples, "test", ("fid", "kid"), reference_size=60, cache_root=cache, kid_subsets=2)
        == first
    )


def test_inception_weights_that_are_not_weights_only_are_refused(tmp_path):
    import pickle

    import torch

    from repro.metrics import fid

    marker = tmp_path / "ran"
    weights = tmp_path / fid.INCEPTION_FILE
    weights.write_bytes(pickle.dumps(_Planted(marker)))
    samples = torch.randint(0, 256, (8, 1, 32, 32), dtype=torch.uint8)
    with pytest.raises(ValueError, match="do not load weights-only"):
        fid.compute_metrics(samples, samples, ("fid",), feature_extractor=fid.INCEPTION, weights=weights,
                            cache_root=tmp_path)  # fmt: skip
    assert not marker.exists()  # before: torch-fidelity unpickled it with weights_only=False


def test_a_missing_feature_network_fails_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("REPRO_FEATURENET", str(tmp_path / "nowhere" / "featurenet.pt"))
    out = existing_run_dir(tmp_path)
    written = tree_hash(out)
    rc, _, err = run_cli(capsys, "train", "--scale", "smoke", "--method", "dit", "--steps", "1", "--out", out)
    assert rc == 2  # before: a traceback at the first evaluation, after training
    assert_one_line_error(err, "nowhere")
    assert tree_hash(out) == written


@pytest.mark.parametrize(
    "manifest,names",
    [
        (None, ["data.path", "manifest.json"]),
        ({"latent_shape": [4, 4, 4], "classes": ["a", "b"], "count": 32}, ["model.in_channels", "in_channels = 4"]),
        ({"latent_shape": [1, 4, 4], "classes": list("abc"), "count": 32}, ["model.num_classes", ">= 3"]),
        ({"latent_shape": [1, 4, 4], "classes": ["a"], "count": 8}, ["data.subset", "<= 8"]),
        ({"latent_shape": [1, 4]}, ["manifest.json", "not a latent-shards manifest"]),
    ],
    ids=["no-manifest", "channels", "classes", "subset-over-count", "bad-manifest"],
)
def test_latents_that_do_not_fit_the_model_fail_before_training(tmp_path, capsys, manifest, names):
    shards = tmp_path / "latents"
    shards.mkdir()
    if manifest is not None:
        (shards / "manifest.json").write_text(json.dumps({"format": 1, **manifest}))
    params = copy.deepcopy(TINY)
    params["scales"]["tiny"]["model"].update(input_size=4, patch_size=2)
    params["scales"]["tiny"]["data"] = {"name": "latents", "path": str(shards), "subset": 16}
    out = tmp_path / "run"
    rc, _, err = train_tiny(capsys, write_yaml(tmp_path / "latents.yaml", params), out)
    assert rc == 2  # before: a traceback when the shards were read or at step 1, or a silent clip of subset
    assert_one_line_error(err, *names)
    assert not out.exists()
