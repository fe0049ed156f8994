"""The main job's declared re-check subset (repro/experiments/recheck.py) and what a re-check reports."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

from repro.build import resolve
from repro.config import ConfigError, load_params
from repro.experiments.recheck import MEMBERS, POINTS, SEED, uncovered
from repro.experiments.rerun import Progress, describe_gap, largest_gap, prefix_config, print_report

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def params():
    return load_params(ROOT / "params.yaml")


@pytest.mark.slow
def test_the_micro_subset_runs_every_code_path_of_the_micro_methods(params):
    """Each objective, routing, block variant and initialisation a micro method uses is run by a member: a method
    that brings a new variant fails here until the subset gets a member for it (with its reason)."""
    assert uncovered(params, "micro") == {}
    assert set(MEMBERS["micro"]) <= set(params["scales"]["micro"]["methods"])
    assert all(len(why) > 20 for why in MEMBERS["micro"].values())  # each member says why it is there
    golden = ROOT / "goldens" / "micro" / "runs"
    for method in MEMBERS["micro"]:  # a member the main job could not compare would check nothing
        points = json.loads((golden / f"{method}-s{SEED}.json").read_text())["points"]
        assert len(points) >= POINTS


@pytest.mark.slow
@pytest.mark.parametrize(
    "model, objective, path",
    [
        ({"learn_sigma": True, "qk_norm": True}, {"name": "ddpm"}, "model.qk_norm=True"),
        ({"learn_sigma": True, "conditioning": "adaln-single"}, {"name": "ddpm"}, "model.conditioning='adaln-single'"),
        ({"learn_sigma": False}, {"name": "interpolant", "path": "gvp"}, "objective.path='gvp'"),
    ],
)
def test_a_new_variant_without_a_member_is_named(params, model, objective, path):
    p = copy.deepcopy(params)
    p["methods"]["new-variant"] = {"objective": objective, "model": model}
    p["scales"]["micro"]["methods"].append("new-variant")
    resolve(p, "micro", "new-variant", SEED)  # a valid method: only its coverage is missing
    assert uncovered(p, "micro") == {path: ["new-variant"]}


@pytest.mark.slow
@pytest.mark.parametrize("member, name", [("dit-dispersive", "dispersive"), ("dit-sra", "sra")])
def test_each_regularizer_is_a_code_path_of_its_own(params, monkeypatch, member, name):
    """A regularizer is a loss term and a forward of its own (its weight or temperature is only a number): without
    its member no other member runs it, and post-norm DiT with the same regularizer is covered by the two members."""
    members = {m: why for m, why in MEMBERS["micro"].items() if m != member}
    monkeypatch.setitem(MEMBERS, "micro", members)
    assert uncovered(params, "micro") == {f"regularizer.name={name!r}": [member]}
    monkeypatch.undo()
    p = copy.deepcopy(params)
    p["methods"]["post-norm-reg"] = {**copy.deepcopy(p["methods"]["post-norm"]), "regularizer": {"name": name}}
    p["scales"]["micro"]["methods"].append("post-norm-reg")
    resolve(p, "micro", "post-norm-reg", SEED)
    assert uncovered(p, "micro") == {}


@pytest.mark.slow
def test_dropping_a_member_uncovers_its_code_path(params, monkeypatch):
    members = dict(MEMBERS["micro"])
    del members["tread-xavier"]
    monkeypatch.setitem(MEMBERS, "micro", members)
    assert uncovered(params, "micro") == {"model.init='xavier'": ["tread-xavier"]}
    monkeypatch.setitem(MEMBERS, "micro", {**members, "no-such-method": "a typo"})
    with pytest.raises(ValueError, match="no-such-method"):
        uncovered(params, "micro")


def _curve(vals, fids=None):
    fids = fids or [None] * len(vals)
    points = []
    for i, (v, f) in enumerate(zip(vals, fids)):
        pt = {"step": 100 * (i + 1), "images": 0, "macs": 0, "val_loss": v, "seconds": 10.0 * (i + 1)}
        if f is not None:
            pt["fid"] = f
        points.append(pt)
    return {"points": points}


def test_the_largest_gap_and_the_share_of_the_tolerance_it_used():
    golden = _curve([1.0, 0.5], [None, 20.0])
    same = largest_gap(golden, golden, 1e-3, 1e-4)
    assert same == {"compared": 3, "equal": 3, "rel": 0.0, "at": "val_loss @ step 100", "used": 0.0}
    assert describe_gap(same) == "3 values compared, all bitwise equal"
    new = _curve([1.0, 0.5002], [None, 20.001])
    gap = largest_gap(new, golden, 1e-3, 1e-4)
    assert gap["compared"] == 3 and gap["equal"] == 1 and gap["at"] == "val_loss @ step 200"
    assert math.isclose(gap["rel"], 4e-4) and math.isclose(gap["used"], 0.4)  # 2e-4 of a 5e-4 tolerance
    assert "largest relative gap 0.0004 (val_loss @ step 200), 40% of the tolerance" in describe_gap(gap)
    assert largest_gap(new, golden, 1e-3, 1e-4, points=1)["compared"] == 1  # the prefix only
    assert largest_gap(new, golden, 0, 0)["used"] == math.inf  # any gap uses all of a zero tolerance


def test_the_report_prints_each_runs_gap(capsys):
    golden = _curve([1.0, 0.5])
    new = _curve([1.0, 0.50001])
    print_report({"micro-dit-s0": {"status": "pass", "problems": [], "gap": largest_gap(new, golden, 1e-3, 1e-4)}})
    out = capsys.readouterr().out
    assert out.startswith("micro-dit-s0  PASS  2 values compared (1 bitwise equal); largest relative gap 2e-05")


def test_a_prefix_computes_sample_quality_only_where_the_golden_has_some(params):
    cfg = resolve(params, "micro", "dit", 0)
    assert cfg.eval.metrics
    prefixed, seconds = prefix_config(cfg, _curve([1.0, 0.5, 0.3], [None, None, 20.0]), 2)
    assert seconds == 20.0
    assert prefixed.train.steps == 200 and prefixed.eval.metrics == ()
    assert cfg.train.steps != 200 and cfg.eval.metrics  # the resolved config is left as it was
    cfg, _ = prefix_config(cfg, _curve([1.0, 0.5, 0.3], [None, None, 20.0]), 3)
    assert cfg.train.steps == 300 and cfg.eval.metrics == tuple(params["scales"]["micro"]["eval"]["metrics"])


def test_progress_lines_say_elapsed_and_left():
    lines, now = [], [0.0]
    progress = Progress([100.0, 100.0, 200.0], jobs=2, log=lines.append)
    progress.clock = lambda: now[0]
    progress.t0 = 0.0
    progress.start(0, "a")
    progress.start(1, "b")
    # before any run finished: the goldens' times, 400 s of work over 2 runs side by side
    assert lines[0] == "[1/3] started a (expected about 1.7 min); 0/3 done, 0.0 min elapsed, left: about 3.3 min"
    now[0] = 150.0
    progress.finish(0, "a")  # runs are now expected to take what the finished ones took: 150 s
    assert lines[-1] == "[1/3] finished a in 2.5 min; 1/3 done, 2.5 min elapsed, left: about 1.2 min"
    progress.start(2, "c")  # b has 0 s of its 150 left, c all 150: over 2 side by side, 75 s
    assert lines[-1] == "[3/3] started c (expected about 2.5 min); 1/3 done, 2.5 min elapsed, left: about 1.2 min"
    now[0] = 200.0
    progress.finish(1, "b")
    assert lines[-1].endswith("2/3 done, 3.3 min elapsed, left: about 2.1 min")  # c: 175 s, 50 s of them done
    assert Progress([None], 1, lines.append).left() is None  # no golden and nothing finished: unknown


def test_rerun_keeps_the_methods_asked_for(tmp_path, tiny_params):
    from repro.experiments.rerun import rerun

    _, path = tiny_params(steps=2)
    report = rerun("tiny", tmp_path / "out", tmp_path / "gold", str(path), device="cpu", methods=["sit"])
    assert list(report) == ["tiny-sit-s0"]
    with pytest.raises(ConfigError, match="--methods: 'tread' is not a method of scale tiny"):
        rerun("tiny", tmp_path / "x", tmp_path / "gold", str(path), device="cpu", methods=["tread"])
