"""Statistics over seeds: Welch's t on log cost (the one Welch implementation of the project), intervals,
p-values, the minimum detectable effect, and :func:`compare`, a method's speedup record from per-seed costs."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from scipy import stats

from .record import Comparison, Costs, Mde, k_key

ALPHA = 0.05
"""Two-sided level: the interval is ``1 - ALPHA``, each one-sided test runs at ``ALPHA / 2``."""
LEVEL = 1.0 - ALPHA
POWER = 0.8
ONE_SEED_NOTE = "one seed: a data point, not a verdict"


def welch(lb: np.ndarray, lm: np.ndarray) -> tuple[float, float, float]:
    """Difference of means ``mean(lb) - mean(lm)``, its standard error and Welch's degrees of freedom."""
    vb, vm = lb.var(ddof=1) / lb.size, lm.var(ddof=1) / lm.size
    se2 = vb + vm
    diff = float(lb.mean() - lm.mean())
    if se2 == 0.0:
        return diff, 0.0, float(lb.size + lm.size - 2)
    df = se2**2 / (vb**2 / (lb.size - 1) + vm**2 / (lm.size - 1))
    return diff, float(math.sqrt(se2)), float(df)


def log_ratio_interval(
    cost_baseline: Sequence[float], cost_method: Sequence[float], level: float = LEVEL
) -> tuple[float, float]:
    """Welch t-interval of ``exp(mean log cost_baseline - mean log cost_method)``, the ratio of geometric means.

    Exact when log costs are normal with any variances (up to Welch's df approximation); its coverage on simulated
    curves is measured in ``tests/test_calibration.py``. Needs at least 2 costs per group.
    """
    lb, lm = np.log(np.asarray(cost_baseline, dtype=float)), np.log(np.asarray(cost_method, dtype=float))
    if lb.size < 2 or lm.size < 2:
        raise ValueError("an interval needs at least 2 seeds per group")
    diff, se, df = welch(lb, lm)
    half = float(stats.t.ppf(0.5 + level / 2.0, df)) * se
    return float(math.exp(diff - half)), float(math.exp(diff + half))


def p_value_speedup(cost_baseline: Sequence[float], cost_method: Sequence[float], k: float, side: str = "ge") -> float:
    """One-sided p-value of Welch's t-test on log cost.

    ``side="ge"``: evidence that the speedup is above ``k`` (H0: ``mean log cost_method >= mean log cost_baseline -
    log k``); ``side="lt"``: evidence that it is below ``k``. Two constant groups give an exact 0 or 1.
    """
    if k <= 0:
        raise ValueError(f"k={k!r} must be > 0")
    if side not in ("ge", "lt"):
        raise ValueError(f"side={side!r} is not allowed; allowed: ge, lt")
    lb = np.log(np.asarray(cost_baseline, dtype=float)) - math.log(k)
    lm = np.log(np.asarray(cost_method, dtype=float))
    if lb.size < 2 or lm.size < 2:
        raise ValueError("the t-test needs at least 2 seeds per group")
    return one_sided_p(*welch(lb, lm), side)  # diff > 0: the method is cheaper than baseline / k


def one_sample(a: np.ndarray, value: float) -> tuple[float, float, float]:
    """Difference ``mean(a) - value``, its standard error and degrees of freedom (``n - 1``): the one-sample case of
    :func:`welch`, for a sample compared with a number."""
    return float(a.mean() - value), float(a.std(ddof=1) / math.sqrt(a.size)), float(a.size - 1)


def one_sided_p(diff: float, se: float, df: float, side: str) -> float:
    """One-sided p-value of the t statistic ``diff / se`` with ``df`` degrees of freedom: evidence that the true
    difference is above 0 (``side="ge"``) or below it (``"lt"``). Zero spread gives an exact 0 or 1."""
    if se == 0.0:
        holds = diff > 0 if side == "ge" else diff < 0
        return 0.0 if holds else 1.0
    t = diff / se
    return float(stats.t.sf(t, df) if side == "ge" else stats.t.cdf(t, df))


def welch_tests(a: Sequence[float], b: Sequence[float] | float) -> tuple[float, float, float, float]:
    """Both one-sided t-tests of ``mean(a)`` against ``b`` (Welch's for a second sample, one-sample against a number):
    ``(p that a is above b, p that it is below, standard error, df)``."""
    a_arr = np.asarray(a, dtype=float)
    if isinstance(b, (int, float)):
        diff, se, df = one_sample(a_arr, float(b))
    else:
        diff, se, df = welch(a_arr, np.asarray(b, dtype=float))
    return one_sided_p(diff, se, df, "ge"), one_sided_p(diff, se, df, "lt"), se, df


