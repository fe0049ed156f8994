"""Two further parts of the GPU call (``python -m repro.experiments.gpu campaign --parts long tokens``): the long
horizon to 17.5x the core budget (the 37x analogue) and the token axis at 256 tokens.

``long`` (scale ``gpu-long``)
    The micro model at 17.5x the core budget: DiT (DDPM) for 52,500 dense steps, then TREAD's recipe
    (``tread-edm``) trained to target, the target being the least good DiT seed's final FID (and validation loss
    on DDPM, which does not apply to EDM) as ``repro targets`` computes it, or DiT's whole budget in MACs, whichever
    comes first. As many paired seeds as fit (in the scale's order), at least one, else the part is skipped.
``tokens`` (scale ``gpu-tokens``)
    The micro model with patch 2 on 32x32 pixels, 256 tokens, DiT and TREAD at equal training MACs, at most the
    scale's length (micro's core budget) and as long as fits, in whole ``sample_every`` steps; skipped when three
    sample-quality evaluations do not fit (the ladder's 'third' target needs an FID within the first third).

How a part is sized. The plan prints each run's counted FLOPs (2 x MACs on the meta device) and its time at the
campaign's stated throughput. Then each part measures its own step: each of its methods trains for the first
``probe_s`` seconds in a scratch folder (:func:`measure_step`: the steps after the first log line, so start-up and
warm-up are left out). A run's estimate is its steps x its measured step plus its evaluations (each forward call
of sampling and of the validation loss at the larger of a third of the measured step and its FLOPs at the
sampling rate, plus the stated per-evaluation overhead for the metrics). Each part takes what fits in the time
left, less the least the part after it needs (when the two do not fit together, the long part keeps its room and
the token axis gives way), with a ``margin`` for error; each run is also capped by the time left
(``train.max_seconds``), and a run so cut is recorded as cut, never as done.

What a part writes: ``<out>/<part>.json``, one bundle (the 8-file limit of what comes back from a call): the
scale, the campaign's provenance, the sizing (measured steps, estimates, what was skipped and why), each run's
configuration, status and curve (rewritten after every evaluation), and the targets.
:func:`repro.experiments.gpu.land.land_parts` unpacks a bundle into ``goldens/small/<part>/``
(``runs/<method>-s<seed>.json``, ``targets.json``, ``part.json``) and writes the ladder over it to
``goldens/small/speedup-<part>.json``, the file the ledger reads at scale small.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .plan import counted_macs

LONG, TOKENS = "long", "tokens"
SCALES = {LONG: "gpu-long", TOKENS: "gpu-tokens"}
LONG_FACTOR = 17.5  # 7M / 400K: DiT's longest run over the core budget
CORE_SCALE = "micro"  # the budget 17.5x is counted from, and the 64-token counterpart of the token axis
TARGET_BASELINE, TARGET_OBJECTIVE = "dit", "ddpm"
MARGIN = 1.15  # estimates are multiplied by this before they are compared with the time left
MIN_EVALS = 3  # the token axis's least length, in sample-quality evaluations: the ladder's 'third' target needs one

# The dry run: the same parts at a size a 2-core CPU runs in seconds. Its core budget is 2 steps, so its long
# horizon is 17.5 x 2 = 35 steps; its token axis keeps patch 2 on 32x32 (256 tokens).
DRY_CORE_STEPS = 2
DRY_PROBE_S = 0.5  # the dry run measures each method's step for at most this long
DRY_MODEL = {"patch_size": 4, "hidden_size": 32, "depth": 8, "num_heads": 2}
DRY_DATA = {"subset": 1024}
DRY_EVAL = {"num_samples": 50, "sample_steps": 2, "reference_size": 300, "val_size": 16, "val_points": 2,
            "batch_size": 50, "metrics": ["fid"], "fid_blocks": 1}  # fmt: skip
DRY = {
    LONG: {
        "seeds": [0, 1],  # two pairs: enough to show the seeds taken in order while they fit
        "model": DRY_MODEL,
        "train": {"steps": round(LONG_FACTOR * DRY_CORE_STEPS), "batch_size": 8, "eval_every": 5, "ckpt_every": 35,
                  "log_every": 5, "precision": "fp32", "threads": 1},
        "eval": {**DRY_EVAL, "sample_at": [10, 20, 35], "sample_every": None,
                 "extra_fid": {"sample_steps": {"ddpm": 3, "edm": 2}, "at": [10], "seeds": [0]}},
    },
    TOKENS: {
        "model": {**DRY_MODEL, "patch_size": 2},
        "train": {"steps": 8, "batch_size": 8, "eval_every": 2, "ckpt_every": 8, "log_every": 2, "precision": "fp32",
                  "threads": 1},
        "eval": {**DRY_EVAL, "sample_every": 2, "sample_at": None, "extra_fid": None},
    },
}  # fmt: skip


def tokens_of(model) -> int:
    """Tokens a model sees: (input_size / patch_size)^2."""
    return (model.input_size // model.patch_size) ** 2


# ---------------------------------------------------------------------------------------------------------------------
# Configurations


def part_params(params: dict[str, Any], part: str, dry_run: bool, steps: int | None = None) -> dict[str, Any]:
    """A copy of ``params`` whose part scale is the dry run's (when ``dry_run``) and has ``steps`` dense steps."""
    p = copy.deepcopy(params)
    s = p["scales"][SCALES[part]]
    if dry_run:
        d = DRY[part]
        s["seeds"] = d.get("seeds", s["seeds"])
        s["model"] = {**s["model"], **d["model"]}
        s["data"] = {**s.get("data", {}), **DRY_DATA}
        s["train"] = {**s["train"], **d["train"]}
        s["eval"] = {k: v for k, v in {**s["eval"], **d["eval"]}.items() if v is not None}
    if steps is not None:
        s["train"]["steps"] = steps
    return p


