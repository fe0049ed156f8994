"""Golden comparison: pass/fail per run, exact costs, tolerant quality."""

from __future__ import annotations

import copy
import json

import pytest

from repro.cli import main
from repro.experiments.rerun import compare_curve, compare_folders


def curve(run_id="micro-dit-s0", fids=(50.0, 20.0)):
    method, seed = run_id.split("-")[1], int(run_id.rsplit("-s", 1)[1])
    return {
        "run_id": run_id,
        "method": method,
        "seed": seed,
        "points": [
            {
                "step": 100 * (i + 1),
                "images": 6400 * (i + 1),
                "macs": 1e12 * (i + 1),
                "seconds": 10.0 * (i + 1),
                "fid": f,
                "val_loss": 0.5 / (i + 1),
            }
            for i, f in enumerate(fids)
        ],
    }


def test_identical_curves_pass_and_seconds_are_ignored():
    a = curve()
    b = copy.deepcopy(a)
    b["points"][0]["seconds"] = 99.0
    assert compare_curve(b, a, rel_tol=0, abs_tol=0) == []


def test_quality_outside_tolerance_fails_and_costs_must_be_exact():
    a = curve()
    b = curve(fids=(50.0, 23.0))
    assert compare_curve(b, a, rel_tol=0.1, abs_tol=0.0)  # 3 > 0.1 * 20
    assert compare_curve(b, a, rel_tol=0.2, abs_tol=0.0) == []
    c = copy.deepcopy(a)
    c["points"][1]["macs"] += 1
    assert any("macs" in p for p in compare_curve(c, a, rel_tol=1, abs_tol=1))
    assert compare_curve(curve(fids=(50.0,)), a, 1, 1)


def test_folders_and_command(tmp_path, capsys):
    new, gold = tmp_path / "new", tmp_path / "gold"
    new.mkdir(), gold.mkdir()
    (gold / "dit-s0.json").write_text(json.dumps(curve()))
    (gold / "sit-s0.json").write_text(json.dumps(curve("micro-sit-s0")))
    (new / "dit-s0.json").write_text(json.dumps(curve()))
    report = compare_folders(new, gold)
    assert report["micro-dit-s0"]["status"] == "pass" and report["micro-sit-s0"]["status"] == "missing"
    assert main(["compare", str(new), str(gold)]) == 1
    (new / "sit-s0.json").write_text(json.dumps(curve("micro-sit-s0")))
    assert main(["compare", str(new), str(gold)]) == 0
    assert "PASS" in capsys.readouterr().out
    with pytest.raises(SystemExit) as refused:  # a usage error: one line and exit status 2
        main(["compare", str(new), str(gold), "--rel-tol", "-1"])
    assert refused.value.code == 2


@pytest.mark.slow
def test_rerun_side_by_side_gives_the_same_numbers(tmp_path, tiny_params):
    """Two runs trained side by side (two spawned processes, one thread each) have bitwise the curves of the
    same runs trained one after the other in this process; --jobs without train.threads is refused."""
    import yaml

    from repro.config import ConfigError
    from repro.experiments.rerun import rerun

    params, path = tiny_params(steps=4, dit_model={"routes": [[0, 0, 0.5]]})
    one = rerun("tiny", tmp_path / "one", tmp_path / "gold", str(path), device="cpu", jobs=1)
    two = rerun("tiny", tmp_path / "two", tmp_path / "gold", str(path), device="cpu", jobs=2)
    assert {r["status"] for r in one.values()} == {"new"} and {r["status"] for r in two.values()} == {"pass"}
    for name in ("dit-s0", "sit-s0"):
        a = json.loads((tmp_path / "one" / "curves" / f"{name}.json").read_text())["points"]
        b = json.loads((tmp_path / "two" / "curves" / f"{name}.json").read_text())["points"]
        strip = [{k: v for k, v in p.items() if k != "seconds"} for p in a]
        assert strip == [{k: v for k, v in p.items() if k != "seconds"} for p in b]
    del params["scales"]["tiny"]["train"]["threads"]
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match="train.threads"):
        rerun("tiny", tmp_path / "three", tmp_path / "gold", str(path), device="cpu", jobs=2)


