"""Speedup statistics: cost to target, targets, bootstrap, the MLPerf-style t-test, report, plot and command line."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from repro import cli
from repro.speedup import (
    ONE_SEED_NOTE,
    bootstrap_ratio_ci,
    compare,
    cost_to_target,
    late_slope,
    metric_at_cost,
    olympic,
    p_value_speedup_ge,
    plot_curves,
    round_floats,
    speedup_report,
    targets_from_baseline,
)


def log_linear_curve(run_id, method, seed, steps, a, b, step_cost=1.0, scale="micro"):
    """fid = a - b * log10(step), with every cost unit proportional to the step count."""
    points = [
        {
            "step": s,
            "images": 64 * s,
            "macs": 1e9 * step_cost * s,
            "seconds": 0.5 * step_cost * s,
            "fid": a - b * math.log10(s),
            "val_loss": 0.5 - 0.01 * math.log10(s),
        }
        for s in steps
    ]
    return {"run_id": run_id, "method": method, "seed": seed, "scale": scale, "provenance": {}, "points": points}


def scaled(curve, factor, method=None, run_id=None):
    """The same curve with every cost multiplied by ``factor``."""
    pts = [{**p, **{f: p[f] * factor for f in ("step", "images", "macs", "seconds")}} for p in curve["points"]]
    return {**curve, "points": pts, "method": method or curve["method"], "run_id": run_id or curve["run_id"]}


STEPS = [100, 200, 400, 800, 1600, 3200, 6400]


# ---------------------------------------------------------------------------------------------------------------------
# cost_to_target


@given(
    a=st.floats(30, 120, allow_subnormal=False),
    b=st.floats(1, 25, allow_subnormal=False),
    costs=st.lists(st.floats(1.0, 1e7, allow_subnormal=False), min_size=2, max_size=12, unique=True).map(sorted),
    where=st.floats(0.0, 1.0, allow_subnormal=False),
)
def test_crossing_is_exact_when_metric_is_linear_in_log_cost(a, b, costs, where):
    if costs[-1] / costs[0] < 1.01:
        costs = [costs[0], costs[0] * 2]
    pts = [{"step": c, "fid": a - b * math.log10(c)} for c in costs]
    lo, hi = pts[-1]["fid"], pts[0]["fid"]
    target = lo + where * (hi - lo)
    expected = 10 ** ((a - target) / b)
    assert cost_to_target(pts, target, "iterations") == pytest.approx(expected, rel=1e-9)


def test_crossing_uses_the_first_bracket_and_interpolates_in_log_cost():
    pts = [
        {"step": 10, "fid": 50.0},
        {"step": 1000, "fid": 30.0},
        {"step": 2000, "fid": 45.0},
        {"step": 4000, "fid": 20.0},
    ]
    # halfway in metric between 10 and 1000 is halfway in log10: 10**2 = 100 (linear interpolation would give 505)
    assert cost_to_target(pts, 40.0, "iterations") == pytest.approx(100.0, rel=1e-12)
    # 30 is first met at step 1000, even though the curve later rises above it again
    assert cost_to_target(pts, 30.0, "iterations") == pytest.approx(1000.0)


def test_first_point_already_meeting_the_target_returns_its_cost():
    pts = [{"step": 250, "fid": 10.0}, {"step": 500, "fid": 8.0}]
    assert cost_to_target(pts, 12.0, "iterations") == 250.0
    assert cost_to_target([{"step": 250, "fid": 10.0}, {"step": 500, "fid": 14.0}], 12.0, "iterations") == 250.0


def test_not_reached_is_none():
    pts = [{"step": 250, "fid": 60.0}, {"step": 500, "fid": 40.0}, {"step": 1000, "fid": 30.5}]
    assert cost_to_target(pts, 30.0, "iterations") is None


def test_points_without_the_metric_or_at_zero_cost_are_skipped():
    pts = [
        {"step": 0, "fid": 1.0, "val_loss": 0.9},
        {"step": 100, "fid": 50.0, "val_loss": 0.5},
        {"step": 200, "val_loss": 0.4},
        {"step": 400, "fid": None, "val_loss": 0.3},
        {"step": 800, "fid": 30.0},
    ]
    assert cost_to_target(pts, 40.0, "iterations") == pytest.approx(math.sqrt(100 * 800))
    assert cost_to_target(pts, 0.4, "iterations", metric="val_loss") == pytest.approx(200.0)


@given(c=st.floats(1e-3, 1e3, allow_subnormal=False), target=st.floats(32.5, 55.0, allow_subnormal=False))
def test_scaling_the_cost_scales_the_cost_to_target(c, target):
    curve = log_linear_curve("r", "dit", 0, STEPS, 70.0, 10.0)
    base = cost_to_target(curve["points"], target, "macs")
    assert base is not None
    assert cost_to_target(scaled(curve, c)["points"], target, "macs") == pytest.approx(c * base, rel=1e-9)


@pytest.mark.parametrize(
    ("points", "unit", "metric", "match"),
    [
        ([{"step": 1, "fid": 3.0}], "furlongs", "fid", r"unit='furlongs'.*iterations, images, macs, seconds"),
        ([{"step": 1, "fid": 3.0}], "iterations", "precision", r"metric='precision'.*fid"),
        ([{"step": 2, "fid": 3.0}, {"step": 2, "fid": 2.0}], "iterations", "fid", r"step=2.0 does not increase"),
        ([{"step": 3, "fid": 3.0}, {"step": 2, "fid": 2.0}], "iterations", "fid", r"strictly increasing"),
        ([{"step": 1, "fid": float("nan")}], "iterations", "fid", r"fid=nan must be finite"),
        ([{"step": -1, "fid": 3.0}], "iterations", "fid", r"step=-1.0 must be finite and >= 0"),
        ([{"images": 1, "fid": 3.0}], "iterations", "fid", r"points\[0\] has no field 'step'"),
        ([{"step": "ten", "fid": 3.0}], "iterations", "fid", r"must be numbers"),
        ([{"step": 1}], "iterations", "fid", r"no point has both"),
        ("not points", "iterations", "fid", r"points must be a list"),
    ],
)
def test_bad_input_is_a_value_error_naming_field_and_value(points, unit, metric, match):
    with pytest.raises(ValueError, match=match):
        cost_to_target(points, 1.0, unit, metric)


def test_non_finite_target_is_rejected():
    with pytest.raises(ValueError, match="target=inf"):
        cost_to_target([{"step": 1, "fid": 3.0}], float("inf"), "iterations")


# ---------------------------------------------------------------------------------------------------------------------
# Targets and late slope


def test_targets_are_seed_means_of_final_and_one_third_of_budget():
    steps = [100, 500, 1000, 2000, 3000]
    curves = [log_linear_curve("d0", "dit", 0, steps, 80.0, 10.0), log_linear_curve("d1", "dit", 1, steps, 84.0, 12.0)]
    t = targets_from_baseline(curves, "fid", "iterations")
    # 1/3 of 3000 is an evaluation point, so the "third" value is exact
    assert t["third"] == pytest.approx(np.mean([80 - 10 * 3, 84 - 12 * 3]))
    assert t["final"] == pytest.approx(np.mean([80 - 10 * math.log10(3000), 84 - 12 * math.log10(3000)]))


def test_third_target_interpolates_between_evaluations_in_log_cost():
    curve = log_linear_curve("d0", "dit", 0, [100, 2000, 6000], 80.0, 10.0)
    # metric is linear in log10(step) so interpolation at 2000 (= 6000/3) between 100 and 6000 is exact anyway;
    # remove the 2000 point to force interpolation between 100 and 6000
    curve["points"] = [curve["points"][0], curve["points"][2]]
    t = targets_from_baseline([curve])
    assert t["third"] == pytest.approx(80 - 10 * math.log10(2000), rel=1e-12)


def test_third_target_needs_an_early_evaluation():
    curve = log_linear_curve("d0", "dit", 0, [2500, 3000], 80.0, 10.0)
    with pytest.raises(ValueError, match="'third' target needs an earlier one"):
        targets_from_baseline([curve])


def test_metric_at_cost_does_not_extrapolate():
    with pytest.raises(ValueError, match="no extrapolation"):
        metric_at_cost([{"step": 10, "fid": 5.0}, {"step": 20, "fid": 4.0}], 30, "iterations")


@given(b=st.floats(0.5, 30, allow_subnormal=False), c=st.floats(1e-3, 1e6, allow_subnormal=False))
def test_late_slope_recovers_slope_per_decade_and_ignores_cost_scale(b, c):
    curve = log_linear_curve("r", "dit", 0, STEPS, 90.0, b)
    assert late_slope(curve["points"], "iterations") == pytest.approx(-b, rel=1e-9)
    assert late_slope(scaled(curve, c)["points"], "macs") == pytest.approx(-b, rel=1e-9)


def test_late_slope_sees_a_plateau_and_uses_only_the_last_third():
    steps = list(range(100, 3100, 100))
    pts = [
        {"step": s, "fid": 40.0 - 20 * math.log10(s / 100) if s < 2000 else 40.0 - 20 * math.log10(20)} for s in steps
    ]
    # last third of [100, 3000] starts at 2033: only the flat part
    assert late_slope(pts, "iterations") == pytest.approx(0.0, abs=1e-12)
    assert late_slope(pts, "iterations", fraction=1.0) < -5
    assert late_slope([{"step": 1, "fid": 2.0}], "iterations") is None
    with pytest.raises(ValueError, match="fraction"):
        late_slope(pts, "iterations", fraction=0.0)


# ---------------------------------------------------------------------------------------------------------------------
# Ratio, bootstrap, t-test, censoring


def test_olympic_trims_only_at_five_or_more():
    assert list(olympic([3, 1, 2, 4])) == [1, 2, 3, 4]
    assert list(olympic([5, 1, 3, 2, 4])) == [2, 3, 4]


def test_exactly_k_times_cheaper_gives_ratio_k_with_k_inside_the_interval():
    k = 3.5
    base = [log_linear_curve(f"d{s}", "dit", s, STEPS, 70.0 + 3 * s, 10.0 + s) for s in range(3)]
    fast = [scaled(c, 1 / k, method="tread", run_id=f"t{c['seed']}") for c in base]
    rep = speedup_report(base + fast, ks=(k,))
    for unit in ("iterations", "images", "macs", "seconds"):
        r = rep["unit_results"]["tread"]["third"][unit]
        assert r["ratio"] == pytest.approx(k, rel=1e-9)
        assert r["ci_low"] <= k <= r["ci_high"]
        assert r["reached"] == "3/3" and r["seeds"] == 3 and r["status"] == "ok"


@given(c=st.floats(0.05, 20.0, allow_subnormal=False))
def test_scaling_a_methods_cost_scales_its_speedup_by_the_inverse(c):
    base = [log_linear_curve(f"d{s}", "dit", s, STEPS, 70.0 + s, 10.0) for s in range(2)]
    meth = [log_linear_curve(f"t{s}", "tread", s, STEPS, 66.0 + s, 11.0, step_cost=0.6) for s in range(2)]
    r1 = speedup_report(base + meth, units=("macs",), n_boot=200)["unit_results"]["tread"]["third"]["macs"]
    meth_c = [scaled(m, c) for m in meth]
    r2 = speedup_report(base + meth_c, units=("macs",), n_boot=200)["unit_results"]["tread"]["third"]["macs"]
    assert r2["ratio"] == pytest.approx(r1["ratio"] / c, rel=1e-9)
    assert r2["ci_low"] == pytest.approx(r1["ci_low"] / c, rel=1e-9)


def test_bootstrap_is_reproducible_and_depends_on_its_seed():
    b, m = [3000.0, 3310.0, 2870.0, 3120.0, 2990.0, 3400.0], [1000.0, 1230.0, 950.0, 1110.0, 1070.0, 990.0]
    assert bootstrap_ratio_ci(b, m) == bootstrap_ratio_ci(b, m)
    assert bootstrap_ratio_ci(b, m, n_boot=999, seed=1) != bootstrap_ratio_ci(b, m, n_boot=999, seed=0)
    lo, hi = bootstrap_ratio_ci(b, m)
    assert lo < np.mean(b) / np.mean(m) < hi


def test_t_test_accepts_and_rejects_on_a_clear_threefold_speedup():
    rng = np.random.default_rng(7)
    b = 3000.0 * (1 + 0.03 * rng.standard_normal(5))
    m = 1000.0 * (1 + 0.03 * rng.standard_normal(5))
    r = compare(list(b), list(b), list(m), ks=(2.0, 3.0, 4.0))
    assert r["p_value_ge_k"]["2.0"] < 0.05 and r["ge_k"]["2.0"] is True
    assert r["p_value_ge_k"]["4.0"] > 0.05 and r["ge_k"]["4.0"] is False
    assert 0.01 < r["p_value_ge_k"]["3.0"] < 0.99
    assert r["ci_low"] < 3.0 < r["ci_high"]


def test_t_test_is_welch_on_method_against_baseline_over_k():
    b, m = [10.0, 12.0, 11.0], [3.0, 5.0, 4.5, 4.0]
    from scipy import stats

    expected = stats.ttest_ind(m, np.asarray(b) / 2, equal_var=False, alternative="less").pvalue
    assert p_value_speedup_ge(b, m, 2.0) == pytest.approx(expected)
    assert p_value_speedup_ge([6.0, 6.0], [2.0, 2.0], 2.0) == 0.0
    assert p_value_speedup_ge([6.0, 6.0], [4.0, 4.0], 2.0) == 1.0


def test_olympic_trimming_drops_an_outlier_seed_at_five_seeds_only():
    b = [3000.0, 3100.0, 2900.0, 3050.0, 2950.0]
    m5 = [1000.0, 1010.0, 990.0, 1005.0]
    slow, slower = compare(b, b, m5 + [1e4]), compare(b, b, m5 + [1e9])
    assert slow["ratio"] == slower["ratio"] == pytest.approx(np.mean([3000, 3050, 2950]) / np.mean([1000, 1005, 1010]))
    assert slow["ge_k"]["1.0"] is True
    m4 = [1000.0, 1010.0, 990.0]
    assert compare(b[:4], b[:4], m4 + [1e4])["ratio"] != pytest.approx(compare(b[:4], b[:4], m4 + [1e9])["ratio"])


def test_one_unreached_seed_is_trimmed_away_at_five_seeds_but_not_at_four():
    b = [3000.0, 3100.0, 2900.0, 3050.0, 2950.0]
    m = [1000.0, 1010.0, 990.0, 1005.0, None]
    five = compare(b, b, m)
    assert five["ratio"] is not None and five["reached"] == "4/5" and "not reached by 1 of 5" in five["status"]
    four = compare(b[:4], b[:4], m[1:])
    assert four["ratio"] is None and four["ci_low"] is None and four["p_value_ge_k"]["1.0"] is None
    assert four["ge_k"]["1.0"] is False and four["status"] == "not reached by 1 of 4 seeds"


def test_unreached_baseline_seed_counts_at_its_budget_and_all_unreached_is_null():
    r = compare([3000.0, None], [3500.0, 4000.0], [900.0, 1100.0])
    assert r["ratio"] == pytest.approx(3500.0 / 1000.0) and r["baseline_reached"] == "1/2"
    none = compare([None, None], [3500.0, 4000.0], [900.0, 1100.0])
    assert none["ratio"] is None and none["ge_k"]["1.0"] is None and "0 of 2" in none["status"]


def test_one_seed_is_a_data_point_not_a_verdict():
    r = compare([3000.0], [3000.0], [1000.0], ks=(1.0, 2.0))
    assert r["ratio"] == pytest.approx(3.0)
    assert r["ci_low"] is None and r["ci_high"] is None
    assert r["p_value_ge_k"] == {"1.0": None, "2.0": None} and r["ge_k"] == {"1.0": None, "2.0": None}
    assert r["status"] == ONE_SEED_NOTE


# ---------------------------------------------------------------------------------------------------------------------
# Report, plot, command line


def micro_curves():
    base = [log_linear_curve(f"micro-dit-s{s}", "dit", s, STEPS, 70.0 + s, 10.0) for s in range(2)]
    tread = [log_linear_curve(f"micro-tread-s{s}", "tread", s, STEPS, 62.0 + s, 12.0, step_cost=0.6) for s in range(2)]
    sit = [log_linear_curve("micro-sit-s0", "sit", 0, STEPS[:4], 90.0, 2.0)]
    return base + tread + sit


def test_report_shape_and_dotted_paths():
    rep = speedup_report(micro_curves(), ks=(1.0, 2.0))
    json.dumps(round_floats(rep), allow_nan=False)
    assert rep["scale"] == "micro" and rep["baseline"] == "dit" and rep["metric"] == "fid"
    assert set(rep["targets"]) == {"final", "third"}
    assert rep["run_ids"] == [r["run_id"] for r in rep["runs"]]
    assert {r["run_id"] for r in rep["runs"]} == {c["run_id"] for c in micro_curves()}
    run = next(r for r in rep["runs"] if r["run_id"] == "micro-tread-s1")
    assert set(run) >= {"run_id", "method", "seed", "final_metric", "cost"}
    assert set(run["cost"]) == {"iterations", "images", "macs", "seconds"}
    assert set(run["cost"]["macs"]) == {"final", "third"}
    assert set(rep["late_slope"]) == {"dit", "tread", "sit"}
    assert rep["late_slope"]["tread"]["mean"] == pytest.approx(-12.0)
    assert rep["late_slope"]["sit"]["std"] is None
    assert set(rep["unit_results"]) == {"tread", "sit"}
    r = rep["unit_results"]["tread"]["final"]["seconds"]
    assert set(r) >= {"ratio", "ci_low", "ci_high", "seeds", "reached", "p_value_ge_k", "ge_k"}
    assert set(r["p_value_ge_k"]) == {"1.0", "2.0"}
    assert rep["unit_results"]["sit"]["final"]["iterations"]["ratio"] is None
    assert rep["unit_results"]["sit"]["final"]["iterations"]["reached"] == "0/1"


def test_routing_cheaper_steps_show_up_only_in_cost_units_other_than_iterations():
    rep = speedup_report(micro_curves())
    res = rep["unit_results"]["tread"]["third"]
    assert res["macs"]["ratio"] == pytest.approx(res["iterations"]["ratio"] / 0.6, rel=1e-9)
    assert res["images"]["ratio"] == pytest.approx(res["iterations"]["ratio"], rel=1e-9)


def test_report_validates_its_inputs():
    curves = micro_curves()
    with pytest.raises(ValueError, match="baseline='uvit' has no curve"):
        speedup_report(curves, baseline="uvit")
    with pytest.raises(ValueError, match="seed=0 appears twice"):
        speedup_report(curves + [dict(curves[0], run_id="copy")])
    with pytest.raises(ValueError, match="different scales"):
        speedup_report(curves + [log_linear_curve("x", "sd", 0, STEPS, 70.0, 10.0, scale="small")])
    with pytest.raises(ValueError, match="unit='hours'"):
        speedup_report(curves, units=("hours",))
    with pytest.raises(ValueError, match="has no field 'points'"):
        speedup_report([{"run_id": "x", "method": "dit", "seed": 0}])
    with pytest.raises(ValueError, match="ks="):
        speedup_report(curves, ks=(0.0,))


def test_report_on_validation_loss():
    rep = speedup_report(micro_curves(), metric="val_loss", units=("iterations",))
    assert rep["metric"] == "val_loss"
    assert rep["targets"]["final"] == pytest.approx(0.5 - 0.01 * math.log10(6400))


def test_plot_is_a_png_written_atomically(tmp_path):
    out = tmp_path / "sub" / "fid_vs_cost.png"
    plot_curves(micro_curves(), "macs", out, targets={"final": 30.0})
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["fid_vs_cost.png"]
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
    with pytest.raises(ValueError, match="unit='hours'"):
        plot_curves(micro_curves(), "hours", tmp_path / "x.png")


def test_cli_with_glob_and_run_directories(tmp_path, capsys):
    assert cli.COMMANDS["speedup"] == "repro.speedup:register_cli"
    runs = tmp_path / "runs" / "micro"
    for c in micro_curves():
        (runs / c["run_id"]).mkdir(parents=True)
        (runs / c["run_id"] / "curve.json").write_text(json.dumps(c))
    out, png = tmp_path / "goldens" / "speedup.json", tmp_path / "goldens" / "fid_vs_cost.png"
    rc = cli.main(
        [
            "speedup",
            "--curves",
            str(runs / "micro-dit-*" / "curve.json"),
            str(runs / "micro-tread-s0"),
            str(runs / "micro-tread-s1"),
            "--baseline",
            "dit",
            "--out",
            str(out),
            "--plot",
            str(png),
            "--resamples",
            "500",
            "--k",
            "1",
            "1.5",
        ]
    )
    assert rc == 0
    rep = json.loads(out.read_text())
    assert rep["run_ids"] == ["micro-dit-s0", "micro-dit-s1", "micro-tread-s0", "micro-tread-s1"]
    assert [i["run_id"] for i in rep["inputs"]] == rep["run_ids"]
    assert rep["unit_results"]["tread"]["third"]["macs"]["ge_k"]["1.5"] in (True, False)
    assert rep["bootstrap"]["resamples"] == 500
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "tread vs dit" in capsys.readouterr().out


def test_cli_reports_bad_input_with_exit_code_2(tmp_path, capsys):
    rc = cli.main(["speedup", "--curves", str(tmp_path / "nothing" / "*.json"), "--out", str(tmp_path / "o.json")])
    assert rc == 2 and "matches no file" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{")
    rc = cli.main(["speedup", "--curves", str(tmp_path / "bad.json"), "--out", str(tmp_path / "o.json")])
    assert rc == 2 and "not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()


def test_round_floats_keeps_six_significant_digits_and_rejects_non_finite():
    assert round_floats({"a": [1.23456789e13, 0.000123456789, 3]}) == {"a": [1.23457e13, 0.000123457, 3]}
    with pytest.raises(ValueError, match="non-finite"):
        round_floats(float("inf"))
