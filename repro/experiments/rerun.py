"""Compare re-run curves with committed golden curves: pass or fail per run.

A golden curve is a ``curve.json`` committed under ``goldens/<scale>/runs/``. A re-run reproduces it
when it evaluated at the same steps with the same counted cost (steps, images and MACs must be
equal: they are arithmetic, not measurements) and its quality numbers agree within a tolerance:
``|new - golden| <= max(abs_tol, rel_tol * |golden|)`` for FID and the validation loss at every
evaluation. On the same CPU type and seed the runs are bitwise deterministic, so the default
tolerance only absorbs different BLAS kernels; on GPUs (non-deterministic kernels, bf16) pass a
looser one. Wall-clock seconds are reported, never compared.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

EXACT = ("step", "images", "macs")
COMPARED = ("fid", "val_loss")


def curves_by_run(folder: str | Path) -> dict[str, dict[str, Any]]:
    """``run_id -> curve`` of every ``*.json`` curve file in ``folder`` (each checked as ``repro speedup`` does).

    Two files with one run id are an error: which of them is compared would be an accident of file names."""
    from ..evidence.speedup import load_curves as load_checked

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder of curve files")
    files = sorted(folder.glob("*.json"))
    curves: dict[str, dict[str, Any]] = {}
    source: dict[str, Path] = {}
    for path, curve in zip(files, load_checked(files, include_incomplete=True, finite_values=False)):
        _check_steps(path, curve)
        run_id = curve["run_id"]
        if run_id in curves:
            raise ValueError(f"{path}: run_id {run_id!r} is also the run id of {source[run_id]}; give each run once")
        curves[run_id], source[run_id] = curve, path
    return curves


def _golden_curve(path: Path) -> dict[str, Any]:
    """A golden curve, checked as :func:`curves_by_run` checks curves (valid JSON, the fields a curve needs, each
    point with a step): a one-line error naming the file and the field, not a ``KeyError`` after the training."""
    from ..evidence.speedup import load_curves as load_checked

    curve = load_checked([path], include_incomplete=True, finite_values=False)[0]
    _check_steps(path, curve)
    return curve


def _check_steps(path: Path, curve: dict[str, Any]) -> None:
    """Every point of a compared curve is a mapping with an integer ``step`` (what the comparison is keyed by)."""
    for i, point in enumerate(curve["points"]):
        if not isinstance(point, dict) or isinstance(point.get("step"), bool) or not isinstance(point.get("step"), int):
            step = point.get("step") if isinstance(point, dict) else point
            raise ValueError(f"{path}: points[{i}].step={step!r} is not allowed; must be an integer")


def _number(v: Any) -> float | None:
    """``v`` as a finite float, or None when it is not one (NaN, infinity, text, ...)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def compare_curve(new: dict, golden: dict, rel_tol: float, abs_tol: float, points: int | None = None) -> list[str]:
    """Differences between a re-run and its golden curve; an empty list means it reproduces.

    ``points``: the re-run trained only to the golden's ``points``-th evaluation (a prefix of the run), and
    those first evaluations are compared. The re-run's last point then evaluated sample quality (a run's last
    step always does) where the golden may not have: only the golden's metrics are compared."""
    problems = []
    want = golden["points"] if points is None else golden["points"][:points]
    if len(new["points"]) != len(want):
        return [f"{len(new['points'])} evaluations, golden has {len(want)}" + ("" if points is None else " (prefix)")]
    if new.get("complete", True) is not True:
        problems.append(f"the re-run is not complete (complete: {new.get('complete')!r})")
    for p, g in zip(new["points"], want):
        for key in EXACT:
            if p.get(key) != g.get(key):
                problems.append(f"step {g.get('step')}: {key} {p.get(key)} != golden {g.get(key)}")
        for key in COMPARED:
            if key in g and g[key] is not None:
                if p.get(key) is None:
                    problems.append(f"step {g['step']}: {key} missing")
                    continue
                a, b = _number(p[key]), _number(g[key])
                if a is None or b is None:  # NaN compares false with everything: never a pass
                    problems.append(f"step {g['step']}: {key} {p[key]!r} vs golden {g[key]!r} is not a finite number")
                elif abs(a - b) > max(abs_tol, rel_tol * abs(b)):
                    problems.append(f"step {g['step']}: {key} {a:.4g} vs golden {b:.4g}")
    return problems


