"""DVC-native outputs: flat metrics per method, curves as plots, checkpoints through a DVC remote."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from repro.evidence import VERDICTS
from repro.evidence.summary import plot_points, summarize

ROOT = Path(__file__).resolve().parents[1]
SCALE = ROOT / "goldens" / "micro"


def _curve(method, seed, fids, losses):
    points = [
        {"step": 10 * (i + 1), "images": 80 * (i + 1), "macs": 1000 * (i + 1), "fid": f, "val_loss": v}
        for i, (f, v) in enumerate(zip(fids, losses))
    ]
    return {"run_id": f"micro-{method}-s{seed}", "method": method, "seed": seed, "scale": "micro", "points": points}


def test_summary_rows_hold_final_means_sds_speedups_and_verdicts():
    curves = [
        _curve("dit", 0, [60, 40], [0.5, 0.3]),
        _curve("dit", 1, [61, 44], [0.5, 0.2]),
        _curve("tread", 0, [50, 30], [0.4, 0.25]),
        _curve("tread", 1, [55, float("nan")], [0.4, 0.35]),  # a NaN evaluation: the last finite value counts
    ]
    cell = {"ratio": 1.5, "ci_low": 1.2, "ci_high": 1.9, "seeds": 2}
    report = {"baseline": "dit", "unit_results": {"tread": {"final": {"macs": cell, "seconds": {}}, "third": {}}}}
    loss_report = report | {"metric": "val_loss"}
    claims = {"counts": {"confirmed": 2, "not checkable at this scale": 1}}
    rows = summarize(curves, [report, loss_report], claims)
    assert set(rows) == {
        "fid/dit",
        "fid/tread",
        "val_loss/dit",
        "val_loss/tread",
        "speedup-vs-dit/fid/tread",
        "speedup-vs-dit/val_loss/tread",
        "verdicts/confirmed",
        "verdicts/not_checkable_at_this_scale",
    }
    assert rows["fid/dit"]["value"] == pytest.approx(42.0)
    assert rows["fid/dit"]["sd"] == pytest.approx(np.std([40, 44], ddof=1)) and rows["fid/dit"]["n"] == 2
    assert rows["fid/tread"]["value"] == pytest.approx((30 + 55) / 2)
    assert rows["val_loss/tread"]["sd"] == pytest.approx(np.std([0.25, 0.35], ddof=1))
    assert rows["speedup-vs-dit/fid/tread"] == {"value": 1.5, "ci_lower": 1.2, "ci_upper": 1.9, "n": 2}
    assert rows["verdicts/confirmed"] == {"n": 2} and rows["verdicts/not_checkable_at_this_scale"] == {"n": 1}
    keys = {k for row in rows.values() for k in row}
    assert keys == {"value", "sd", "ci_lower", "ci_upper", "n"}  # every file shares these: a narrow table
    for row in rows.values():  # flat: every value a number or null
        assert all(v is None or isinstance(v, int | float) for v in row.values())
    assert summarize(curves, [report], unit="seconds")["speedup-vs-dit/fid/tread"]["value"] is None
    with pytest.raises(ValueError, match="two reports with baseline 'dit' and metric 'fid'"):
        summarize(curves, [report, report])
    with pytest.raises(ValueError, match="target 'late'"):
        summarize(curves, [report], target="late")
    with pytest.raises(ValueError, match="unit 'images' not in"):
        summarize(curves, [report], unit="images")


def test_plot_points_are_one_record_per_evaluation_named_by_run():
    curves = [_curve("tread", 1, [5, 4], [0.2, 0.1]), _curve("dit", 0, [9, 8, 7], [0.3, 0.2, 0.1])]
    rows = plot_points(curves)
    assert [r["run"] for r in rows] == ["dit-s0"] * 3 + ["tread-s1"] * 2
    assert [r["macs"] for r in rows] == [1000, 2000, 3000, 1000, 2000]
    assert rows[-1]["fid"] == 4 and rows[-1]["val_loss"] == 0.1


def test_committed_summary_is_what_the_goldens_give(tmp_path):
    """The summary stage's outputs are current: recomputed from the committed goldens they are equal."""
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["summary"]
    cmd = stage["cmd"].replace("--out goldens/micro/summary", f"--out {tmp_path / 'summary'}")
    cmd = cmd.replace("--plot-data goldens/micro/curves.json", f"--plot-data {tmp_path / 'curves.json'}")
    assert cmd != stage["cmd"]
    argv = cmd.split()
    assert argv[:2] == ["repro", "summary"]
    from repro.cli import main

    assert main([a.strip("'") for a in argv[1:]]) == 0
    made = sorted(p.relative_to(tmp_path / "summary") for p in (tmp_path / "summary").rglob("*.json"))
    hint = "stale: run `dvc repro --single-item summary`"
    assert sorted(p.relative_to(SCALE / "summary") for p in (SCALE / "summary").rglob("*.json")) == made, hint
    for rel in made:
        assert json.loads((SCALE / "summary" / rel).read_text()) == json.loads((tmp_path / "summary" / rel).read_text())
    new = json.loads((tmp_path / "curves.json").read_text())["points"]
    assert json.loads((SCALE / "curves.json").read_text())["points"] == new