def detectable_shift(se: float, df: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest true shift (in the test's units) that a one-sided test at ``alpha / 2`` detects with ``power``.

    ``(t_{1 - alpha/2, df} + t_{power, df}) * se``, the usual normal-theory approximation with the observed standard
    error ``se``: the minimum detectable effect at the seed count that produced ``se``.
    """
    return float((stats.t.ppf(1.0 - alpha / 2.0, df) + stats.t.ppf(power, df)) * se)


def comparison(
    cost_baseline: Sequence[float | None],
    baseline_final: Sequence[float],
    cost_method: Sequence[float | None],
    ks: Iterable[float] = (1.0,),
    alpha: float = ALPHA,
    method_final: Sequence[float] | None = None,
    baseline_first: Sequence[float] | None = None,
    method_first: Sequence[float] | None = None,
) -> Comparison:
    """Speedup of one method over the baseline for one target and unit, from per-seed costs (``None``: not reached).

    ``baseline_final`` and ``method_final`` hold each seed's final cost (its budget): a seed that did not reach the
    target is censored there, its true cost is larger. ``baseline_first`` and ``method_first``, where given, hold
    each seed's first evaluation's cost: a seed whose cost is that one met the target before anything was measured,
    so its true cost is at most that (censored from below: a method seed can then only speak for the speedup, a
    baseline seed only against it). See the module docstring for the rules.
    """
    if len(cost_baseline) != len(baseline_final):
        raise ValueError("cost_baseline and baseline_final must have one entry per baseline seed")
    if method_final is not None and len(method_final) != len(cost_method):
        raise ValueError("cost_method and method_final must have one entry per method seed")
    ks = [float(k) for k in ks]
    n_m, n_b = len(cost_method), len(cost_baseline)
    if n_m == 0 or n_b == 0:
        raise ValueError("a comparison needs at least one seed per group")
    reached_m = sum(c is not None for c in cost_method)
    reached_b = sum(c is not None for c in cost_baseline)
    out = Comparison(
        ratio=None,
        ratio_is=None,
        ci_low=None,
        ci_high=None,
        seeds=n_m,
        reached=f"{reached_m}/{n_m}",
        baseline_seeds=n_b,
        baseline_reached=f"{reached_b}/{n_b}",
        p_value_ge_k={k_key(k): None for k in ks},
        p_value_lt_k={k_key(k): None for k in ks},
        ge_k={k_key(k): None for k in ks},
        lt_k={k_key(k): None for k in ks},
        mde=None,
        status="ok",
        costs=Costs(list(cost_baseline), list(cost_method)),
    )
    if reached_b == 0:
        out.status = f"baseline reached the target in 0 of {n_b} seeds"
        return out
    m_budget = method_final if method_final is not None else [math.inf] * n_m
    b = np.asarray([c if c is not None else f for c, f in zip(cost_baseline, baseline_final)], dtype=float)
    m = np.asarray([c if c is not None else f for c, f in zip(cost_method, m_budget)], dtype=float)
    cens_b, cens_m = n_b - reached_b, n_m - reached_m
    early_b = sum(c is not None and c == f for c, f in zip(cost_baseline, baseline_first or [None] * n_b))
    early_m = sum(c is not None and c == f for c, f in zip(cost_method, method_first or [None] * n_m))
    notes = []
    if early_m:
        notes.append(f"met at the first evaluation by {early_m} of {n_m} seeds (cost at most that: no test against)")
    if early_b:
        notes.append(f"baseline met it at its first evaluation in {early_b} of {n_b} seeds (no test for the speedup)")
    if cens_m:
        notes.append(f"not reached by {cens_m} of {n_m} seeds (censored at their budget: no test for the speedup)")
    if cens_b:
        notes.append(
            f"baseline did not reach it in {cens_b} of {n_b} seeds (censored at their budget: no test against it)"
        )
    if not np.isfinite(m).all():
        out.status = "; ".join(notes)
        return out
    out.ratio = float(math.exp(np.log(b).mean() - np.log(m).mean()))
    upper, lower = bool(cens_m or early_b), bool(cens_b or early_m)  # what each kind of censoring makes the ratio
    out.ratio_is = {
        (False, False): "estimate",
        (True, False): "upper bound",
        (False, True): "lower bound",
        (True, True): "censored on both sides",
    }[(upper, lower)]
    if n_m < 2 or n_b < 2:
        out.status = "; ".join([ONE_SEED_NOTE, *notes])
        return out
    if not (upper or lower):  # a bound gets no interval: only the test on the bound (below)
        out.ci_low, out.ci_high = log_ratio_interval(b, m, level=1.0 - alpha)
    _, se, df = welch(np.log(b), np.log(m))
    shift = detectable_shift(se, df, alpha)
    out.mde = Mde(factor=float(math.exp(shift)), power=POWER, alpha_one_sided=alpha / 2.0)
    for k in ks:
        key = k_key(k)
        if not upper:  # a censored method seed's true cost is higher: it can only speak against the speedup
            p = p_value_speedup(b, m, k, "ge")
            out.p_value_ge_k[key], out.ge_k[key] = p, bool(p < alpha / 2.0)
        if not lower:  # a censored baseline seed's true cost is higher: it can only speak for the speedup
            p = p_value_speedup(b, m, k, "lt")
            out.p_value_lt_k[key], out.lt_k[key] = p, bool(p < alpha / 2.0)
    if notes:
        out.status = "; ".join(notes)
    return out


def compare(*args, **kwargs) -> dict[str, Any]:
    """:func:`comparison`'s record as the JSON the report writes (the same arguments)."""
    return comparison(*args, **kwargs).to_json()