_RESOLVED: dict[str, list] = {}  # resolving counts MACs on the meta device: once per distinct request


def part_configs(params: dict[str, Any], part: str, dry_run: bool, steps: int | None = None,
                 seeds: Sequence[int] | None = None) -> list:  # fmt: skip
    """The part's runs (fresh RunConfigs, method-major as the scale lists them), of ``seeds`` only when given."""
    from ...build import resolve
    from ...config import runs_of

    key = json.dumps([params, part, dry_run, steps], sort_keys=True, default=str)
    if key not in _RESOLVED:
        p = part_params(params, part, dry_run, steps)
        scale = SCALES[part]
        _RESOLVED[key] = [resolve(p, scale, m, sd) for m, sd in runs_of(p, scale)]
    return [copy.deepcopy(c) for c in _RESOLVED[key] if seeds is None or c.seed in seeds]


def with_samples(cfg, step: int) -> bool:
    """Whether the evaluation after ``step`` samples (FID), as the training loop's evaluation decides it."""
    tc, ec = cfg.train, cfg.eval
    if not ec.metrics:
        return False
    if ec.sample_at is not None:
        return tc.at_dense(step, ec.sample_at)
    return ec.sample_every is None or tc.on_schedule(step, ec.sample_every)


# ---------------------------------------------------------------------------------------------------------------------
# Estimates: counted FLOPs, and the measured step


def run_estimate(cfg, tp, step_s: float | None = None) -> dict[str, Any]:
    """Counted FLOPs of one run and its seconds: at the stated throughput ``tp`` (a
    :class:`repro.experiments.gpu.plan.Throughput`), or, with ``step_s``, at the measured step (training) and at no less
    than a third of it per forward call (evaluation: at this width a forward call is launch-bound, not FLOP-bound)."""
    t, e = cfg.train, cfg.eval
    step_macs, fwd = counted_macs(cfg)  # the same count as the small runs' plan, a regularizer's work included
    evals = [s for s in range(1, t.steps + 1) if t.is_eval_step(s)]
    sampled = [s for s in evals if with_samples(cfg, s)]
    extra = e.extra_fid if e.extra_fid and cfg.seed in e.extra_fid["seeds"] else None
    extra_steps = extra["sample_steps"].get(cfg.objective.name, 0) if extra else 0
    extra_at = [s for s in sampled if s == t.steps or t.at_dense(s, extra["at"])] if extra_steps else []
    heun = 2 if cfg.objective.name == "edm" else 1  # EDM's Heun sampler: two model calls per step
    batches = math.ceil(e.num_samples / e.batch_size)
    guidance = 2 if e.guidance_scale > 1 else 1
    sample_calls = len(sampled) * batches * e.sample_steps * heun + len(extra_at) * batches * extra_steps * heun
    sample_macs = sample_calls * min(e.num_samples, e.batch_size) * fwd * guidance
    val_calls = len(evals) * e.val_points
    val_macs = len(evals) * e.val_size * e.val_points * fwd
    if step_s is None:
        train_s = tp.seconds(t.steps * step_macs)
        eval_s = tp.seconds(sample_macs, True) + tp.seconds(val_macs, True)
    else:
        train_s = t.steps * step_s
        per_call = step_s / 3
        eval_s = max(tp.seconds(sample_macs, True), sample_calls * per_call)
        eval_s += max(tp.seconds(val_macs, True), val_calls * per_call)
    eval_s += (len(sampled) + len(extra_at)) * tp.eval_overhead_s
    return {
        "part": f"train {cfg.run_id}",
        "steps": t.steps,
        "batch_size": t.batch_size,
        "tokens": tokens_of(cfg.model),
        "evaluations": len(evals),
        "sampled_evaluations": len(sampled),
        "extra_fid_evaluations": len(extra_at),
        "train_step_macs": step_macs,
        "forward_macs_per_sample": fwd,
        "train_flops": 2 * t.steps * step_macs,
        "sample_flops": 2 * sample_macs,
        "val_flops": 2 * val_macs,
        "train_s": train_s,
        "eval_s": eval_s,
        "estimate_s": train_s + eval_s,
        **({"measured_step_s": step_s} if step_s is not None else {}),
    }


