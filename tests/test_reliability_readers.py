"""The bad-input catalogue of the readers and the newer commands (summary, speedup, rerun, ledger, sample,
campaign, the GPU module): each case feeds one bad input and checks its outcome (the exit code and the one-line
error naming the file, the field and the value) and that every file already there is unchanged (by hash).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_campaign import dvc_and_git  # noqa: F401 - a fixture: dvc and git on PATH
from test_reliability import ROOT, assert_one_line_error, copy_curves, edit_curve, run_cli, tree_hash

MICRO = ROOT / "goldens" / "micro"


# ---------------------------------------------------------------------------------------------------------------------
# repro summary: never deletes or overwrites what it did not write


def test_summary_refuses_an_output_folder_holding_goldens(tmp_path, capsys):
    goldens = tmp_path / "micro"
    shutil.copytree(MICRO, goldens)
    before = tree_hash(goldens)
    rc, _, err = run_cli(capsys, "summary", "--curves", f"{goldens}/runs/*.json", "--out", goldens)
    assert rc == 2  # before: exit 0, every run curve, speedup report and curves.json in it deleted
    assert_one_line_error(err, "--out", str(goldens), "did not write")
    assert tree_hash(goldens) == before


def _summary(capsys, out: Path, curves: Path, *extra) -> tuple[int, str]:
    rc, _, err = run_cli(capsys, "summary", "--curves", f"{curves}/*.json", "--out", out, *extra)
    return rc, err


def test_summary_replaces_only_what_an_earlier_summary_wrote(tmp_path, capsys):
    curves = copy_curves(tmp_path / "curves")
    out = tmp_path / "summary"
    assert _summary(capsys, out, curves)[0] == 0
    written = sorted(p.relative_to(out) for p in out.rglob("*.json"))
    assert Path("fid/dit.json") in written
    gone = out / "fid" / "retired-method.json"  # as an earlier summary wrote it for a method no longer run
    gone.write_text(json.dumps({"value": 50.0, "sd": None, "n": 1}))
    assert _summary(capsys, out, curves)[0] == 0
    assert not gone.exists() and sorted(p.relative_to(out) for p in out.rglob("*.json")) == written

    foreign = out / "fid" / "notes.json"  # a summary path, but content no summary writes
    foreign.write_text(json.dumps({"fid": 50.0, "comment": "mine"}))
    (out / "README.md").write_text("kept\n")
    before = tree_hash(out)
    rc, err = _summary(capsys, out, curves)
    assert rc == 2
    assert_one_line_error(err, str(out), "2 file(s)", "did not write")
    assert tree_hash(out) == before


def test_summary_plot_data_never_replaces_a_foreign_file(tmp_path, capsys):
    curves = copy_curves(tmp_path / "curves")
    target = tmp_path / "curve.json"
    shutil.copy(curves / "dit-s0.json", target)  # a run curve given by mistake as --plot-data
    before = tree_hash(tmp_path)
    rc, err = _summary(capsys, tmp_path / "summary", curves, "--plot-data", target)
    assert rc == 2
    assert_one_line_error(err, "--plot-data", str(target), "not a plot table")
    assert tree_hash(tmp_path) == before
    target.unlink()
    assert _summary(capsys, tmp_path / "summary", curves, "--plot-data", target)[0] == 0
    assert _summary(capsys, tmp_path / "summary", curves, "--plot-data", target)[0] == 0  # its own: replaced
    assert set(json.loads(target.read_text())) == {"provenance", "points"}


# ---------------------------------------------------------------------------------------------------------------------
# The claims ledger: a broken evidence record is "check failed" naming the file and the field, never a verdict

CLAIM = "sit-beats-dit"  # confirmed on the committed goldens, from goldens/micro/speedup.json
CELL = ("unit_results", "sit", "final", "iterations")


def _cell(report):
    for key in CELL:
        report = report[key]
    return report


def _without_tests(cell):
    for key in ("p_value_ge_k", "p_value_lt_k", "ge_k", "lt_k"):
        cell.pop(key)


def _all_p_nan(cell):
    for key in ("p_value_ge_k", "p_value_lt_k"):
        cell[key] = {k: float("nan") for k in cell[key]}


def _flag_against_its_p(cell):
    cell["ge_k"]["1.0"] = False  # p_value_ge_k.1.0 is 2.5e-08


LEDGER_RECORDS = [
    # (case, edit of the record, names in the claim's line, before)
    ("ge-k-as-text", lambda c: c["ge_k"].update({"1.0": "false"}), ["ge_k.1.0", '"false"'], "silent"),
    ("ge-k-against-its-p", _flag_against_its_p, ["ge_k.1.0=false", "must be true"], "silent"),
    ("nan-ratio", lambda c: c.update(ratio=float("nan")), ["ratio=NaN"], "silent"),
    ("nan-interval", lambda c: c.update(ci_low=float("nan")), ["ci_low=NaN"], "silent"),
    ("all-p-nan", _all_p_nan, ["p_value_ge_k.1.0=NaN"], "silent"),
    ("no-test-fields", _without_tests, ["p_value_ge_k is missing"], "silent"),
]


def _claims(capsys, goldens: Path, tmp_path: Path, claim: str = CLAIM) -> tuple[int, str]:
    rc, out, err = run_cli(
        capsys, "claims", "--only", claim, "--skip-pytest", "--goldens", goldens, "--reports", tmp_path / "reports"
    )
    assert "Traceback" not in err
    lines = [line for line in out.splitlines() if line.startswith(claim + " ")]
    assert len(lines) == 1, out
    return rc, lines[0]


def _goldens(tmp_path: Path) -> Path:
    goldens = tmp_path / "goldens"
    shutil.copytree(ROOT / "goldens", goldens)
    return goldens


def test_the_ledger_claims_stand_on_the_committed_goldens(tmp_path, capsys):
    rc, line = _claims(capsys, _goldens(tmp_path), tmp_path)
    assert " confirmed at micro" in line and "check failed" not in line  # so the cases below change one thing


@pytest.mark.parametrize("edit,names,before", [c[1:] for c in LEDGER_RECORDS], ids=[c[0] for c in LEDGER_RECORDS])
def test_a_broken_speedup_record_fails_the_check(tmp_path, capsys, edit, names, before):
    goldens = _goldens(tmp_path)
    path = goldens / "micro" / "speedup.json"
    report = json.loads(path.read_text())
    edit(_cell(report))
    path.write_text(json.dumps(report))
    before_hash = tree_hash(goldens)
    rc, line = _claims(capsys, goldens, tmp_path)
    assert rc == 1
    assert " check failed " in line and "confirmed" not in line and "not supported" not in line, line
    for name in [str(path), ".".join(CELL), *names]:
        assert name in line, (name, line)
    assert tree_hash(goldens) == before_hash


def _nan_everywhere(data):
    if isinstance(data, dict):
        return {k: _nan_everywhere(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_nan_everywhere(v) for v in data]
    if isinstance(data, float | int) and not isinstance(data, bool):
        return float("nan")
    return data


def test_an_all_nan_audit_fails_the_check_not_refutes(tmp_path, capsys):
    goldens = _goldens(tmp_path)
    path = goldens / "audit.json"
    path.write_text(json.dumps(_nan_everywhere(json.loads(path.read_text()))))
    before = tree_hash(goldens)
    rc, line = _claims(capsys, goldens, tmp_path, "repa-17.5x")
    assert rc == 1  # before: "refuted" (and under --update, exit 0)
    assert " check failed " in line and "refuted" not in line and str(path) in line and "=nan" in line, line
    assert "must be a finite number" in line
    assert tree_hash(goldens) == before
    rc, _, err = run_cli(
        capsys, "claims", "--skip-pytest", "--update", "--goldens", goldens, "--reports", tmp_path / "reports"
    )
    assert rc == 1 and "check failed for" in err and "repa-17.5x" in err  # before: "refuted" under --update, exit 0


DIVERGED_RECORDS = [
    # (case, file name, record, names in the claim's line, before)
    ("stage-nan", "train@sit-1.json", {"stage": float("nan")}, ["train@sit-1.json", "stage=NaN"], "silent"),
    ("stage-not-a-stage", "sit-1.json", {"stage": "sit seed 1"}, ["sit-1.json", 'stage="sit seed 1"'], "silent"),
    ("name-vs-content", "train@dit-9.json", {}, ["train@dit-9.json", 'stage="train@sit-1"', "file's name"], "silent"),
    ("no-scale", "train@sit-1.json", {"command": "repro train"}, ["train@sit-1.json", "command="], "silent"),
]


@pytest.mark.parametrize(
    "name,edit,names,before", [c[1:] for c in DIVERGED_RECORDS], ids=[c[0] for c in DIVERGED_RECORDS]
)
def test_a_broken_diverged_run_record_fails_the_check(tmp_path, capsys, name, edit, names, before):
    goldens = _goldens(tmp_path)
    record = {"stage": "train@sit-1", "command": "repro train --scale micro --method sit --seed 1"} | edit
    (goldens / "diverged" / name).write_text(json.dumps(record))
    before_hash = tree_hash(goldens)
    rc, line = _claims(capsys, goldens, tmp_path)
    assert rc == 1  # before: the record was skipped (or read by its content), the claim "confirmed"
    assert " check failed " in line and "confirmed" not in line, line
    for n in names:
        assert n in line, (n, line)
    assert tree_hash(goldens) == before_hash


def test_a_well_formed_diverged_record_still_makes_the_claim_inconclusive(tmp_path, capsys):
    goldens = _goldens(tmp_path)
    record = {"stage": "train@sit-1", "command": "repro train --scale micro --method sit --seed 1"}
    (goldens / "diverged" / "train@sit-1.json").write_text(json.dumps(record))
    rc, line = _claims(capsys, goldens, tmp_path)
    assert " inconclusive at micro" in line, line


# ---------------------------------------------------------------------------------------------------------------------
# repro speedup: values a curve cannot hold


def _set_point(key, value, index=-1):
    def edit(curve):
        curve["points"][index][key] = value

    return edit


NEGATIVE_POINTS = [
    # (case, edit, names in the error, before)
    ("fid-negative", _set_point("fid", -5.0), ["tread-s0.json", "points[3].fid=-5.0", ">= 0"], "silent"),
    ("val-loss-negative", _set_point("val_loss", -0.1, 0), ["tread-s0.json", "points[0].val_loss=-0.1"], "silent"),
    ("macs-negative", _set_point("macs", -1.0, 0), ["tread-s0.json", "points[0].macs=-1.0"], "weak"),
]


@pytest.mark.parametrize("edit,names,before", [c[1:] for c in NEGATIVE_POINTS], ids=[c[0] for c in NEGATIVE_POINTS])
def test_speedup_refuses_negative_values(tmp_path, capsys, edit, names, before):
    curves = copy_curves(tmp_path / "curves")
    edit_curve(curves / "tread-s0.json", edit)
    out = tmp_path / "report.json"
    out.write_text("previous report\n")
    before_hash = tree_hash(tmp_path)
    rc, _, err = run_cli(capsys, "speedup", "--curves", f"{curves}/*.json", "--out", out)
    assert rc == 2  # before: FID -5 was accepted and the report written
    assert_one_line_error(err, *names)
    assert tree_hash(tmp_path) == before_hash


def test_speedup_keeps_a_negative_kid(tmp_path, capsys):
    """KID's unbiased estimate is negative near zero: a curve holding one is still read."""
    from repro.evidence.speedup import load_curves

    curves = copy_curves(tmp_path / "curves", ["dit-s0"])
    edit_curve(curves / "dit-s0.json", _set_point("kid", -0.0004))
    assert load_curves([curves / "dit-s0.json"])[0]["points"][-1]["kid"] == -0.0004


