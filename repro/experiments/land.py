"""``repro land``: cluster run directories -> the paper scale's goldens, each number with how it was made.

A paper-scale run leaves, on the cluster's shared file system, a run directory (``config.json``, ``curve.json``
with the validation loss at each evaluation, ``checkpoints/stepNNNNNNN.pt``), and for each checkpoint scored, an
ADM sample batch (``repro sample``, under torchrun) and its evaluation (``repro evaluate SAMPLES --reference
VIRTUAL_imagenet256_labeled.npz --json RUN/samples/<name>.json``). ``repro land RUN_DIR ...`` reads them and
writes, under ``--goldens`` (default ``goldens``):

- ``paper/runs/<run_id>.json``: the run's curve with each evaluated step's FID-50K (and sFID, Inception Score,
  precision, recall) merged into its point, and ``fid_records``: one record per FID (see below), so that ``repro
  speedup --metric fid --curves 'goldens/paper/runs/*.json'`` works on them;
- ``paper/final.json``: per method, the unguided (guidance 1) and guided FID-50K at the run's last step (one seed:
  the number; several: mean, sd and per seed), with their records (what ``dit-xl2-curve`` and ``tread-final``
  read);
- ``paper/speedup.json``: ``repro speedup``'s report on FID over the landed curves, DiT the baseline, with the
  records of every FID it used (what ``tread-table2`` and ``dit-conditioning-ablation`` read), when DiT and another
  method both have FID curves.

A record carries the value and its provenance: the run, seed and step; the number of samples, the sampler and
guidance; the reference batch's name and sha256; the Inception weights' sha256; the samples' and the checkpoint's
sha256; how the samples were drawn (commit, torch, CUDA, GPU model and count, world size) and how the run was
trained (the same, and the latent set's manifest sha256). Every file gets ``format``, ``landed_by``, the landing's
own provenance and a ``digest`` (sha256 of its canonical JSON), which the ledger (:mod:`repro.evidence.paper`)
checks, along with each record, before a golden may decide a claim.

Land refuses what it cannot vouch for: a run that is not complete or not of the paper scale, an evaluation
whose samples were not drawn by ``repro sample`` from this run, a samples file whose sha256 is not the one scored,
an FID at a step with no curve point, two different FIDs for one step and guidance.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..evidence.paper import FORMAT, LANDED_BY, seal
from ..io import atomic_write_json
from ..provenance import git_commit, sha256_file

SCALE = "paper"
QUALITY = ("fid", "sfid", "inception_score", "precision", "recall")


class LandError(ValueError):
    """A run directory or evaluation that cannot be landed; the message names the file and what is wrong."""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise LandError(f"{path}: cannot read ({type(e).__name__}: {e})") from None


def _training(curve: dict[str, Any]) -> dict[str, Any]:
    prov = curve.get("provenance") or {}
    latents = prov.get("latents") or {}
    return {
        "git_commit": prov.get("git_commit"),
        "torch": prov.get("torch"),
        "cuda": prov.get("cuda"),
        "device": prov.get("device"),
        "gpu_count": prov.get("gpu_count", 0),
        "world_size": prov.get("world_size"),
        "nodes": prov.get("nodes", 1),
        "precision": prov.get("precision"),
        "latents_manifest_sha256": latents.get("manifest_sha256"),
        "command": prov.get("command"),
    }


def _record(evaluation: dict[str, Any], where: Path, curve: dict[str, Any]) -> dict[str, Any]:
    """One FID record: the evaluation's numbers with the sampling's and the training's provenance."""
    sp = evaluation.get("sample_provenance")
    if not isinstance(sp, dict):
        raise LandError(f"{where}: the samples carry no provenance: they were not drawn by repro sample")
    if sp.get("run_id") != curve["run_id"]:
        raise LandError(f"{where}: scores samples of run {sp.get('run_id')!r}, not of {curve['run_id']!r}")
    if evaluation.get("fid") is None:
        raise LandError(f"{where}: holds no fid (evaluate with --metrics including fid)")
    samples = Path(str(evaluation.get("samples", "")))
    verified = None
    if samples.is_file():
        digest = sha256_file(samples)
        if digest != evaluation.get("samples_sha256"):
            raise LandError(
                f"{where}: {samples} has sha256 {digest[:12]}, not the "
                f"{str(evaluation.get('samples_sha256'))[:12]} that was scored"
            )
        verified = True
    sampler = sp.get("sampler") or {}
    return {
        "run_id": curve["run_id"],
        "method": curve["method"],
        "seed": curve["seed"],
        "step": sp.get("step"),
        "metric": "fid",
        **{k: evaluation.get(k) for k in QUALITY if evaluation.get(k) is not None},
        "num_samples": evaluation.get("num_samples"),
        "guidance_scale": sampler.get("guidance_scale"),
        "sampler": {k: sampler.get(k) for k in ("objective", "steps", "guided_channels")},
        "reference": {k: (evaluation.get("reference") or {}).get(k) for k in ("file", "sha256", "images")},
        "inception_weights_sha256": evaluation.get("inception_weights_sha256"),
        "samples_sha256": evaluation.get("samples_sha256"),
        "samples_verified": verified,
        "checkpoint_sha256": sp.get("checkpoint_sha256"),
        "weights": sp.get("weights"),
        "sampling": {
            "git_commit": sp.get("git_commit"),
            "torch": sp.get("torch"),
            "cuda": sp.get("cuda"),
            "device": sp.get("device"),
            "gpu_count": sp.get("gpu_count", 0),
            "world_size": sp.get("world_size"),
            "seed": sp.get("seed"),
            "batch_size": sp.get("batch_size"),
            "decoder": sp.get("decoder"),
        },
        "training": _training(curve),
        "evaluation": str(where),
    }


