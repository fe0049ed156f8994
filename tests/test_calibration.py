"""Calibration of the experiment verdicts, on simulated training curves, through the ledger's own code path.

Every simulated experiment is a set of curves that goes through :func:`repro.speedup.speedup_report` and then
:func:`repro.evidence.experiment_verdict`, exactly as ``repro speedup`` and ``repro claims`` treat the golden runs.

The simulated process: FID-like curves ``m(c) = 20 + 80 * (c * speed / c0) ** -0.6 + noise`` at 8 evaluations on a
doubling cost grid (``c0 * 2**i``), each seed with its own speed (log-normal, sd 0.08) and independent noise of sd
0.5 at every evaluation (about the 300-sample FID sd of the micro runs). A method with a true speedup ``s`` has its
speed multiplied by ``s``; with ``s = 2`` its curve is the baseline's shifted by exactly one grid step, so its costs to
a target are the baseline's halved in distribution. Both methods get the same budget (the same grid). More cases
repeat the no-effect check on the micro campaign's evenly spaced grids (6 FID and 30 validation-loss evaluations) at
3 and 5 seeds.

Measured (printed in the terminal summary under "measured"): the rates of "confirmed" and "refuted" when method and
baseline come from the same process (each must be <= 5 %), the power for a true 2x speedup and for a true 2x
slowdown (by the speedup to the final target and by the final values at the shared budget), and the coverage of the
95 % interval (>= 90 %), next to scipy's BCa bootstrap and the percentile bootstrap of a ratio of means on the same
data, which is how the interval method was chosen.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

from repro.evidence import CONFIRMED, REFUTED, experiment_verdict
from repro.speedup import speedup_report

N_EXPERIMENTS = 1000
GRID = 2.0 ** np.arange(8)  # evaluation costs in units of c0; the budget is 128 c0
# The micro campaign's grids, evenly spaced to the same budget: FID every 500 of 3,000 dense steps (6 evaluations),
# validation loss every 100 (30)
MICRO_GRIDS = {"FID": 128.0 / 6 * np.arange(1, 7), "validation-loss": 128.0 / 30 * np.arange(1, 31)}
C0_MACS = 1e12


def simulate(n_exp: int, n_seeds: int, speedup: float, rng: np.random.Generator, grid=GRID) -> np.ndarray:
    """FID values, shape (n_exp, n_seeds, len(grid)), of ``n_seeds`` seeds of a method ``speedup`` times faster."""
    speed = speedup * np.exp(0.08 * rng.standard_normal((n_exp, n_seeds, 1)))
    clean = 20.0 + 80.0 * (grid * speed) ** -0.6
    return clean + 0.5 * rng.standard_normal((n_exp, n_seeds, grid.size))


def curves_of(method: str, fids: np.ndarray, grid=GRID) -> list[dict]:
    """One experiment's curves of one method, in the format ``repro train`` writes."""
    return [
        {
            "run_id": f"sim-{method}-s{s}",
            "method": method,
            "seed": s,
            "scale": "sim",
            "points": [
                {"step": int(100 * g), "images": int(6400 * g), "macs": float(C0_MACS * g), "fid": float(f)}
                for g, f in zip(grid, fids[s])
            ],
        }
        for s in range(fids.shape[0])
    ]