def _drop(key):
    def edit(data):
        data.pop(key)

    return edit


SUMMARY_INPUTS = [
    # (case, file edited: speedup report or claims ledger, edit, names in the error, before)
    ("report-without-baseline", "speedup", _drop("baseline"), ["speedup.json", "baseline=None"], "traceback"),
    (
        "report-results-not-a-mapping",
        "speedup",
        lambda r: r.update(unit_results=[1, 2]),
        ["speedup.json", "unit_results"],
        "traceback",
    ),
    ("report-is-a-list", "speedup", lambda r: [r], ["speedup.json", "list", "JSON object"], "traceback"),
    (
        "report-without-the-target",
        "speedup",
        lambda r: r.update(unit_results={m: {"third": t["third"]} for m, t in r["unit_results"].items()}),
        ["speedup.json", "has no final", "--target"],
        "weak",
    ),
    ("claims-without-counts", "claims", _drop("counts"), ["claims.json", "counts=missing"], "traceback"),
    (
        "claims-count-as-text",
        "claims",
        lambda c: c["counts"].update(confirmed="9"),
        ["claims.json", "counts="],
        "silent",
    ),
]


@pytest.mark.parametrize("which,edit,names,before", [c[1:] for c in SUMMARY_INPUTS], ids=[c[0] for c in SUMMARY_INPUTS])
def test_summary_names_the_file_and_field_of_a_broken_input(tmp_path, capsys, which, edit, names, before):
    report, claims = tmp_path / "speedup.json", tmp_path / "claims.json"
    shutil.copy(MICRO / "speedup.json", report)
    shutil.copy(ROOT / "reports" / "claims.json", claims)
    path = report if which == "speedup" else claims
    data = json.loads(path.read_text())
    changed = edit(data)
    path.write_text(json.dumps(data if changed is None else changed))
    out = tmp_path / "summary"
    before_hash = tree_hash(tmp_path)
    argv = ["summary", "--curves", f"{MICRO}/runs/*.json", "--speedup", report, "--claims", claims, "--out", out]
    rc, _, err = run_cli(capsys, *argv)
    assert rc == 2  # before: KeyError / AttributeError traceback
    assert_one_line_error(err, *names)
    assert tree_hash(tmp_path) == before_hash and not out.exists()