def _long_and_core():
    """A core run evaluated every 100 steps (FID at 200 and 400) and a long run of another scale, same method and
    seed, evaluated every 200 steps to 800 (FID at 200, 400 and 800, a 250-step FID beside it at 400)."""
    core = curve("micro-dit-s0", fids=(None, 30.0, None, 20.0))
    for p in core["points"]:
        if p["fid"] is None:
            del p["fid"]
    long = {**curve("micro-long-dit-s0", fids=(None,) * 8), "method": "dit", "scale": "micro-long", "complete": False}
    there = {p["step"]: p for p in core["points"]}
    long["points"] = [p for p in long["points"] if p["step"] % 200 == 0]
    for p in long["points"]:
        p.pop("fid")
        if p["step"] in there:
            p["val_loss"] = there[p["step"]]["val_loss"]
        p["seconds"] *= 3  # another grid, another clock: never compared
    long["points"][0]["fid"] = 30.0
    long["points"][1].update(fid=20.0, **{"fid@250": 15.0})
    long["points"][3]["fid"] = 11.0  # at step 800, which the core run never reached
    return long, core


def test_a_long_run_is_compared_with_the_core_run_at_the_steps_both_evaluated(tmp_path, capsys):
    long, core = _long_and_core()
    new, gold = tmp_path / "long", tmp_path / "core"
    new.mkdir(), gold.mkdir()
    (new / "dit-s0.json").write_text(json.dumps(long))
    (gold / "dit-s0.json").write_text(json.dumps(core))
    assert compare_folders(new, gold)["micro-dit-s0"]["status"] == "missing"  # run ids differ: not paired by default
    report = compare_folders(new, gold, rel_tol=0, abs_tol=0, common=True)["micro-dit-s0"]
    assert report["status"] == "pass", report["problems"]
    assert report["steps"] == [200, 400]  # 600 and 800: the core run has none; 100 and 300: the long run has none
    assert report["gap"]["compared"] == 4  # val_loss and FID at 200 and 400 (not the long run's fid@250)
    assert main(["compare", str(new), str(gold), "--common-steps", "--rel-tol", "0", "--abs-tol", "0"]) == 0
    assert "2 steps both evaluated (200..400)" in capsys.readouterr().out

    long["points"][1]["val_loss"] += 1e-9  # one value off at a common step fails with zero tolerance
    (new / "dit-s0.json").write_text(json.dumps(long))
    problems = compare_folders(new, gold, rel_tol=0, abs_tol=0, common=True)["micro-dit-s0"]["problems"]
    assert problems and "step 400: val_loss" in problems[0]


def test_common_steps_pairs_by_method_and_seed_and_fails_without_a_common_step(tmp_path):
    long, core = _long_and_core()
    new, gold = tmp_path / "long", tmp_path / "core"
    new.mkdir(), gold.mkdir()
    other = {**long, "run_id": "micro-long-dit-s1", "seed": 1}
    (new / "dit-s1.json").write_text(json.dumps(other))
    (gold / "dit-s0.json").write_text(json.dumps(core))
    assert compare_folders(new, gold, common=True)["micro-dit-s0"]["status"] == "missing"  # another seed
    for p in long["points"]:
        p["step"] += 50
    (new / "dit-s0.json").write_text(json.dumps(long))
    report = compare_folders(new, gold, common=True)["micro-dit-s0"]
    assert report["status"] == "fail" and report["problems"] == ["no evaluated step in common"]


def _committed(pattern, name, none):
    """One test parameter per committed file matching ``pattern`` (ids from ``name``), or one skip saying ``none``."""
    from pathlib import Path

    found = sorted(Path(__file__).resolve().parents[1].glob(pattern))
    return [pytest.param(p, id=name(p)) for p in found] or [pytest.param(None, marks=pytest.mark.skip(reason=none))]


def _paused_records():
    return _committed(
        "goldens/*/pieces/*-at-*.json",
        lambda p: f"{p.parent.parent.name}/{p.stem}",
        "no record of a paused run is committed yet",
    )