def test_dvc_yaml_declares_only_the_small_files_as_metrics_and_static_images_as_plots():
    """dvc plots show draws only PNGs: a data plot (vega) would load its charting library from a CDN, and the
    page would render nothing offline. The flat curve table stays for interactive plots (its template exists)."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    metrics = [
        next(iter(m)) if isinstance(m, dict) else m for s in dvc["stages"].values() for m in s.get("metrics", [])
    ]
    assert metrics == ["goldens/micro/summary"]
    assert not dvc.get("plots")  # no top-level (data) plots
    plots = _declared_plots()
    assert {"goldens/micro/fid_vs_cost.png", "goldens/micro/val_loss_vs_cost.png"} <= set(plots)
    assert all(p.endswith(".png") for p in plots), plots
    assert (ROOT / ".dvc" / "plots" / "by_run.json").exists() and (SCALE / "curves.json").exists()


def _declared_plots() -> list[str]:
    """The plots of dvc.yaml's stages (a foreach stage: each item's)."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    plots = []
    for s in dvc["stages"].values():
        for key, item in (s.get("foreach") or {None: None}).items():
            for p in (s["do"] if item is not None else s).get("plots", []):
                p = next(iter(p)) if isinstance(p, dict) else p
                plots.append(p if item is None else p.replace("${key}", key).replace("${item.plot}", item["plot"]))
    return plots


def _dvc_copy(tmp_path: Path, extra: tuple[str, ...] = ()) -> Path:
    """A copy of the pipeline's files outside git (DVC with no_scm), so DVC never touches the checkout."""
    repo = tmp_path / "repo"
    for name in ("dvc.yaml", "dvc.lock", "params.yaml", ".dvc/plots", "goldens", "reports", *extra):
        src, dst = ROOT / name, repo / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
    (repo / ".dvc" / "config").write_text("[core]\n    no_scm = true\n    analytics = false\n")
    return repo