def largest_gap(new: dict, golden: dict, rel_tol: float, abs_tol: float, points: int | None = None) -> dict:
    """How close a re-run came to its golden: ``compared`` (values compared), ``equal`` (bitwise equal),
    ``rel`` (the largest relative gap ``|new - golden| / |golden|``), ``at`` (its metric and step) and ``used``
    (the largest fraction of the tolerance ``max(abs_tol, rel_tol * |golden|)`` a gap used; above 1 fails).
    Only finite values present in both are counted; :func:`compare_curve` reports the others."""
    want = golden["points"] if points is None else golden["points"][:points]
    out = {"compared": 0, "equal": 0, "rel": 0.0, "at": None, "used": 0.0}
    for p, g in zip(new["points"], want):
        for key in COMPARED:
            a, b = _number(p.get(key)), _number(g.get(key))
            if a is None or b is None:
                continue
            gap, tol = abs(a - b), max(abs_tol, rel_tol * abs(b))
            rel = gap / abs(b) if b else (0.0 if gap == 0 else math.inf)
            used = gap / tol if tol else (0.0 if gap == 0 else math.inf)
            out["compared"] += 1
            out["equal"] += a == b
            if out["at"] is None or rel > out["rel"]:
                out["rel"], out["at"] = rel, f"{key} @ step {g.get('step')}"
            out["used"] = max(out["used"], used)
    return out


def describe_gap(gap: dict) -> str:
    """One line: how many values were compared and the largest gap, with the share of the tolerance it used."""
    if not gap or not gap["compared"]:
        return "no values compared"
    n, equal = gap["compared"], gap["equal"]
    if equal == n:
        return f"{n} values compared, all bitwise equal"
    return (
        f"{n} values compared ({equal} bitwise equal); largest relative gap {gap['rel']:.2g} ({gap['at']}), "
        f"{100 * gap['used']:.3g}% of the tolerance"
    )


def common_steps(new: dict, golden: dict) -> tuple[dict, dict]:
    """The two curves cut to the steps both evaluated, each point keeping of the compared metrics only those both
    have there: the first 3,000 steps of a long run against the core run of the same method and seed, whose
    evaluation grids differ. The cut curves count as complete (what is compared is their common prefix)."""
    steps = {p["step"] for p in new["points"]} & {p["step"] for p in golden["points"]}

    def cut(curve: dict, other: dict) -> dict:
        there = {p["step"]: p for p in other["points"]}
        points = [
            {k: v for k, v in p.items() if k not in COMPARED or k in there[p["step"]]}
            for p in curve["points"]
            if p["step"] in steps
        ]
        return {**curve, "points": points, "complete": True}

    return cut(new, golden), cut(golden, new)


def compare_folders(
    new_dir: str | Path,
    golden_dir: str | Path,
    rel_tol: float = 1e-3,
    abs_tol: float = 1e-4,
    common: bool = False,
) -> dict:
    """Per golden run: ``{"status": "pass"|"fail"|"missing", "problems": [...]}``. With ``common``, runs are
    paired by method and seed (their scales may differ) and compared at the steps both evaluated
    (:func:`common_steps`); a pair with no step in common fails."""
    new, golden = curves_by_run(new_dir), curves_by_run(golden_dir)
    if common:
        by_run = {(c.get("method"), c.get("seed")): c for c in new.values()}
        new = {rid: by_run[key] for rid, g in golden.items() if (key := (g.get("method"), g.get("seed"))) in by_run}
    report = {}
    for run_id, g in golden.items():
        if run_id not in new:
            report[run_id] = {"status": "missing", "problems": ["no re-run curve"]}
            continue
        n = new[run_id]
        if common:
            n, g = common_steps(n, g)
            if not g["points"]:
                report[run_id] = {"status": "fail", "problems": ["no evaluated step in common"]}
                continue
        problems = compare_curve(n, g, rel_tol, abs_tol)
        gap = largest_gap(n, g, rel_tol, abs_tol)
        report[run_id] = {"status": "fail" if problems else "pass", "problems": problems, "gap": gap}
        if common:
            report[run_id]["steps"] = [p["step"] for p in g["points"]]
    return report