# ---------------------------------------------------------------------------------------------------------------------
# repro rerun and compare: tolerances that check something, goldens checked before anything trains


@pytest.mark.parametrize("command", ["rerun", "compare"])
@pytest.mark.parametrize("value", ["inf", "nan", "-1", "x"])
def test_tolerances_must_be_finite_and_non_negative(tmp_path, capsys, command, value):
    folder = copy_curves(tmp_path / "curves", ["dit-s0"])
    before = tree_hash(tmp_path)
    head = (
        ["rerun", "--scale", "micro", "--out", tmp_path / "runs"] if command == "rerun" else ["compare", folder, folder]
    )
    with pytest.raises(SystemExit) as exit_:
        run_cli(capsys, *head, "--rel-tol", value)
    err = capsys.readouterr().err
    assert exit_.value.code == 2  # before: rerun --rel-tol inf passed a golden 10x off
    assert_one_line_error(err, "--rel-tol", repr(value), "finite number >= 0")
    assert tree_hash(tmp_path) == before


def test_rerun_checks_its_goldens_before_training(tmp_path, capsys):
    from test_reliability import TINY, write_yaml

    params = write_yaml(tmp_path / "tiny.yaml", TINY)
    golden = copy_curves(tmp_path / "golden", ["dit-s0"])
    curve = json.loads((golden / "dit-s0.json").read_text())
    curve.pop("points")
    (golden / "dit-s0.json").write_text(json.dumps(curve))
    before = tree_hash(tmp_path)
    argv = ["rerun", "--params", params, "--scale", "tiny", "--out", tmp_path / "runs", "--golden", golden]
    rc, _, err = run_cli(capsys, *argv)
    assert rc == 2  # before: KeyError 'points', after every run had trained
    assert_one_line_error(err, "dit-s0.json", "points")
    assert tree_hash(tmp_path) == before and not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints: the step a file says against the step its weights are from


def _tiny_run(tmp_path: Path, stop_after: int) -> tuple[Path, Path]:
    from test_reliability import TINY, write_yaml

    from repro.build import resolve
    from repro.config import load_params
    from repro.experiments.train import train

    params = write_yaml(tmp_path / "tiny.yaml", TINY)
    out = tmp_path / f"run-{stop_after}"
    train(resolve(load_params(params), "tiny", "dit", 0), out, quiet=True, stop_after=stop_after)
    return params, out


def test_a_checkpoint_relabelled_with_another_step_is_not_resumed(tmp_path, capsys):
    import torch

    params, out = _tiny_run(tmp_path, 2)
    last = out / "checkpoints" / "last.pt"
    ck = torch.load(last, weights_only=True)
    assert ck["step"] == 2
    ck["step"] = 4  # the run's last step: resumed, it would be "complete" with the curve of step 2
    torch.save(ck, last)
    before = tree_hash(out)
    rc, _, err = run_cli(capsys, "train", "--params", params, "--scale", "tiny", "--method", "dit", "--out", out)
    assert rc == 2  # before: resumed to a "complete" run of 2 trained steps
    assert_one_line_error(err, str(last), "step=4", "2 update(s)")
    assert tree_hash(out) == before