def run_experiments(n_seeds: int, speedup: float, seed: int, grid=GRID) -> dict:
    """Verdicts, intervals and per-seed log costs of ``N_EXPERIMENTS`` simulated experiments."""
    rng = np.random.default_rng(seed)
    base = simulate(N_EXPERIMENTS, n_seeds, 1.0, rng, grid)
    meth = simulate(N_EXPERIMENTS, n_seeds, speedup, rng, grid)
    out = {t: {"verdicts": [], "ci": [], "log_costs": []} for t in ("final", "third")}
    out["final_values"] = {"verdicts": []}
    for e in range(N_EXPERIMENTS):
        curves = curves_of("dit", base[e], grid) + curves_of("tread", meth[e], grid)
        rep = speedup_report(curves, units=("macs",), ks=(1.0,))
        # where the two end at the same budget, as the post-norm claim is decided: lower is better
        finals = rep["final_values"]
        out["final_values"]["verdicts"].append(experiment_verdict(finals["tread"], "<=", finals["dit"], 3)[0])
        for t in ("final", "third"):
            record = rep["unit_results"]["tread"][t]["macs"]
            out[t]["verdicts"].append(experiment_verdict(record, ">=", 1.0, min_seeds=3)[0])
            out[t]["ci"].append((record["ci_low"], record["ci_high"]))
            costs = {r["run_id"]: r["cost"]["macs"][t] for r in rep["runs"]}
            b = [costs[f"sim-dit-s{s}"] for s in range(n_seeds)]
            m = [costs[f"sim-tread-s{s}"] for s in range(n_seeds)]
            out[t]["log_costs"].append(None if None in b + m else (np.log(b), np.log(m)))
    return out


@pytest.fixture(scope="module")
def experiments():
    """(seeds, true speedup) -> results; 6 x 1000 simulated experiments, computed once for the module."""
    return {(n, s): run_experiments(n, s, seed=100 * n + int(10 * s)) for n in (3, 5) for s in (1.0, 2.0, 0.5)}


@pytest.mark.parametrize("grid", sorted(MICRO_GRIDS))
@pytest.mark.parametrize("n_seeds", [3, 5])
def test_no_effect_on_the_micro_campaign_grids_is_rarely_confirmed_or_refuted(report_measured, n_seeds, grid):
    # the ledger's own situation: the campaign's evaluation grids, at 3 seeds (SiT, stochastic depth) and 5 (DiT, TREAD)
    points = MICRO_GRIDS[grid]
    res = run_experiments(n_seeds, 1.0, seed=7 + n_seeds + points.size, grid=points)
    for target in ("final", "third"):
        confirmed, refuted = rate(res[target]["verdicts"], CONFIRMED), rate(res[target]["verdicts"], REFUTED)
        report_measured(
            f"same process, {n_seeds} seeds, {points.size} even evaluations (the micro {grid} grid), {target} target",
            f"P(confirmed) = {confirmed:.1%}, P(refuted) = {refuted:.1%} over {N_EXPERIMENTS} experiments",
        )
        assert confirmed <= 0.05 and refuted <= 0.05


def rate(verdicts: list[str], verdict: str) -> float:
    return float(np.mean([v == verdict for v in verdicts]))


@pytest.mark.parametrize("n_seeds", [3, 5])
@pytest.mark.parametrize("target", ["final", "third"])
def test_no_effect_is_rarely_confirmed_or_refuted(experiments, report_measured, n_seeds, target):
    verdicts = experiments[(n_seeds, 1.0)][target]["verdicts"]
    confirmed, refuted = rate(verdicts, CONFIRMED), rate(verdicts, REFUTED)
    report_measured(
        f"same process, {n_seeds} seeds, {target} target",
        f"P(confirmed) = {confirmed:.1%}, P(refuted) = {refuted:.1%} over {len(verdicts)} experiments",
    )
    assert confirmed <= 0.05 and refuted <= 0.05


@pytest.mark.parametrize("n_seeds", [3, 5])
@pytest.mark.parametrize("target", ["final", "third"])
def test_power_for_a_true_twofold_speedup(experiments, report_measured, n_seeds, target):
    verdicts = experiments[(n_seeds, 2.0)][target]["verdicts"]
    power, refuted = rate(verdicts, CONFIRMED), rate(verdicts, REFUTED)
    report_measured(
        f"true 2x speedup, {n_seeds} seeds, {target} target",
        f"power P(confirmed 'speedup >= 1') = {power:.1%}, P(refuted) = {refuted:.1%}",
    )
    assert refuted <= 0.05  # a faster method is not called slower
    assert power > rate(experiments[(n_seeds, 1.0)][target]["verdicts"], CONFIRMED)