def print_report(report: dict) -> None:
    """A line per run (its status and, where values were compared, the largest gap), its problems below it."""
    width = max((len(k) for k in report), default=10)
    status = max((len(r["status"]) for r in report.values()), default=4)
    for run_id, r in report.items():
        gap = f"  {describe_gap(r['gap'])}" if "gap" in r else ""
        if r.get("steps"):
            steps = r["steps"]
            gap += f" at the {len(steps)} steps both evaluated ({steps[0]}..{steps[-1]})"
        print(f"{run_id:<{width}}  {r['status'].upper():<{status}}{gap}".rstrip())
        for p in r["problems"][:5]:
            print(f"{'':<{width}}    {p}")


def _train_one(cfg, run_dir: str, device: str | None) -> dict:
    """One run afresh, in whatever process calls it (a worker of :func:`rerun`'s pool, or the caller)."""
    from .train import train

    return train(cfg, run_dir, device=device, resume=False, quiet=True)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


class Progress:
    """A line per run started and finished, with the time since the start and an estimate of what is left.

    Before any run has finished, a run is expected to take its golden's training seconds at the last compared
    step (``expected``; None when unknown); afterwards, the mean time of the finished runs (the re-checked runs
    train equal MACs, and the goldens were timed on several CPU models). The time left is the expected time of
    the runs not finished, less what the running ones have done, over the runs side by side."""

    def __init__(self, expected: list[float | None], jobs: int, log=print):
        import time

        self.clock = time.monotonic
        self.t0, self.jobs, self.log = self.clock(), jobs, log
        self.expected = expected
        self.started: dict[int, float] = {}
        self.took: dict[int, float] = {}

    def guess(self, i: int) -> float | None:
        """Seconds run ``i`` is expected to take."""
        return sum(self.took.values()) / len(self.took) if self.took else self.expected[i]

    def left(self) -> float | None:
        """Seconds left by the estimate, or None when a run has no expected time."""
        pending = [i for i in range(len(self.expected)) if i not in self.took]
        guesses = [self.guess(i) for i in pending]
        if None in guesses:
            return None
        now = self.clock()
        work = sum(max(0.0, g - (now - self.started.get(i, now))) for i, g in zip(pending, guesses))
        return work / max(1, min(self.jobs, len(pending)))

    def _tail(self) -> str:
        left = self.left()
        est = "unknown" if left is None else f"about {_minutes(left)}"
        done = len(self.took)
        return f"{done}/{len(self.expected)} done, {_minutes(self.clock() - self.t0)} elapsed, left: {est}"

    def start(self, i: int, run_id: str) -> None:
        self.started[i] = self.clock()
        e = self.guess(i)
        guess = f" (expected about {_minutes(e)})" if e else ""
        self.log(f"[{i + 1}/{len(self.expected)}] started {run_id}{guess}; {self._tail()}")

    def finish(self, i: int, run_id: str) -> None:
        self.took[i] = self.clock() - self.started[i]
        self.log(f"[{i + 1}/{len(self.expected)}] finished {run_id} in {_minutes(self.took[i])}; {self._tail()}")


def prefix_config(cfg, golden: dict, points: int):
    """``cfg`` made to train to ``golden``'s ``points``-th evaluation, computing sample quality only where the
    golden has some to compare in that prefix (else its last point would score an FID nothing compares), and the
    golden's training seconds there (None when not recorded)."""
    prefix = golden["points"][:points]
    cfg = cfg.with_train(steps=prefix[-1]["step"])
    if all(pt.get("fid") is None for pt in prefix):
        cfg = cfg.with_eval(metrics=())
    return cfg, _number(prefix[-1].get("seconds"))