def measure_step(cfg, device: str, seconds: float, work: Path, train_fn: Callable | None = None) -> dict[str, Any]:
    """Train ``cfg``'s first ``seconds`` of steps in ``work`` (no sampling, a tiny validation loss at the end) and
    return the seconds per step measured after its first log line (start-up and warm-up left out)."""
    from ..train import train

    t = dataclasses.replace(
        cfg.train,
        steps=10**7,
        max_seconds=seconds,
        to_target=None,
        eval_every=10**7,
        ckpt_every=10**7,
        log_every=max(1, min(cfg.train.log_every, 10)),
    )
    e = dataclasses.replace(
        cfg.eval,
        metrics=(),
        sample_at=None,
        sample_every=None,
        extra_fid=None,
        val_size=min(cfg.eval.val_size, 8),
        val_points=1,
    )
    c = copy.deepcopy(dataclasses.replace(cfg, train=t, eval=e))
    c.validate()
    t0 = time.monotonic()
    curve = (train_fn or train)(c, work, device=device, resume=False, quiet=True)
    wall = time.monotonic() - t0
    lines = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines() if x.strip()]
    if not lines:  # a machine too busy to reach a log line within ``seconds``: the run's last point still says
        lines = [p for p in (curve or {}).get("points", []) if p.get("step")][-1:]
    if not lines:
        raise RuntimeError(f"measure_step {cfg.run_id}: not one step in {seconds} s")
    first, last = lines[0], lines[-1]
    if last["step"] > first["step"]:
        step_s = (last["seconds"] - first["seconds"]) / (last["step"] - first["step"])
    else:
        step_s = last["seconds"] / last["step"]
    return {"method": cfg.method, "step_s": step_s, "steps": last["step"], "wall_s": round(wall, 3)}


# ---------------------------------------------------------------------------------------------------------------------
# Sizing: pure arithmetic on the estimates


def size_long(pair_s: Sequence[float], left_s: float, margin: float = MARGIN) -> dict[str, Any]:
    """How many paired seeds of the long part fit: ``pair_s[i]`` is seed i's DiT run plus its to-target run at
    its worst case (DiT's whole budget in MACs). Seeds are taken in order; none fitting skips the part."""
    used, seeds = 0.0, 0
    for s in pair_s:
        if used + margin * s > left_s:
            break
        used, seeds = used + margin * s, seeds + 1
    out = {"seed_pairs": seeds, "of": len(pair_s), "estimate_s": used, "left_s": left_s, "margin": margin}
    if seeds == 0:
        need = margin * pair_s[0] if pair_s else math.inf
        out["skip"] = (f"one seed pair needs about {need:.0f} s (DiT to 17.5x, then TREAD-EDM to target at its "
                       f"worst case, x{margin} margin); {left_s:.0f} s left")  # fmt: skip
    return out


