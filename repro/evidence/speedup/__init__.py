"""Speedup to a target metric, measured the way MLPerf measures convergence.

A *curve* is the dict a training run writes to ``curve.json``: ``run_id``, ``method``, ``seed``, ``scale`` and
``points``, each point holding its cumulative cost in every unit (``step``, ``images``, ``macs``, ``seconds``) and the
evaluation metrics (``fid``, ``kid``, ``val_loss``, ...). Every metric handled here is lower-is-better.

Definitions (all of them are what the JSON report means):

* **Cost to target** (:func:`cost_to_target`): the first evaluation whose metric is at or below the target, with the
  crossing interpolated between it and the evaluation before it, metric linear in log-cost. If the first evaluation
  already meets the target, its own cost is returned (nothing earlier was measured). A curve that never gets there
  gives ``None``: "not reached" is a result.
* **Targets** (:func:`targets_from_baseline`): ``final`` is the least demanding of the baseline seeds' metrics at their
  last evaluation (the largest: TREAD's 37x target, DiT's FID at 7M iterations, is the end of the baseline's budget),
  so that every baseline seed reaches it within its budget; ``third`` is the mean over baseline seeds of each seed's
  metric at one third of that seed's final cost in the anchor unit, interpolated like the cost (TREAD's 14x target,
  DiT's FID at 2,352K of 7M iterations); ``final-mean`` is the mean of the baseline seeds' final values, the rule of
  ``final`` until it was changed (it leaves about half the baseline seeds short of it by construction: censored, they
  block the test of a slowdown). Specs registered under the earlier rule are evaluated on it beside their amended test.
* **Ladder** (:func:`ladder_from_baseline`, ``unit_results.<method>.ladder.<rung>.<unit>``): one target per evaluation
  point of the baseline, its seeds' mean value there; the rung is named by the point's cost in the anchor unit (the
  step, ``"3000"``). TREAD's 14x and 37x are two rungs of such a ladder (DiT's 2,352K and 7M points); the ladder shows
  how a speedup changes with the baseline's training length and where curves cross. The last rung equals
  ``final-mean``. Computed for ``ladder_units`` (MACs by default) to keep the report small.
* **Common target** (``unit_results.<method>.common.<unit>``): per method, the worst final value over every seed of
  both arms, which every seed of both reaches within its own budget: at a shared budget the only target at which
  neither side is censored, so its interval and both tests are those of an uncensored comparison. Its record
  carries the ``target``. A claim at a shared budget that a slower method could not reach is decided here.
* **Final values** (``final_values``): each method's metric at the end of its budget, per seed: at equal budgets
  (``equal_cost``) the direct comparison of where the methods end, by Welch's t-tests in the ledger; on simulated
  curves it finds a 2x slowdown in 89% (3 seeds) and 99.9% (5 seeds) of experiments.
* **Speedup** of a method over the baseline for one target and unit: the ratio of geometric means of the seeds'
  costs, ``exp(mean log cost_baseline - mean log cost_method)``. Costs to a target are positive and skewed, and a
  speedup is a ratio, so the statistics work on log cost, where "speedup >= k" is ``mean log cost_method <
  mean log cost_baseline - log k``.
* **Censoring**: a seed that does not reach the target within its budget is right-censored at its final cost (its
  budget): its true cost is larger; one that meets it at its first evaluation is censored from below (its true cost is
  at most that one's, which the ladder's early rungs meet). Both sides are handled alike and it is never evidence by
  itself. A censored method seed makes its cost a lower bound, so it can only speak *against* a speedup: the test *for*
  the speedup is not run. A censored baseline seed can only speak *for* one: the test *against* it is not run. The ratio
  is then a bound (``ratio_is``: ``estimate``, ``upper bound``, ``lower bound`` or ``censored on both sides``) and no
  interval is given (``ci_low`` and ``ci_high`` null): a two-sided interval around a bound covers nothing in particular
  (on simulated curves such intervals covered the true ratio in 0-21% of experiments). The one test that can run is the
  test on the bound: a censored cost enters at its budget, which understates it, so that test can only be conservative
  (its false-verdict rate is measured with the others in ``tests/test_calibration.py``). If no baseline seed reaches the
  target, everything is null. Every record carries the per-seed costs it was computed from (``costs``).
* **Interval**: Welch t-interval on log cost (95 %), exponentiated. On curves simulated from the committed DiT runs'
  process (``tests/test_calibration.py``) it covered the true ratio in 93.9-96.4 % of 1,000 experiments at 3 to 5
  seeds, where scipy's BCa bootstrap covered 82 % at 3 seeds; hence the t-interval.
* **Tests**: Welch's one-sided t-tests on log cost of "speedup >= k" (``p_value_ge_k``, ``ge_k``) and of
  "speedup < k" (``p_value_lt_k``, ``lt_k``), each at ``alpha / 2`` (0.025), so that a test decides exactly when the
  95 % interval excludes ``k``. When both groups have zero spread the answer is exact (p = 0 or 1). Interval and tests
  need at least 2 seeds on each side; with fewer, the ratio is a data point, not a verdict.
* **Growth** (``growth.<method>.<from>:<to>.<unit>``, ``--growth FROM:TO``): how much a speedup grows between two
  targets (named or rungs of the ladder), ``speedup(to) / speedup(from)``: TREAD's 3.8x at DiT's 400K point growing
  to 14x at its 2,352K point is a growth of 3.7. Per seed, the log cost from one target to the other, ``log c(to) -
  log c(from)``; the growth is the ratio of geometric means of those cost ratios, baseline over method, with the same
  Welch interval, tests and censoring rules as a speedup (:func:`compare` on them): a seed that does not reach
  ``to`` is censored at its budget; one that does not reach ``from``, or meets it at its first evaluation (its cost
  there unmeasured), leaves the comparison.
* **Decomposition** (``decomposition``, ``--decompose METHOD=VIA``): at each rung of the ladder, each method's
  speedup in a ladder unit other than iterations as the speedup in iterations times the per-step cost ratio
  (``per_step.<method>.<rung>.<unit>``: ``speedup = iterations x per_step``, with ``iterations_share`` = ``log
  iterations / log speedup``), and, per pair, METHOD's speedup over the baseline as VIA's over the baseline times
  METHOD's over VIA at the same target (``via.<method>.ladder.<rung>.<unit>``: ``whole = to_via x
  from_via.ratio``, ``via_share`` = ``log to_via / log whole``; ``from_via`` is a full record, interval and tests
  included). TREAD-EDM via DiT-EDM over DDPM DiT splits TREAD's recipe into the objective's factor and the
  routing's. Point estimates multiply exactly (geometric means of the same per-seed costs); a censored record's
  factors split its bound.
* **Minimum detectable effect** (``mde.factor``): with the observed spread and these seed counts, a true speedup of
  ``k * factor`` (or ``k / factor``) is detected with 80 % power by the one-sided test at 0.025.
* **Late slope** (:func:`late_slope`): least-squares slope of the metric against log10(cost) over the evaluations in
  the last third of the cost range; near zero means the curve has flattened. A slope fitted through fewer than 5
  evaluations in that window is not a fit (``None``, and the report says the plateau is not checkable). Scaling the
  cost leaves it unchanged. Compared between methods at one budget it favours the slower one: a faster method is
  further along the same curve, where it is flatter.
* **Slope at matched metric** (:func:`matched_slope`, ``matched_slope.<method>``): per method, the window of metric
  values from the baseline's mean value at the start of the last third of its budget (anchor unit) down to the
  common target; each seed's slope against log10(cost) over its evaluations from its first crossing of the top of
  the window to its first crossing of the bottom. If the method's curve were the baseline's shifted in log cost (a
  constant speedup), both slopes would be equal: a difference is a difference of shape, not of progress.
* **Training length**: ``epochs`` per method, images seen at the end of the budget over the training-set size
  (``train_size`` in the curve, or ``--train-size``).
* **Sanity gate** (optional, ``--gate-reference``): a run carries a verdict only if its final FID is below the FID of
  real images degraded by a stated corruption of the reference report's ladder (``goldens/<scale>/reference.json``,
  computed on 10,000 images; a run's FID from fewer samples is biased upwards, so the gate is conservative). A run
  that fails it "does not yet generate".


The package: :mod:`.curves` (curve files and their points), :mod:`.cost` (cost to target, targets, ladder,
slopes), :mod:`.stats` (Welch's t on log cost, intervals, p-values, :func:`compare`), :mod:`.gate` (the sanity
gate), :mod:`.report` (the report), :mod:`.record` (the report as declared dataclasses, which the ledger reads),
:mod:`.plot` (the plots) and :mod:`.files` (writing reports). The names below are the ones used elsewhere.
"""