def evaluations_of(run_dir: Path, extra: Sequence[Path] = ()) -> list[tuple[Path, dict[str, Any]]]:
    """ADM evaluations (``repro evaluate ... --reference REF.npz --json``) under ``RUN/samples/`` and in ``extra``."""
    found = []
    for path in sorted((run_dir / "samples").glob("*.json")) + list(extra):
        data = _read_json(path)
        if isinstance(data, dict) and "inception_weights_sha256" in data and "reference" in data:
            found.append((path, data))
    return found


def land_run(run_dir: Path, extra: Sequence[Path] = ()) -> dict[str, Any]:
    """The landed curve of one run directory (see the module docstring)."""
    config = _read_json(run_dir / "config.json")
    if config.get("scale") != SCALE:
        raise LandError(f"{run_dir}: a run of scale {config.get('scale')!r}; repro land lands {SCALE}-scale runs")
    curve = _read_json(run_dir / "curve.json") if (run_dir / "curve.json").is_file() else None
    if not isinstance(curve, dict) or curve.get("complete") is not True:
        raise LandError(f"{run_dir}: the run is not complete (no curve.json with complete: true); finish it first")
    points = {p["step"]: dict(p) for p in curve["points"]}
    records: list[dict[str, Any]] = []
    for where, evaluation in evaluations_of(run_dir, [p for p in extra if _belongs(p, curve["run_id"])]):
        record = _record(evaluation, where, curve)
        if record["guidance_scale"] == 1.0 and record["step"] not in points:
            raise LandError(
                f"{where}: step {record['step']} has no point in {run_dir / 'curve.json'} (evaluated at "
                f"{sorted(points)}); score checkpoints of evaluation steps"
            )
        twin = next(
            (r for r in records if (r["step"], r["guidance_scale"]) == (record["step"], record["guidance_scale"])), None
        )
        if twin is not None:
            if twin["fid"] != record["fid"] or twin["num_samples"] != record["num_samples"]:
                raise LandError(
                    f"{where}: a second FID for step {record['step']} at guidance {record['guidance_scale']} "
                    f"({record['fid']:.4g} vs {twin['fid']:.4g} in {twin['evaluation']}); keep one"
                )
            continue
        records.append(record)
    records.sort(key=lambda r: (r["step"], r["guidance_scale"]))
    for r in records:
        if r["guidance_scale"] == 1.0:
            points[r["step"]].update({k: r[k] for k in QUALITY if k in r}, fid_num_samples=r["num_samples"])
    landed = dict(curve)
    landed["points"] = [points[s] for s in sorted(points)]
    landed["fid_records"] = records
    landed["landed_from"] = {"run_dir": str(run_dir), "curve_sha256": sha256_file(run_dir / "curve.json")}
    return landed