def size_tokens(estimate: Callable[[int], float], max_steps: int, every: int, left_s: float,
                margin: float = MARGIN) -> dict[str, Any]:  # fmt: skip
    """The longest length, in whole ``every`` dense steps up to ``max_steps``, whose estimate (``estimate(steps)``:
    DiT and TREAD at equal MACs) fits in ``left_s``; fewer than ``MIN_EVALS`` x ``every`` skips the part."""
    least = MIN_EVALS * every
    steps = max_steps - max_steps % every
    while steps >= least and margin * estimate(steps) > left_s:
        steps -= every
    out = {"dense_steps": steps, "max_steps": max_steps, "left_s": left_s, "margin": margin}
    if steps < least:
        out["dense_steps"] = 0
        out["skip"] = (f"{MIN_EVALS} sample-quality evaluations ({least} dense steps) of DiT and TREAD need about "
                       f"{margin * estimate(least):.0f} s (x{margin} margin); {left_s:.0f} s left")  # fmt: skip
    else:
        out["estimate_s"] = margin * estimate(steps)
        out["shortened"] = steps < max_steps
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Running the parts inside the campaign


class Bundle:
    """``<out>/<part>.json``: what one part did, rewritten after every evaluation of its runs."""

    def __init__(self, out: Path, part: str, provenance: dict[str, Any]):
        self.path = out / f"{part}.json"
        self.doc: dict[str, Any] = {"part": part, "scale": SCALES[part], "provenance": provenance, "status": "running",
                                    "sizing": {}, "runs": {}, "targets": None}  # fmt: skip
        self.save()

    def save(self) -> None:
        from ...io import atomic_write_json

        atomic_write_json(self.path, self.doc)

    def run(self, cfg) -> dict[str, Any]:
        entry = {"config": cfg.to_dict(), "status": "running", "curve": None}
        self.doc["runs"][cfg.run_id] = entry
        self.save()
        return entry


def plan_rows(params, dry_run: bool, tp, parts: Sequence[str]) -> list[dict[str, Any]]:
    """The plan's rows of ``parts``: every run the part could make, at the stated throughput."""
    rows = []
    for part in parts:
        for cfg in part_configs(params, part, dry_run):
            rows.append({**run_estimate(cfg, tp), "part": f"{part} {cfg.run_id}"})
    return rows


def run_parts(camp, parts: Sequence[str], params, dry_run: bool, device: str, tp, work: Path, probe_s: float,
              reserve_s: float = 10.0, train_fn: Callable | None = None) -> None:  # fmt: skip
    """Measure each of ``parts``, share the time left between them (:func:`share_time`), then size and run each:
    tokens first, then long (the token axis is shorter and its length adapts, so the long part is sized on what it
    actually left). ``camp`` is the :class:`repro.experiments.gpu.record.Campaign`."""
    prov = camp.record.get("provenance") or {}
    rec = camp.record.setdefault("axes", {})
    steps: dict[str, dict[str, dict]] = {}
    for part in parts:  # each part's own first seconds, before either runs, so each is sized knowing the other's
        if not camp.fits(f"measure {part}"):  # the campaign's deadline passed: the part is skipped unmeasured
            continue
        with camp.part(f"measure {part}") as entry:
            seen: dict[str, dict] = {}
            for cfg in part_configs(params, part, dry_run, seeds=[part_configs(params, part, dry_run)[0].seed]):
                seen[cfg.method] = measure_step(cfg, device, probe_s, work / "probe" / cfg.run_id, train_fn)
                print(f"measured {part} {cfg.method}: {1e3 * seen[cfg.method]['step_s']:.2f} ms per step "
                      f"({seen[cfg.method]['steps']} steps in the first {probe_s:g} s)", flush=True)  # fmt: skip
            entry["step_s"] = {m: r["step_s"] for m, r in seen.items()}
            steps[part] = seen
        rec[part] = {"measured": steps.get(part)}
        camp.save()
    order = [p for p in (TOKENS, LONG) if p in parts and p in steps]
    least = {p: _minimum_s(p, params, dry_run, tp, steps[p]) for p in order}
    room = share_time(order, least, camp.left() - reserve_s)
    for part in order:
        bundle = Bundle(camp.out, part, part_provenance(prov, part_configs(params, part, dry_run), device))
        if isinstance(room[part], str):
            bundle.doc.update(status="skipped", sizing={"skip": room[part], "least_s": least[part]})
            camp.skip(f"{part} ({SCALES[part]})", room[part])
            rec[part]["status"] = "skipped"
            bundle.save()
            continue
        left = camp.left() - reserve_s - room[part]
        runner = _run_tokens if part == TOKENS else _run_long
        rec[part]["bundle"] = bundle.path.name
        try:
            runner(camp, bundle, params, dry_run, device, tp, work, steps[part], left, train_fn)
        finally:
            runs = bundle.doc["runs"].values()
            if bundle.doc["status"] == "running":
                bundle.doc["status"] = "done" if runs and all(r["status"] == "done" for r in runs) else "incomplete"
            bundle.save()
            rec[part]["status"] = bundle.doc["status"]
            camp.save()


