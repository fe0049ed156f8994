"""The bad-input catalogue of the readers and the newer commands (summary, speedup, rerun, ledger, sample,
campaign, the GPU module): each case feeds one bad input and checks its outcome (the exit code and the one-line
error naming the file, the field and the value) and that every file already there is unchanged (by hash).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from test_reliability import ROOT, assert_one_line_error, copy_curves, run_cli, tree_hash

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