from .cost import (
    MIN_LATE_POINTS,
    TARGETS,
    THIRD,
    cost_to_target,
    first_crossing,
    ladder_from_baseline,
    late_slope,
    late_window_points,
    matched_slope,
    metric_at_cost,
    rung_name,
    targets_from_baseline,
    train_targets,
)
from .curves import METRICS, NON_NEGATIVE, UNIT_LABELS, UNITS, find_curve_files, load_curves, normalize_seed
from .files import check_output, check_replaceable, round_floats, write_json
from .gate import DEFAULT_GATE, gate_from_reference, gate_summary, run_gate
from .plot import METHOD_COLORS, method_colors, plot_curves, plot_ladder, published_tread_ladder
from .record import BrokenRecord, Comparison, MatchedSlope, NoGrowth, Sample, SpeedupReport, k_key, record_at
from .report import build_report, growth, no_runs_report, speedup_report
from .stats import (
    ALPHA,
    LEVEL,
    ONE_SEED_NOTE,
    POWER,
    compare,
    comparison,
    detectable_shift,
    log_ratio_interval,
    one_sample,
    one_sided_p,
    p_value_speedup,
    welch,
    welch_tests,
)

__all__ = [
    "ALPHA", "DEFAULT_GATE", "LEVEL", "METHOD_COLORS", "METRICS", "MIN_LATE_POINTS", "NON_NEGATIVE", "ONE_SEED_NOTE",
    "POWER", "TARGETS", "THIRD", "UNITS", "UNIT_LABELS", "BrokenRecord", "Comparison", "MatchedSlope", "NoGrowth",
    "Sample", "SpeedupReport", "build_report", "check_output", "check_replaceable", "compare", "comparison",
    "cost_to_target", "detectable_shift", "find_curve_files", "first_crossing", "gate_from_reference",
    "gate_summary", "growth", "k_key", "ladder_from_baseline", "late_slope", "late_window_points", "load_curves",
    "log_ratio_interval", "matched_slope", "method_colors", "metric_at_cost", "no_runs_report", "normalize_seed",
    "one_sample", "one_sided_p", "p_value_speedup", "plot_curves", "plot_ladder", "published_tread_ladder",
    "record_at", "round_floats", "rung_name", "run_gate", "speedup_report", "targets_from_baseline",
    "train_targets", "welch", "welch_tests", "write_json",
]  # fmt: skip