def part_provenance(campaign: dict[str, Any], cfgs: Sequence, device: str) -> dict[str, Any]:
    """The call's provenance with what differs for this part: its precision and TF32 (as the training loop applies
    them on ``device``) and its seeds (each curve also carries its own run's)."""
    cuda = str(device).startswith("cuda")
    return {**campaign, "precision": cfgs[0].train.precision if cuda else "fp32",
            "tf32": bool(cfgs[0].train.tf32 and cuda), "seed": sorted({c.seed for c in cfgs})}  # fmt: skip


def share_time(order: Sequence[str], least: dict[str, float], left_s: float) -> dict[str, float | str]:
    """Which of the parts (run in ``order``) get time, each needing at least ``least[part]`` seconds of ``left_s``.
    All that fit together run, each earlier one keeping the later ones' least in reserve; when they do not fit
    together, the long part (the 37x analogue, the issue's first question) keeps its room and the token axis gives
    way; a part that does not fit even alone is left to skip itself with its own reason (and nothing is reserved
    for it). Returns ``{part: seconds to keep for the parts after it, or the reason it gives way}``."""
    alone = [p for p in order if least[p] <= left_s]
    keep = set(alone)
    if alone and sum(least[p] for p in alone) > left_s:  # none fitting (no time left at all): each skips itself
        keep = {LONG if LONG in alone else alone[0]}
    out: dict[str, float | str] = {}
    for i, p in enumerate(order):
        if p in alone and p not in keep:
            (k,) = keep
            out[p] = (f"{least[p]:.0f} s at least, with the {k} part's {least[k]:.0f} s, is more than the "
                      f"{left_s:.0f} s left; the {k} part keeps its room")  # fmt: skip
        else:
            out[p] = sum(least[q] for q in order[i + 1 :] if q in keep)
    return out


def _minimum_s(part, params, dry_run, tp, seen) -> float:
    """What ``part`` needs at least: one seed pair (long), or ``MIN_EVALS`` sample-quality evaluations (tokens)."""
    if part == LONG:
        cfgs = part_configs(params, LONG, dry_run)
        first = [c for c in cfgs if c.seed == cfgs[0].seed]
        return MARGIN * sum(run_estimate(c, tp, seen[c.method]["step_s"])["estimate_s"] for c in first)
    every = _every(part_configs(params, TOKENS, dry_run)[0])
    return MARGIN * _tokens_estimate(params, dry_run, tp, seen)(MIN_EVALS * every)


def _every(cfg) -> int:
    return cfg.eval.sample_every or cfg.train.eval_every


def _tokens_estimate(params, dry_run, tp, seen) -> Callable[[int], float]:
    base = part_configs(params, TOKENS, dry_run)

    def estimate(dense_steps: int) -> float:
        total = 0.0
        for cfg in base:
            c = cfg.with_train(steps=max(1, round(dense_steps * cfg.train.step_scale)))
            total += run_estimate(c, tp, seen[c.method]["step_s"])["estimate_s"]
        return total

    return estimate


def _cap(camp, deadline: float, est: dict[str, Any], later_s: float) -> float:
    """A run's training-time cap: what the part's deadline (and the campaign's budget) leave after the runs planned
    after it and its own evaluations. Not its own estimate: a run slower than measured still ends where it fits."""
    return min(deadline - camp.elapsed(), camp.left()) - later_s - est["eval_s"]


def reached_target(curve: dict[str, Any], patience: int) -> bool:
    """Whether a to-target curve's last ``patience`` sample-quality points all reach its targets (the validation
    loss only on the targets' objective), the rule by which the training loop stops it."""
    t = curve.get("targets")
    if not t:
        return False
    same = t.get("val_loss") is not None and t.get("objective") == curve.get("objective")
    sampled = [p for p in curve["points"] if p.get("fid") is not None]
    if len(sampled) < patience:
        return False
    return all(p["fid"] <= t["fid"] and (not same or p["val_loss"] <= t["val_loss"]) for p in sampled[-patience:])