@pytest.mark.parametrize("n_seeds", [3, 5])
def test_a_twofold_slowdown_is_found_and_no_effect_rarely_decides(experiments, report_measured, n_seeds):
    """A method truly 2x slower (the harm claims: post-norm, TREAD at rate 0.75) gets the same budget, so it does not
    reach the baseline's final value and its cost is only a bound; the final values at the shared budget compare
    directly."""
    for rule in ("final", "final_values"):
        slow = experiments[(n_seeds, 0.5)][rule]["verdicts"]
        same = experiments[(n_seeds, 1.0)][rule]["verdicts"]
        fast = experiments[(n_seeds, 2.0)][rule]["verdicts"]
        what = "the speedup to the final target" if rule == "final" else "the final values at the shared budget"
        report_measured(
            f"true 2x slowdown, {n_seeds} seeds, {what}",
            f"power P(refuted) = {rate(slow, REFUTED):.1%}, P(confirmed) = {rate(slow, CONFIRMED):.1%}; "
            f"same process: P(confirmed) = {rate(same, CONFIRMED):.1%}, P(refuted) = {rate(same, REFUTED):.1%}; "
            f"true 2x speedup: P(confirmed) = {rate(fast, CONFIRMED):.1%}",
        )
        assert rate(slow, CONFIRMED) <= 0.05 and rate(fast, REFUTED) <= 0.05  # never the wrong direction
        if rule == "final_values":  # the speedup's test may have no power at all here (printed, measured: 0% at 3)
            assert rate(same, CONFIRMED) <= 0.05 and rate(same, REFUTED) <= 0.05
            assert rate(slow, REFUTED) >= 0.8 and rate(fast, CONFIRMED) > rate(same, CONFIRMED)


def bca_interval(lb: np.ndarray, lm: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    res = stats.bootstrap(
        (lb, lm),
        lambda x, y, axis: np.mean(x, axis=axis) - np.mean(y, axis=axis),
        method="BCa",
        n_resamples=999,
        vectorized=True,
        random_state=rng,
    )
    return float(np.exp(res.confidence_interval.low)), float(np.exp(res.confidence_interval.high))


def percentile_ratio_of_means(lb: np.ndarray, lm: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    b, m = np.exp(lb), np.exp(lm)
    mb = b[rng.integers(0, b.size, (2000, b.size))].mean(axis=1)
    mm = m[rng.integers(0, m.size, (2000, m.size))].mean(axis=1)
    lo, hi = np.percentile(mb / mm, [2.5, 97.5])
    return float(lo), float(hi)


@pytest.mark.parametrize("n_seeds", [3, 5])
@pytest.mark.parametrize("speedup", [1.0, 2.0])
def test_interval_covers_the_true_speedup(experiments, report_measured, n_seeds, speedup):
    # the 'third' target: every seed reaches it inside the grid, so the true ratio is exactly `speedup`
    res = experiments[(n_seeds, speedup)]["third"]
    kept = [(ci, lc) for ci, lc in zip(res["ci"], res["log_costs"]) if lc is not None]
    assert len(kept) >= 0.99 * N_EXPERIMENTS
    cover_t = np.mean([lo <= speedup <= hi for (lo, hi), _ in kept])
    rng = np.random.default_rng(n_seeds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BCa warns on degenerate resamples at 3 seeds
        bca = [bca_interval(lb, lm, rng) for _, (lb, lm) in kept]
    cover_bca = np.mean([lo <= speedup <= hi for lo, hi in bca])  # a NaN interval covers nothing
    cover_pct = np.mean([lo <= speedup <= hi for lo, hi in (percentile_ratio_of_means(*lc, rng) for _, lc in kept)])
    report_measured(
        f"95% interval coverage, {n_seeds} seeds, true speedup {speedup:g}",
        f"Welch t on log cost {cover_t:.1%}, scipy BCa bootstrap {cover_bca:.1%}, "
        f"percentile bootstrap of the ratio of means {cover_pct:.1%} ({len(kept)} experiments)",
    )
    assert cover_t >= 0.90
    assert cover_t >= cover_bca - 0.01  # the reason for choosing it: it covers at least as well