def test_a_checkpoint_with_points_after_its_step_is_not_resumed(tmp_path, capsys):
    import torch

    params, out = _tiny_run(tmp_path, 2)
    last = out / "checkpoints" / "last.pt"
    ck = torch.load(last, weights_only=True)
    points = json.loads(ck["points"])
    ck["points"] = json.dumps([*points, {**points[-1], "step": 4}])
    torch.save(ck, last)
    before = tree_hash(out)
    rc, _, err = run_cli(capsys, "train", "--params", params, "--scale", "tiny", "--method", "dit", "--out", out)
    assert rc == 2
    assert_one_line_error(err, str(last), "[4]", "step=2")
    assert tree_hash(out) == before


# ---------------------------------------------------------------------------------------------------------------------
# repro sample: the checkpoint must be the run's model


def test_sample_refuses_a_checkpoint_of_another_model_in_a_run_directory(tmp_path, capsys):
    import copy

    from test_reliability import TINY, write_yaml

    from repro.build import resolve
    from repro.config import load_params
    from repro.experiments.train import train

    _, run = _tiny_run(tmp_path, 2)
    wider = copy.deepcopy(TINY)
    wider["scales"]["tiny"]["model"]["hidden_size"] = 32
    params = write_yaml(tmp_path / "wider.yaml", wider)
    other = tmp_path / "other"
    train(resolve(load_params(params), "tiny", "dit", 0), other, quiet=True, stop_after=2)
    sample = ["sample", run, "--num-samples", "4", "--batch-size", "4", "--out", tmp_path / "ok.npz"]
    assert run_cli(capsys, *sample)[0] == 0  # the run's own checkpoint samples
    shutil.copy(other / "checkpoints" / "last.pt", run / "checkpoints" / "last.pt")
    before = tree_hash(tmp_path)
    sample[-1] = tmp_path / "samples.npz"
    rc, _, err = run_cli(capsys, *sample)
    assert rc == 2  # before: sampled, and labelled with the run's id
    assert_one_line_error(err, "last.pt", str(run / "config.json"), "hidden_size: 32 vs 16")
    assert tree_hash(tmp_path) == before and not (tmp_path / "samples.npz").exists()


def test_sample_names_a_config_that_is_not_json(tmp_path, capsys):
    _, run = _tiny_run(tmp_path, 2)
    (run / "config.json").write_text('{"model": ')
    before = tree_hash(tmp_path)
    rc, _, err = run_cli(capsys, "sample", run, "--num-samples", "4", "--out", tmp_path / "s.npz")
    assert rc == 2  # before: a JSON error that did not name the file
    assert_one_line_error(err, str(run / "config.json"), "not valid JSON")
    assert tree_hash(tmp_path) == before


# ---------------------------------------------------------------------------------------------------------------------
# repro campaign: a damaged dvc.lock is said, not read as "every run out of date"


@pytest.mark.slow
@pytest.mark.usefixtures("dvc_and_git")
def test_a_truncated_dvc_lock_is_warned_about_or_refused(tmp_path):
    import sys

    from test_campaign import _scratch_dvc_project

    from repro.experiments.campaign import run_campaign

    write = f"{sys.executable} -c \"import sys; open(sys.argv[1], 'w').write(sys.argv[2])\""
    root = _scratch_dvc_project(
        tmp_path,
        {"m": {"a": {"k": 1}, "b": {"k": 2}}, "seeds": [0]},
        f"{write} out-${{item.method}}-${{item.seed}}.txt ${{item.method}}${{item.seed}}",
        "out-${item.method}-${item.seed}.txt",
    )
    logs: list[str] = []
    assert set(run_campaign(root, ["a", "b"], 1, None, log=logs.append).values()) == {"done"}
    lock = root / "dvc.lock"
    text = lock.read_text()
    cut = text.index("train@b-0:")  # the lock as a disk full or a bad merge leaves it: the last run's entry lost
    lock.write_text(text[:cut])
    outputs = tree_hash(root / "out-b-0.txt")
    logs.clear()
    assert run_campaign(root, ["a", "b"], 1, None, dry_run=True, log=logs.append) == {"train@b-0": "not started"}
    warning = [line for line in logs if line.startswith("warning:")]
    assert len(warning) == 1 and "train@b-0" in warning[0] and "dvc.lock" in warning[0], logs  # before: no warning
    lock.write_text(text[: text.index("train@b-0:") - 3] + "\n  : [\n")
    with pytest.raises(ValueError, match="dvc.lock"):
        run_campaign(root, ["a", "b"], 1, None, dry_run=True, log=logs.append)
    assert tree_hash(root / "out-b-0.txt") == outputs


@pytest.mark.slow
@pytest.mark.usefixtures("dvc_and_git")
def test_a_campaign_of_one_scale_lists_no_stage_of_another(capsys, monkeypatch):
    """``repro campaign --scale smoke --dry-run`` on this project: the smoke scale has no DVC training stage, so
    nothing is listed (a micro stage was listed before)."""
    monkeypatch.chdir(ROOT)
    rc, out, _ = run_cli(capsys, "campaign", "--scale", "smoke", "--dry-run", "--all")
    assert rc == 0
    assert "0 training stage(s) to run: none" in out and "micro" not in out, out


# ---------------------------------------------------------------------------------------------------------------------
# The GPU module: the same validation as repro, before anything is written


