"""``repro campaign --status``: each run's row read from what pieces leave behind (a committed curve, pause
records, a committed resume state, the machine's store, a checkpoint in runs/), never from the code that writes
them by hand here."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from repro.experiments.campaign import Stage
from repro.experiments.progress import format_status, run_status

CMD = (
    "repro train --scale s --method tread --seed 0 --out runs/s/tread-s0 --to-target goldens/s/targets.json "
    "--curve goldens/s/runs/tread-s0.json"
)


def _point(step, fid=None, val=None):
    p = {"step": step, "seconds": step * 2.0}
    if fid is not None:
        p["fid"] = fid
    if val is not None:
        p["val_loss"] = val
    return p


def _record(root: Path, step: int, points) -> None:
    folder = root / "goldens/s/pieces"
    folder.mkdir(parents=True, exist_ok=True)
    record = {"stage": "t@tread-0", "command": CMD, "step": step, "seconds": step * 2.0, "points": points}
    record["checkpoint_sha256"] = f"sha-{step}"  # what a resume state's manifest must name to be used
    (folder / f"tread-s0-at-{step}.json").write_text(json.dumps(record))


def _checkpoint(root: Path, step: int, points) -> None:
    path = root / "runs/s/tread-s0/checkpoints/last.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"step": step, "seconds": step * 2.0, "points": json.dumps(points)}, path)


def test_a_run_reads_as_far_as_its_newest_evidence_and_says_what_the_next_piece_resumes_from(tmp_path):
    stage = Stage("t@tread-0", "tread", 0, CMD)
    store = tmp_path / "store"
    row = run_status(tmp_path, stage, done=False, store=store)
    assert (row["state"], row["step"], row["fid"]) == ("not started", 0, None)
    assert row["resumes_from"].startswith("step 0")

    # a pause record committed by an earlier piece on another machine: no state to resume from here
    _record(tmp_path, 400, [_point(250, val=0.5), _point(400, fid=30.0, val=0.4)])
    row = run_status(tmp_path, stage, done=False, store=store)
    assert (row["state"], row["step"], row["fid"], row["val_loss"]) == ("in progress", 400, (400, 30.0), (400, 0.4))
    assert row["hours"] == 400 * 2.0 / 3600 and row["source"] == "tread-s0-at-400.json"
    assert row["resumes_from"].startswith("step 0")

    # its resume state committed: a fresh machine resumes from it, if a pause record names its checkpoint
    state = tmp_path / "goldens/resume/s"
    state.mkdir(parents=True)
    (state / "tread-s0.json").write_text(json.dumps({"step": 400, "checkpoint_sha256": "sha-other"}))
    assert run_status(tmp_path, stage, done=False, store=store)["resumes_from"].startswith("step 0")
    (state / "tread-s0.json").write_text(json.dumps({"step": 400, "checkpoint_sha256": "sha-400"}))
    assert run_status(tmp_path, stage, done=False, store=store)["resumes_from"].startswith("step 0")  # no archive
    (state / "tread-s0.xz").write_bytes(b"")
    assert run_status(tmp_path, stage, done=False, store=store)["resumes_from"] == (
        "the committed resume state (step 400)"
    )

    # this machine's store holds a newer state (runs/ cleaned): the next piece here resumes from it
    kept = store / "s/tread-s0"
    (kept / "checkpoints").mkdir(parents=True)
    (kept / "checkpoints/last.pt").write_bytes(b"")
    _record(tmp_path, 550, [_point(400, fid=30.0, val=0.4), _point(500, val=0.35)])
    (kept / "state.json").write_text(json.dumps({"step": 550, "checkpoint_sha256": "sha-550"}))
    assert run_status(tmp_path, stage, done=False, store=store)["resumes_from"] == (
        "this machine's store of resume states (step 550)"
    )

    # this machine's checkpoint is further on (a run in flight): the row reads it, the older record is not used
    _checkpoint(tmp_path, 700, [_point(400, fid=30.0, val=0.4), _point(500, val=0.35), _point(700, fid=25.0)])
    row = run_status(tmp_path, stage, done=False, store=store)
    assert (row["step"], row["fid"], row["val_loss"]) == (700, (700, 25.0), (500, 0.35))
    assert row["resumes_from"] == "this machine's checkpoint (step 700)"

    # waiting for an input: said, with the progress it has
    waiting = Stage("t@tread-0", "tread", 0, CMD, waits_for=("goldens/s/targets.json",))
    assert run_status(tmp_path, waiting, done=False, store=store)["state"] == "waiting for goldens/s/targets.json"

    # done: the committed curve, whatever the machine holds
    curve = tmp_path / "goldens/s/runs/tread-s0.json"
    curve.parent.mkdir(parents=True)
    curve.write_text(json.dumps({"points": [_point(900, fid=20.0, val=0.3), _point(1000, val=0.29)]}))
    row = run_status(tmp_path, stage, done=True, store=store)
    assert (row["state"], row["step"], row["fid"], row["val_loss"]) == ("done", 1000, (900, 20.0), (1000, 0.29))

    text = format_status({"scale": "s", "targets": {"fid": 4.2, "rule": "x"}, "runs": [row]})
    assert "1 of 1 runs of scale s done" in text and "targets: fid 4.2" in text and "rule" not in text


def test_an_unreadable_checkpoint_is_a_warning_not_a_crash(tmp_path):
    stage = Stage("t@tread-0", "tread", 0, CMD)
    path = tmp_path / "runs/s/tread-s0/checkpoints/last.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    _record(tmp_path, 300, [_point(300, fid=31.0)])
    row = run_status(tmp_path, stage, done=False, store=tmp_path / "store")
    assert row["step"] == 300 and "unreadable" in row["warning"]
    assert "warning: t@tread-0:" in format_status({"scale": "s", "targets": None, "runs": [row]})