def rerun(
    scale: str,
    out_dir: str | Path,
    golden_dir: str | Path,
    params: str = "params.yaml",
    device: str | None = None,
    rel_tol: float = 0.15,
    abs_tol: float = 1.0,
    jobs: int | str = 1,
    seeds: list[int] | None = None,
    points: int | None = None,
    methods: list[str] | None = None,
    log=None,
) -> dict:
    """Train every run of ``scale`` afresh into ``out_dir`` and compare its curve with the golden one.

    ``seeds`` and ``methods`` keep the runs of those seeds and methods only. ``points`` trains each run only to
    its golden's ``points``-th evaluation and compares that prefix (training has no schedule that depends on the
    total length, so a prefix of a run is the run's prefix); it needs the goldens. Where the golden's prefix holds
    no FID, the re-run computes none either (its last point would otherwise sample and score an FID that nothing
    compares); the validation loss is computed at every point as before.

    ``jobs > 1`` trains that many runs side by side, each in its own process with the scale's
    ``train.threads`` (which must then be set: it is part of what a run computes, since this CPU's
    matmuls round differently at another thread count). A run's numbers do not depend on ``jobs`` or
    on the order the runs are scheduled in. Where no golden curve exists yet, the new curve becomes
    the golden (a first run on new hardware); its status is ``"new"``. ``log`` (a function of one line)
    receives a line per run started and finished, with the time elapsed and an estimate of the time left.
    """
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from multiprocessing import get_context

    from ..build import resolve
    from ..config import ConfigError, load_params, runs_of
    from ..io import atomic_write_json
    from ..runtime import side_by_side

    out_dir, golden_dir = Path(out_dir), Path(golden_dir)
    p = load_params(params)
    runs = [(m, seed, resolve(p, scale, m, seed)) for m, seed in runs_of(p, scale)]
    for name, wanted, index in (("seeds", seeds, 1), ("methods", methods, 0)):
        if wanted is None:
            continue
        known = sorted({r[index] for r in runs}, key=str)
        for value in wanted:
            if value not in known:
                raise ConfigError(f"--{name}: {value!r} is not a {name[:-1]} of scale {scale}; allowed: {known}")
        runs = [r for r in runs if r[index] in wanted]
    goldens = {}  # every golden checked before anything trains: a broken one would otherwise fail after the runs
    for method, seed, _ in runs:
        path = golden_dir / f"{method}-s{seed}.json"
        if path.exists():
            goldens[method, seed] = _golden_curve(path)
    expected: list[float | None] = []  # each run's training seconds in its golden, where there is one
    for method, seed, _ in runs:
        last = goldens[method, seed]["points"][-1:] if (method, seed) in goldens else []
        expected.append(_number(last[0].get("seconds")) if last else None)
    if points is not None:
        if isinstance(points, bool) or not isinstance(points, int) or points < 1:
            raise ConfigError(f"--points: {points!r} is not allowed; must be a positive integer")
        absent = [r for r in runs if (r[0], r[1]) not in goldens]
        runs = [r for r in runs if r not in absent]  # a prefix needs its golden: a campaign not yet run has none
        prefixed = [prefix_config(cfg, goldens[method, seed], points) for method, seed, cfg in runs]
        runs = [(method, seed, cfg) for (method, seed, _), (cfg, _) in zip(runs, prefixed)]
        expected = [seconds for _, seconds in prefixed]
    cpu = (device or "cpu").startswith("cpu")
    jobs = side_by_side(jobs, [cfg.train.threads for *_, cfg in runs], scale, cpu)
    args = [(cfg, str(out_dir / cfg.run_id), device) for *_, cfg in runs]  # a RunConfig pickles to a worker
    progress = Progress(expected, jobs, log or (lambda line: None))
    curves: list[dict | None] = [None] * len(runs)
    if jobs == 1:
        for i, a in enumerate(args):
            progress.start(i, a[0].run_id)
            curves[i] = _train_one(*a)
            progress.finish(i, a[0].run_id)
    else:  # spawned workers: a forked child of a process that has started torch's thread pools can hang
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            running, queue = {}, list(range(len(args)))
            while queue or running:
                while queue and len(running) < jobs:  # submitted only when a worker is free: starts when logged
                    i = queue.pop(0)
                    progress.start(i, args[i][0].run_id)
                    running[pool.submit(_train_one, *args[i])] = i
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    i = running.pop(future)
                    curves[i] = future.result()
                    progress.finish(i, args[i][0].run_id)
    report = {}
    if points is not None:
        for *_, cfg in absent:
            report[cfg.run_id] = {"status": "no golden", "problems": ["not run yet: nothing to compare a prefix with"]}
    for (method, seed, cfg), curve in zip(runs, curves):
        atomic_write_json(out_dir / "curves" / f"{method}-s{seed}.json", curve)
        golden_path = golden_dir / f"{method}-s{seed}.json"
        if not golden_path.exists():
            atomic_write_json(golden_path, curve)
            report[cfg.run_id] = {"status": "new", "problems": [f"no golden: wrote {golden_path}"]}
            continue
        golden = _golden_curve(golden_path)
        problems = compare_curve(curve, golden, rel_tol, abs_tol, points)
        gap = largest_gap(curve, golden, rel_tol, abs_tol, points)
        report[cfg.run_id] = {"status": "fail" if problems else "pass", "problems": problems, "gap": gap}
    return report