def _gpu(capsys, *argv) -> tuple[int, str]:
    from repro.commands import gpu

    rc = gpu.main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def _manifest(folder: Path, text: str) -> Path:
    from repro.experiments.gpu import MANIFEST

    folder.mkdir()
    (folder / MANIFEST).write_text(text)
    return folder


GPU_CAMPAIGN_FLAGS = [
    # (case, extra arguments ({tmp}: the test's folder), names in the error, before)
    ("peak-tflops-negative", ["--peak-tflops", "-1"], ["--peak-tflops", "-1.0", "positive finite"], "silent"),
    ("peak-tflops-nan", ["--peak-tflops", "nan"], ["--peak-tflops", "nan"], "silent"),
    ("budget-infinite", ["--budget-s", "inf", "--train-budget-s", "inf"], ["--budget-s", "inf"], "traceback"),
    ("out-is-a-file", ["--out", "{tmp}/a-file"], ["--out", "a-file", "is a file"], "traceback"),
    ("params-missing", ["--params", "{tmp}/nope.yaml"], ["--params", "nope.yaml", "not a file"], "traceback"),
    ("manifest-truncated", ["--wheels", "{tmp}/wheels"], ["--wheels", "manifest", "not valid JSON"], "traceback"),
]


@pytest.mark.parametrize(
    "extra,names,before", [c[1:] for c in GPU_CAMPAIGN_FLAGS], ids=[c[0] for c in GPU_CAMPAIGN_FLAGS]
)
def test_gpu_campaign_flags_are_checked_before_anything_is_written(tmp_path, capsys, extra, names, before):
    (tmp_path / "a-file").write_text("kept\n")
    _manifest(tmp_path / "wheels", '{"wheels": [')
    before_hash = tree_hash(tmp_path)
    argv = {"--out": str(tmp_path / "out"), "--dry-run": None}
    argv.update({k: v.format(tmp=tmp_path) for k, v in zip(extra[::2], extra[1::2])})
    rc, err = _gpu(capsys, "campaign", *[x for kv in argv.items() for x in kv if x is not None])
    assert rc == 2  # before: a plan of -0.0 s, or a traceback
    assert_one_line_error(err.replace("error: ", "python -m repro.experiments.gpu: error: "), *names)
    assert tree_hash(tmp_path) == before_hash and not (tmp_path / "out").exists()


LAND_RECORDS = [
    # (case, campaign.json text, names in the error, before)
    ("empty", "", ["campaign.json", "not valid JSON"], "weak"),
    ("truncated", '{"provenance": {', ["campaign.json", "not valid JSON"], "weak"),
    ("a-list", "[]", ["campaign.json", "dry_run=None"], "traceback"),
    ("provenance-text", '{"provenance": "cuda"}', ["campaign.json", "provenance='cuda'"], "traceback"),
]


@pytest.mark.parametrize("text,names,before", [c[1:] for c in LAND_RECORDS], ids=[c[0] for c in LAND_RECORDS])
def test_gpu_land_names_a_broken_campaign_record(tmp_path, capsys, text, names, before):
    out, goldens = tmp_path / "out", tmp_path / "goldens"
    out.mkdir()
    (out / "campaign.json").write_text(text)
    before_hash = tree_hash(tmp_path)
    rc, err = _gpu(capsys, "land", out, "--goldens", goldens)
    assert rc == 2
    assert_one_line_error(err.replace("error: ", "python -m repro.experiments.gpu: error: "), *names)
    assert tree_hash(tmp_path) == before_hash and not goldens.exists()


def test_gpu_pack_refuses_a_destination_that_is_a_file(tmp_path, capsys):
    dest = tmp_path / "wheels"
    dest.write_text("kept\n")
    rc, err = _gpu(capsys, "pack", "--dest", dest)
    assert rc == 2  # before: a FileExistsError traceback
    assert_one_line_error(
        err.replace("error: ", "python -m repro.experiments.gpu: error: "), "--dest", str(dest), "is a file"
    )
    assert dest.read_text() == "kept\n"


def test_gpu_read_manifest_names_the_file(tmp_path):
    from repro.experiments.gpu import MANIFEST, read_manifest

    folder = _manifest(tmp_path / "wheels", "[1, 2]")
    with pytest.raises(ValueError, match=str(folder / MANIFEST)):
        read_manifest(folder)


# ---------------------------------------------------------------------------------------------------------------------
# repro evaluate: the range as the help spells it; too few images for a metric


def test_evaluate_range_parses_as_the_help_shows_it(tmp_path, capsys):
    import numpy as np
    from test_reliability import _samples

    images = np.random.default_rng(0).uniform(-1, 1, (8, 1, 32, 32)).astype(np.float32)
    path = _samples(tmp_path, "s.npy", images)
    results = []
    for flags in (["--range", "-1,1"], ["--range=-1,1"]):  # before: the first was "expected one argument"
        out = tmp_path / f"r{len(results)}.json"
        argv = ["evaluate", path, *flags, "--metrics", "fid", "--reference-size", "100", "--json", out]
        rc, _, err = run_cli(capsys, *argv, "--cache-dir", tmp_path / "cache")
        assert rc == 0, err
        results.append(json.loads(out.read_text())["fid"])
    assert results[0] == results[1]


