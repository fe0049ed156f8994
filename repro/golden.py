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

import argparse
import math
from pathlib import Path
from typing import Any

EXACT = ("step", "images", "macs")
COMPARED = ("fid", "val_loss")


def load_curves(folder: str | Path) -> dict[str, dict[str, Any]]:
    """``run_id -> curve`` of every ``*.json`` curve file in ``folder`` (each checked as ``repro speedup`` does).

    Two files with one run id are an error: which of them is compared would be an accident of file names."""
    from .speedup import load_curves as load_checked

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
    """A golden curve, checked as :func:`load_curves` checks curves (valid JSON, the fields a curve needs, each
    point with a step): a one-line error naming the file and the field, not a ``KeyError`` after the training."""
    from .speedup import load_curves as load_checked

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


def compare_folders(new_dir: str | Path, golden_dir: str | Path, rel_tol: float = 1e-3, abs_tol: float = 1e-4) -> dict:
    """Per golden run: ``{"status": "pass"|"fail"|"missing", "problems": [...]}``."""
    new, golden = load_curves(new_dir), load_curves(golden_dir)
    report = {}
    for run_id, g in golden.items():
        if run_id not in new:
            report[run_id] = {"status": "missing", "problems": ["no re-run curve"]}
            continue
        problems = compare_curve(new[run_id], g, rel_tol, abs_tol)
        report[run_id] = {"status": "fail" if problems else "pass", "problems": problems}
    return report


def print_report(report: dict) -> None:
    width = max((len(k) for k in report), default=10)
    for run_id, r in report.items():
        print(f"{run_id:<{width}}  {r['status'].upper()}")
        for p in r["problems"][:5]:
            print(f"{'':<{width}}    {p}")


def _train_one(cfg, run_dir: str, device: str | None) -> dict:
    """One run afresh, in whatever process calls it (a worker of :func:`rerun`'s pool, or the caller)."""
    from .train import train

    return train(cfg, run_dir, device=device, resume=False, quiet=True)


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
) -> dict:
    """Train every run of ``scale`` afresh into ``out_dir`` and compare its curve with the golden one.

    ``seeds`` keeps the runs of those seeds only. ``points`` trains each run only to its golden's
    ``points``-th evaluation and compares that prefix (training has no schedule that depends on the
    total length, so a prefix of a run is the run's prefix); it needs the goldens.

    ``jobs > 1`` trains that many runs side by side, each in its own process with the scale's
    ``train.threads`` (which must then be set: it is part of what a run computes, since this CPU's
    matmuls round differently at another thread count). A run's numbers do not depend on ``jobs`` or
    on the order the runs are scheduled in. Where no golden curve exists yet, the new curve becomes
    the golden (a first run on new hardware); its status is ``"new"``.
    """
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from .cli import side_by_side
    from .config import ConfigError, load_params, resolve, runs_of
    from .io import atomic_write_json

    out_dir, golden_dir = Path(out_dir), Path(golden_dir)
    p = load_params(params)
    runs = [(m, seed, resolve(p, scale, m, seed)) for m, seed in runs_of(p, scale)]
    if seeds is not None:
        known = sorted({seed for _, seed, _ in runs})
        for seed in seeds:
            if seed not in known:
                raise ConfigError(f"--seeds: {seed!r} is not a seed of scale {scale}; allowed: {known}")
        runs = [r for r in runs if r[1] in seeds]
    if points is not None:
        if isinstance(points, bool) or not isinstance(points, int) or points < 1:
            raise ConfigError(f"--points: {points!r} is not allowed; must be a positive integer")
        absent = [r for r in runs if not (golden_dir / f"{r[0]}-s{r[1]}.json").exists()]
        runs = [r for r in runs if r not in absent]  # a prefix needs its golden: a campaign not yet run has none
        for method, seed, cfg in runs:
            gpoints = _golden_curve(golden_dir / f"{method}-s{seed}.json")["points"]
            cfg.train.steps = gpoints[min(points, len(gpoints)) - 1]["step"]
    else:  # every golden checked before anything trains: a broken one would otherwise fail after the runs
        for method, seed, _ in runs:
            if (golden_dir / f"{method}-s{seed}.json").exists():
                _golden_curve(golden_dir / f"{method}-s{seed}.json")
    cpu = (device or "cpu").startswith("cpu")
    jobs = side_by_side(jobs, [cfg.train.threads for *_, cfg in runs], scale, cpu)
    args = [(cfg, str(out_dir / cfg.run_id), device) for *_, cfg in runs]  # a RunConfig pickles to a worker
    if jobs == 1:
        curves = [_train_one(*a) for a in args]
    else:  # spawned workers: a forked child of a process that has started torch's thread pools can hang
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            curves = list(pool.map(_train_one, *zip(*args)))
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
        problems = compare_curve(curve, _golden_curve(golden_path), rel_tol, abs_tol, points)
        report[cfg.run_id] = {"status": "fail" if problems else "pass", "problems": problems}
    return report


def register_rerun(subparsers) -> None:
    from .cli import add_run_args, add_tolerance_args, jobs_arg

    r = subparsers.add_parser(
        "rerun",
        help="re-train every run of a scale and compare with its goldens",
        description="Re-train every run of a scale afresh and compare each curve with its golden. The default "
        "tolerances are loose enough for other hardware (GPU kernels, bf16); `repro compare` defaults to a "
        "tight one for a re-run on the same CPU type.",
    )
    add_run_args(r, method=False)
    r.add_argument("--out", default=None, help="run folder (default: runs/<scale>-rerun)")
    r.add_argument("--golden", default=None, help="golden curves (default: goldens/<scale>/runs)")
    r.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    r.add_argument(
        "--jobs",
        type=jobs_arg,
        default=1,
        help="runs side by side, each with the scale's train.threads (same numbers); auto: CPUs / train.threads",
    )
    r.add_argument("--seeds", type=int, nargs="+", default=None, help="only the runs of these seeds")
    r.add_argument(
        "--points",
        type=int,
        default=None,
        help="train each run only to its golden's N-th evaluation and compare those N points",
    )
    add_tolerance_args(r, rel_tol=0.15, abs_tol=1.0)
    r.set_defaults(func=_rerun_cli)


def register_compare(subparsers) -> None:
    from .cli import add_tolerance_args

    p = subparsers.add_parser("compare", help="compare re-run curves with golden curves (pass/fail per run)")
    p.add_argument("new", help="folder of re-run curve JSON files")
    p.add_argument("golden", help="folder of golden curve JSON files")
    add_tolerance_args(p, rel_tol=1e-3, abs_tol=1e-4)
    p.set_defaults(func=_cli)


def _rerun_cli(args: argparse.Namespace) -> int:
    report = rerun(
        args.scale,
        args.out or f"runs/{args.scale}-rerun",
        args.golden or f"goldens/{args.scale}/runs",
        args.params,
        args.device,
        args.rel_tol,
        args.abs_tol,
        args.jobs,
        args.seeds,
        args.points,
    )
    print_report(report)
    return 0 if all(r["status"] in ("pass", "new", "no golden") for r in report.values()) else 1


def _cli(args: argparse.Namespace) -> int:
    for name in ("rel_tol", "abs_tol"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"--{name.replace('_', '-')}: {value} is not allowed; must be a finite number >= 0")
    report = compare_folders(args.new, args.golden, args.rel_tol, args.abs_tol)
    if not report:
        raise ValueError(f"{args.golden}: no golden curves (*.json) in this folder")
    print_report(report)
    return 0 if all(r["status"] == "pass" for r in report.values()) else 1