def _train_run(camp, bundle: Bundle, cfg, device, work: Path, est: dict[str, Any], cap_s: float,
               train_fn) -> dict[str, Any] | None:  # fmt: skip
    """One run with a training-time cap; its curve kept in the bundle after every evaluation (a line printed at
    each one with FID), and its seconds recorded beside its estimate from the measured step."""
    from ..train import train

    name = f"{bundle.doc['part']} {cfg.run_id}"
    fits = camp.fits(name)  # False (and recorded as skipped) once the campaign's deadline has passed
    if fits and cap_s <= 1.0:
        camp.skip(name, f"{cap_s:.0f} s of training time left for it")
    if not fits or cap_s <= 1.0:
        bundle.doc["runs"][cfg.run_id] = {"config": cfg.to_dict(), "status": "skipped", "curve": None}
        bundle.save()
        return None
    entry = bundle.run(cfg)
    cfg = cfg.with_train(max_seconds=cap_s)

    def keep(curve):
        entry["curve"] = curve
        bundle.save()
        p = curve["points"][-1] if curve["points"] else {}
        if "fid" in p:
            print(f"  {cfg.run_id} @ {p['step']}: FID {p['fid']:.4g}, validation loss {p['val_loss']:.4g}, "
                  f"{p['seconds']:.1f} s of training", flush=True)  # fmt: skip

    with camp.part(f"{bundle.doc['part']} {cfg.run_id}") as rec:
        rec.update(steps_planned=cfg.train.steps, time_cap_s=round(cap_s, 2), estimate_s=round(est["estimate_s"], 2),
                   train_estimate_s=round(est["train_s"], 2))  # fmt: skip
        entry["status"] = "running"
        curve = (train_fn or train)(cfg, work / "runs" / cfg.run_id, device=device, resume=False,
                                    command=camp.command, on_eval=keep, quiet=True)  # fmt: skip
        entry["curve"] = curve
        last = curve["points"][-1]["step"] if curve["points"] else 0
        at_target = reached_target({**curve, "objective": cfg.objective.name}, cfg.train.target_patience)
        stopped_at_target = last < rec["steps_planned"] and at_target
        capped = last < rec["steps_planned"] and not stopped_at_target
        rec.update({"steps_done": last, "time_capped": capped, "stopped_at_target": stopped_at_target})
        entry.update({"steps_done": last, "time_capped": capped, "stopped_at_target": stopped_at_target})
        if capped:
            rec["status"] = "cut"
    entry["status"] = rec["status"]
    bundle.save()
    return entry["curve"]


def _run_tokens(camp, bundle, params, dry_run, device, tp, work, seen, left_s, train_fn) -> None:
    base = part_configs(params, TOKENS, dry_run)
    every = _every(base[0])
    sizing = size_tokens(_tokens_estimate(params, dry_run, tp, seen), base[0].train.steps, every, left_s)
    sizing.update({"measured_step_s": {m: r["step_s"] for m, r in seen.items()}, "tokens": tokens_of(base[0].model),
                   "patch_size": base[0].model.patch_size, "input_size": base[0].model.input_size})  # fmt: skip
    bundle.doc["sizing"] = sizing
    print(_format_sizing(TOKENS, sizing), flush=True)
    if "skip" in sizing:
        bundle.doc["status"] = "skipped"
        camp.skip(f"{TOKENS} (gpu-tokens)", sizing["skip"])
        return
    cfgs = part_configs(params, TOKENS, dry_run, steps=sizing["dense_steps"])
    ests = [run_estimate(c, tp, seen[c.method]["step_s"]) for c in cfgs]
    sizing["runs"] = {c.run_id: {"steps": c.train.steps, "estimate_s": e["estimate_s"]} for c, e in zip(cfgs, ests)}
    deadline = camp.elapsed() + left_s
    for i, (cfg, est) in enumerate(zip(cfgs, ests)):
        later = sum(e["estimate_s"] for e in ests[i + 1 :])
        _train_run(camp, bundle, cfg, device, work, est, _cap(camp, deadline, est, later), train_fn)