@pytest.mark.parametrize(
    "count,metric,need,before",
    [(1, "fid", 2, "weak"), (1, "kid", 2, "silent"), (2, "prc", 4, "traceback")],
    ids=["fid-of-1", "kid-of-1", "prc-of-2"],
)
def test_evaluate_refuses_too_few_images_for_a_metric(tmp_path, capsys, count, metric, need, before):
    import numpy as np
    from test_reliability import _samples

    path = _samples(tmp_path, "s.npy", np.zeros((count, 1, 32, 32), np.uint8))
    report = tmp_path / "result.json"
    report.write_text("previous\n")
    before_hash = tree_hash(tmp_path)
    argv = ["evaluate", path, "--metrics", metric, "--reference-size", "100", "--json", report]
    rc, _, err = run_cli(capsys, *argv, "--cache-dir", tmp_path / "cache")
    assert rc == 2  # before: NaN for KID of 1 image, a kthvalue traceback for precision/recall of 2
    assert_one_line_error(err, str(path), f"{count} image(s)", metric, f"at least {need}")
    assert tree_hash(tmp_path) == before_hash


# ---------------------------------------------------------------------------------------------------------------------
# repro claims: JSON that is not JSON names its file; a bad spec is bad input (exit 2)


def test_claims_names_a_truncated_audit(tmp_path, capsys):
    goldens = _goldens(tmp_path)
    (goldens / "audit.json").write_text('{"speedups": {')
    before = tree_hash(goldens)
    rc, _, err = run_cli(capsys, "claims", "--skip-pytest", "--goldens", goldens, "--reports", tmp_path / "reports")
    assert rc == 2  # before: "Expecting value: line 1 column 7", no file named
    assert_one_line_error(err, str(goldens / "audit.json"), "not valid JSON")
    assert tree_hash(goldens) == before and not (tmp_path / "reports").exists()


def test_claims_names_a_truncated_ledger(tmp_path, capsys):
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "claims.json").write_text('{"claims": [')
    before = tree_hash(reports)
    rc, _, err = run_cli(capsys, "claims", "--skip-pytest", "--reports", reports)
    assert rc == 2
    assert_one_line_error(err, str(reports / "claims.json"), "not valid JSON", "--update")
    assert tree_hash(reports) == before


def test_a_bad_spec_is_bad_input_exit_2(tmp_path, capsys):
    specs = tmp_path / "specs"
    shutil.copytree(ROOT / "specs", specs)
    first = sorted(specs.glob("*.yaml"))[0]
    first.write_text(first.read_text() + "bogus_key: 1\n")
    before = tree_hash(tmp_path)
    rc, _, err = run_cli(capsys, "claims", "--skip-pytest", "--specs", specs, "--reports", tmp_path / "reports")
    assert rc == 2  # before: 1, the status of a failed check
    assert_one_line_error(err, first.name, "bogus_key")
    assert tree_hash(tmp_path) == before


