"""What the ledger asks of a paper-scale golden before it lets it decide a claim.

The paper-scale claims (``dit-xl2-curve``, ``tread-final``, ``tread-table2``, ``dit-conditioning-ablation``) are
about FID-50K on ImageNet-256: 50,000 samples scored against ADM's reference batch. Their goldens under
``goldens/paper/`` are written by ``repro land`` (:mod:`repro.experiments.land`) from cluster run directories, and each
one must show how every number in it was made. :func:`admit` refuses (the verdict is then ``check failed``) a golden

- that ``repro land`` did not write, or that was edited after it did (``format``, ``landed_by``, and a
  ``digest``: the sha256 of the file's canonical JSON without it, recomputed here; it catches hand edits, it is
  not a signature);
- whose numbers lack a record of how they were made, field by field (:data:`REQUIRED`): the commit, torch and
  CUDA, the GPU model and count and the world size of training and of sampling, the latent set's hash, the
  checkpoint's hash and step, the sampler and guidance, the number of samples, the reference batch's name and hash,
  the Inception weights' hash and the samples' hash;
- whose metric is not the claim's: these claims are FID-50K, so the value must be an FID (not a validation loss,
  not an FID of another sample count) from at least :data:`FID_SAMPLES` samples, unguided (guidance 1) unless the
  quantity is a guided FID; a speedup report must be one on ``fid``;
- that was made on the CPU (:data:`REQUIRE_CUDA`): the published setting is a GPU cluster's;
- whose value does not agree with its records (a number changed by hand).

An admitted golden gives evidence lines for the verdict: what was landed, from which runs, and each record's
provenance; a claim decided by one seed says that it is one data point.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

FORMAT = 1
LANDED_BY = "repro land"
FID_SAMPLES = 50_000
"""The sample count of FID-50K. A test with tiny stand-ins lowers it in its own process only."""
REQUIRE_CUDA = True
"""Paper-scale numbers come from GPUs; a test with CPU stand-ins lowers it in its own process only."""

REQUIRED = {
    "run_id": "the run",
    "seed": "the run's seed",
    "step": "the checkpoint's training step",
    "fid": "the value",
    "num_samples": "the number of samples",
    "guidance_scale": "the guidance scale",
    "sampler": "the sampler (objective and steps)",
    "reference": "the reference batch (file and sha256)",
    "inception_weights_sha256": "the Inception weights' sha256",
    "samples_sha256": "the samples' sha256",
    "checkpoint_sha256": "the checkpoint's sha256",
    "sampling": "how the samples were drawn (commit, torch, CUDA, GPU model and count, world size)",
    "training": "how the run was trained (commit, torch, CUDA, GPU model and count, world size, latent set)",
}
SAMPLING_FIELDS = ("git_commit", "torch", "cuda", "device", "gpu_count", "world_size")
TRAINING_FIELDS = ("git_commit", "torch", "cuda", "device", "gpu_count", "world_size", "latents_manifest_sha256")


def digest(report: Mapping[str, Any]) -> str:
    """sha256 of the report's canonical JSON (sorted keys, no whitespace), without its ``digest`` entry."""
    body = {k: v for k, v in report.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def seal(report: dict[str, Any]) -> dict[str, Any]:
    """The report with its ``digest`` (what ``repro land`` writes)."""
    report = {k: v for k, v in report.items() if k != "digest"}
    report["digest"] = digest(report)
    return report


def requirement(spec_file: str, keys: Sequence[str]) -> tuple[str, bool | None] | None:
    """``(what, guided)`` a claim's value must be: FID-50K, unguided (False), guided (True) or either (None); None
    when the ledger knows no paper-scale quantity at that file and path."""
    if spec_file == "final.json" and len(keys) == 2 and keys[1] in ("unguided_fid", "guided_fid"):
        return "FID-50K", keys[1] == "guided_fid"
    if spec_file == "speedup.json" and keys and keys[0] == "unit_results":
        return "FID-50K", False
    return None


def _missing(record: Mapping[str, Any]) -> list[str]:
    out = [f"{k} ({what})" for k, what in REQUIRED.items() if record.get(k) in (None, "", {}, [])]
    for section, fields in (("sampling", SAMPLING_FIELDS), ("training", TRAINING_FIELDS)):
        block = record.get(section)
        if isinstance(block, Mapping):
            out += [f"{section}.{f}" for f in fields if f not in block or (block[f] is None and f != "cuda")]
    ref = record.get("reference")
    if isinstance(ref, Mapping) and not (ref.get("file") and ref.get("sha256")):
        out.append("reference.file and reference.sha256")
    return out


def check_record(record: Any, guided: bool | None, where: str) -> list[str]:
    """Why one FID record cannot stand for FID-50K (empty when it can)."""
    if not isinstance(record, Mapping):
        return [f"{where}: not a record"]
    missing = _missing(record)
    if missing:
        return [f"{where}: no provenance for {', '.join(missing)}"]
    problems = []
    if record.get("metric", "fid") != "fid":
        problems.append(f"{where}: metric {record.get('metric')!r}; the claim needs FID-50K")
    n = record["num_samples"]
    if not isinstance(n, int) or n < FID_SAMPLES:
        problems.append(f"{where}: FID from {n} samples; the claim needs FID-50K ({FID_SAMPLES:,} samples)")
    scale = record["guidance_scale"]
    if guided is False and scale != 1.0:
        problems.append(f"{where}: guidance scale {scale}; the claim's FID is unguided (1.0)")
    if guided is True and not scale > 1.0:
        problems.append(f"{where}: guidance scale {scale}; the claim's FID is guided (> 1)")
    for section in ("sampling", "training"):
        block = record[section]
        if REQUIRE_CUDA and (not block.get("cuda") or not block.get("gpu_count")):
            problems.append(f"{where}: {section} ran on {block.get('device')}, not on CUDA GPUs")
    return problems


def _value_matches(value: Any, records: Sequence[Mapping[str, Any]]) -> bool:
    fids = [float(r["fid"]) for r in records]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return len(fids) == 1 and abs(float(value) - fids[0]) <= 1e-9 * max(1.0, abs(fids[0]))
    if isinstance(value, Mapping) and isinstance(value.get("per_seed"), list):
        per = [float(v) for v in value["per_seed"]]
        return per == fids and abs(float(value.get("mean", float("nan"))) - sum(fids) / len(fids)) < 1e-9
    return False


def describe(record: Mapping[str, Any]) -> str:
    """One evidence line: a record's value and how it was made."""
    s, t, ref = record["sampling"], record["training"], record["reference"]
    sampler = record["sampler"]
    objective = sampler.get("objective", {}).get("name") if isinstance(sampler.get("objective"), Mapping) else None

    def short(value: Any) -> str:
        return str(value)[:12]

    def where(block: Mapping[str, Any]) -> str:
        hardware = f"{block['gpu_count']} x {block['device']}" if block.get("gpu_count") else str(block["device"])
        return f"{hardware}, world size {block['world_size']}"

    return (
        f"{record['run_id']} step {record['step']:,}: FID {float(record['fid']):.4g} from {record['num_samples']:,} "
        f"samples ({objective} sampler, {sampler.get('steps')} steps, guidance {record['guidance_scale']:g}) against "
        f"{ref['file']} (sha256 {short(ref['sha256'])}), Inception weights {short(record['inception_weights_sha256'])}"
        f", samples {short(record['samples_sha256'])}, checkpoint {short(record['checkpoint_sha256'])}; trained at "
        f"commit {short(t['git_commit'])} on {where(t)} (torch {t['torch']}, CUDA {t['cuda']}), latent set "
        f"{short(t['latents_manifest_sha256'])}; sampled at commit {short(s['git_commit'])} on {where(s)}"
    )


def admit(spec: Any, path: Path, report: Any) -> tuple[list[str], list[str]]:
    """``(refusal, evidence)`` for a paper-scale golden read for ``spec``: a non-empty refusal means the golden
    carries no verdict (why, line by line); otherwise the evidence lines to add to the verdict."""
    check = spec.check
    keys = check["value"].split(".") if isinstance(check["value"], str) else list(check["value"])
    head = f"{path}: refused as paper-scale evidence for {spec.id}"
    if not isinstance(report, Mapping) or report.get("landed_by") != LANDED_BY or report.get("format") != FORMAT:
        return [
            f"{head}: not written by `repro land` (no format, landed_by or provenance): a hand-typed golden carries no "
            "verdict; land the cluster's run directories with `repro land RUN_DIR ...`"
        ], []
    if report.get("digest") != digest(report):
        return [f"{head}: its digest does not match its content: the file was edited after `repro land` wrote it"], []
    if not isinstance(report.get("provenance"), Mapping) or not report["provenance"].get("git_commit"):
        return [f"{head}: no provenance of the landing (command, commit)"], []
    need = requirement(Path(check["file"]).name, keys)
    if need is None:
        return [f"{head}: the ledger knows no paper-scale quantity {check['value']} in {check['file']}"], []
    what, guided = need
    if FID_SAMPLES != 50_000:
        what = f"FID from >= {FID_SAMPLES:,} samples"
    if Path(check["file"]).name == "speedup.json":
        if report.get("metric") != "fid":
            return [f"{head}: a speedup on {report.get('metric')!r}; the claim needs {what} (a speedup on fid)"], []
        records_by_run = report.get("fid_records") or {}
        runs = report.get("run_ids") or []
        records = []
        for run in runs:
            got = records_by_run.get(run)
            if not got:
                return [f"{head}: run {run} has no FID records"], []
            records += [(f"{run} step {r.get('step') if isinstance(r, Mapping) else '?'}", r) for r in got]
    else:
        method, quantity = keys
        entry = report.get(method)
        got = (entry or {}).get("records", {}).get(quantity) if isinstance(entry, Mapping) else None
        if not got:
            return [f"{head}: {method}.{quantity} has no records of how it was made"], []
        if not _value_matches(entry.get(quantity), got):
            return [f"{head}: {method}.{quantity} = {entry.get(quantity)!r} does not agree with its records"], []
        records = [(f"{method}.{quantity} ({r.get('run_id') if isinstance(r, Mapping) else '?'})", r) for r in got]
    problems = [p for where, r in records for p in check_record(r, guided, where)]
    if problems:
        return [head + ":", *problems[:12]] + ([f"... and {len(problems) - 12} more"] if len(problems) > 12 else []), []
    prov = report["provenance"]
    seeds = sorted({r["seed"] for _, r in records})
    lines = [
        f"landed by `{prov.get('command')}` at commit {str(prov.get('git_commit'))[:12]} from "
        f"{len(report.get('run_ids') or [])} run(s); digest verified; every FID from >= {FID_SAMPLES:,} samples"
        + ("" if REQUIRE_CUDA else " (GPUs not required)"),
        *(describe(r) for _, r in records[:6]),
    ]
    if len(records) > 6:
        lines.append(f"... and {len(records) - 6} more records")
    if len(seeds) == 1:
        lines.append(f"decided by 1 seed (seed {seeds[0]}): one data point, not a distribution over seeds")
    return [], lines
