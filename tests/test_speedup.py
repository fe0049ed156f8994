"""Speedup statistics: cost to target, targets, t-interval and tests on log cost, censoring, report, plot, CLI."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from repro import cli
from repro.evidence.speedup import (
    ONE_SEED_NOTE,
    compare,
    cost_to_target,
    detectable_shift,
    gate_from_reference,
    late_slope,
    log_ratio_interval,
    metric_at_cost,
    p_value_speedup,
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
DENSE = list(range(100, 6500, 100))  # 22 evaluations in the last third


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


def test_targets_are_the_least_demanding_final_value_and_the_seed_mean_at_a_third_of_the_budget():
    steps = [100, 500, 1000, 2000, 3000]
    curves = [log_linear_curve("d0", "dit", 0, steps, 80.0, 10.0), log_linear_curve("d1", "dit", 1, steps, 84.0, 12.0)]
    t = targets_from_baseline(curves, "fid", "iterations")
    # 1/3 of 3000 is an evaluation point, so the "third" value is exact
    assert t["third"] == pytest.approx(np.mean([80 - 10 * 3, 84 - 12 * 3]))
    # final FIDs 45.2 (d0) and 42.3 (d1): the larger, which both seeds reach within their budget
    assert t["final"] == pytest.approx(80 - 10 * math.log10(3000))
    assert all(cost_to_target(c["points"], t["final"], "iterations") is not None for c in curves)


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
    curve = log_linear_curve("r", "dit", 0, DENSE, 90.0, b)
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


def test_late_slope_needs_five_evaluations_in_its_window():
    pts = [{"step": s, "fid": 50.0 - 10 * math.log10(s)} for s in range(100, 1100, 100)]
    # 10 evaluations: the last third, [700, 1000], holds 4 of them
    assert late_slope(pts, "iterations") is None
    assert late_slope(pts, "iterations", min_points=4) == pytest.approx(-10.0)
    more = [{"step": s, "fid": 50.0 - 10 * math.log10(s)} for s in range(100, 1400, 100)]  # [900, 1300]: 5
    assert late_slope(more, "iterations") == pytest.approx(-10.0)
    with pytest.raises(ValueError, match="min_points=1"):
        late_slope(more, "iterations", min_points=1)
    with pytest.raises(ValueError, match="fraction"):
        late_slope(pts, "iterations", fraction=0.0)


# ---------------------------------------------------------------------------------------------------------------------
# Ratio, interval, t-tests, censoring, detectable effect


def test_exactly_k_times_cheaper_gives_ratio_k_with_k_inside_the_interval():
    k = 3.5
    base = [log_linear_curve(f"d{s}", "dit", s, STEPS, 70.0 + 3 * s, 10.0 + s) for s in range(3)]
    fast = [scaled(c, 1 / k, method="tread", run_id=f"t{c['seed']}") for c in base]
    rep = speedup_report(base + fast, ks=(k,))
    for unit in ("iterations", "images", "macs", "seconds"):
        r = rep["unit_results"]["tread"]["third"][unit]
        assert r["ratio"] == pytest.approx(k, rel=1e-9) and r["ratio_is"] == "estimate"
        assert r["ci_low"] <= k <= r["ci_high"]
        assert r["reached"] == "3/3" and r["seeds"] == 3 and r["status"] == "ok"
        assert r["ge_k"][repr(k)] is False and r["lt_k"][repr(k)] is False


@given(c=st.floats(0.05, 20.0, allow_subnormal=False))
def test_scaling_a_methods_cost_scales_its_speedup_by_the_inverse(c):
    base = [log_linear_curve(f"d{s}", "dit", s, STEPS, 70.0 + s, 10.0) for s in range(2)]
    meth = [log_linear_curve(f"t{s}", "tread", s, STEPS, 66.0 + s, 11.0, step_cost=0.6) for s in range(2)]
    r1 = speedup_report(base + meth, units=("macs",))["unit_results"]["tread"]["third"]["macs"]
    meth_c = [scaled(m, c) for m in meth]
    r2 = speedup_report(base + meth_c, units=("macs",))["unit_results"]["tread"]["third"]["macs"]
    assert r2["ratio"] == pytest.approx(r1["ratio"] / c, rel=1e-9)
    assert r2["ci_low"] == pytest.approx(r1["ci_low"] / c, rel=1e-9)
    assert r2["mde"]["factor"] == pytest.approx(r1["mde"]["factor"], rel=1e-9)


def test_interval_is_welch_t_on_log_cost():
    b, m = [3000.0, 3310.0, 2870.0, 3120.0], [1000.0, 1230.0, 950.0]
    ci = stats.ttest_ind(np.log(b), np.log(m), equal_var=False).confidence_interval(0.95)
    assert log_ratio_interval(b, m) == pytest.approx((math.exp(ci.low), math.exp(ci.high)), rel=1e-12)
    lo, hi = log_ratio_interval(b, m, level=0.5)
    assert math.exp(ci.low) < lo < hi < math.exp(ci.high)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        log_ratio_interval([1.0], m)


def test_t_tests_are_welch_on_log_cost_in_both_directions():
    b, m = [10.0, 12.0, 11.0], [3.0, 5.0, 4.5, 4.0]
    lb, lm = np.log(b) - math.log(2.0), np.log(m)
    assert p_value_speedup(b, m, 2.0, "ge") == pytest.approx(
        stats.ttest_ind(lm, lb, equal_var=False, alternative="less").pvalue
    )
    assert p_value_speedup(b, m, 2.0, "lt") == pytest.approx(
        stats.ttest_ind(lm, lb, equal_var=False, alternative="greater").pvalue
    )
    assert p_value_speedup([6.0, 6.0], [2.0, 2.0], 2.0, "ge") == 0.0
    assert p_value_speedup([6.0, 6.0], [4.0, 4.0], 2.0, "ge") == 1.0
    assert p_value_speedup([6.0, 6.0], [4.0, 4.0], 2.0, "lt") == 0.0
    with pytest.raises(ValueError, match="side='both'"):
        p_value_speedup(b, m, 2.0, "both")


def test_tests_accept_and_reject_on_a_clear_threefold_speedup():
    rng = np.random.default_rng(7)
    b = 3000.0 * (1 + 0.03 * rng.standard_normal(5))
    m = 1000.0 * (1 + 0.03 * rng.standard_normal(5))
    r = compare(list(b), list(b), list(m), ks=(2.0, 3.0, 4.0), method_final=list(b))
    assert r["ge_k"]["2.0"] is True and r["lt_k"]["2.0"] is False
    assert r["ge_k"]["4.0"] is False and r["lt_k"]["4.0"] is True
    assert 0.025 < r["p_value_ge_k"]["3.0"] < 0.975
    assert r["ci_low"] < 3.0 < r["ci_high"]


def test_a_test_decides_exactly_when_the_interval_excludes_k():
    rng = np.random.default_rng(3)
    for _ in range(50):
        b, m = np.exp(rng.normal(1.0, 0.2, 3)), np.exp(rng.normal(0.7, 0.2, 4))
        r = compare(list(b), list(b), list(m), ks=(1.0, 1.2, 1.5), method_final=list(m))
        for k in (1.0, 1.2, 1.5):
            assert r["ge_k"][repr(k)] == (r["ci_low"] > k)
            assert r["lt_k"][repr(k)] == (r["ci_high"] < k)


def test_unreached_method_seed_blocks_only_the_test_for_the_speedup():
    b = [3000.0, 3100.0, 2900.0]
    r = compare(b, [4000.0] * 3, [1000.0, 1010.0, None], method_final=[4000.0] * 3)
    assert r["reached"] == "2/3" and r["ratio_is"] == "upper bound"
    assert r["ratio"] == pytest.approx(math.exp(np.mean(np.log(b)) - np.mean(np.log([1000.0, 1010.0, 4000.0]))))
    assert r["p_value_ge_k"]["1.0"] is None and r["ge_k"]["1.0"] is None
    # two fast seeds and one censored one are no evidence against a speedup >= 1
    assert r["lt_k"]["1.0"] is False and "not reached by 1 of 3" in r["status"]
    # without the method's budgets a censored seed has no cost at all
    bare = compare(b, [4000.0] * 3, [1000.0, 1010.0, None])
    assert bare["ratio"] is None and bare["ge_k"]["1.0"] is None and bare["lt_k"]["1.0"] is None


def test_method_that_never_reaches_is_refuted_only_by_a_test_against_a_cheap_baseline():
    b = [1000.0, 1100.0, 950.0]
    r = compare(b, [4000.0] * 3, [None, None, None], method_final=[4000.0, 4100.0, 3900.0])
    assert r["ratio_is"] == "upper bound" and r["ratio"] < 0.3
    assert r["ge_k"]["1.0"] is None and r["lt_k"]["1.0"] is True
    near = compare([3800.0, 3950.0, 3900.0], [4000.0] * 3, [None, None, None], method_final=[4000.0] * 3)
    assert near["lt_k"]["1.0"] is False  # the baseline needed nearly its whole budget: censoring decides nothing


def test_a_bound_gets_no_interval_only_the_test_on_the_bound():
    # a two-sided interval around a censored cost would cover nothing in particular: it is left out
    r = compare([3000.0, 3100.0, 2900.0], [4000.0] * 3, [1000.0, 1010.0, None], method_final=[4000.0] * 3)
    assert r["ratio_is"] == "upper bound" and r["ci_low"] is None and r["ci_high"] is None
    assert r["p_value_lt_k"]["1.0"] is not None and r["p_value_ge_k"]["1.0"] is None
    assert r["costs"] == {"baseline": [3000.0, 3100.0, 2900.0], "method": [1000.0, 1010.0, None]}
    uncensored = compare([3000.0, 3100.0, 2900.0], [4000.0] * 3, [1000.0, 1010.0, 990.0])
    assert uncensored["ci_low"] is not None and uncensored["ratio_is"] == "estimate"


def test_unreached_baseline_seed_blocks_only_the_test_against_the_speedup():
    r = compare([3000.0, None], [3500.0, 4000.0], [900.0, 1100.0], method_final=[4000.0, 4000.0])
    assert r["ratio"] == pytest.approx(math.sqrt(3000.0 * 4000.0) / math.sqrt(900.0 * 1100.0))
    assert r["ratio_is"] == "lower bound" and r["baseline_reached"] == "1/2"
    assert r["p_value_lt_k"]["1.0"] is None and r["p_value_ge_k"]["1.0"] is not None
    both = compare([3000.0, None], [3500.0, 4000.0], [900.0, None], method_final=[4000.0, 4000.0])
    assert both["ratio_is"] == "censored on both sides" and both["ge_k"]["1.0"] is None and both["lt_k"]["1.0"] is None
    none = compare([None, None], [3500.0, 4000.0], [900.0, 1100.0])
    assert none["ratio"] is None and none["ge_k"]["1.0"] is None and "0 of 2" in none["status"]


def test_one_seed_is_a_data_point_not_a_verdict():
    r = compare([3000.0], [3000.0], [1000.0], ks=(1.0, 2.0))
    assert r["ratio"] == pytest.approx(3.0)
    assert r["ci_low"] is None and r["ci_high"] is None and r["mde"] is None
    assert r["p_value_ge_k"] == {"1.0": None, "2.0": None} and r["ge_k"] == {"1.0": None, "2.0": None}
    assert r["status"] == ONE_SEED_NOTE


def test_detectable_shift_has_the_stated_power():
    # log costs with known spread: a true shift equal to the detectable shift is found 80% of the time
    rng = np.random.default_rng(11)
    n, sigma = 4, 0.2
    se = sigma * math.sqrt(2 / n)
    shift = detectable_shift(se, 2 * n - 2)
    lb = rng.normal(0.0, sigma, (20_000, n))
    lm = rng.normal(-shift, sigma, (20_000, n))
    p = stats.ttest_ind(lm, lb, axis=1, alternative="less").pvalue
    assert np.mean(p < 0.025) == pytest.approx(0.8, abs=0.03)
    assert detectable_shift(se, 2 * n - 2) > detectable_shift(se, 20)  # fewer degrees of freedom, larger effect


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
    assert set(rep["targets"]) == {"final", "third", "final-mean", "common", "ladder"}
    assert rep["run_ids"] == [r["run_id"] for r in rep["runs"]]
    assert {r["run_id"] for r in rep["runs"]} == {c["run_id"] for c in micro_curves()}
    run = next(r for r in rep["runs"] if r["run_id"] == "micro-tread-s1")
    assert set(run) >= {"run_id", "method", "seed", "final_metric", "cost"}
    assert set(run["cost"]) == {"iterations", "images", "macs", "seconds"}
    assert set(run["cost"]["macs"]) == {"final", "third", "final-mean"}
    assert set(rep["late_slope"]) == {"dit", "tread", "sit"}
    # geometric evaluations put one point into the last third: no fit, and the report says so
    assert rep["late_slope"]["tread"]["mean"] is None and rep["late_slope"]["tread"]["window_points"] == [1, 1]
    assert "needs 5" in rep["late_slope"]["tread"]["not_checkable"]
    assert rep["training"]["tread"] == {"images": 64.0 * 6400, "epochs": None}
    assert rep["gate"] is None and "gate" not in run
    dense = [log_linear_curve(f"d{s}", "dit", s, DENSE, 70.0 + s, 10.0 + s) for s in range(2)]
    slopes = speedup_report(dense, units=("iterations",), train_size=64 * 3200)["late_slope"]["dit"]
    assert slopes["mean"] == pytest.approx(-10.5) and slopes["std"] == pytest.approx(math.sqrt(0.5))
    assert "not_checkable" not in slopes
    assert set(rep["unit_results"]) == {"tread", "sit"}
    # where each method ends: its seeds' last values (tread: 62 - 12 log10(6400), one higher for seed 1)
    end = 62.0 - 12.0 * math.log10(6400)
    assert rep["final_values"]["tread"]["per_seed"] == pytest.approx([end, end + 1.0])
    assert rep["final_values"]["tread"]["mean"] == pytest.approx(end + 0.5)
    assert rep["final_values"]["sit"]["std"] is None  # one seed
    r = rep["unit_results"]["tread"]["final"]["seconds"]
    assert set(r) >= {"ratio", "ci_low", "ci_high", "seeds", "reached", "p_value_ge_k", "ge_k"}
    assert set(r["p_value_ge_k"]) == {"1.0", "2.0"}
    sit = rep["unit_results"]["sit"]["final"]["iterations"]
    # never reached within its 800 iterations: censored there, so the ratio is only an upper bound
    assert sit["reached"] == "0/1" and sit["ratio_is"] == "upper bound"  # every dit seed reaches the final target
    dit_costs = [r["cost"]["iterations"]["final"] or r["budget"]["iterations"] for r in rep["runs"][:2]]
    assert sit["ratio"] == pytest.approx(math.exp(np.mean(np.log(dit_costs))) / 800)


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


def test_every_method_has_one_color_in_every_plot():
    """A method's colour does not depend on which methods share its plot (the FID plot draws 11 methods, the
    validation loss plot 8: before, each numbered its own methods, so a method changed colour between them)."""
    from repro.config import load_params
    from repro.evidence.speedup import METHOD_COLORS, method_colors

    methods = list(load_params(os.path.join(os.path.dirname(__file__), "..", "params.yaml"))["methods"])
    assert set(methods) <= set(METHOD_COLORS), "give each method of params.yaml its colour in METHOD_COLORS"
    every = method_colors(methods)
    assert len(set(every.values())) == len(methods)
    for subset in (["tread", "stochastic-depth", "tread-xavier"], ["dit-edm", "tread-edm"], ["sit"]):
        assert method_colors(subset) == {m: every[m] for m in subset}
    new = method_colors(["dit", "new-a", "new-b"])  # methods without an entry: free colours, distinct
    assert len(set(new.values())) == 3 and not set(new.values()) & set(every.values()) - {every["dit"]}
    free = 20 - len(set(METHOD_COLORS.values()))  # tab20's colours no method holds
    with pytest.raises(
        ValueError, match=f"{free + 1} methods without an entry in METHOD_COLORS in one plot; at most {free}"
    ):
        method_colors([f"m{i}" for i in range(free + 1)])


def test_cli_with_glob_and_run_directories(tmp_path, capsys):
    assert cli.COMMANDS["speedup"] == "repro.commands.speedup"
    runs = tmp_path / "runs" / "micro"
    for c in micro_curves():
        (runs / c["run_id"]).mkdir(parents=True)
        (runs / c["run_id"] / "curve.json").write_text(json.dumps(c))
    out, png = tmp_path / "goldens" / "speedup.json", tmp_path / "goldens" / "fid_vs_cost.png"
    reference = tmp_path / "reference.json"
    reference.write_text(json.dumps({"noise": {"0.2": 20.0}, "blur": {"1.0": 22.5}, "curve_size": 10000}))
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
            "--train-size",
            "204800",
            "--gate-reference",
            str(reference),
            "--gate",
            "noise:0.2",
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
    assert rep["interval"]["method"] == "Welch t on log cost" and rep["interval"]["one_sided_alpha"] == 0.025
    assert rep["training"]["dit"]["epochs"] == pytest.approx(64 * 6400 / 204800)
    assert rep["gate"]["fid"] == 20.0 and rep["gate"]["corruption"] == "noise 0.2"
    # final FIDs: dit 70 - 10 log10(6400) = 31.9 and 32.9, tread 62 - 12 log10(6400) = 16.3 and 17.3
    assert rep["gate"]["failed_by_method"] == {"dit": ["micro-dit-s0", "micro-dit-s1"]}
    assert [r["gate"]["passes"] for r in rep["runs"]] == [False, False, True, True]
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "tread vs dit" in capsys.readouterr().out


def test_a_glob_of_runs_not_made_yet_is_skipped_next_to_one_that_matches(tmp_path, capsys):
    # a campaign in progress: the stage that reads stochastic depth's curves runs before any exists
    for c in micro_curves():
        (tmp_path / f"{c['run_id']}.json").write_text(json.dumps(c))
    out = tmp_path / "o.json"
    globs = [str(tmp_path / f"micro-{m}-*.json") for m in ("dit", "tread", "sd")]
    rc = cli.main(["speedup", "--curves", *globs, "--baseline", "dit", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 0 and "micro-sd-*.json" in err and "matches no file yet" in err
    assert json.loads(out.read_text())["run_ids"] == [f"micro-{m}-s{s}" for m in ("dit", "tread") for s in (0, 1)]
    out.unlink()
    none = [str(tmp_path / "micro-sd-*.json"), str(tmp_path / "x-*.json")]
    rc = cli.main(["speedup", "--curves", *none, "--out", str(out)])
    assert rc == 2 and "'" + str(tmp_path / "micro-sd-*.json") + "' matches no file" in capsys.readouterr().err
    assert not out.exists()


def test_a_comparison_whose_baseline_has_no_run_yet_writes_an_empty_report_when_allowed(tmp_path, capsys):
    # the EDM pair's stage in a campaign that has not reached it: no curve matches, or only the method's do
    for c in micro_curves():
        (tmp_path / f"{c['run_id']}.json").write_text(json.dumps(c))
    out = tmp_path / "o.json"
    for curves in ([str(tmp_path / "micro-dit-edm-*.json")], [str(tmp_path / "micro-tread-*.json")]):
        argv = ["speedup", "--curves", *curves, "--baseline", "dit-edm", "--metric", "val_loss", "--out", str(out)]
        assert cli.main(argv) == 2 and not out.exists()  # without the flag: an error, nothing written
        capsys.readouterr()
        assert cli.main([*argv, "--allow-no-runs", "--plot", str(tmp_path / "p.png")]) == 0
        assert "'dit-edm' has no curve" in capsys.readouterr().err and not (tmp_path / "p.png").exists()
        rep = json.loads(out.read_text())
        assert rep["unit_results"] == {} and rep["runs"] == [] and rep["status"].startswith("no runs yet")
        assert (rep["baseline"], rep["metric"]) == ("dit-edm", "val_loss")
        out.unlink()
    # only the baseline's curves (a long horizon before its methods' runs end): nothing to compare
    argv = ["speedup", "--curves", str(tmp_path / "micro-dit-s*.json"), "--out", str(out)]
    assert cli.main(argv) == 2 and not out.exists()
    assert "no method but the baseline 'dit' has a curve" in capsys.readouterr().err
    plots = ["--plot", str(tmp_path / "p.png"), "--ladder-plot", str(tmp_path / "l.png")]
    assert cli.main([*argv, "--allow-no-runs", *plots]) == 0
    rep = json.loads(out.read_text())
    assert rep["unit_results"] == {} and rep["status"].startswith("no runs yet: no method but the baseline 'dit'")
    # the plots a pipeline stage declares are drawn: the baseline's curves, the published ladder
    assert (tmp_path / "p.png").read_bytes()[:8] == (tmp_path / "l.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out.unlink()
    # a baseline that has curves: the flag changes nothing
    argv = ["speedup", "--curves", str(tmp_path / "micro-*.json"), "--out", str(out), "--allow-no-runs"]
    assert cli.main(argv) == 0 and "tread" in json.loads(out.read_text())["unit_results"]


def test_cli_reports_bad_input_with_exit_code_2(tmp_path, capsys):
    rc = cli.main(["speedup", "--curves", str(tmp_path / "nothing" / "*.json"), "--out", str(tmp_path / "o.json")])
    assert rc == 2 and "matches no file" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{")
    rc = cli.main(["speedup", "--curves", str(tmp_path / "bad.json"), "--out", str(tmp_path / "o.json")])
    assert rc == 2 and "not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()


def test_gate_names_the_allowed_corruptions(tmp_path):
    ref = tmp_path / "reference.json"
    ref.write_text(json.dumps({"noise": {"0.2": 20.0}, "blur": {"1.0": 22.5}}))
    assert gate_from_reference(ref, "blur:1.0")["fid"] == 22.5
    with pytest.raises(ValueError, match=r"corruption='blur:3.0' is not in .*allowed: noise:0.2, blur:1.0"):
        gate_from_reference(ref, "blur:3.0")
    with pytest.raises(ValueError, match="cannot be read"):
        gate_from_reference(tmp_path / "missing.json")


def test_round_floats_keeps_six_significant_digits_and_rejects_non_finite():
    assert round_floats({"a": [1.23456789e13, 0.000123456789, 3]}) == {"a": [1.23457e13, 0.000123457, 3]}
    with pytest.raises(ValueError, match="non-finite"):
        round_floats(float("inf"))


# ---------------------------------------------------------------------------------------------------------------------
# The ladder, the common target, slopes at matched metric, growth


def two_arms(slower=1.0, seeds=3):
    """DiT-like seeds (fid = 80 - 20 log10 step + seed offset) and a method ``slower`` times slower in every unit."""
    base = [log_linear_curve(f"b{s}", "dit", s, DENSE, 80.0 + 0.3 * s, 20.0) for s in range(seeds)]
    meth = [scaled(log_linear_curve(f"m{s}", "tread", s, DENSE, 80.0 + 0.3 * s, 20.0), slower) for s in range(seeds)]
    # the same budget for both: cut the slower method's curve at the baseline's last cost
    meth = [{**c, "points": [p for p in c["points"] if p["step"] <= DENSE[-1]]} for c in meth]
    return base, meth


def test_the_ladder_is_the_baseline_mean_at_each_of_its_evaluations_and_ends_at_final_mean():
    base, meth = two_arms()
    rep = speedup_report(base + meth, units=("iterations", "macs"), ladder_units=("macs",))
    ladder = rep["targets"]["ladder"]
    assert list(ladder) == [str(s) for s in DENSE]
    for step in (100, 3200, 6400):  # the mean over seeds of 80.3 s - 20 log10(step)
        assert ladder[str(step)] == pytest.approx(80.3 - 20.0 * math.log10(step))
    assert ladder[str(DENSE[-1])] == pytest.approx(rep["targets"]["final-mean"])
    # the same curves: every rung's speedup is 1 with its interval around it, in the ladder's unit only
    rung = rep["unit_results"]["tread"]["ladder"]["3200"]
    assert set(rung) == {"macs"} and rung["macs"]["ratio"] == pytest.approx(1.0)
    assert rung["macs"]["ci_low"] <= 1.0 <= rung["macs"]["ci_high"]


def test_the_common_target_is_reached_by_every_seed_so_a_slower_method_is_not_censored():
    base, meth = two_arms(slower=1.25)
    rep = speedup_report(base + meth, units=("macs",))
    final, common = rep["unit_results"]["tread"]["final"]["macs"], rep["unit_results"]["tread"]["common"]["macs"]
    # to the baseline's final value the slower method is censored: a bound, no interval, no test for the speedup
    assert final["ratio_is"] == "upper bound" and final["ci_low"] is None and final["p_value_ge_k"]["1.0"] is None
    # the common target is the worst final value of both arms' seeds, which every seed reaches within its budget
    finals = [r["final_metric"] for r in rep["runs"]]
    assert common["target"] == pytest.approx(max(finals)) == rep["targets"]["common"]["tread"]
    assert common["reached"] == "3/3" and common["baseline_reached"] == "3/3" and common["ratio_is"] == "estimate"
    # a shift of exactly 1.25x in cost on log-linear curves: the speedup is 1 / 1.25 exactly, inside its interval
    assert common["ratio"] == pytest.approx(0.8) and common["ci_low"] < 0.8 < common["ci_high"]


def test_slopes_at_matched_metric_are_equal_for_a_curve_shifted_in_cost_where_late_slopes_are_not():
    # the baseline flattens (fid = 20 + 600 / sqrt(step)); the method is the same curve 1.5x cheaper
    def flattening(rid, method, seed, factor):
        pts = [
            {"step": s, "images": 64 * s, "macs": 1e9 * s, "seconds": 0.5 * s, "fid": 20 + 600 / math.sqrt(s * factor)}
            for s in DENSE
        ]
        return {"run_id": rid, "method": method, "seed": seed, "scale": "micro", "points": pts}

    base = [flattening(f"b{s}", "dit", s, 1.0 + 0.01 * s) for s in range(3)]
    meth = [flattening(f"m{s}", "tread", s, 1.5 * (1.0 + 0.01 * s)) for s in range(3)]
    rep = speedup_report(base + meth, units=("iterations",), ladder_units=())
    late = rep["late_slope"]
    assert late["tread"]["mean"] > late["dit"]["mean"] + 0.5  # at one budget the faster method looks flatter
    matched = rep["matched_slope"]["tread"]
    assert "not_checkable" not in matched["baseline"] and "not_checkable" not in matched["method"]
    assert min(matched["method"]["window_points"]) >= 5
    bottom, top = matched["window"]
    assert bottom == pytest.approx(max(r["final_metric"] for r in rep["runs"])) and bottom < top
    # over one stretch of FID, both curves are one curve: the same slope (up to the evaluation grid's discreteness)
    assert matched["method"]["mean"] == pytest.approx(matched["baseline"]["mean"], rel=0.1)


def test_matched_slope_says_why_when_the_window_is_empty():
    base, meth = two_arms(slower=4.0)  # the method ends above the baseline's value at the start of its last third
    matched = speedup_report(base + meth, units=("iterations",), ladder_units=())["matched_slope"]["tread"]
    assert "no window" in matched["baseline"]["not_checkable"] and matched["method"]["mean"] is None


def test_growth_of_a_speedup_between_two_targets():
    # baseline fid = 80 - 20 log10(c); method fid = 80 - 25 log10(c): its speedup to a value v is
    # 10 ** ((80 - v) (1/20 - 1/25)), so from v1 to v2 it grows by 10 ** ((v1 - v2) (1/20 - 1/25))
    base = [log_linear_curve(f"b{s}", "dit", s, DENSE, 80.0 + 0.2 * s, 20.0) for s in range(3)]
    meth = [log_linear_curve(f"m{s}", "tread", s, DENSE, 80.0 + 0.2 * s, 25.0) for s in range(3)]
    rep = speedup_report(base + meth, units=("iterations",), growth_pairs=[("400", "final")], ks=(1.0, 1.5))
    g = rep["growth"]["tread"]["400:final"]["iterations"]
    v1, v2 = rep["targets"]["ladder"]["400"], rep["targets"]["final"]
    assert g["start"] == v1 and g["end"] == v2
    assert g["ratio"] == pytest.approx(10 ** ((v1 - v2) * (1 / 20 - 1 / 25)), rel=1e-6)
    s_from = rep["unit_results"]["tread"]["ladder"]["400"]["iterations"]["ratio"]
    s_to = rep["unit_results"]["tread"]["final"]["iterations"]["ratio"]
    assert g["ratio"] == pytest.approx(s_to / s_from, rel=1e-6)
    assert g["p_value_ge_k"]["1.0"] < 0.025  # it grows, significantly (all seeds agree)
    with pytest.raises(ValueError, match="growth target 'nope'"):
        speedup_report(base + meth, units=("iterations",), growth_pairs=[("nope", "final")])


def _on(curve, device):
    return {**curve, "points": [{**p, "device": device} for p in curve["points"]]}


def test_seconds_measured_on_more_than_one_device_are_flagged_and_other_units_are_not():
    base = [log_linear_curve(f"d{s}", "dit", s, STEPS, 70.0 + 3 * s, 10.0 + s) for s in range(3)]
    fast = [scaled(c, 1 / 2.0, method="tread", run_id=f"t{c['seed']}") for c in base]
    same = speedup_report([_on(c, "cpu A") for c in base + fast], ks=(1.0,), growth_pairs=[("third", "final")])
    mixed = speedup_report(
        [_on(c, "cpu A") for c in base] + [_on(c, "cpu B") for c in fast], ks=(1.0,), growth_pairs=[("third", "final")]
    )
    for t in ("final", "third", "common"):
        assert same["unit_results"]["tread"][t]["seconds"]["status"] == "ok"
        flagged = mixed["unit_results"]["tread"][t]["seconds"]["status"]
        assert flagged.startswith("ok; not comparable in seconds: measured on 2 devices (cpu A; cpu B)")
        for unit in ("iterations", "images", "macs"):
            assert mixed["unit_results"]["tread"][t][unit]["status"] == "ok"
    assert "not comparable" in mixed["growth"]["tread"]["third:final"]["seconds"]["status"]
    assert "not comparable" not in mixed["growth"]["tread"]["third:final"]["macs"]["status"]
    # one run resumed on another machine mixes its own seconds
    resumed = [_on(c, "cpu A") for c in base + fast]
    resumed[0]["points"][-1]["device"] = "cpu B"
    assert "2 devices" in speedup_report(resumed)["unit_results"]["tread"]["final"]["seconds"]["status"]


def three_arms():
    """DiT-like seeds (fid = 90 + 0.3 seed - 20 log10 step, above 0); ``dit-edm`` the same curves 2x cheaper in
    iterations (and in every unit); ``tread-edm`` 3x cheaper in iterations with steps costing 0.6 of a dense one: 5x
    in MACs."""
    base = [log_linear_curve(f"b{s}", "dit", s, DENSE, 90.0 + 0.3 * s, 20.0) for s in range(3)]
    via = [
        log_linear_curve(f"v{s}", "dit-edm", s, DENSE, 90.0 + 0.3 * s - 20.0 * math.log10(2), 20.0) for s in range(3)
    ]
    arm = [
        log_linear_curve(f"a{s}", "tread-edm", s, DENSE, 90.0 + 0.3 * s - 20.0 * math.log10(3), 20.0, step_cost=0.6)
        for s in range(3)
    ]
    return base, via, arm


def test_each_rung_is_split_into_iterations_times_step_cost_and_through_an_intermediate_method():
    base, via, arm = three_arms()
    units = ("iterations", "macs", "seconds")
    rep = speedup_report(base + via + arm, units=units, ladder_units=units, decompose=[("tread-edm", "dit-edm")])
    parts = rep["decomposition"]
    rung = "3200"  # every seed of every arm crosses the DiT mean there between two evaluations: estimates
    split = parts["via"]["tread-edm"]["ladder"][rung]
    assert parts["via"]["tread-edm"]["via"] == "dit-edm"
    # the known shifts: 2x for the intermediate, 3x / 0.6 = 5x in MACs for the whole, so 2.5x from one to the other
    assert split["macs"]["whole"] == pytest.approx(5.0, rel=1e-4) and split["macs"]["whole_is"] == "estimate"
    assert split["macs"]["to_via"] == pytest.approx(2.0, rel=1e-4)
    assert split["macs"]["from_via"]["ratio"] == pytest.approx(2.5, rel=1e-4)
    assert split["iterations"]["from_via"]["ratio"] == pytest.approx(1.5, rel=1e-4)
    assert split["macs"]["via_share"] == pytest.approx(math.log(2) / math.log(5), rel=1e-4)
    assert split["macs"]["from_via"]["ratio_is"] == "estimate" and split["macs"]["from_via"]["ci_low"] is not None
    # the routing factor's record compares the intermediate's seeds with the method's at DiT's rung target
    whole = rep["unit_results"]["tread-edm"]["ladder"][rung]["macs"]
    first = rep["unit_results"]["dit-edm"]["ladder"][rung]["macs"]
    costs = split["macs"]["from_via"]["costs"]
    assert costs == {"baseline": first["costs"]["method"], "method": whole["costs"]["method"]}
    # iterations x per-step cost: the method's steps cost 0.6 of DiT's in MACs and seconds, the intermediate's 1
    for unit in ("macs", "seconds"):
        step = parts["per_step"]["tread-edm"][rung][unit]
        assert step["iterations"] == pytest.approx(3.0, rel=1e-4) and step["per_step"] == pytest.approx(1 / 0.6)
        assert step["iterations_share"] == pytest.approx(math.log(3) / math.log(5), rel=1e-4)
        assert parts["per_step"]["dit-edm"][rung][unit]["per_step"] == pytest.approx(1.0)
    assert set(parts["per_step"]["tread-edm"][rung]) == {"macs", "seconds"}
    # at every rung, censored or not, the factors multiply to the whole
    for r, split in parts["via"]["tread-edm"]["ladder"].items():
        for unit in units:
            s = split[unit]
            assert s["to_via"] * s["from_via"]["ratio"] == pytest.approx(s["whole"], rel=1e-9), (r, unit)
    # the record reads back typed, and writes back to the same JSON
    from repro.evidence.speedup import Comparison, SpeedupReport, record_at

    assert SpeedupReport.from_json(rep).to_json() == rep
    path = ["decomposition", "via", "tread-edm", "ladder", rung, "macs", "from_via"]
    assert isinstance(record_at(path, split["macs"]["from_via"]), Comparison)


def test_a_decomposition_waits_for_missing_methods_and_refuses_the_baseline_or_no_ladder():
    base, via, arm = three_arms()
    rep = speedup_report(base + arm, units=("macs",), decompose=[("tread-edm", "dit-edm")])
    assert rep["decomposition"]["via"]["tread-edm"] == {"via": "dit-edm", "status": "waiting for the curves of dit-edm"}
    with pytest.raises(ValueError, match="decompose=tread-edm=dit is not allowed"):
        speedup_report(base + arm, units=("macs",), decompose=[("tread-edm", "dit")])
    with pytest.raises(ValueError, match="ladder_units is empty"):
        speedup_report(base + via + arm, units=("macs",), ladder_units=(), decompose=[("tread-edm", "dit-edm")])
    # seconds of the intermediate and the method measured on two machines: the routing factor in seconds says so
    mixed = [_on(c, "cpu A") for c in base + via] + [_on(c, "cpu B") for c in arm]
    rep = speedup_report(mixed, units=("macs", "seconds"), ladder_units=("macs", "seconds"),
                         decompose=[("tread-edm", "dit-edm")])  # fmt: skip
    split = rep["decomposition"]["via"]["tread-edm"]["ladder"]["3200"]
    assert "not comparable in seconds" in split["seconds"]["from_via"]["status"]
    assert "not comparable" not in split["macs"]["from_via"]["status"]


def test_cli_decompose_writes_the_section_and_refuses_a_malformed_pair(tmp_path, capsys):
    base, via, arm = three_arms()
    paths = []
    for c in base + via + arm:
        paths.append(tmp_path / f"{c['run_id']}.json")
        paths[-1].write_text(json.dumps(c))
    out = tmp_path / "rep.json"
    args = ["speedup", "--curves", *map(str, paths), "--ladder-units", "macs", "iterations", "--out", str(out)]
    assert cli.main([*args, "--decompose", "tread-edm=dit-edm"]) == 0
    assert set(json.loads(out.read_text())["decomposition"]["per_step"]) == {"dit-edm", "tread-edm"}
    assert cli.main([*args, "--decompose", "tread-edm"]) == 2
    assert "--decompose 'tread-edm' is not allowed; must be METHOD=VIA" in capsys.readouterr().err