# ---------------------------------------------------------------------------------------------------------------------
# repro campaign: its runs die with it


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie that no one reaped yet counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc (Linux)")
@pytest.mark.usefixtures("dvc_and_git")
def test_a_run_dies_with_its_killed_campaign(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from test_campaign import _scratch_dvc_project

    pids = tmp_path / "pids"
    pids.mkdir()
    run = (
        f"{sys.executable} -c \"import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)\""
    )
    root = _scratch_dvc_project(
        tmp_path, {"m": {"a": {"k": 1}}, "seeds": [0]}, f"{run} {pids}/${{item.method}}-${{item.seed}}", "never.txt"
    )
    code = (
        "from pathlib import Path; from repro.experiments.campaign import run_campaign; "
        f"run_campaign(Path({str(root)!r}), ['a'], 1, None)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    campaign = subprocess.Popen([sys.executable, "-c", code], cwd=root, env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (pids / "a-0").exists() or not (pids / "a-0").read_text():
            assert time.monotonic() < deadline and campaign.poll() is None, "the run never started"
            time.sleep(0.2)
        child = int((pids / "a-0").read_text())
        assert _alive(child)
        campaign.send_signal(signal.SIGKILL)  # as `kill -9` does: no handler of the campaign runs
        campaign.wait()
        deadline = time.monotonic() + 20
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(child)  # before: the run went on, its run directory locked for the next piece
    finally:
        campaign.kill()
        if (pids / "a-0").exists() and (pids / "a-0").read_text() and _alive(int((pids / "a-0").read_text())):
            os.kill(int((pids / "a-0").read_text()), signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc (Linux)")
@pytest.mark.usefixtures("dvc_and_git")
def test_a_campaign_stopped_by_an_error_stops_its_runs(tmp_path, monkeypatch):
    import sys
    import time

    from test_campaign import _scratch_dvc_project

    from repro.experiments import campaign

    pids = tmp_path / "pids"
    pids.mkdir()
    run = (
        f"{sys.executable} -c \"import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)\""
    )
    root = _scratch_dvc_project(
        tmp_path, {"m": {"a": {"k": 1}}, "seeds": [0]}, f"{run} {pids}/${{item.method}}-${{item.seed}}", "never.txt"
    )
    sleep = time.sleep

    def interrupted(seconds):
        if sys._getframe(1).f_code.co_name != "_run_pieces":  # time.sleep of anything else (DVC)
            return sleep(seconds)
        deadline = time.monotonic() + 60
        while not (pids / "a-0").exists() or not (pids / "a-0").read_text():
            assert time.monotonic() < deadline, "the run never started"
            sleep(0.2)
        raise KeyboardInterrupt  # Ctrl-C while the run trains

    monkeypatch.setattr(campaign.time, "sleep", interrupted)
    logs: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        campaign.run_campaign(root, ["a"], 1, None, log=logs.append)
    assert not _alive(int((pids / "a-0").read_text()))
    assert any(line.startswith("stopping train@a-0") for line in logs), logs


def test_a_stale_lock_says_whose_it_was(tmp_path, capsys):
    import os
    import subprocess
    import sys

    from test_reliability import TINY, write_yaml

    params = write_yaml(tmp_path / "tiny.yaml", TINY)
    out = tmp_path / "run"
    killed = (
        "import os, sys; from repro.experiments.rundir import RunLock; RunLock(sys.argv[1]).__enter__(); os._exit(9)"
    )
    holder = subprocess.run([sys.executable, "-c", killed, str(out)], env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert holder.returncode == 9 and (out / ".lock").read_text().strip()
    pid = (out / ".lock").read_text().split()[0]
    rc, _, err = run_cli(capsys, "train", "--params", params, "--scale", "tiny", "--method", "dit", "--out", out)
    assert rc == 0, err  # a stale lock never blocks (the kernel released it)
    line = [line for line in err.splitlines() if "ended without releasing" in line]
    assert len(line) == 1 and f"pid {pid} on " in line[0] and str(out) in line[0], err  # before: nothing said
    assert (out / ".lock").read_text() == ""  # released by this run


# ---------------------------------------------------------------------------------------------------------------------
# Outputs that cannot be written are found before the work, not after it


@pytest.mark.parametrize(
    "option,where,names",
    [
        ("--curve", "{tmp}/notes.txt/curve.json", ["--curve", "notes.txt", "not a folder"]),
        ("--grid", "{tmp}/notes.txt/grid.png", ["--grid", "notes.txt", "not a folder"]),
        ("--curve", "{tmp}", ["--curve", "is a folder"]),
    ],
    ids=["curve-under-a-file", "grid-under-a-file", "curve-is-a-folder"],
)
def test_train_checks_its_outputs_before_training(tmp_path, capsys, option, where, names):
    from test_reliability import TINY, write_yaml

    params = write_yaml(tmp_path / "tiny.yaml", TINY)
    (tmp_path / "notes.txt").write_text("kept\n")
    before = tree_hash(tmp_path)
    out = tmp_path / "run"
    argv = ["train", "--params", params, "--scale", "tiny", "--method", "dit", "--out", out]
    rc, _, err = run_cli(capsys, *argv, option, where.format(tmp=tmp_path))
    assert rc == 2  # before: the run trained to its end, then failed writing its curve or grid
    assert_one_line_error(err, *names)
    assert tree_hash(tmp_path) == before and not out.exists()


# ---------------------------------------------------------------------------------------------------------------------
# A full disk names the file; a planted latent shard is a one-line refusal


class _FullDisk:
    """A file object that fails like a full disk after ``room`` bytes."""

    def __init__(self, f, room: int = 16):
        self.f, self.room = f, room

    def write(self, data):
        import errno

        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.mark.parametrize("writer", ["json", "checkpoint"])
def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch, writer):
    import builtins

    import torch

    from repro import io

    target = tmp_path / ("curve.json" if writer == "json" else "last.pt")
    target.write_text("previous\n")
    real_open = builtins.open
    monkeypatch.setattr(io, "open", lambda *a, **k: _FullDisk(real_open(*a, **k)), raising=False)
    with pytest.raises(OSError) as caught:
        if writer == "json":
            io.atomic_write_json(target, {"points": list(range(1000))})
        else:  # torch reports the failed write as "enforce fail ... unexpected pos"
            io.atomic_torch_save({"w": torch.zeros(1000)}, target)
    assert caught.value.filename == str(target) and caught.value.errno == 28, caught.value
    assert target.read_text() == "previous\n" and sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_a_planted_latent_shard_is_refused_in_one_line(tmp_path):
    import hashlib
    import pickle

    from test_latents_mmap import _write_shards

    from repro.data import latents as lt

    marker = tmp_path / "ran"

    class Planted:
        def __reduce__(self):
            return (Path.touch, (marker,))

    _write_shards(tmp_path / "lat", [4, 4])
    shard = tmp_path / "lat" / "shard-00001.pt"
    shard.write_bytes(pickle.dumps({"latents": Planted(), "labels": Planted()}))
    manifest = json.loads((tmp_path / "lat" / lt.MANIFEST).read_text())
    manifest["shards"][1]["sha256"] = hashlib.sha256(shard.read_bytes()).hexdigest()  # the hash made to match
    (tmp_path / "lat" / lt.MANIFEST).write_text(json.dumps(manifest))
    before = tree_hash(tmp_path)
    with pytest.raises(ValueError) as caught:  # before: an UnpicklingError traceback
        lt.LatentShards(tmp_path / "lat").mapped()
    message = str(caught.value)
    assert str(shard) in message and "not a readable latent shard" in message and "\n" not in message
    assert not marker.exists() and tree_hash(tmp_path) == before


@pytest.mark.parametrize("command", ["speedup", "targets"])
def test_speedup_and_targets_never_overwrite_a_curve_given_as_out(tmp_path, capsys, command):
    curves = copy_curves(tmp_path / "curves")
    out = curves / "dit-s0.json"  # a run's curve given as --out by mistake
    before = tree_hash(tmp_path)
    argv = ["--curves", f"{curves}/*.json", "--out", out]
    if command == "targets":
        argv = ["--curves", curves / "dit-s0.json", curves / "dit-s1.json", "--objective", "ddpm", "--out", out]
    rc, _, err = run_cli(capsys, command, *argv)
    assert rc == 2  # before: the curve was replaced by the report
    assert_one_line_error(err, "--out", "dit-s0.json", "exists and is not")
    assert tree_hash(tmp_path) == before
    fresh = tmp_path / "report.json"
    argv[-1] = fresh
    assert run_cli(capsys, command, *argv)[0] == 0
    assert run_cli(capsys, command, *argv)[0] == 0  # its own file: replaced


def test_sample_never_overwrites_an_npz_it_did_not_write(tmp_path, capsys):
    import numpy as np

    _, run = _tiny_run(tmp_path, 2)
    reference = tmp_path / "reference.npz"  # an ADM reference batch, say, given as --out by mistake
    np.savez(reference, arr_0=np.zeros((4, 8, 8, 1), np.uint8))
    before = tree_hash(tmp_path)
    rc, _, err = run_cli(capsys, "sample", run, "--num-samples", "4", "--batch-size", "4", "--out", reference)
    assert rc == 2  # before: replaced by the samples
    assert_one_line_error(err, "--out", str(reference), "not a sample set")
    assert tree_hash(tmp_path) == before
    own = tmp_path / "samples.npz"
    for _ in range(2):  # its own sample set is replaced
        assert run_cli(capsys, "sample", run, "--num-samples", "4", "--batch-size", "4", "--out", own)[0] == 0
    assert not (tmp_path / "samples.npz.parts").exists()


def test_sample_leaves_foreign_files_in_its_batch_folder_alone(tmp_path, capsys):
    _, run = _tiny_run(tmp_path, 2)
    parts = tmp_path / "samples.npz.parts"
    parts.mkdir()
    (parts / "notes.txt").write_text("kept\n")
    before = tree_hash(tmp_path)
    out = tmp_path / "samples.npz"
    rc, _, err = run_cli(capsys, "sample", run, "--num-samples", "4", "--batch-size", "4", "--out", out)
    assert rc == 2  # before: the folder, notes and all, was deleted once the samples were assembled
    assert_one_line_error(err, str(parts), "notes.txt", "did not write")
    assert tree_hash(tmp_path) == before and not out.exists()


def test_gpu_campaign_checks_its_wheels_before_it_starts(tmp_path, capsys):
    from test_gpu import make_wheel, write_manifest

    wheels = tmp_path / "wheels"
    path = make_wheel(wheels, "repro_probe_reliability", "0.1")
    write_manifest(wheels, [(path, "repro_probe_reliability")])
    path.write_bytes(path.read_bytes() + b"\0")  # damaged after the manifest was written
    before = tree_hash(tmp_path)
    out = tmp_path / "out"
    rc, err = _gpu(capsys, "campaign", "--out", out, "--dry-run", "--wheels", wheels)
    assert rc == 2  # before: its first line clear, then a traceback, with the campaign's outputs begun
    assert_one_line_error(
        err.replace("error: ", "python -m repro.experiments.gpu: error: "), "--wheels", path.name, "sha256"
    )
    assert tree_hash(tmp_path) == before and not out.exists()


def test_a_planted_vae_weights_file_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    import logging
    import pickle
    import sys

    diffusers = pytest.importorskip("diffusers")

    from repro.cli import main

    vae = tmp_path / "vae"
    tiny = diffusers.AutoencoderKL(
        block_out_channels=(8,),
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
    )
    tiny.save_pretrained(vae, safe_serialization=False)
    marker = tmp_path / "ran"

    class Planted:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (vae / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps({"encoder.conv_in.weight": Planted()}))
    images = tmp_path / "images" / "a"
    images.mkdir(parents=True)
    before = tree_hash(tmp_path)
    # a log handler made by an earlier test keeps that test's stderr (a capture closed since): diffusers' warnings
    # would fail to print through it and logging would write its own "--- Logging error --- Traceback" here (in a
    # process of its own, as a user runs it, the handler has the live stderr)
    loggers = [logging.getLogger(), *(v for v in logging.Logger.manager.loggerDict.values() if hasattr(v, "handlers"))]
    for handler in {h for logger in loggers for h in logger.handlers}:
        if isinstance(handler, logging.StreamHandler) and getattr(handler.stream, "closed", False):
            monkeypatch.setattr(handler, "stream", sys.stderr)
            if "flush" in vars(handler):  # diffusers binds the stream's flush to its handler when it makes it
                monkeypatch.setattr(handler, "flush", sys.stderr.flush)
    rc = main(
        ["data", "latents", str(tmp_path / "images"), str(tmp_path / "out"), "--vae", str(vae), "--device", "cpu"]
    )
    err = capsys.readouterr().err
    assert rc == 2  # before: a FileNotFoundError traceback
    line = [line for line in err.splitlines() if " error: " in line]
    assert len(line) == 1 and "Traceback" not in err and str(vae) in line[0], err
    assert not marker.exists() and tree_hash(tmp_path) == before and not (tmp_path / "out").exists()


@pytest.mark.parametrize("side", ["new", "golden"])
def test_compare_names_a_point_without_its_step(tmp_path, capsys, side):
    new, golden = copy_curves(tmp_path / "new", ["dit-s0"]), copy_curves(tmp_path / "golden", ["dit-s0"])
    edit_curve((new if side == "new" else golden) / "dit-s0.json", lambda c: c["points"][1].pop("step"))
    before = tree_hash(tmp_path)
    rc, _, err = run_cli(capsys, "compare", new, golden)
    assert rc == 2  # before: KeyError 'step' (golden) or a wrong comparison
    assert_one_line_error(err, "dit-s0.json", "points[1].step=None", "integer")
    assert tree_hash(tmp_path) == before


def test_gpu_pack_without_a_registry_is_one_line(tmp_path, capsys, monkeypatch):
    import subprocess

    from repro.experiments.gpu import wheels

    def no_registry(cmd, **kwargs):  # what pip does where no index can be reached
        raise subprocess.CalledProcessError(1, cmd)

    monkeypatch.setattr(wheels.subprocess, "run", no_registry)
    dest = tmp_path / "wheels"
    rc, err = _gpu(capsys, "pack", "--dest", dest)
    assert rc == 2  # before: a CalledProcessError traceback
    assert_one_line_error(
        err.replace("error: ", "python -m repro.experiments.gpu: error: "), "pip download failed", "registry"
    )