def _dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=repo, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.slow
def test_dvc_metrics_show_is_one_small_table_and_plots_show_draws_every_run(tmp_path):
    pytest.importorskip("dvc")
    repo = _dvc_copy(tmp_path)
    r = _dvc(repo, "metrics", "show", "--json")
    assert r.returncode == 0, r.stderr
    (workspace,) = json.loads(r.stdout).values()  # keyed by revision: "" or "workspace"
    data = workspace["data"]
    assert sorted(data) == sorted(str(p.relative_to(ROOT)) for p in (SCALE / "summary").rglob("*.json"))
    # DVC leaves out null cells (an sd or interval of one seed), so the columns it shows are a subset of the files'
    columns = {k for d in data.values() for k, v in _flat(d["data"]).items()}
    bounds = {"at_most", "at_least", "censored"}
    assert {"value", "n"} <= columns <= {"value", "sd", "ci_lower", "ci_upper", "n", *bounds}, sorted(columns)
    for path in (SCALE / "summary").rglob("*.json"):
        keys = set(json.loads(path.read_text()))
        shapes = [{"value", "sd", "n"}, {"value", "ci_lower", "ci_upper", "n"}, {"n"}, *({b, "n"} for b in bounds)]
        assert keys in shapes, (path, keys)
    table = _dvc(repo, "metrics", "show").stdout.splitlines()
    # a header and a row per quantity, with a bounded number of rows per method of the scale (its FID, its val loss,
    # its speedups against at most one baseline on two metrics) plus the verdict counts; the fixed 40 rows of the core
    # four no longer hold with the ablations' 11 methods (50 rows)
    methods = {p.stem for p in (SCALE / "summary" / "fid").glob("*.json")}
    # at most one verdict-count row per verdict that can occur (check failed included)
    assert len(table) == 1 + len(data) <= 1 + 4 * len(methods) + len(VERDICTS) + 1
    # narrow: the path and at most seven short columns (value, sd, interval, n, and a speedup that is only a bound
    # under at_most / at_least instead of value), about 130 characters with the longest paths
    assert max(len(line) for line in table) <= 135, table[0]
    assert "value" in table[0].split() and any("speedup-vs-dit/fid/tread.json" in line for line in table)
    r = _dvc(repo, "plots", "show", "-o", str(tmp_path / "plots"))
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "plots" / "index.html").read_text()
    assert "<script" not in page and "http" not in page  # nothing fetched: it renders offline
    images = sorted(p.name for p in (tmp_path / "plots" / "static").glob("*.png"))
    plots = ["fid_vs_cost", "val_loss_vs_cost", "vs_tread_fid_vs_cost", "vs_tread_val_loss_vs_cost"]
    plots += ["edm_fid_vs_cost", "edm_val_loss_vs_cost"]  # one per micro speedup report
    micro = {f"goldens/micro/{name}.png" for name in plots}
    # and every other declared plot that is made (the long horizon's, once its reports are)
    made = {p for p in _declared_plots() if (ROOT / p).is_file()}
    assert micro <= made
    assert images == sorted("workspace_" + p.replace("/", "_") for p in made)
    assert all(f'<img src="static/{name}">' in page for name in images)
    r = _dvc(repo, "plots", "show", "goldens/micro/curves.json", "--template", "by_run", "-x", "macs", "-y", "fid")
    assert r.returncode == 0, r.stderr  # the interactive one per run, for a browser that reaches the CDN


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out |= _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


@pytest.mark.slow
def test_checkpoints_go_through_a_local_dvc_remote_and_come_back(tmp_path):
    """The README's way to share checkpoints (not pipeline outputs: a finished run is its committed curve):
    `dvc add` a run's checkpoints, `dvc push`; a clone with no cache `dvc pull`s them."""
    pytest.importorskip("dvc")
    repo = _dvc_copy(tmp_path, extra=("repro",))
    ckpt = repo / "runs" / "micro" / "dit-s0" / "checkpoints"
    ckpt.mkdir(parents=True)
    payload = np.random.default_rng(0).bytes(4096)
    (ckpt / "last.pt").write_bytes(payload)
    (repo / "checkpoints" / "micro").mkdir(parents=True)
    remote = tmp_path / "remote"
    for args in (
        ("remote", "add", "-d", "shared", str(remote)),
        ("add", "runs/micro/dit-s0/checkpoints", "-o", "checkpoints/micro/dit-s0"),
        ("push", "checkpoints/micro/dit-s0.dvc"),
    ):
        r = _dvc(repo, *args)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    assert any(p.is_file() for p in remote.rglob("*"))
    shared = repo / "checkpoints" / "micro" / "dit-s0"
    shutil.rmtree(shared)  # the clone has the committed .dvc file, not the files or the cache
    shutil.rmtree(repo / ".dvc" / "cache")
    r = _dvc(repo, "pull", "checkpoints/micro/dit-s0.dvc")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert (shared / "last.pt").read_bytes() == payload