def _run_long(camp, bundle, params, dry_run, device, tp, work, seen, left_s, train_fn) -> None:
    from ...evidence.speedup import train_targets
    from ...io import atomic_write_json

    cfgs = part_configs(params, LONG, dry_run)
    seeds = sorted({c.seed for c in cfgs}, key=[c.seed for c in cfgs].index)
    est = {c.run_id: run_estimate(c, tp, seen[c.method]["step_s"]) for c in cfgs}
    pair_s = [sum(est[c.run_id]["estimate_s"] for c in cfgs if c.seed == sd) for sd in seeds]
    sizing = size_long(pair_s, left_s)
    base = next(c for c in cfgs if c.method == TARGET_BASELINE)
    runs = {k: {"steps": v["steps"], "estimate_s": v["estimate_s"]} for k, v in est.items()}
    sizing.update({"measured_step_s": {m: r["step_s"] for m, r in seen.items()}, "dense_steps": base.train.steps,
                   "factor": LONG_FACTOR, "pair_s": pair_s, "runs": runs})  # fmt: skip
    bundle.doc["sizing"] = sizing
    print(_format_sizing(LONG, sizing), flush=True)
    if "skip" in sizing:
        bundle.doc["status"] = "skipped"
        camp.skip(f"{LONG} (gpu-long)", sizing["skip"])
        return
    chosen = seeds[: sizing["seed_pairs"]]
    dits = [c for c in cfgs if c.method == TARGET_BASELINE and c.seed in chosen]
    others = [c for c in cfgs if c.method != TARGET_BASELINE and c.seed in chosen]
    queue = [*dits, *others]
    deadline = camp.elapsed() + left_s
    curves = []
    for i, cfg in enumerate(dits):
        later = sum(est[c.run_id]["estimate_s"] for c in queue[i + 1 :])
        cap = _cap(camp, deadline, est[cfg.run_id], later)
        curve = _train_run(camp, bundle, cfg, device, work, est[cfg.run_id], cap, train_fn)
        if curve and curve["complete"] and not bundle.doc["runs"][cfg.run_id].get("time_capped"):
            curves.append(curve)
    if not curves:
        bundle.doc["status"] = "incomplete"
        for cfg in others:
            camp.skip(f"{LONG} {cfg.run_id}", "no DiT run reached 17.5x: no targets to train to")
        return
    targets = train_targets(curves, TARGET_OBJECTIVE)
    bundle.doc["targets"] = targets
    path = atomic_write_json(work / "targets.json", targets)
    for j, cfg in enumerate(others):
        cfg = others[j] = cfg.with_train(to_target=str(path))
        later = sum(est[c.run_id]["estimate_s"] for c in others[j + 1 :])
        cap = _cap(camp, deadline, est[cfg.run_id], later)
        _train_run(camp, bundle, cfg, device, work, est[cfg.run_id], cap, train_fn)


def _format_sizing(part: str, s: dict[str, Any]) -> str:
    ms = ", ".join(f"{m} {1e3 * v:.2f} ms" for m, v in s["measured_step_s"].items())
    if part == LONG:
        head = (f"{part} (gpu-long): DiT to {s['factor']:g}x the core budget, {s['dense_steps']:,} dense steps; "
                f"measured step {ms}")  # fmt: skip
        body = [f"  seed pair {i}: about {p:.0f} s (DiT + TREAD-EDM to target at worst)" for i, p in
                enumerate(s["pair_s"])]  # fmt: skip
        tail = (f"  {s['seed_pairs']} of {s['of']} seed pairs fit in {s['left_s']:.0f} s (x{s['margin']} margin)"
                + (f": skipped ({s['skip']})" if "skip" in s else ""))  # fmt: skip
        return "\n".join([head, *body, tail])
    head = (f"{part} (gpu-tokens): {s['tokens']} tokens (patch {s['patch_size']} on {s['input_size']}x"
            f"{s['input_size']}), DiT and TREAD at equal MACs; measured step {ms}")  # fmt: skip
    if "skip" in s:
        return f"{head}\n  skipped: {s['skip']}"
    return (f"{head}\n  {s['dense_steps']:,} of at most {s['max_steps']:,} dense steps fit in {s['left_s']:.0f} s "
            f"(about {s['estimate_s']:.0f} s with x{s['margin']} margin)"
            + (": shortened" if s["shortened"] else ""))  # fmt: skip