@pytest.mark.parametrize("record", _paused_records())
def test_a_finished_run_repeats_what_the_records_of_its_paused_pieces_hold(record):
    """A long run paused by a piece left a record of its curve so far (repro.experiments.pieces); once the run is
    committed, every recorded point is on its curve and, up to the first point computed on another CPU model in
    one of the two, its validation loss is bitwise the same (whether the run was resumed from that checkpoint or, on
    a fresh machine, re-made from step 0)."""
    from pathlib import Path

    from repro.experiments.pieces import compare_points, run_files

    root = Path(__file__).resolve().parents[1]
    rec = json.loads(record.read_text())
    files = run_files(rec["command"])
    assert files is not None, f"{record.name}: its command names no --out and --curve"
    curve_path = root / files[1]
    if not curve_path.exists():
        pytest.skip(f"{files[1]} is not committed yet: the run is still in pieces")
    final = json.loads(curve_path.read_text())
    c = compare_points(rec["points"], final["points"])
    assert c["common_steps"] == len(rec["points"]), f"{record.name}: recorded steps missing from {files[1]}"
    # bitwise where both were computed on the same machines all along: the steps up to the first whose device (each
    # point names its CPU model; a run resumed on another machine changes it) differs between the record and the run
    by_step = {p["step"]: p for p in final["points"]}
    same = []
    for point in sorted(rec["points"], key=lambda p: p["step"]):
        if not point.get("device") or by_step[point["step"]].get("device") != point["device"]:
            break
        same.append(point)
    if not same:
        pytest.skip(f"{record.name} and {files[1]} were computed on different CPU models: not bitwise comparable")
    c = compare_points(same, final["points"])
    assert c["val_loss"]["bitwise"], f"{record.name}: {c}"
    assert c["fid"]["max_rel_diff"] < 1e-6, f"{record.name}: {c}"


def _resume_states():
    return _committed(
        "goldens/resume/*/*.json",
        lambda p: f"{p.parent.name}/{p.stem}",
        "no resume state is committed (no long run is paused)",
    )


@pytest.mark.parametrize("manifest_path", _resume_states())
def test_a_committed_resume_state_is_whole_and_is_a_recorded_pause_of_an_unfinished_run(manifest_path):
    """A paused long run's committed resume state (repro.experiments.resume): its archive is the one its manifest
    hashed, its checkpoint is one that a pause record of the same run names, and the run is not finished (a
    finished run's state is removed by the campaign; a stale one would only weigh on every clone)."""
    import hashlib
    from pathlib import Path

    from repro.experiments.pieces import records_of, run_files

    root = Path(__file__).resolve().parents[1]
    manifest = json.loads(manifest_path.read_text())
    archive = manifest_path.with_suffix(".xz")
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == manifest["archive_sha256"], archive.name
    records = {rec["checkpoint_sha256"]: rec["step"] for _, rec in records_of(root, manifest["command"])}
    assert records.get(manifest["checkpoint_sha256"]) == manifest["step"], f"{manifest_path.name}: no such pause"
    assert not (root / run_files(manifest["command"])[1]).exists(), f"{manifest_path.name}: the run is finished"


def _long_dit_curves():
    return _committed("goldens/micro-long/runs/dit-s[0-9]*.json", lambda p: p.stem, "no DiT long run is committed yet")


@pytest.mark.parametrize("long_curve", _long_dit_curves())
def test_a_dit_long_run_repeats_its_core_run_over_the_core_budget(long_curve):
    """Seeds 0-2 of micro-long repeat the core micro runs' data order and noise with the same model, optimiser and
    thread count, so a committed DiT long run's first 3,000 steps are its core run's: at every step both evaluated
    the validation loss is bitwise the same on the same CPU model (the FID's linear algebra may differ in its last
    bits across CPU models, as may the whole run)."""
    from pathlib import Path

    from repro.experiments.pieces import compare_points

    long = json.loads(long_curve.read_text())
    core_path = Path(long_curve).parents[2] / "micro" / "runs" / long_curve.name
    core = json.loads(core_path.read_text())
    c = compare_points(core["points"], long["points"])
    assert c["common_steps"] >= 6, c  # FID at 500 ... 3,000 in both
    cpu = long["provenance"]["device"]
    if cpu != core["provenance"]["device"]:
        pytest.skip(f"{long_curve.name}: the long run ran on {cpu}, the core run on {core['provenance']['device']}")
    assert c["val_loss"]["bitwise"], c
