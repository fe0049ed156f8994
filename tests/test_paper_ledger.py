"""The ledger's paper-scale side: a golden decides a FID-50K claim only when ``repro land`` wrote it with a record of
how every number was made, and the number is an unguided (or guided) FID from 50,000 samples on GPUs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from repro.evidence import paper
from repro.evidence.rules import evaluate_experiment
from repro.evidence.schema import load_specs
from repro.evidence.speedup import compare
from repro.evidence.verdicts import CHECK_FAILED, CONFIRMED, NOT_CHECKABLE

ROOT = Path(__file__).resolve().parents[1]
SPECS = {s.id: s for s in load_specs(ROOT / "specs")}


def record(fid: float = 9.5, seed: int = 0, **changes) -> dict:
    r = {
        "run_id": f"paper-dit-s{seed}",
        "method": "dit",
        "seed": seed,
        "step": 7_000_000,
        "metric": "fid",
        "fid": fid,
        "num_samples": 50_000,
        "guidance_scale": 1.0,
        "sampler": {"objective": {"name": "ddpm"}, "steps": 250},
        "reference": {"file": "VIRTUAL_imagenet256_labeled.npz", "sha256": "a" * 64, "images": 10_000},
        "inception_weights_sha256": "b" * 64,
        "samples_sha256": "c" * 64,
        "checkpoint_sha256": "d" * 64,
        "sampling": {
            "git_commit": "e" * 40,
            "torch": "2.5.1",
            "cuda": "12.4",
            "device": "NVIDIA A100-SXM4-80GB",
            "gpu_count": 8,
            "world_size": 8,
        },  # fmt: skip
        "training": {
            "git_commit": "e" * 40,
            "torch": "2.5.1",
            "cuda": "12.4",
            "device": "NVIDIA A100-SXM4-80GB",
            "gpu_count": 32,
            "world_size": 32,
            "latents_manifest_sha256": "f" * 64,
        },  # fmt: skip
    }
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            r[section][field] = value
        else:
            r[key] = value
    return r


def final(*records: dict, method: str = "dit") -> dict:
    fids = [r["fid"] for r in records]
    value = fids[0] if len(fids) == 1 else {"mean": sum(fids) / len(fids), "std": 0.0, "per_seed": fids}
    return paper.seal(
        {
            "format": paper.FORMAT,
            "landed_by": paper.LANDED_BY,
            "scale": "paper",
            "metric": "FID at each run's last step",
            "run_ids": [r["run_id"] for r in records],
            method: {"unguided_fid": value, "records": {"unguided_fid": list(records)}},
            "provenance": {"command": "repro land runs/paper/dit-s0", "git_commit": "e" * 40},
        }
    )


def verdict(tmp_path: Path, spec_id: str, report: dict, name: str = "final.json"):
    (tmp_path / "paper").mkdir(exist_ok=True)
    (tmp_path / "paper" / name).write_text(json.dumps(report))
    return evaluate_experiment(SPECS[spec_id], tmp_path)


def test_a_landed_fid50k_decides_and_says_it_is_one_data_point(tmp_path):
    r = verdict(tmp_path, "dit-xl2-curve", final(record(9.5)))
    assert r.verdict == CONFIRMED and r.text.startswith("confirmed at paper")
    text = "\n".join(r.evidence)
    assert "digest verified" in text and "FID 9.5 from 50,000 samples (ddpm sampler, 250 steps, guidance 1)" in text
    assert "VIRTUAL_imagenet256_labeled.npz" in text and "32 x NVIDIA A100-SXM4-80GB, world size 32" in text
    assert "decided by 1 seed (seed 0): one data point" in text
    two = verdict(tmp_path, "dit-xl2-curve", final(record(9.5), record(9.55, seed=1)))
    assert "one data point" not in "\n".join(two.evidence)


def test_without_goldens_the_paper_claims_stay_not_checkable(tmp_path):
    assert evaluate_experiment(SPECS["dit-xl2-curve"], tmp_path).verdict == NOT_CHECKABLE


@pytest.mark.parametrize(
    "report,reason",
    [
        ({"dit": {"unguided_fid": 9.5}}, "not written by `repro land`"),  # before: "confirmed at paper"
        ("edited", "edited after `repro land` wrote it"),
        ("value", "does not agree with its records"),
        (final(record(num_samples=10_000)), "FID from 10000 samples; the claim needs FID-50K (50,000 samples)"),
        (final(record(metric="val_loss")), "metric 'val_loss'; the claim needs FID-50K"),
        (final(record(guidance_scale=1.5)), "guidance scale 1.5; the claim's FID is unguided"),
        (final(record(sampling__cuda=None, sampling__gpu_count=0, sampling__device="cpu")), "not on CUDA GPUs"),
        (final(record(training__latents_manifest_sha256=None)), "no provenance for training.latents_manifest_sha256"),
        (final(record(reference=None)), "no provenance for reference (the reference batch"),
        (final(record(checkpoint_sha256="")), "checkpoint_sha256 (the checkpoint's sha256)"),
    ],
    ids=[
        "hand-typed",
        "edited",
        "value-edited",
        "10k-samples",
        "val-loss",
        "guided",
        "cpu",
        "no-latents-hash",
        "no-reference",
        "no-checkpoint-hash",
    ],  # fmt: skip
)
def test_paper_goldens_that_cannot_stand_for_fid50k_are_refused(tmp_path, report, reason):
    if report == "edited":
        report = final(record())
        report["dit"]["unguided_fid"] = 2.0
    elif report == "value":
        report = final(record())
        report["dit"]["unguided_fid"] = 2.0
        report = paper.seal(report)  # re-sealed: the number still disagrees with its record
    r = verdict(tmp_path, "dit-xl2-curve", report)
    assert r.verdict == CHECK_FAILED and reason in "\n".join(r.evidence), r.evidence


# a one-seed speedup record as `repro speedup` writes it: no test can run, so each p-value table holds None
ONE_SEED = compare([100.0], [100.0], [20.0], method_final=[100.0])  # one seed each, as repro speedup writes it


def test_a_speedup_report_must_be_on_fid_with_records_for_every_run(tmp_path):
    base = {
        "format": paper.FORMAT,
        "landed_by": paper.LANDED_BY,
        "metric": "fid",
        "baseline": "dit",
        "run_ids": ["paper-dit-s0", "paper-tread-s0"],
        "fid_records": {
            "paper-dit-s0": [record(19.47, step=400_000)],
            "paper-tread-s0": [record(7.38, run_id="paper-tread-s0", step=400_000)],
        },  # fmt: skip
        "unit_results": {"tread": {"final": {"iterations": ONE_SEED}}},
        "provenance": {"command": "repro land", "git_commit": "e" * 40},
    }
    good = verdict(tmp_path, "tread-table2", paper.seal(base), "speedup.json")
    assert good.verdict != CHECK_FAILED and "paper-tread-s0 step 400,000: FID 7.38" in "\n".join(good.evidence)
    val_loss = copy.deepcopy(base)
    val_loss["metric"] = "val_loss"  # before: a validation-loss report decided a FID-50K claim
    r = verdict(tmp_path, "tread-table2", paper.seal(val_loss), "speedup.json")
    assert r.verdict == CHECK_FAILED and "a speedup on 'val_loss'; the claim needs FID-50K" in r.evidence[0]
    missing = copy.deepcopy(base)
    del missing["fid_records"]["paper-tread-s0"]
    r = verdict(tmp_path, "tread-table2", paper.seal(missing), "speedup.json")
    assert r.verdict == CHECK_FAILED and "paper-tread-s0 has no FID records" in r.evidence[0]