def _belongs(path: Path, run_id: str) -> bool:
    data = _read_json(path)
    return isinstance(data, dict) and (data.get("sample_provenance") or {}).get("run_id") == run_id


def _summary(values: list[float]) -> float | dict[str, Any]:
    if len(values) == 1:
        return values[0]
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return {"mean": mean, "std": sd, "per_seed": values}


def final_report(curves: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``final.json``: per method, the FID-50K at each run's last step, unguided and guided, with the records."""
    report: dict[str, Any] = {"metric": "FID at each run's last step", "run_ids": [c["run_id"] for c in curves]}
    training: dict[str, Any] = {}
    for method in sorted({c["method"] for c in curves}):
        runs = sorted((c for c in curves if c["method"] == method), key=lambda c: c["seed"])
        entry: dict[str, Any] = {"records": {}}
        for quantity, guided in (("unguided_fid", False), ("guided_fid", True)):
            chosen = []
            for c in runs:
                last = c["points"][-1]["step"]
                at = [r for r in c["fid_records"] if r["step"] == last and (r["guidance_scale"] > 1.0) == guided]
                if at:
                    chosen.append(min(at, key=lambda r: r["fid"]))  # guided: the best scale, as published
            if chosen and len(chosen) == len(runs):
                entry[quantity] = _summary([float(r["fid"]) for r in chosen])
                entry["records"][quantity] = chosen
        entry["steps"] = runs[0]["points"][-1]["step"]
        report[method] = entry
        images = runs[0]["points"][-1].get("images")
        size = runs[0].get("train_size")
        training[method] = {"images": images, "epochs": images / size if images and size else None}
    report["training"] = training
    return report


def speedup(curves: Sequence[dict[str, Any]], baseline: str = "dit") -> tuple[dict[str, Any] | None, str]:
    """``repro speedup``'s report on FID over the landed curves (None with the reason when it cannot be made)."""
    from ..evidence.speedup import speedup_report

    with_fid = [c for c in curves if any(p.get("fid") is not None for p in c["points"])]
    methods = {c["method"] for c in with_fid}
    if baseline not in methods or len(methods) < 2:
        return None, f"it needs FID curves of {baseline} and another method (have: {sorted(methods) or 'none'})"
    try:
        report = speedup_report(with_fid, baseline=baseline, metric="fid")
    except ValueError as e:
        return None, " ".join(str(e).split())
    report["fid_records"] = {c["run_id"]: [r for r in c["fid_records"] if r["guidance_scale"] == 1.0] for c in with_fid}
    return report, ""


def land(run_dirs: Sequence[Path], goldens: Path, extra: Sequence[Path] = (), command: str | None = None) -> list[Path]:
    """Land the runs into ``goldens/paper/``; returns the files written."""
    curves = [land_run(Path(d), extra) for d in run_dirs]
    ids = [c["run_id"] for c in curves]
    if len(set(ids)) != len(ids):
        raise LandError(f"run ids appear twice: {sorted(i for i in ids if ids.count(i) > 1)}")
    provenance = {
        "command": command or "repro land " + " ".join(map(str, run_dirs)),
        "git_commit": git_commit(),
        "runs": [{"run_id": c["run_id"], **c["landed_from"]} for c in curves],
    }
    head = {"format": FORMAT, "landed_by": LANDED_BY, "scale": SCALE}
    out = goldens / SCALE
    written = []
    for c in curves:
        written.append(
            atomic_write_json(
                out / "runs" / f"{c['run_id']}.json", seal({**c, **head, "provenance_of_landing": provenance})
            )
        )
    written.append(
        atomic_write_json(out / "final.json", seal({**head, **final_report(curves), "provenance": provenance}))
    )
    report, why = speedup(curves)
    if report is not None:
        written.append(atomic_write_json(out / "speedup.json", seal({**report, **head, "provenance": provenance})))
    else:
        print(f"repro land: {out / 'speedup.json'} not written: {why}", file=sys.stderr)
    return written
